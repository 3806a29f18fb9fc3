"""RLlib PPO (new API stack) behind the rlkit agent protocol (docs/architecture.md §2).

The RLlib counterpart of rlkit/baselines/sb3.py. Config keys are RLlib's own ``PPOConfig``
names (``lr``, ``lambda_``, ``num_epochs``, ``train_batch_size``, ...), so an entry in
agents/hyperparams/rllib-ppo.yaml reads like an RLlib config; ``n_envs`` is
``num_envs_per_env_runner``.

How it runs:
  * One RLlib ``Algorithm``, built by the first ``learn`` (not by the constructor: ``eval`` and
    ``render`` load an agent without starting Ray). Ray is started only through
    rlkit.workers.start_ray (loopback, no dashboard); a Ray this agent started is shut down by
    ``close``.
  * ``--backend local`` (the default) samples in this process (``num_env_runners=0``, ``n_envs``
    copies, vectorised by Gymnasium); ``--backend ray --workers N`` samples in N RLlib env-runner
    actors. The learner is always local. Every process builds the env through ``EnvCreator``,
    which imports ``envs`` first, so the rlkit/* ids exist in Ray's worker processes too.
  * ``learn`` calls ``Algorithm.train()`` (one batch of ``train_batch_size`` env steps, then
    ``num_epochs`` of minibatch SGD on it) and then rlkit's callback: rlkit's evaluation and stop
    check see the policy after each update, as for rlkit's own agents (rlkit/onpolicy.py
    ``learn_loop``) and SB3 (rlkit/baselines/sb3.py ``_Bridge``). RLlib's own evaluation is off.
  * ``predict`` runs a copy of the RLModule kept in this object (the learner's weights, copied
    after every update), greedy by default: the inference distribution's deterministic action,
    i.e. the argmax for Discrete and the Gaussian mean for Box, which is mapped into the Box
    the way RLlib's env runners do (unsquashed from [-1, 1] when ``normalize_actions``) and
    clipped to it.

Checkpoints (docs/architecture.md §7) hold the RLModule's state dict and Adam's state as tensors
plus metadata, written with rlkit.checkpoint; never RLlib's own checkpoint directories.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rlkit.checkpoint import agent_meta, check_spaces, load_checkpoint, save_checkpoint
from rlkit.config import config_from_dict
from rlkit.errors import UsageError, first_line
from rlkit.logger import NullLogger

MODULE_ID = "default_policy"  # RLlib's single-agent module id (ray.rllib.core.DEFAULT_MODULE_ID)
ACTIVATIONS = ("tanh", "relu", "silu", "swish", "elu", "linear")

# rlkit's shared train/* tags (agents/ppo.py, SB3) <- RLlib learner results, learners/default_policy/<key>.
# approx_kl is RLlib's mean KL(old || new) over the last minibatch; RLlib computes it only with use_kl_loss.
TRAIN_TAGS = (("train/loss", "total_loss"), ("train/policy_gradient_loss", "policy_loss"),
              ("train/value_loss", "vf_loss"), ("train/explained_variance", "vf_explained_var"),
              ("train/learning_rate", "default_optimizer_learning_rate"), ("train/kl_coeff", "curr_kl_coeff"))


@dataclass
class Config:
    """RLlib's PPOConfig defaults (ray 2.60), but one env copy sampled in this process."""

    n_timesteps: int = 100_000
    n_envs: int = 1                     # num_envs_per_env_runner
    train_batch_size: int = 4000        # env steps per train() iteration
    minibatch_size: int = 128
    num_epochs: int = 30
    lr: float = 5e-5
    gamma: float = 0.99
    lambda_: float = 1.0                # GAE lambda
    clip_param: float = 0.3
    vf_clip_param: float = 10.0         # clips the squared value error, in reward units squared
    vf_loss_coeff: float = 1.0
    entropy_coeff: float = 0.0
    use_kl_loss: bool = True
    kl_coeff: float = 0.2               # initial coefficient of the adaptive KL penalty
    kl_target: float = 0.01
    grad_clip: float | None = None
    fcnet_hiddens: list[int] = field(default_factory=lambda: [256, 256])
    fcnet_activation: str = "tanh"
    vf_share_layers: bool = False
    torch_threads: int = 1              # as rlkit's agents; 0 keeps torch's default (every core)

    def validate(self) -> None:
        for name in ("n_timesteps", "n_envs", "train_batch_size", "minibatch_size", "num_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must be <= train_batch_size "
                             f"({self.train_batch_size})")
        for name in ("lr", "clip_param", "vf_clip_param", "kl_target"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("vf_loss_coeff", "entropy_coeff", "kl_coeff", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "lambda_"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if not self.fcnet_hiddens or any(n < 1 for n in self.fcnet_hiddens):
            raise ValueError(f"fcnet_hiddens must be a non-empty list of layer sizes >= 1, got {self.fcnet_hiddens}")
        if self.fcnet_activation not in ACTIVATIONS:
            raise ValueError(f"fcnet_activation '{self.fcnet_activation}' is not one of {', '.join(ACTIVATIONS)}")


class EnvCreator:
    """RLlib's env creator for one env id: ``gym.make(env_id, **env_config)`` in whichever process
    RLlib calls it. It imports ``envs`` first: a gym.register in the driver is not seen by other
    processes (docs/architecture.md §8; rlkit.plugins). A module-level class, so Ray pickles it by reference."""

    def __init__(self, env_id: str):
        self.env_id = env_id

    def __call__(self, env_config) -> gym.Env:
        from rlkit.plugins import import_in_worker

        import_in_worker()  # registers the rlkit/* ids and the user's env packages in this process

        return gym.make(self.env_id, **dict(env_config or {}))


@contextmanager
def _quiet_rllib():
    """RLlib logs warnings meant for its own users while an Algorithm is built (the new API stack
    is the default, an internal deprecation of RLModule(config=...), no GPU monitoring), and
    Gymnasium warns when RLlib registers its env id again for a second Algorithm in one process
    (``train --seeds``): keep them off the CLI's stderr during the build only; warnings during
    training still show."""
    loggers = [logging.getLogger(name) for name in ("ray.rllib", "ray.tune", "ray._common.deprecation")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Overriding environment rllib-single-agent-env")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _to_torch(value):
    """RLlib's numpy state (dicts, lists, arrays, numpy scalars) as tensors and plain values,
    which ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_torch(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


class RLlibPPO:
    algo_name = "rllib-ppo"
    Config = Config
    supports_ray = True  # --backend ray: RLlib env-runner actors sample, the learner stays here
    runs_on_ray = True  # with --backend local too (rlkit/training.py): --ray-address names the Ray it joins
    observation_spaces: tuple = (spaces.Box,)
    action_spaces: tuple = (spaces.Discrete, spaces.Box)

    def __init__(self, env_id: str, config: Config, *, seed: int = 0, device: str = "auto", run_dir: Path | None = None,
                 logger=None, env_kwargs: dict | None = None, backend: str = "local", workers: int | None = None,
                 ray_address: str | None = None):
        self.env_id, self.config, self.seed = env_id, config, int(seed)
        self.env_kwargs = dict(env_kwargs or {})
        self.run_dir = run_dir
        self.logger = logger or NullLogger()
        # MLP policies: the CPU. A GPU learner only when asked for (--device cuda[:i]); predict() and
        # checkpoints use the CPU copy of the module either way.
        self.device = "cpu" if device == "auto" else str(device)
        self.backend, self.ray_address = backend, ray_address
        if backend != "ray" and workers is not None and int(workers) > 1:
            raise UsageError(f"{self.algo_name} samples in this process with --backend local; --workers {workers} "
                             "needs --backend ray (RLlib env-runner actors)")
        self.workers = int(workers or 1) if backend == "ray" else 0
        if config.torch_threads > 0:  # the learner and the local env runner run in this process
            torch.set_num_threads(config.torch_threads)

        env = EnvCreator(env_id)(self.env_kwargs)
        try:
            self.observation_space, self.action_space = env.observation_space, env.action_space
        finally:
            env.close()
        for kind, space, accepted in (("observation", self.observation_space, self.observation_spaces),
                                      ("action", self.action_space, self.action_spaces)):
            if not isinstance(space, accepted):
                names = "/".join(t.__name__ for t in accepted)
                raise UsageError(f"{self.algo_name} needs a {names} {kind} space; {env_id} has {space}")
        if len(self.observation_space.shape) != 1:  # RLlib's default CNN fails on uint8 frames as they come
            raise UsageError(f"{self.algo_name} supports flat (1-D) Box observations; {env_id} has "
                             f"{self.observation_space}")
        if isinstance(self.action_space, spaces.Box) and not self.action_space.is_bounded():
            raise UsageError(f"{self.algo_name} needs a bounded Box action space; {env_id} has {self.action_space}")

        self._rllib_config = self._make_rllib_config()
        spec = self._rllib_config.get_rl_module_spec(
            spaces={MODULE_ID: (self.observation_space, self.action_space)}, inference_only=False)
        with _quiet_rllib():
            self.module = spec.build()  # the policy predict() runs; the learner's weights after each update
        self.module.eval()
        self.algo = None
        self._owns_ray = False
        self._steps = 0            # env steps sampled, over every learn() and resume
        self._steps_at_build = 0   # self._steps when the Algorithm was built (RLlib counts from 0)
        self._restore = None       # (module state, optimizer state) of a loaded checkpoint, for the Algorithm
        self._kl_coeff: float | None = None  # the adaptive KL coefficient, from the last train() result

    # --- RLlib objects -------------------------------------------------------------------
    def _make_rllib_config(self, kl_coeff: float | None = None):
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        c = self.config
        gpu = torch.device(self.device) if self.device.startswith("cuda") else None  # the learner's device
        try:
            rc = (PPOConfig()
                  .framework("torch")
                  .environment(self.env_id, env_config=dict(self.env_kwargs))
                  .env_runners(num_env_runners=self.workers, num_envs_per_env_runner=c.n_envs)
                  .learners(num_learners=0, num_gpus_per_learner=1 if gpu is not None else 0,
                            local_gpu_idx=(gpu.index or 0) if gpu is not None else 0)
                  .training(lr=c.lr, gamma=c.gamma, lambda_=c.lambda_, train_batch_size=c.train_batch_size,
                            minibatch_size=c.minibatch_size, num_epochs=c.num_epochs, clip_param=c.clip_param,
                            vf_clip_param=c.vf_clip_param, vf_loss_coeff=c.vf_loss_coeff,
                            entropy_coeff=c.entropy_coeff, use_kl_loss=c.use_kl_loss,
                            kl_coeff=c.kl_coeff if kl_coeff is None else kl_coeff, kl_target=c.kl_target,
                            grad_clip=c.grad_clip)
                  .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(c.fcnet_hiddens),
                                                             fcnet_activation=c.fcnet_activation,
                                                             vf_share_layers=c.vf_share_layers))
                  .debugging(seed=self.seed))
            with _quiet_rllib():
                rc.validate()
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{self.algo_name} rejected its configuration: {first_line(exc)}") from None
        return rc

    def _build_algo(self) -> None:
        """Start (or join) Ray, build the Algorithm, and hand it a loaded checkpoint's state."""
        import ray
        from ray.tune.registry import register_env

        from rlkit.workers import start_ray

        self._owns_ray = start_ray(address=self.ray_address) or self._owns_ray
        cpus = ray.cluster_resources().get("CPU", 0)
        if self.workers > cpus:  # the env-runner actors would wait for CPUs forever
            raise UsageError(f"--workers {self.workers} needs {self.workers} CPUs but the Ray cluster has {cpus:g}")
        # Registered under the env id itself, so config.env stays the id; RLlib looks creators up by name.
        register_env(self.env_id, EnvCreator(self.env_id))
        rc = self._rllib_config if self._kl_coeff is None else self._make_rllib_config(kl_coeff=self._kl_coeff)
        with _quiet_rllib():
            self.algo = rc.build_algo()
        self._steps_at_build = self._steps
        if self._restore is not None:
            module_state, optimizer_state = self._restore
            state = {"rl_module": {MODULE_ID: module_state}}
            if optimizer_state:
                state["optimizer"] = optimizer_state
            self.algo.learner_group.set_state({"learner": state})
            self.algo.env_runner_group.sync_weights(from_worker_or_learner_group=self.algo.learner_group,
                                                    inference_only=True)
            self._restore = None
        self._pull_weights()

    def _pull_weights(self) -> None:
        weights = self.algo.learner_group.get_weights(module_ids=[MODULE_ID])[MODULE_ID]
        self.module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()}, strict=True)

    # --- the protocol --------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return int(self._steps)

    def learn(self, total_timesteps: int, callback=None) -> RLlibPPO:
        """``Algorithm.train()`` until ``total_timesteps`` env steps, rlkit's callback after each."""
        while self.num_timesteps < int(total_timesteps):
            if self.algo is None:
                self._build_algo()
            result = self.algo.train()
            self._steps = self._steps_at_build + int(result["num_env_steps_sampled_lifetime"])
            self._pull_weights()
            self._log(result)
            if callback is not None and not callback.on_step(self.num_timesteps, self):
                break
        return self

    def _log(self, result: dict) -> None:
        """RLlib's result -> rlkit's shared tags at x = env steps (rlkit/logger.py)."""
        step, log = self.num_timesteps, self.logger
        # Means over the (at most 100 last) episodes that ended in this iteration: absent before the
        # first episode ends, NaN in an iteration where none did (Logger.scalar skips NaN). RLlib 2.60's
        # episode length counts one step too many for every train() boundary an episode spans, so
        # ep_len_mean reads slightly high (CartPole at 500: about 501) and no reward per step is
        # derived from it; the returns are exact.
        runners = result.get("env_runners") or {}
        for tag, key in (("rollout/ep_rew_mean", "episode_return_mean"), ("rollout/ep_len_mean", "episode_len_mean")):
            if runners.get(key) is not None:
                log.scalar(tag, float(runners[key]), step)
        stats = (result.get("learners") or {}).get(MODULE_ID) or {}
        for tag, key in TRAIN_TAGS:
            if key in stats:
                log.scalar(tag, float(stats[key]), step)
        if "entropy" in stats:
            log.scalar("train/entropy_loss", -float(stats["entropy"]), step)  # SB3's sign
        if self.config.use_kl_loss and "mean_kl_loss" in stats:
            log.scalar("train/approx_kl", float(stats["mean_kl_loss"]), step)
        if "curr_kl_coeff" in stats:
            self._kl_coeff = float(stats["curr_kl_coeff"])
        log.rollout_summary(step)  # time/fps and the progress bar
        ret = runners.get("episode_return_mean")
        if ret is not None and np.isfinite(ret):  # the bar's "ret", which rlkit's agents show too
            log.advance(step, ret=f"{float(ret):.1f}")

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        from ray.rllib.core.columns import Columns

        obs_t = torch.as_tensor(np.asarray(obs, dtype=self.observation_space.dtype))
        if obs_t.dtype == torch.float64:  # RLlib's connectors hand the module float32
            obs_t = obs_t.float()
        with torch.no_grad():
            logits = self.module.forward_inference({Columns.OBS: obs_t})[Columns.ACTION_DIST_INPUTS]
            if deterministic:
                dist = self.module.get_inference_action_dist_cls().from_logits(logits).to_deterministic()
            else:
                dist = self.module.get_exploration_action_dist_cls().from_logits(logits)
            actions = dist.sample().cpu().numpy()
        space = self.action_space
        if isinstance(space, spaces.Box):
            if self._rllib_config.normalize_actions:  # the module acts in [-1, 1] (RLlib's unsquash)
                actions = space.low + (actions + 1.0) * (space.high - space.low) / 2.0
            return np.clip(actions, space.low, space.high).astype(space.dtype)
        return actions.astype(np.int64)

    def save(self, path: Path) -> None:
        state = {"module": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}}
        optimizer = None
        if self.algo is not None:
            learner = self.algo.learner_group.get_state(components="learner/optimizer")["learner"]
            optimizer = _to_torch(learner.get("optimizer") or {})
        elif self._restore is not None:  # loaded and not trained since: keep what was loaded
            optimizer = self._restore[1]
        if optimizer:  # {optimizer name: {"module_id", "state": torch's Adam state_dict}}
            state["optimizer"] = optimizer
        import ray

        save_checkpoint(path, state, agent_meta(self.algo_name, self, kl_coeff=self._kl_coeff, backend=self.backend,
                                                workers=self.workers or None, ray=ray.__version__))

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> RLlibPPO:
        state, meta = load_checkpoint(path)
        if meta.get("algo") != cls.algo_name:
            raise UsageError(f"checkpoint {path} holds a '{meta.get('algo')}' agent, not '{cls.algo_name}'")
        config = config_from_dict(cls.Config, meta["config"])
        try:
            config.validate()
        except ValueError as exc:
            raise UsageError(f"checkpoint {path} has an invalid configuration: {exc}") from None
        backend = meta.get("backend") if meta.get("backend") in ("local", "ray") else "local"
        agent = cls(meta["env_id"], config, seed=int(meta["seed"]), device=device, env_kwargs=meta.get("env_kwargs"),
                    backend=backend, workers=meta.get("workers"))
        check_spaces(meta, agent.observation_space, agent.action_space, where=f"checkpoint {path}")
        module_state = state.get("module") if isinstance(state, dict) else None
        if not isinstance(module_state, dict):
            raise UsageError(f"checkpoint {path} has no RLModule state")
        try:
            agent.module.load_state_dict(module_state, strict=True)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise UsageError(f"checkpoint {path} does not fit this {cls.algo_name} model: {reason}") from None
        agent._steps = int(meta["num_timesteps"])
        kl = meta.get("kl_coeff")
        agent._kl_coeff = float(kl) if isinstance(kl, (int, float)) and not isinstance(kl, bool) else None
        agent._restore = ({k: v.clone() for k, v in module_state.items()}, state.get("optimizer") or None)
        return agent

    def close(self) -> None:
        algo, self.algo = self.algo, None
        try:
            if algo is not None:
                logdir = getattr(algo, "logdir", None)
                algo.stop()
                _remove_empty_logdir(logdir)
        finally:
            if self._owns_ray:
                import ray

                self._owns_ray = False
                ray.shutdown()


def _remove_empty_logdir(logdir) -> None:
    """RLlib's Algorithm (a Tune Trainable) makes an empty ~/ray_results/<date><random> folder even
    when nothing is logged there; rlkit logs to the run directory, so an empty one is removed."""
    if not logdir:
        return
    from ray.train.constants import DEFAULT_STORAGE_PATH

    path = Path(logdir)
    if path.parent == Path(DEFAULT_STORAGE_PATH) and path.is_dir():
        try:
            os.rmdir(path)  # only if empty
        except OSError:
            pass
