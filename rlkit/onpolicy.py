"""What an on-policy agent needs besides its maths: env, network, rollout, predict, state.

REINFORCE, Actor-Critic, PPO (and A3C / Ray workers) each hold a ``PolicyRunner`` and keep only
their loss and update loop in their own file (composition, not inheritance).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward

from rlkit.agent_state import load_rms, normalize, rms_state, rng_state, set_rng_state
from rlkit.environments import make_vec_env, seed_everything
from rlkit.networks import CNNS, ActorCritic, is_image_space, resolve_device
from rlkit.rollout import Rollout, env_action


def check_runner_options(c) -> None:
    """Validate the config fields every on-policy agent hands to PolicyRunner (ValueError -> exit 2)."""
    for name in ("n_envs", "n_steps", "frame_stack"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    limit = getattr(c, "train_time_limit", None)
    if limit is not None and limit < 1:
        raise ValueError(f"train_time_limit must be >= 1 or null, got {limit}")
    if c.cnn not in CNNS:
        raise ValueError(f"cnn '{c.cnn}' is not one of {', '.join(CNNS)}")


class PolicyRunner:
    def __init__(self, env_id: str, env_kwargs: dict, *, n_envs: int, n_steps: int, seed: int, device: str,
                 hidden=(64, 64), activation: str = "tanh", shared: bool | None = None, log_std_init: float = 0.0,
                 critic: bool = True, norm_obs: bool = False, norm_reward: bool = False, gamma: float = 0.99,
                 torch_threads: int = 0, frame_stack: int = 1, cnn: str = "nature", train_time_limit: int | None = None,
                 logger=None):
        seed_everything(seed)
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)  # tiny MLPs run fastest on one thread
        if train_time_limit is not None:
            # Training episodes only (eval keeps the registered limit). Truncation is bootstrapped, so on a
            # continuing task a shorter limit only restarts more often: more data from the start states.
            env_kwargs = {**env_kwargs, "max_episode_steps": train_time_limit}
        self.venv = make_vec_env(env_id, n_envs, seed=seed, env_kwargs=env_kwargs, frame_stack=frame_stack)
        # The env's own space (checked against checkpoints); the network sees the stacked one.
        self.observation_space = self.venv.unwrapped.single_observation_space
        model_obs_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space
        if norm_obs and is_image_space(model_obs_space):
            norm_obs = False  # pixels are scaled to [0, 1] by the CNN instead
        self.obs_norm = NormalizeObservation(self.venv) if norm_obs else None
        env = self.obs_norm or self.venv
        self.reward_norm = NormalizeReward(env, gamma=gamma) if norm_reward else None
        self.env = self.reward_norm or env
        self.device = resolve_device(device, model_obs_space)
        self.model = ActorCritic(model_obs_space, self.action_space, hidden=hidden, activation=activation,
                                 shared=shared, log_std_init=log_std_init, critic=critic, cnn=cnn).to(self.device)
        self.rollout = Rollout(self.env, n_steps, self.device, seed=seed, logger=logger)

    def policy_step(self, obs: torch.Tensor):
        """Sample actions for a rollout: (actions, log-probs, values)."""
        dist, value = self.model(obs)
        actions = dist.sample()
        if value is None:
            value = torch.zeros(obs.shape[0], device=obs.device)
        return actions, dist.log_prob(actions), value

    @torch.no_grad()
    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs)
        if self.obs_norm is not None:
            obs = normalize(obs, self.obs_norm.obs_rms)
        dist, _ = self.model(torch.as_tensor(obs, device=self.device))
        actions = dist.mode() if deterministic else dist.sample()
        return env_action(actions, self.action_space)

    def state(self) -> dict:
        out = {"model": self.model.state_dict(), "rng": rng_state()}
        if self.obs_norm is not None:
            out["obs_rms"] = rms_state(self.obs_norm.obs_rms)
        if self.reward_norm is not None:
            out["return_rms"] = rms_state(self.reward_norm.return_rms)
        return out

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        set_rng_state(state["rng"])
        if self.obs_norm is not None and "obs_rms" in state:
            load_rms(self.obs_norm.obs_rms, state["obs_rms"])
        if self.reward_norm is not None and "return_rms" in state:
            load_rms(self.reward_norm.return_rms, state["return_rms"])

    def close(self) -> None:
        self.env.close()


def learn_loop(agent, total_timesteps: int, callback=None):
    """The loop every on-policy agent shares; the algorithm itself is ``agent.update(batch)``.

    Per iteration: decay the learning rate linearly (``config.anneal_lr``), collect one rollout,
    update, log the shared tags, then ask the callback whether to go on.
    """
    c, rollout = agent.config, agent.runner.rollout
    while agent.num_timesteps < total_timesteps:
        if c.anneal_lr:
            frac = 1.0 - agent.num_timesteps / max(total_timesteps, c.n_timesteps)
            for group in agent.optimizer.param_groups:
                group["lr"] = frac * c.learning_rate
        batch = rollout.collect(agent.runner.policy_step)
        agent.num_timesteps += batch.rewards.numel()
        stats = agent.update(batch)
        stats["train/learning_rate"] = agent.optimizer.param_groups[0]["lr"]
        agent.logger.scalars(stats, agent.num_timesteps)
        agent.logger.rollout_summary(agent.num_timesteps, rollout.reward_rate() if agent.continuing else None)
        if callback is not None and not callback.on_step(agent.num_timesteps, agent):
            break
    return agent


def save_agent(agent, path) -> None:
    """Network, normalisers, RNGs and optimizer as plain tensors, plus metadata to rebuild the agent."""
    from rlkit.agent_state import agent_meta
    from rlkit.checkpoint import save_checkpoint

    state = {**agent.runner.state(), "optimizer": agent.optimizer.state_dict()}
    save_checkpoint(path, state, agent_meta(agent.algo_name, agent, avg_reward=getattr(agent, "avg_reward", 0.0)))


def load_agent(cls, path, device: str = "cpu"):
    """Rebuild an on-policy agent from its checkpoint alone (weights-only)."""
    from rlkit.checkpoint import load_checkpoint
    from rlkit.config import config_from_dict

    state, meta = load_checkpoint(path, device)
    agent = cls(meta["env_id"], config_from_dict(cls.Config, meta["config"]), seed=meta["seed"],
                device=device, env_kwargs=meta.get("env_kwargs"))
    agent.runner.load_state(state)
    agent.optimizer.load_state_dict(state["optimizer"])
    agent.num_timesteps = int(meta["num_timesteps"])
    if hasattr(agent, "avg_reward"):
        agent.avg_reward = float(meta.get("avg_reward", 0.0))
    return agent
