"""Synchronous advantage actor-critic (A2C; Mnih et al. 2016, the synchronous variant).

The whole algorithm is in ``ActorCritic.learn``/``ActorCritic.update``: collect T (a few) steps from N
envs, compute returns R_t and advantages A_t = R_t - V(s_t) with one backward pass of GAE over the
rollout (``gae_lambda: 1.0`` gives the classic n-step return r_t + γ r_{t+1} + ... + γ^k V(s_{t+k}),
λ < 1 gives GAE), then ONE gradient step on

    L = -E[log π(a|s) A] + c_v E[(V - R)^2] - c_e E[H[π]]

(SB3's A2C loss, ``vf_coef`` times the plain MSE, so the RL Zoo's numbers mean the same here;
tests/test_equivalence.py checks an update against SB3's, parameter by parameter.)

Returns stop at every episode end; they bootstrap with V(final observation) at a truncation and with
V(next obs) at the rollout cut, and are zero after a true termination (``rlkit.returns.gae``). The
autoreset steps of the NEXT_STEP vector env (``valid`` False) are masked out of every loss.
Options: RMSprop (as in the paper / SB3) or Adam, gradient clipping, linear learning-rate decay,
shared or separate torso, observation/reward normalisation, and ``objective: average`` (differential
returns r - ρ̄ with a running estimate ρ̄ of the reward rate, for continuing tasks), as PPO does it.
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
    n_timesteps: int = 200_000
    n_envs: int = 8
    n_steps: int = 5                  # rollout length per env = the "n" of the n-step return
    learning_rate: float = 7e-4
    anneal_lr: bool = False           # linear decay to 0 over n_timesteps
    optimizer: str = "rmsprop"        # or "adam"
    rmsprop_alpha: float = 0.99       # RMSprop smoothing constant (SB3 / the A3C paper)
    optim_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 1.0           # 1.0 = n-step returns, < 1 = GAE
    normalize_advantage: bool = False
    ent_coef: float = 0.0
    vf_coef: float = 0.25             # x MSE, as SB3 (whose default is 0.5); 0.25 = the earlier 0.5 x MSE / 2
    max_grad_norm: float | None = 0.5
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
    torch_threads: int = 1
    frame_stack: int = 1              # > 1: stack the last k observations (velocity from pixels)
    train_time_limit: int | None = None  # TimeLimit of training episodes only (see rlkit.environments.EnvFactory)
    cnn: str = "nature"               # torso for pixel observations: nature | compact (rlkit.networks.CNNS)
    async_envs: bool = False          # one process per env copy (AsyncVectorEnv): for slow steps such as Box2D's

    def validate(self) -> None:
        check_common_options(self)
        check_optimizer_options(self)


def check_optimizer_options(c) -> None:
    """The optimizer choice shared by A2C and A3C (agents/a3c.py)."""
    if c.optimizer not in ("rmsprop", "adam"):
        raise ValueError(f"optimizer '{c.optimizer}' is not one of rmsprop, adam")
    if not 0 <= c.rmsprop_alpha < 1:
        raise ValueError(f"rmsprop_alpha must lie in [0, 1), got {c.rmsprop_alpha}")


def make_optimizer(params, c) -> torch.optim.Optimizer:
    """RMSprop (the A3C paper, SB3's A2C) or Adam, from ``c.optimizer``."""
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=c.learning_rate, alpha=c.rmsprop_alpha, eps=c.optim_eps)
    return torch.optim.Adam(params, lr=c.learning_rate, eps=c.optim_eps)


def a2c_loss(model, b, c, avg_reward: float | None):
    """The advantage actor-critic loss of one rollout ``b`` (A2C here, each A3C worker in agents/a3c.py).

    Returns (loss with its graph, logged statistics, the updated average-reward estimate ρ̄).
    """
    with torch.no_grad():
        rewards = b.rewards
        if c.objective == "average":
            rewards, avg_reward = differential_rewards(rewards, b.valid, avg_reward, c.avg_reward_lr)
        last_value = model.get_value(b.next_obs)
        # n-step (λ = 1) or GAE returns, bootstrapped from the rollout's own values.
        advantages, returns = gae(rewards, b.values, b.terminated, b.truncated, b.valid,
                                  last_value, c.gamma, c.gae_lambda)
    valid = b.valid.flatten()
    obs, actions = b.obs.flatten(0, 1)[valid], b.actions.flatten(0, 1)[valid]
    advantages, returns = advantages.flatten()[valid], returns.flatten()[valid]
    old_values = b.values.flatten()[valid]
    if c.normalize_advantage and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # Re-evaluate the batch with gradients: the rollout ran under no_grad (and the same
    # parameters), so log π and V here equal the collected ones but carry the graph.
    dist, values = model(obs)
    pg_loss = -(dist.log_prob(actions) * advantages).mean()
    v_loss = ((values - returns) ** 2).mean()  # vf_coef x MSE, as SB3
    entropy = dist.entropy().mean()
    loss = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy

    var_y = returns.var() if returns.numel() > 1 else torch.tensor(0.0)
    explained = float(1 - (returns - old_values).var() / var_y) if var_y > 0 else float("nan")
    stats = {"train/loss": loss.item(), "train/policy_loss": pg_loss.item(),
             "train/value_loss": v_loss.item(), "train/entropy_loss": -entropy.item(),
             "train/explained_variance": explained, "train/average_reward": avg_reward}
    return loss, stats, avg_reward


class ActorCritic:
    algo_name = "actor-critic"
    Config = Config
    supports_ray = True  # --backend ray / --workers N: rollout workers (rlkit.onpolicy.ParallelCollector)
    # Built when training first uses it: eval and render never need it (rlkit.onpolicy.LazyOptimizer).
    optimizer = LazyOptimizer(lambda self: make_optimizer(self.model.parameters(), self.config))

    def __init__(self, env_id: str, config: Config, *, seed: int = 0, device: str = "auto",
                 env_kwargs: dict | None = None, logger=None, run_dir: Path | None = None,
                 seed_globals: bool = True, backend: str = "local", workers: int | None = None,
                 ray_address: str | None = None):
        setup_agent(self, env_id, config, seed=seed, device=device, env_kwargs=env_kwargs, logger=logger,
                    run_dir=run_dir, seed_globals=seed_globals, backend=backend, workers=workers,
                    ray_address=ray_address)
        self.avg_reward: float | None = None  # ρ̄ (objective: average), set by the first batch

    # --- the algorithm -------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback=None) -> ActorCritic:
        """Collect a rollout (own envs or rollout workers), ``update`` on it, log, repeat
        (rlkit.onpolicy.learn_loop)."""
        return learn(self, total_timesteps, callback)

    def update(self, b) -> dict:
        if not b.valid.any():  # only reset steps (possible with n_envs * n_steps tiny): nothing to learn
            return {}
        loss, stats, self.avg_reward = a2c_loss(self.model, b, self.config, self.avg_reward)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return stats

    # --- the agent protocol --------------------------------------------------------------
    def set_backend(self, backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> None:
        set_backend(self, backend, workers, ray_address)

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.parts.predict(obs, deterministic)

    def save(self, path: Path) -> None:
        save_agent(self, path)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> ActorCritic:
        return load_agent(cls, path, device)

    def close(self) -> None:
        self.parts.close()
