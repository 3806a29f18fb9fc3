"""REINFORCE (Williams 1992): Monte-Carlo policy gradient with reward-to-go and an optional baseline.

The whole algorithm is in ``Reinforce.learn``/``Reinforce.update``: collect long rollouts (``n_steps``
per env, long enough to hold whole episodes), compute the reward-to-go

    G_t = r_t + γ r_{t+1} + γ² r_{t+2} + ...   (cut at the end of s_t's episode)

then ONE gradient step on

    L = -E[log π(a_t|s_t) (G_t - b(s_t))] + c_v E[(V(s_t) - G_t)^2] - c_e E[H[π]]

With ``baseline: true`` b = V, a learned value network (the critic of the shared ActorCritic) fitted to G_t
by the second term; it reduces variance and leaves the gradient unbiased. With ``baseline: false``
b = 0 and there is no value term.

Where the sum is cut short without a true ending, the missing tail must be estimated: at a
truncation (time limit) and at the rollout cut (episode still running at the end of the batch) we
bootstrap with V(next observation) when the baseline exists. Without a baseline there is no estimate
and the tail is taken as 0, i.e. plain truncated Monte-Carlo returns; keep ``n_steps`` at least the
episode length so that is rare. A true termination always ends with 0. The autoreset steps of the
NEXT_STEP vector env (``valid`` False) are masked out of every loss.
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
from rlkit.returns import discounted_returns


@dataclass
class Config:
    n_timesteps: int = 300_000
    n_envs: int = 4
    n_steps: int = 512                # rollout length per env: long enough for whole episodes
    learning_rate: float = 1e-3
    anneal_lr: bool = False           # linear decay to 0 over n_timesteps
    gamma: float = 0.99
    baseline: bool = True             # learned state-value baseline b(s) = V(s)
    normalize_advantage: bool = True  # standardise G - b over the batch (a second, batch-level baseline)
    ent_coef: float = 0.0
    vf_coef: float = 0.25             # x MSE, as PPO and A2C (SB3's convention); 0.25 = the earlier 0.5 x MSE / 2
    max_grad_norm: float | None = 0.5
    norm_obs: bool = False
    norm_reward: bool = False
    norm_clip: float | None = None   # clip normalised obs and rewards to ±norm_clip (SB3: 10)
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    shared: bool | None = None        # one torso for actor and critic; None: shared for CNNs only
    log_std_init: float = 0.0
    adam_eps: float = 1e-5
    torch_threads: int = 1
    frame_stack: int = 1              # > 1: stack the last k observations (velocity from pixels)
    cnn: str = "nature"               # torso for pixel observations: nature | compact (rlkit.networks.CNNS)
    async_envs: bool = False          # one process per env copy (AsyncVectorEnv): for slow steps such as Box2D's

    def validate(self) -> None:
        check_common_options(self)


class Reinforce:
    algo_name = "reinforce"
    Config = Config
    supports_ray = True  # --backend ray / --workers N: rollout workers (rlkit.onpolicy.ParallelCollector)
    # Built when training first uses it: eval and render never need it (rlkit.onpolicy.LazyOptimizer).
    optimizer = LazyOptimizer(lambda self: torch.optim.Adam(self.model.parameters(), lr=self.config.learning_rate,
                                                            eps=self.config.adam_eps))

    def __init__(self, env_id: str, config: Config, *, seed: int = 0, device: str = "auto",
                 env_kwargs: dict | None = None, logger=None, run_dir: Path | None = None,
                 seed_globals: bool = True, backend: str = "local", workers: int | None = None,
                 ray_address: str | None = None):
        setup_agent(self, env_id, config, seed=seed, device=device, env_kwargs=env_kwargs, logger=logger,
                    run_dir=run_dir, seed_globals=seed_globals, backend=backend, workers=workers,
                    ray_address=ray_address, critic=config.baseline)

    # --- the algorithm -------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback=None) -> Reinforce:
        """Collect a rollout (own envs or rollout workers), ``update`` on it, log, repeat
        (rlkit.onpolicy.learn_loop)."""
        return learn(self, total_timesteps, callback)

    def update(self, b) -> dict:
        c = self.config
        if not b.valid.any():  # only reset steps (possible with n_envs * n_steps tiny): nothing to learn
            return {}
        with torch.no_grad():
            # bootstrap[t] = V(s_{t+1}): under NEXT_STEP the step after a truncation is the reset step,
            # whose observation is the final one, so values[t + 1] is V(final obs); after the last step
            # it is V(next_obs). Without a baseline the values are all 0 (plain Monte-Carlo).
            if c.baseline:
                next_values = torch.cat([b.values[1:], self.model.get_value(b.next_obs).unsqueeze(0)])
            else:
                next_values = torch.zeros_like(b.rewards)
            returns = discounted_returns(b.rewards, b.terminated, b.truncated, b.valid, next_values, c.gamma)
        valid = b.valid.flatten()
        obs, actions = b.obs.flatten(0, 1)[valid], b.actions.flatten(0, 1)[valid]
        returns = returns.flatten()[valid]
        old_values = b.values.flatten()[valid]  # zeros without a baseline

        dist, values = self.model(obs)
        advantages = returns - old_values       # G_t - b(s_t); the baseline gets no policy gradient
        if c.normalize_advantage and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        pg_loss = -(dist.log_prob(actions) * advantages).mean()
        v_loss = ((values - returns) ** 2).mean() if values is not None else torch.zeros(())
        entropy = dist.entropy().mean()
        loss = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
        self.optimizer.step()

        stats = {"train/loss": loss.item(), "train/policy_loss": pg_loss.item(),
                 "train/entropy_loss": -entropy.item()}
        if c.baseline:
            var_y = returns.var() if returns.numel() > 1 else torch.tensor(0.0)
            stats["train/value_loss"] = v_loss.item()
            stats["train/explained_variance"] = (float(1 - (returns - old_values).var() / var_y)
                                                 if var_y > 0 else float("nan"))
        return stats

    # --- the agent protocol --------------------------------------------------------------
    def set_backend(self, backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> None:
        set_backend(self, backend, workers, ray_address)

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.parts.predict(obs, deterministic)

    def save(self, path: Path) -> None:
        save_agent(self, path)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Reinforce:
        return load_agent(cls, path, device)

    def close(self) -> None:
        self.parts.close()
