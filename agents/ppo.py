"""Proximal Policy Optimisation (Schulman et al. 2017), clipped surrogate + GAE.

The whole algorithm is in ``PPO.learn``/``PPO.update``: collect T steps from N envs, compute GAE
advantages (bootstrapping on truncation, masking autoreset steps), then a few epochs of minibatch
SGD on

    L = -E[min(ρ A, clip(ρ, 1-ε, 1+ε) A)] + c_v E[(V - R)^2] - c_e E[H[π]]

with ρ = π(a|s) / π_old(a|s): SB3's PPO loss, ``vf_coef`` times the plain MSE, so the RL Zoo's
numbers mean the same here. Options, each as SB3 has it: value clipping (``clip_range_vf``: the
prediction kept within ±clip_range_vf of the rollout's value, then the MSE), target-KL early stop
(``target_kl``: a minibatch whose approximate KL exceeds 1.5 target_kl is not applied and ends the
update), linear learning-rate decay, gradient clipping, observation/reward normalisation; and
``objective: average`` (differential returns r - ρ̄ with a learned average-reward estimate ρ̄, for
continuing tasks), which SB3 does not have. tests/test_equivalence.py checks an update against
SB3's, parameter by parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlkit.onpolicy import (
    LazyOptimizer,
    check_common_options,
    learn,
    load_agent,
    save_agent,
    set_backend,
    setup_agent,
)
from rlkit.returns import differential_rewards, gae


@dataclass
class Config:
    n_timesteps: int = 100_000
    n_envs: int = 8
    n_steps: int = 128                # rollout length per env
    n_epochs: int = 4
    batch_size: int = 256             # minibatch size (in transitions)
    learning_rate: float = 3e-4
    anneal_lr: bool = True            # linear decay to 0 over n_timesteps
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float | None = None
    normalize_advantage: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.25             # x MSE, as SB3 (whose default is 0.5); 0.25 = the earlier 0.5 x MSE / 2
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    norm_obs: bool = False
    norm_reward: bool = False
    norm_clip: float | None = None   # clip normalised obs and rewards to ±norm_clip (SB3: 10)
    objective: str = "discounted"     # or "average" for continuing tasks
    avg_reward_lr: float = 0.05       # step size of the average-reward estimate
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    shared: bool | None = None        # one torso for actor and critic; None: shared for CNNs only
    log_std_init: float = 0.0
    use_sde: bool = False             # gSDE exploration for Box actions (rlkit.networks.ActionHead)
    sde_sample_freq: int = -1         # gSDE: new noise every n steps; -1: once per rollout
    ortho_init: bool = True           # False: torch's default init (the Zoo's gSDE entries)
    adam_eps: float = 1e-5
    torch_threads: int = 1
    frame_stack: int = 1              # > 1: stack the last k observations (velocity from pixels)
    train_time_limit: int | None = None  # TimeLimit of training episodes only (see rlkit.environments.EnvFactory)
    cnn: str = "nature"               # torso for pixel observations: nature | compact (rlkit.networks.CNNS)
    async_envs: bool = False          # one process per env copy (AsyncVectorEnv): for slow steps such as Box2D's

    def validate(self) -> None:
        check_common_options(self)
        for name in ("n_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.objective == "average" and self.norm_reward:
            raise ValueError("objective 'average' needs raw rewards: set norm_reward false")
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")
        for name in ("clip_range_vf", "target_kl"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or null, got {value}")


@torch.no_grad()
def minibatch_statistics(log_ratios: list, clip_range: float, per_epoch: int) -> tuple[float, float]:
    """SB3's logged statistics from every minibatch's log-ratio, in a few tensor operations after the
    update instead of several per minibatch: the mean over the last epoch's minibatches of each one's
    mean approximate KL ((r - 1) - log r, http://joschu.net/blog/kl-approx.html), and the mean over
    all minibatches of each one's fraction with |r - 1| > clip_range."""
    sizes = torch.tensor([len(x) for x in log_ratios], device=log_ratios[0].device)
    segment = torch.repeat_interleave(torch.arange(len(log_ratios), device=sizes.device), sizes)
    log_ratio = torch.cat(log_ratios)
    ratio = log_ratio.exp()
    per_sample = torch.stack([(ratio - 1) - log_ratio, ((ratio - 1).abs() > clip_range).to(ratio.dtype)])
    sums = torch.zeros(2, len(log_ratios), dtype=ratio.dtype, device=ratio.device).index_add_(1, segment, per_sample)
    means = sums / sizes
    last = len(log_ratios) - (len(log_ratios) % per_epoch or per_epoch)  # the last (maybe partial) epoch
    return float(means[0, last:].mean()), float(means[1].mean())


class PPO:
    algo_name = "ppo"
    Config = Config
    supports_ray = True  # --backend ray / --workers N: rollout workers (rlkit.onpolicy.ParallelCollector)
    # Built when training first uses it: eval and render never need it (rlkit.onpolicy.LazyOptimizer).
    # fused: one kernel for all parameters; the per-tensor loop dominated a small MLP's step
    optimizer = LazyOptimizer(lambda self: torch.optim.Adam(self.params, lr=self.config.learning_rate,
                                                            eps=self.config.adam_eps, fused=True))

    def __init__(self, env_id: str, config: Config, *, seed: int = 0, device: str = "auto",
                 env_kwargs: dict | None = None, logger=None, run_dir: Path | None = None,
                 seed_globals: bool = True, backend: str = "local", workers: int | None = None,
                 ray_address: str | None = None):
        setup_agent(self, env_id, config, seed=seed, device=device, env_kwargs=env_kwargs, logger=logger,
                    run_dir=run_dir, seed_globals=seed_globals, backend=backend, workers=workers,
                    ray_address=ray_address)
        self.params = list(self.model.parameters())
        self.avg_reward: float | None = None  # ρ̄ (objective: average), set by the first batch

    # --- the algorithm -------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback=None) -> PPO:
        """Collect a rollout (own envs or rollout workers), ``update`` on it, log, repeat
        (rlkit.onpolicy.learn_loop)."""
        return learn(self, total_timesteps, callback)

    def update(self, b) -> dict:
        c = self.config
        if not b.valid.any():  # only autoreset steps (possible with n_steps=1): nothing to learn from
            return {}
        with torch.no_grad():
            rewards = b.rewards
            if c.objective == "average":
                rewards, self.avg_reward = differential_rewards(rewards, b.valid, self.avg_reward, c.avg_reward_lr)
            last_value = self.model.get_value(b.next_obs)
            advantages, returns = gae(rewards, b.values, b.terminated, b.truncated, b.valid,
                                      last_value, c.gamma, c.gae_lambda)
        valid = b.valid.flatten()
        obs = b.obs.flatten(0, 1)[valid]
        actions = b.actions.flatten(0, 1)[valid]
        old_logp, old_values = b.logprobs.flatten()[valid], b.values.flatten()[valid]
        advantages, returns = advantages.flatten()[valid], returns.flatten()[valid]

        n = obs.shape[0]
        pg_losses, v_losses, entropies = [], [], []  # per minibatch, as tensors: no host sync
        log_ratios = []  # detached, for the KL and clip-fraction statistics after the loop
        whole = c.batch_size >= n  # one minibatch holds the rollout: no shuffle, no gathers (the mean is the same)
        stop = False
        for _epoch in range(c.n_epochs):
            perm = None if whole else torch.randperm(n, device=self.device)
            for start in range(0, n, c.batch_size):
                idx = slice(None) if whole else perm[start:start + c.batch_size]
                dist, values = self.model(obs[idx])
                logp = dist.log_prob(actions[idx])
                log_ratio = logp - old_logp[idx]
                ratio = log_ratio.exp()
                log_ratios.append(log_ratio.detach())
                adv = advantages[idx]
                if c.normalize_advantage and adv.shape[0] > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - c.clip_range, 1 + c.clip_range)).mean()
                if c.clip_range_vf is not None:  # SB3's: the clipped prediction alone, not max(clipped, unclipped)
                    values = old_values[idx] + (values - old_values[idx]).clamp(-c.clip_range_vf, c.clip_range_vf)
                v_loss = ((values - returns[idx]) ** 2).mean()
                loss = pg_loss + c.vf_coef * v_loss
                if c.ent_coef:
                    entropy = dist.entropy().mean()
                    loss = loss - c.ent_coef * entropy
                else:  # logged only: no backward pass through it
                    with torch.no_grad():
                        entropy = dist.entropy().mean()
                pg_losses.append(pg_loss.detach())
                v_losses.append(v_loss.detach())
                entropies.append(entropy.detach())
                # SB3's early stop: checked per minibatch, before its step, which is then not taken
                if c.target_kl is not None:
                    with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
                        kl = float(((ratio - 1) - log_ratio).mean())
                    if kl > 1.5 * c.target_kl:
                        stop = True
                        break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm, foreach=True)
                self.optimizer.step()
            if stop:
                break
        kl, clipfrac = minibatch_statistics(log_ratios, c.clip_range, -(-n // c.batch_size))
        var_y = returns.var()
        explained = float(1 - (returns - old_values).var() / var_y) if var_y > 0 else float("nan")
        # SB3's tags and values: the losses' means over every minibatch, the last epoch's mean KL
        return {"train/loss": loss.item(), "train/policy_gradient_loss": float(torch.stack(pg_losses).mean()),
                "train/value_loss": float(torch.stack(v_losses).mean()),
                "train/entropy_loss": -float(torch.stack(entropies).mean()),
                "train/approx_kl": kl, "train/clip_fraction": clipfrac,
                "train/explained_variance": explained, "train/average_reward": self.avg_reward}

    # --- the agent protocol --------------------------------------------------------------
    def set_backend(self, backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> None:
        set_backend(self, backend, workers, ray_address)

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.parts.predict(obs, deterministic)

    def save(self, path: Path) -> None:
        save_agent(self, path)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> PPO:
        return load_agent(cls, path, device)

    def close(self) -> None:
        self.parts.close()
