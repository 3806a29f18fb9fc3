"""What an on-policy agent needs besides its maths, as parts that compose.

REINFORCE, Actor-Critic and PPO keep only their loss and update in their own file. The rest is
four parts with one job each (docs/architecture.md, "On-policy agents"):

- ``EnvFactory`` (rlkit.environments): how to build the training env; picklable, so any process
  can build its own copies.
- ``Normalizers`` (rlkit.normalization): observation / return statistics, owned by the learner.
- ``ActorCritic`` (rlkit.networks): the model.
- ``Collector`` (below): one process's env copies around a model it is given, producing ``Batch``es.

A Hogwild worker builds a ``Collector`` around the shared-memory model, a rollout worker
(``RolloutWorker``, a Ray actor or a spawn process) around its CPU copy; ``learn_loop`` takes any
object with ``collect() -> Batch``, so ``ParallelCollector``, which gathers the workers' rollouts
into one ``Batch``, plugs in where the local one is (``--workers N``, ``--backend ray``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, fields

import numpy as np
import torch

from rlkit.checkpoint import agent_meta, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from rlkit.environments import EnvFactory, NotPlainData, env_state, load_env_state, seed_everything
from rlkit.errors import UsageError
from rlkit.networks import CNNS, ActorCritic, is_image_space, resolve_device
from rlkit.normalization import Normalizers
from rlkit.rollout import Batch, Rollout, env_action
from rlkit.spaces import model_input


def check_common_options(c) -> None:
    """Validate the config fields every on-policy agent shares (ValueError -> exit 2): everything
    ``build_parts`` and ``learn_loop`` read, so a config that passes builds and trains."""
    import math

    from rlkit.networks import ACTIVATIONS

    for name in ("n_envs", "n_steps", "frame_stack"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    limit = getattr(c, "train_time_limit", None)
    if limit is not None and limit < 1:
        raise ValueError(f"train_time_limit must be >= 1 or null, got {limit}")
    if c.cnn not in CNNS:
        raise ValueError(f"cnn '{c.cnn}' is not one of {', '.join(CNNS)}")
    if c.activation not in ACTIVATIONS:
        raise ValueError(f"activation '{c.activation}' is not one of {', '.join(ACTIVATIONS)}")
    if any(h < 1 for h in c.hidden):
        raise ValueError(f"hidden layer sizes must be >= 1, got {list(c.hidden)}")
    if getattr(c, "n_timesteps", 1) < 1:
        raise ValueError(f"n_timesteps must be >= 1, got {c.n_timesteps}")
    if c.torch_threads < 0:
        raise ValueError(f"torch_threads must be >= 0 (0: torch's default), got {c.torch_threads}")
    if not (math.isfinite(c.learning_rate) and c.learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {c.learning_rate}")
    if not 0 <= c.gamma <= 1:
        raise ValueError(f"gamma must lie in [0, 1], got {c.gamma}")
    lam = getattr(c, "gae_lambda", None)
    if lam is not None and not 0 <= lam <= 1:
        raise ValueError(f"gae_lambda must lie in [0, 1], got {lam}")
    objective = getattr(c, "objective", None)
    if objective is not None and objective not in ("discounted", "average"):
        raise ValueError(f"objective '{objective}' is not one of discounted, average")
    grad = getattr(c, "max_grad_norm", None)
    if grad is not None and not (math.isfinite(grad) and grad > 0):
        raise ValueError(f"max_grad_norm must be a finite number > 0 (or null where allowed), got {grad}")
    for name in ("vf_coef", "ent_coef", "log_std_init"):
        value = getattr(c, name, 0.0)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if getattr(c, "vf_coef", 0.0) < 0:
        raise ValueError(f"vf_coef must be >= 0, got {c.vf_coef}")
    if abs(getattr(c, "log_std_init", 0.0)) > 20:  # exp(±20) is as far as a std should start
        raise ValueError(f"log_std_init must lie in [-20, 20], got {c.log_std_init}")
    if getattr(c, "sde_sample_freq", -1) < -1:
        raise ValueError(f"sde_sample_freq must be -1 (once per rollout) or >= 0, got {c.sde_sample_freq}")
    clip = getattr(c, "norm_clip", None)
    if clip is not None and not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"norm_clip must be a finite number > 0 or null, got {clip}")
    avg_lr = getattr(c, "avg_reward_lr", None)
    if avg_lr is not None and not 0 < avg_lr <= 1:
        raise ValueError(f"avg_reward_lr must lie in (0, 1], got {avg_lr}")
    for name in ("adam_eps", "optim_eps"):
        value = getattr(c, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")


class Collector:
    """One process's source of experience: ``n_envs`` copies of the training env, wrapped by the
    learner's normalisers, stepped by ``model`` for ``n_steps`` per ``collect()``.

    Copy ``i`` of the collector of rank ``r`` is seeded ``seed + r * n_envs + i``, so workers never
    replay each other's episodes.
    """

    def __init__(self, env_factory: EnvFactory, model: ActorCritic, normalizers: Normalizers, *,
                 n_envs: int, n_steps: int, seed: int, rank: int = 0):
        first_seed = seed + rank * n_envs
        self.venv = env_factory.make(n_envs, seed=first_seed)
        self.env = normalizers.wrap(self.venv)
        self.model = model
        device = next(model.parameters()).device
        self.rollout = Rollout(self.env, n_steps, device, seed=first_seed)
        self.step = 0  # steps into the current rollout (gSDE's noise schedule)

    def policy_step(self, obs: torch.Tensor):
        """Sample actions for a rollout: (actions, log-probs, values; zeros without a critic).

        gSDE (``use_sde``): new exploration matrices at the start of every rollout, and every
        ``sde_sample_freq`` steps within it when that is > 0 (SB3's schedule)."""
        head = self.model.head
        freq = head.sde_sample_freq
        if head.sde and (self.step == 0 or (freq > 0 and self.step % freq == 0)):
            head.reset_noise(obs.shape[0])
        self.step += 1
        dist, value = self.model(obs)
        actions = dist.sample()
        if value is None:
            value = torch.zeros(obs.shape[0], device=obs.device)
        return actions, dist.log_prob(actions), value

    def collect(self) -> Batch:
        self.step = 0
        return self.rollout.collect(self.policy_step)

    def state(self) -> dict | None:
        """Where the envs are: their plain-data state, the current observations and which copies
        are due an autoreset step. A resumed run continues these episodes (exact resume). None for
        an env whose state is not plain data (a physics engine's): a resumed run restarts them."""
        try:
            envs = env_state(self.env)
        except NotPlainData:
            return None
        return {"env": envs, "obs": self.rollout.obs.cpu(), "resetting": self.rollout.resetting.cpu(),
                "vector_env": vector_env_name(self.env)}

    def load_state(self, state: dict) -> None:
        """Continue the saved episodes; if the run was saved with another vector env class (a Sync env
        then a native one, envs/classic_vector.py, or back with RLKIT_NATIVE_VECTOR=0), whose state does
        not fit this one, start fresh episodes instead, as after a physics engine's env."""
        saved = state.get("vector_env")
        if saved is not None and saved != vector_env_name(self.env):
            return
        load_env_state(self.env, state["env"])
        self.rollout.obs = state["obs"].to(self.rollout.device)
        self.rollout.resetting = state["resetting"].to(self.rollout.device)

    def close(self) -> None:
        import warnings

        with warnings.catch_warnings():  # async_envs stopped inside a step (Ctrl-C before the first update):
            warnings.filterwarnings("ignore", "(?s).*while waiting for a pending call")  # close waits for it
            self.env.close()


def vector_env_name(venv) -> str:
    """The class of the vector env under the wrappers: which kind of state a checkpoint holds."""
    base = getattr(venv, "unwrapped", venv)
    return f"{type(base).__module__}.{type(base).__qualname__}"


class RolloutWorker:
    """A rollout worker (rlkit.workers): a CPU copy of the learner's model around a ``Collector``
    of its own. Each ``collect`` brings the learner's weights and normaliser statistics and returns
    the rollout as numpy arrays, with the moments of the observations (and returns) it normalised,
    which the learner merges into its statistics."""

    def __init__(self, rank: int, env_factory: EnvFactory, config, critic: bool, normalizers: Normalizers, *,
                 n_envs: int, n_steps: int, seed: int):
        import envs  # noqa: F401  a gym.register in the driver is not seen by other processes

        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        seed_everything(seed + rank)  # each worker samples its own actions
        _, model_obs_space, action_space = env_factory.spaces()
        # Built from the config, not shipped: its weights arrive with every collect() call.
        self.model, self.normalizers = make_model(model_obs_space, action_space, config, critic), normalizers
        self.collector = Collector(env_factory, self.model, normalizers, n_envs=n_envs, n_steps=n_steps,
                                   seed=seed, rank=rank)

    def collect(self, weights, statistics: dict) -> tuple[dict, dict]:
        from rlkit.workers import shared

        self.model.load_state_dict(shared(weights))
        self.normalizers.load_state(statistics)
        batch = self.collector.collect()
        arrays = {f.name: getattr(batch, f.name) for f in fields(batch)}
        arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in arrays.items()}
        return arrays, self.normalizers.take_updates()

    def pid(self) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        self.collector.close()


def env_step_seconds(env_factory: EnvFactory, steps: int = 200, budget_s: float | None = None) -> float:
    """Wall time of one step of one env copy with random actions (for the cheap-env warning).
    ``budget_s``: stop early once the probe has taken that long (an expensive env is clearly not
    cheap after a few steps; the start of a run should not wait for 200 of them)."""
    from dataclasses import replace

    venv = replace(env_factory, async_envs=False).make(1, seed=0)  # the step itself, not a pipe's round trip
    try:
        venv.reset(seed=0)
        venv.action_space.seed(0)
        t0, done = time.perf_counter(), 0
        while done < steps:
            venv.step(venv.action_space.sample())
            done += 1
            if budget_s is not None and time.perf_counter() - t0 > budget_s:
                break
        return (time.perf_counter() - t0) / done
    finally:
        venv.close()


# Below this per-step cost an env is cheaper to step than the messages that ship its rollouts
# between processes: bench/ray_scaling.py measured CartPole-v1 (~80 µs a step through the vector
# wrappers) at 0.59x of one process with two Ray workers, CarRacing-v3 (~10 ms) at 1.65x; where
# between the two the break-even lies was not measured.
CHEAP_STEP_S = 2e-4


class ParallelCollector:
    """``collect() -> Batch`` from ``n_workers`` rollout workers: one weights message per update
    (one object-store ``put`` on Ray), the workers' numpy rollouts concatenated along the env axis
    into one ``Batch`` on the learner's device (masks and truncation flags as the workers recorded
    them), their normaliser moments merged into the learner's statistics.

    ``n_envs`` is the total over workers; worker ``r`` steps copies ``r * n_envs / n_workers + i``,
    seeded exactly as the local collector seeds the same copies."""

    def __init__(self, parts: OnPolicyParts, c, *, seed: int, backend: str, n_workers: int,
                 ray_address: str | None = None):
        from rlkit.workers import WorkerGroup

        self.parts = parts
        if backend == "ray":
            step_s = env_step_seconds(parts.env_factory, budget_s=0.1)
            if step_s < CHEAP_STEP_S:
                print(f"warning: one {parts.env_factory.env_id} step takes {step_s * 1e6:.0f} µs: shipping rollouts "
                      "between Ray actors costs more than the workers save; --backend local is likely faster",
                      file=sys.stderr)
        worker_normalizers = Normalizers(parts.env_factory.spaces()[1], norm_obs=parts.normalizers.obs_rms is not None,
                                         norm_reward=parts.normalizers.return_rms is not None,
                                         gamma=parts.normalizers.gamma, clip=parts.normalizers.clip, record=True)
        kwargs = dict(n_envs=c.n_envs // n_workers, n_steps=c.n_steps, seed=seed)
        critic = parts.model.value is not None
        self.group = WorkerGroup(RolloutWorker, (parts.env_factory, c, critic, worker_normalizers), kwargs,
                                 n_workers=n_workers, backend=backend, ray_address=ray_address, in_process=False)

    def collect(self) -> Batch:
        parts = self.parts
        weights = {k: v.detach().cpu() for k, v in parts.model.state_dict().items()}
        results = self.group.broadcast("collect", self.group.share(weights), parts.normalizers.state())
        for _, moments in results:
            parts.normalizers.merge_updates(moments)
        rollouts = [arrays for arrays, _ in results]

        def joined(name: str, axis: int):
            return torch.as_tensor(np.concatenate([r[name] for r in rollouts], axis=axis), device=parts.device)

        per_step = {f.name: joined(f.name, 1) for f in fields(Batch) if f.name not in
                    ("next_obs", "episode_returns", "episode_lengths")}
        return Batch(**per_step, next_obs=joined("next_obs", 0),
                     episode_returns=np.concatenate([r["episode_returns"] for r in rollouts]),
                     episode_lengths=np.concatenate([r["episode_lengths"] for r in rollouts]))

    def close(self) -> None:
        self.group.close()


@dataclass
class OnPolicyParts:
    """The parts an on-policy learner holds; built once by ``build_parts`` for all three agents."""

    env_factory: EnvFactory
    normalizers: Normalizers
    model: ActorCritic
    collector: Collector | None
    device: torch.device
    observation_space: object  # the env's own (checked against checkpoints)
    action_space: object
    resume_rng: dict | None = None  # a checkpoint's RNG state, applied when training continues

    @torch.no_grad()
    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        """Actions for the env's own observations (a dict for a Dict env, an int for Discrete), one
        or a batch as a vector env gives them: flattened as in training (rlkit.spaces.model_input)."""
        obs, single = model_input(self.model.obs_space, obs)
        obs = self.normalizers.normalize_obs(obs)
        dist = self.model.actor(torch.as_tensor(obs, device=self.device))
        actions = env_action(dist.mode() if deterministic else dist.sample(), self.action_space)
        return actions[0] if single else actions

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()


def make_model(model_obs_space, action_space, c, critic: bool = True) -> ActorCritic:
    return ActorCritic(model_obs_space, action_space, hidden=c.hidden, activation=c.activation, shared=c.shared,
                       log_std_init=c.log_std_init, critic=critic, cnn=c.cnn, sde=getattr(c, "use_sde", False),
                       sde_sample_freq=getattr(c, "sde_sample_freq", -1), ortho_init=getattr(c, "ortho_init", True))


def build_parts(env_id: str, env_kwargs: dict, c, *, seed: int, device: str, critic: bool = True,
                seed_globals: bool = True, collector: bool = True) -> OnPolicyParts:
    """Env factory, normalisers, model and the learner's own collector from an agent's config ``c``.

    ``seed_globals`` seeds Python, numpy and torch first, so the same seed gives the same initial
    weights and samples; ``load`` passes False: a loaded agent leaves the process's RNGs alone for
    eval and render, and restores the checkpoint's RNG state only when it trains on. ``collector``
    False leaves the learner without envs of its own (A3C: only its workers collect).
    """
    if seed_globals:
        seed_everything(seed)
    if c.torch_threads > 0:
        torch.set_num_threads(c.torch_threads)  # tiny MLPs run fastest on one thread
    factory = EnvFactory(env_id, dict(env_kwargs), c.frame_stack, getattr(c, "train_time_limit", None),
                         getattr(c, "async_envs", False))
    obs_space, model_obs_space, action_space = factory.spaces()
    # Pixels are scaled to [0, 1] by the CNN instead of normalised.
    norm_obs = c.norm_obs and not is_image_space(model_obs_space)
    normalizers = Normalizers(model_obs_space, norm_obs=norm_obs, norm_reward=c.norm_reward, gamma=c.gamma,
                              clip=c.norm_clip)
    device = resolve_device(device, model_obs_space)
    # A loaded agent's weights come from its checkpoint: its throwaway initial ones are drawn from a
    # forked RNG, so loading leaves the process's random stream where it was.
    with contextlib.nullcontext() if seed_globals else torch.random.fork_rng(devices=[]):
        model = make_model(model_obs_space, action_space, c, critic).to(device)
    own = Collector(factory, model, normalizers, n_envs=c.n_envs, n_steps=c.n_steps, seed=seed) if collector else None
    return OnPolicyParts(factory, normalizers, model, own, device, obs_space, action_space)


def setup_agent(agent, env_id: str, config, *, seed: int, device: str, env_kwargs: dict | None, logger,
                run_dir, seed_globals: bool, critic: bool = True, collector: bool = True,
                backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> None:
    """The fields every on-policy agent has, set once for all three: its identity (env_id, config,
    seed, env_kwargs), logger and run directory, ``parts`` (with ``model`` and ``device`` at hand),
    the env's spaces, the step counter, whether the task is continuing and where its rollouts
    come from (``set_backend``). The agent then adds whatever its maths keeps (e.g. ρ̄); its
    optimizer is a ``LazyOptimizer`` class attribute, built when training first uses it."""
    from rlkit.environments import is_continuing
    from rlkit.logger import NullLogger

    agent.env_id, agent.config, agent.seed = env_id, config, seed
    agent.env_kwargs = dict(env_kwargs or {})
    agent.logger, agent.run_dir = logger or NullLogger(), run_dir
    set_backend(agent, backend, workers, ray_address)  # checked before any env is built
    agent.parts = build_parts(env_id, agent.env_kwargs, config, seed=seed, device=device, critic=critic,
                              seed_globals=seed_globals, collector=collector and not agent.parallel)
    agent.model, agent.device = agent.parts.model, agent.parts.device
    agent.observation_space, agent.action_space = agent.parts.observation_space, agent.parts.action_space
    agent.num_timesteps = 0
    agent.continuing = is_continuing(env_id)


def set_backend(agent, backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> None:
    """Where the agent's rollouts come from: its own env copies (local backend, one worker), or
    ``workers`` rollout workers, spawn processes (local) or Ray actors (ray; default: one per core),
    sharing ``n_envs`` between them. A resumed run calls it again with its config.yaml's settings."""
    import os

    if backend not in ("local", "ray"):
        raise UsageError(f"--backend '{backend}' is not one of local, ray")
    n = int(workers or (os.cpu_count() or 1 if backend == "ray" else 1))
    if agent.config.n_envs % n:
        raise UsageError(f"--workers {n} must divide n_envs ({agent.config.n_envs}): each worker steps "
                         "n_envs / workers copies of the env (set n_envs with --n-envs)")
    if getattr(agent.config, "async_envs", False) and (backend == "ray" or n > 1):
        raise UsageError(f"async_envs runs the learner's own env copies in processes of their own; with "
                         f"--backend {backend} --workers {n} the rollout workers step theirs in parallel already "
                         "(leave async_envs false, or use one worker on the local backend)")
    if backend == "ray" and ray_address:
        from rlkit.workers import check_reachable

        check_reachable(ray_address)  # before any env is built or run directory written
    agent.backend, agent.n_workers, agent.ray_address = backend, n, ray_address
    agent.parallel = backend == "ray" or n > 1


@contextlib.contextmanager
def rollout_source(agent):
    """The collector ``learn`` uses: the agent's own, or rollout workers for the duration of ``learn``
    (started, and a local Ray with them, on entry; stopped on exit, also on errors and Ctrl-C)."""
    parts = agent.parts
    if not agent.parallel:
        if parts.collector is None:  # built for workers, resumed without them
            c = agent.config
            parts.collector = Collector(parts.env_factory, parts.model, parts.normalizers, n_envs=c.n_envs,
                                        n_steps=c.n_steps, seed=agent.seed + agent.num_timesteps)
        yield parts.collector
        return
    # A resumed run's workers start new episodes: seeds past the ones its start used.
    collector = ParallelCollector(parts, agent.config, seed=agent.seed + agent.num_timesteps, backend=agent.backend,
                                  n_workers=agent.n_workers, ray_address=agent.ray_address)
    agent.rollout_workers = collector  # while learn runs: the workers, for diagnostics and tests
    try:
        yield collector
    finally:
        agent.rollout_workers = None
        collector.close()


def learn(agent, total_timesteps: int, callback=None):
    """``learn_loop`` over the agent's rollout source (its own envs or rollout workers)."""
    with rollout_source(agent) as collector:
        return learn_loop(agent, collector, total_timesteps, callback)


def learn_loop(agent, collector, total_timesteps: int, callback=None):
    """The loop every on-policy agent shares; the algorithm itself is ``agent.update(batch)``.

    Per iteration: decay the learning rate linearly to 0 at ``total_timesteps`` (``config.anneal_lr``;
    a resumed run passes the same total, so it keeps the same schedule), collect one rollout
    from ``collector`` (the agent's own, or a parallel one), update, log the shared tags, then ask
    the callback whether to go on.
    """
    c, parts = agent.config, agent.parts
    if parts.resume_rng is not None:
        set_rng_state(parts.resume_rng)
        parts.resume_rng = None
    while agent.num_timesteps < total_timesteps:
        if c.anneal_lr:
            frac = 1.0 - agent.num_timesteps / total_timesteps  # over this run's --steps, as SB3 does
            for group in agent.optimizer.param_groups:
                group["lr"] = frac * c.learning_rate
        batch = collector.collect()
        agent.num_timesteps += batch.rewards.numel()
        agent.logger.episodes(batch.episode_returns, batch.episode_lengths)
        stats = agent.update(batch)
        stats["train/learning_rate"] = agent.optimizer.param_groups[0]["lr"]
        agent.logger.scalars(stats, agent.num_timesteps)
        agent.logger.rollout_summary(agent.num_timesteps, batch.reward_rate() if agent.continuing else None)
        if callback is not None and not callback.on_step(agent.num_timesteps, agent):
            break
    return agent


class LazyOptimizer:
    """An agent's ``optimizer``, built on first use: ``optimizer = LazyOptimizer(lambda agent: ...)``
    in the agent's class.

    Constructing any torch optimizer imports torch's compiler stack (``torch._dynamo``, ~1 s: its
    ``add_param_group`` is wrapped by ``torch._disable_dynamo``), which an agent loaded for eval or
    render never needs. A checkpoint's optimizer state (``restore_optimizer``) is kept as loaded
    until the optimizer is built, then loaded into it, so a resumed run trains on the saved
    statistics exactly as if they had been loaded at once (building uses no random numbers)."""

    def __init__(self, build):
        self.build = build

    def __get__(self, agent, owner=None):
        if agent is None:
            return self
        optimizer = agent.__dict__.get("_optimizer_built")
        if optimizer is None:
            optimizer = self.build(agent)
            saved = agent.__dict__.pop("_optimizer_saved", None)
            if saved is not None:
                optimizer.load_state_dict(saved)
            agent.__dict__["_optimizer_built"] = optimizer
        return optimizer

    @staticmethod
    def is_built(agent) -> bool:
        return agent.__dict__.get("_optimizer_built") is not None


def optimizer_state_dict(agent) -> dict:
    """The state to save: the optimizer's, or the loaded one it has not been built to take yet."""
    saved = agent.__dict__.get("_optimizer_saved")
    if saved is not None and not LazyOptimizer.is_built(agent):
        return saved
    return agent.optimizer.state_dict()


def restore_optimizer(agent, saved: dict) -> None:
    """Give ``agent`` a checkpoint's optimizer state, checked now (a misfit is a load error, exit 2)
    and loaded when the optimizer is built (``LazyOptimizer``)."""
    groups = saved["param_groups"]
    n_params = len(list(agent.model.parameters()))
    if len(groups) != 1 or len(groups[0]["params"]) != n_params:
        raise ValueError(f"the optimizer state holds {[len(g['params']) for g in groups]} parameters in "
                         f"{len(groups)} groups; the model has {n_params} in one")
    if LazyOptimizer.is_built(agent):
        agent.optimizer.load_state_dict(saved)
    else:
        agent._optimizer_saved = saved


def save_agent(agent, path) -> None:
    """Network, normalisers, RNGs and optimizer as plain tensors, plus metadata to rebuild the agent."""
    parts = agent.parts
    state = {"model": parts.model.state_dict(), "rng": rng_state(), **parts.normalizers.state(),
             "optimizer": optimizer_state_dict(agent)}
    if parts.collector is not None and (envs := parts.collector.state()) is not None:
        state["collector"] = envs
    save_checkpoint(path, state, agent_meta(agent.algo_name, agent, avg_reward=getattr(agent, "avg_reward", None)))


def load_agent(cls, path, device: str = "cpu"):
    """Rebuild an on-policy agent from its checkpoint alone (weights-only)."""
    from rlkit.config import config_from_dict

    state, meta = load_checkpoint(path, device)
    agent = cls(meta["env_id"], config_from_dict(cls.Config, meta["config"]), seed=meta["seed"],
                device=device, env_kwargs=meta.get("env_kwargs"), seed_globals=False)
    agent.parts.model.load_state_dict(state["model"])
    agent.parts.normalizers.load_state(state)
    agent.parts.resume_rng = state["rng"]
    if "collector" in state and agent.parts.collector is not None:  # older checkpoints restart their envs
        agent.parts.collector.load_state(state["collector"])
    restore_optimizer(agent, state["optimizer"])  # loaded when training builds the optimizer
    agent.num_timesteps = int(meta["num_timesteps"])
    if hasattr(agent, "avg_reward"):
        agent.avg_reward = meta.get("avg_reward")  # None until the first batch
    return agent
