"""Stable-Baselines3 behind the rlkit agent protocol, with RL Zoo hyperparameters.

The adapter builds SB3's own vector env (Monitor + DummyVecEnv, optional VecNormalize), routes
SB3's logger to the run directory (its tags are the shared ones: rollout/*, train/*, time/fps)
and runs rlkit's TrainingCallback at the same point of the training cycle as rlkit's own agents
(after an update; see _Bridge), so the eval/stop protocol is identical.
Checkpoints hold only ``model.get_parameters()`` tensors + VecNormalize statistics, never
SB3's cloudpickled zip data (docs/architecture.md §7).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Optional, Union

import numpy as np
import stable_baselines3 as sb3
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize

import envs  # noqa: F401  registers rlkit/* for SB3's gym.make
from rlkit.checkpoint import agent_meta, load_checkpoint, save_checkpoint
from rlkit.config import config_from_dict
from rlkit.errors import UsageError
from rlkit.logger import NullLogger
from rlkit.networks import CNN

# Arguments the adapter sets itself, never from a config.
_RESERVED = {"policy", "env", "verbose", "seed", "device", "tensorboard_log", "_init_setup_model",
             "policy_kwargs", "rollout_buffer_class", "rollout_buffer_kwargs", "replay_buffer_class",
             "replay_buffer_kwargs", "action_noise"}
_SCHEDULED = {"learning_rate", "clip_range", "clip_range_vf"}


def _make_config(sb3_cls) -> type:
    """A Config dataclass: RL Zoo keys + every plain-typed argument of the SB3 class."""
    fields = [
        ("n_timesteps", int, dataclasses.field(default=100_000)),
        ("n_envs", int, dataclasses.field(default=1)),
        ("policy", str, dataclasses.field(default="MlpPolicy")),
        ("normalize", bool, dataclasses.field(default=False)),
        ("policy_kwargs", dict, dataclasses.field(default_factory=dict)),
        # One thread, as rlkit's own agents: torch's default (every core) makes a small MLP's
        # updates many times slower on a busy machine. 0 keeps torch's default.
        ("torch_threads", int, dataclasses.field(default=1)),
    ]
    for name, param in inspect.signature(sb3_cls).parameters.items():
        if name in _RESERVED:
            continue
        default = param.default
        if name in _SCHEDULED:  # float, or "lin_<start>" as in the RL Zoo
            tp = Optional[float | str]
        elif isinstance(default, bool):
            tp = bool
        elif isinstance(default, int):
            tp = Union[int, list] if name == "train_freq" else int
        elif isinstance(default, float):
            tp = float
        elif isinstance(default, str):
            tp = Union[float, str]  # e.g. SAC ent_coef "auto" or "auto_0.1" or a float
        elif default is None:
            tp = Optional[float]
        else:
            continue
        fields.append((name, tp, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"{sb3_cls.__name__}Config", fields)


def _schedule(value):
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    if isinstance(value, str):
        raise UsageError(f"schedule '{value}' is not a float or lin_<float>")
    return value


class PaddedNatureCNN(BaseFeaturesExtractor):
    """SB3's NatureCNN with each conv padded to cover its input (rlkit.networks.CNN).

    SB3's own NatureCNN never sees the bottom 4 rows and right 4 columns of a 64 x 64 frame
    (where Catch-v0 draws the paddle); at 84 x 84 the two are the same network.
    """

    def __init__(self, observation_space: spaces.Box):
        c, h, w = observation_space.shape  # SB3 hands image policies channel-first frames
        torso = CNN((h, w, c), "nature")
        super().__init__(observation_space, torso.out_dim)
        self.torso = torso

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # SB3 has already scaled the frames to [0, 1]; the torso takes (N, H, W, C) in [0, 255].
        return self.torso(observations.permute(0, 2, 3, 1) * 255.0)


FEATURES_EXTRACTORS = {"PaddedNatureCNN": PaddedNatureCNN}


def _policy_kwargs(raw: dict) -> dict:
    kwargs = dict(raw)
    extractor = kwargs.get("features_extractor_class")
    if isinstance(extractor, str):
        if extractor not in FEATURES_EXTRACTORS:
            raise UsageError(f"policy_kwargs.features_extractor_class '{extractor}' is not one of "
                             f"{', '.join(FEATURES_EXTRACTORS)}")
        kwargs["features_extractor_class"] = FEATURES_EXTRACTORS[extractor]
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = _activation(kwargs["activation_fn"])
    return kwargs


def _activation(act):
    """An activation class of torch.nn (``ReLU``, ``nn.Tanh``, ``torch.nn.ELU``, or the class), checked
    the way SB3 uses it: built without arguments and applied elementwise. Any other torch.nn name
    (``Module``, ``Linear``, ``MultiheadAttention``) would fail only inside training."""
    import warnings

    cls = getattr(torch.nn, act.split(".")[-1], None) if isinstance(act, str) else act
    ok = (isinstance(cls, type) and issubclass(cls, torch.nn.Module)
          and cls.__module__ in ("torch.nn.modules.activation", "torch.nn.modules.linear"))
    if ok:
        try:
            with warnings.catch_warnings():  # Softmax() warns about its implicit dim
                warnings.simplefilter("ignore")
                ok = tuple(cls()(torch.zeros(2, 3)).shape) == (2, 3)
        except Exception:  # noqa: BLE001  needs arguments, or is not elementwise
            ok = False
    if not ok:
        raise UsageError(f"policy_kwargs.activation_fn '{act}' is not a torch.nn activation "
                         f"(e.g. ReLU, Tanh, ELU, LeakyReLU, SiLU, GELU)")
    return cls


class _StopLearning(Exception):
    """Raised from SB3's rollout-start hook to end ``learn`` on a rollout boundary (see _Bridge)."""


class _Bridge(BaseCallback):
    """Runs rlkit's TrainingCallback (eval, stop, checkpoint) and progress bar from SB3's hooks.

    rlkit's own agents call the callback after each update (rlkit/onpolicy.py ``learn_loop``), so
    an evaluation at step n sees the policy trained on the rollouts up to n. SB3's per-step hook
    fires inside ``collect_rollouts``, before ``train()`` on that rollout: for on-policy algorithms
    the callback therefore runs when the next rollout starts (after ``train()``) and once more when
    learning ends. Off-policy algorithms (DQN, SAC) train every few env steps and keep the per-step
    call. Progress and ``rollout/reward_per_step`` stay per step for both, in the env's reward units
    (SB3's ``rollout/ep_rew_mean`` is too: it comes from the Monitor wrappers under VecNormalize).
    """

    def __init__(self, agent: SB3Agent, callback):
        super().__init__()
        self.agent, self.rlkit_callback = agent, callback
        self.on_policy = isinstance(agent.model, OnPolicyAlgorithm)
        self._reward_sum, self._reward_steps = 0.0, 0

    def _forward(self) -> bool:
        if self.rlkit_callback is None:
            return True
        return bool(self.rlkit_callback.on_step(self.num_timesteps, self.agent))

    def _on_rollout_start(self) -> None:
        # SB3 ignores this hook's return value, and a False from the next _on_step would come after
        # one more env step: stop here instead, so the run ends at the step it was evaluated at.
        if self.on_policy and not self._forward():
            raise _StopLearning

    def _on_step(self) -> bool:
        # Rewards in the env's own units: VecNormalize hands SB3 scaled rewards and keeps the raw ones.
        if self.agent.vecnorm is not None:
            rewards = self.agent.vecnorm.get_original_reward()
        else:
            rewards = self.locals.get("rewards")
        if rewards is not None:
            self._reward_sum += float(np.sum(rewards))
            self._reward_steps += len(rewards)
        if self._reward_steps >= 2048:
            self.agent.logger.scalar("rollout/reward_per_step", self._reward_sum / self._reward_steps,
                                     self.num_timesteps)
            self._reward_sum, self._reward_steps = 0.0, 0
        self.agent.logger.advance(self.num_timesteps)
        return True if self.on_policy else self._forward()

    def _on_training_end(self) -> None:
        if self.on_policy:  # the policy after the last train(); SB3 ignores the return value
            self._forward()


class SB3Agent:
    sb3_class = None  # set by subclasses below
    action_spaces: tuple = (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)
    Config = None

    def __init__(self, env_id: str, config, *, seed: int = 0, device: str = "auto", run_dir: Path | None = None,
                 logger=None, env_kwargs: dict | None = None):
        self.env_id, self.config, self.seed = env_id, config, seed
        self.env_kwargs = dict(env_kwargs or {})
        self.run_dir = run_dir
        self.logger = logger or NullLogger()
        if device == "auto":  # SB3 itself warns that MLP policies are slower on GPU
            device = "cuda" if (config.policy == "CnnPolicy" and torch.cuda.is_available()) else "cpu"
        self.device = device
        venv = make_vec_env(env_id, n_envs=config.n_envs, seed=seed, env_kwargs=self.env_kwargs)
        if not isinstance(venv.action_space, self.action_spaces):
            names = "/".join(s.__name__ for s in self.action_spaces)
            raise UsageError(f"{type(self).__name__} needs a {names} action space; {env_id} has {venv.action_space}")
        # As the RL Zoo does: the reward normaliser discounts with the algorithm's own gamma.
        self.vecnorm = VecNormalize(venv, gamma=getattr(config, "gamma", 0.99)) if config.normalize else None
        hp = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in ("n_timesteps", "n_envs", "policy", "normalize", "policy_kwargs", "torch_threads")}
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        for key in _SCHEDULED & hp.keys():
            hp[key] = _schedule(hp[key])
        if isinstance(hp.get("train_freq"), list):
            hp["train_freq"] = tuple(hp["train_freq"])
        policy = config.policy
        if policy == "MlpPolicy" and isinstance(venv.observation_space, spaces.Dict):
            policy = "MultiInputPolicy"  # SB3's policy for Dict observations (the Zoo names it per env)
        try:
            self.model = self.sb3_class(policy, self.vecnorm or venv, seed=seed, device=device, verbose=0,
                                        policy_kwargs=_policy_kwargs(config.policy_kwargs), **hp)
        except (ValueError, AssertionError, TypeError) as exc:
            raise UsageError(f"{type(self).__name__} rejected its configuration: {exc}") from None
        from stable_baselines3.common.logger import Logger, configure

        # Without a run dir, a silent logger: SB3's default would create /tmp/SB3-<date> dirs.
        self.model.set_logger(configure(str(run_dir), ["tensorboard"]) if run_dir is not None else Logger(None, []))
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space

    @property
    def num_timesteps(self) -> int:
        return int(self.model.num_timesteps)

    def learn(self, total_timesteps: int, callback=None) -> SB3Agent:
        remaining = int(total_timesteps) - self.num_timesteps
        if remaining > 0:
            try:
                self.model.learn(remaining, callback=_Bridge(self, callback), reset_num_timesteps=False,
                                 progress_bar=False)
            except _StopLearning:
                pass
        return self

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        if self.vecnorm is not None:
            obs = self.vecnorm.normalize_obs(obs)
        actions, _ = self.model.predict(obs, deterministic=deterministic)
        return actions

    def save(self, path: Path) -> None:
        state = {"params": self.model.get_parameters()}
        if self.vecnorm is not None:
            state["vecnormalize"] = {
                "obs_mean": torch.as_tensor(self.vecnorm.obs_rms.mean),
                "obs_var": torch.as_tensor(self.vecnorm.obs_rms.var),
                "obs_count": float(self.vecnorm.obs_rms.count), "ret_mean": torch.as_tensor(self.vecnorm.ret_rms.mean),
                "ret_var": torch.as_tensor(self.vecnorm.ret_rms.var), "ret_count": float(self.vecnorm.ret_rms.count)}
        n_updates = int(getattr(self.model, "_n_updates", 0))
        save_checkpoint(path, state, agent_meta(self.algo_name, self, n_updates=n_updates))

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> SB3Agent:
        state, meta = load_checkpoint(path)
        if meta.get("algo") != cls.algo_name:
            raise UsageError(f"checkpoint {path} holds a '{meta.get('algo')}' agent, not '{cls.algo_name}'")
        agent = cls(meta["env_id"], config_from_dict(cls.Config, meta["config"]), seed=int(meta["seed"]),
                    device=device, env_kwargs=meta.get("env_kwargs"))
        try:
            agent.model.set_parameters(state["params"], exact_match=True, device=agent.device)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise UsageError(f"checkpoint {path} does not fit this {cls.algo_name} model: {str(exc)[:120]}") from None
        agent.model.num_timesteps = int(meta["num_timesteps"])
        agent.model._n_updates = int(meta.get("n_updates", 0))
        if agent.vecnorm is not None and "vecnormalize" in state:
            vn = state["vecnormalize"]
            agent.vecnorm.obs_rms.mean, agent.vecnorm.obs_rms.var = vn["obs_mean"].numpy(), vn["obs_var"].numpy()
            agent.vecnorm.obs_rms.count = vn["obs_count"]
            agent.vecnorm.ret_rms.mean, agent.vecnorm.ret_rms.var = vn["ret_mean"].numpy(), vn["ret_var"].numpy()
            agent.vecnorm.ret_rms.count = vn["ret_count"]
        return agent

    def close(self) -> None:
        self.model.get_env().close()


class SB3PPO(SB3Agent):
    algo_name, sb3_class = "sb3-ppo", sb3.PPO
    Config = _make_config(sb3.PPO)


class SB3A2C(SB3Agent):
    algo_name, sb3_class = "sb3-a2c", sb3.A2C
    Config = _make_config(sb3.A2C)


class SB3DQN(SB3Agent):
    algo_name, sb3_class = "sb3-dqn", sb3.DQN
    action_spaces = (spaces.Discrete,)
    Config = _make_config(sb3.DQN)


class SB3SAC(SB3Agent):
    algo_name, sb3_class = "sb3-sac", sb3.SAC
    action_spaces = (spaces.Box,)
    Config = _make_config(sb3.SAC)
