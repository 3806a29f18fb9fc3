"""The Python API: rlkit's agents with Stable-Baselines3's habits (docs/python_api.md).

    from rlkit import PPO
    agent = PPO("MlpPolicy", "CartPole-v1", seed=0)
    agent.learn(20_000)
    agent.save("ppo_cartpole.pt")
    action = agent.predict(obs, deterministic=True)

``make_agent(algo, env, **hyperparameters)`` builds any algorithm of ``rlkit list``; ``env`` is an env id
(``CartPole-v1``, or a user's ``pkg.module:EnvId`` / ``pkg.module:Class``, rlkit/plugins.py), an env
instance, or a function that makes one. ``train(algo, env, ...)`` is ``rlkit train``: it makes a run
directory (config.yaml, checkpoints, TensorBoard logs, evaluations) and returns its path; ``load`` and
``load_run`` bring an agent back from a checkpoint or a run directory.

Hyperparameters resolve as on the command line (the dataclass defaults < agents/hyperparams/<algo>.yaml <
the keyword arguments), with the same checks: a bad name or value raises ``rlkit.UsageError``.

An env instance or function lives in this process only: algorithms that step envs in other processes
(``a3c``, ``workers`` > 1, ``backend="ray"``, ``rllib-ppo``) need an id that a module registers, and a run
directory trained on one can be evaluated by this process, not by ``rlkit eval``.
"""

from __future__ import annotations

import copy
from pathlib import Path

from rlkit.errors import UsageError

# The policy names SB3 users pass first. rlkit picks the network from the observation space (an MLP for
# vectors, a CNN for images, one encoder per key for Dict / Tuple), so the name is checked, not used.
POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")


class EvalCallback:
    """Evaluate every ``eval_every`` steps on ``episodes`` deterministic episodes with fixed seeds (as the
    CLI's stop check: seeds 10000...), call ``on_eval(num_timesteps, result, agent)`` and stop training at
    the first mean return >= ``stop_at_return``. ``results`` keeps (num_timesteps, mean return)."""

    def __init__(self, eval_every: int = 10_000, episodes: int = 10, on_eval=None,
                 stop_at_return: float | None = None, seed: int = 10_000):
        if int(eval_every) < 1 or int(episodes) < 1:
            raise UsageError(f"EvalCallback needs eval_every >= 1 and episodes >= 1, got {eval_every}, {episodes}")
        self.eval_every, self.episodes, self.on_eval = int(eval_every), int(episodes), on_eval
        self.stop_at_return, self.seed = stop_at_return, seed
        self.next_eval = self.eval_every
        self.results: list[tuple[int, float]] = []

    def __call__(self, num_timesteps: int, agent) -> bool:
        if num_timesteps < self.next_eval:
            return True
        self.next_eval = (num_timesteps // self.eval_every + 1) * self.eval_every
        result = agent.evaluate(self.episodes, seed=self.seed)
        self.results.append((int(num_timesteps), result["mean_return"]))
        go_on = True
        if self.on_eval is not None and self.on_eval(num_timesteps, result, agent) is False:
            go_on = False
        if self.stop_at_return is not None and result["mean_return"] >= self.stop_at_return:
            go_on = False
        return go_on


class _Callbacks:
    """The agent protocol's callback object (``on_step(num_timesteps, agent) -> bool``) around the user's
    functions, which get the API's Agent and may return False (or nothing, meaning go on)."""

    def __init__(self, callbacks, agent: Agent):
        self.callbacks, self.agent = callbacks, agent

    def on_step(self, num_timesteps: int, _inner) -> bool:
        go_on = True
        for cb in self.callbacks:
            fn = cb.on_step if hasattr(cb, "on_step") else cb
            if fn(num_timesteps, self.agent) is False:
                go_on = False
        return go_on


def _as_callbacks(callback) -> list:
    if callback is None:
        return []
    items = list(callback) if isinstance(callback, (list, tuple)) else [callback]
    for cb in items:
        if not (callable(cb) or callable(getattr(cb, "on_step", None))):
            raise UsageError(f"callback {cb!r} is neither a function (num_timesteps, agent) nor has on_step")
    return items


class Agent:
    """An agent of any algorithm, as the Python API hands it out: ``learn``, ``predict``, ``evaluate``,
    ``save``, ``load``. The algorithm's own object is ``agent.impl`` (agents/ppo.py, ...)."""

    def __init__(self, impl, env_packages: list[str] | None = None):
        self.impl = impl
        self.env_packages = list(env_packages or [])

    algo = property(lambda self: self.impl.algo_name)
    env_id = property(lambda self: self.impl.env_id)
    env_kwargs = property(lambda self: dict(self.impl.env_kwargs or {}))
    config = property(lambda self: self.impl.config)
    seed = property(lambda self: self.impl.seed)
    num_timesteps = property(lambda self: int(self.impl.num_timesteps))

    def learn(self, total_timesteps: int, callback=None) -> Agent:
        """Train ``total_timesteps`` more env steps. ``callback``: a function ``(num_timesteps, agent)``
        called after every update (return False to stop), an ``EvalCallback``, or a list of them."""
        if int(total_timesteps) < 1:
            raise UsageError(f"total_timesteps must be >= 1, got {total_timesteps}")
        callbacks = _as_callbacks(callback)
        self.impl.learn(self.num_timesteps + int(total_timesteps),
                        callback=_Callbacks(callbacks, self) if callbacks else None)
        return self

    def predict(self, obs, deterministic: bool = True):
        """The action for one observation of the env (a dict for a Dict env), or actions for a batch."""
        return self.impl.predict(obs, deterministic=deterministic)

    def evaluate(self, episodes: int = 10, seed: int = 20_000, deterministic: bool = True) -> dict:
        """Mean and std of the return over ``episodes`` episodes seeded ``seed``, ``seed + 1``, ... (the
        CLI's ``rlkit eval`` protocol)."""
        from rlkit.evaluation import evaluate

        return evaluate(self.impl, self.env_id, int(episodes), seed=seed, env_kwargs=self.env_kwargs,
                        deterministic=deterministic)

    def save(self, path) -> Path:
        """A weights-only checkpoint (docs/architecture.md §7); ``rlkit.load(path)`` brings it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.impl.save(path)
        return path

    @classmethod
    def load(cls, path, device: str = "cpu", env_packages: list[str] | None = None) -> Agent:
        return load(path, device=device, env_packages=env_packages)

    def close(self) -> None:
        self.impl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<rlkit {self.algo} on {self.env_id}, {self.num_timesteps} steps>"


# --- envs given as objects -------------------------------------------------------------------
_registered: dict[int, str] = {}  # id(env or factory) -> the id it was registered under


def env_id_of(env, env_kwargs: dict | None = None) -> tuple[str, dict, list[str]]:
    """(env id, env kwargs, env packages) for an id string, an env instance or a function making one."""
    import gymnasium as gym

    from rlkit import plugins

    env_kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        env_id, packages = plugins.resolve_env(env)
        return env_id, env_kwargs, packages
    if isinstance(env, gym.Env):
        spec = env.spec
        if spec is not None and spec.id in gym.registry and spec.entry_point == gym.registry[spec.id].entry_point:
            # made by gym.make: rebuilt from its id and the kwargs it was made with
            kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k != "render_mode"}
            registered = gym.registry[spec.id]
            kwargs = {k: v for k, v in kwargs.items() if registered.kwargs.get(k, object()) != v}
            if spec.max_episode_steps != registered.max_episode_steps:
                kwargs["max_episode_steps"] = spec.max_episode_steps
            return spec.id, {**kwargs, **env_kwargs}, []
        name = type(env.unwrapped).__name__
        return _register(env, name, lambda **kw: copy.deepcopy(env)), env_kwargs, []
    if callable(env):
        name = getattr(env, "__name__", type(env).__name__).strip("<>").replace("lambda", "env") or "env"
        return _register(env, name, env), env_kwargs, []
    raise UsageError(f"env must be an env id, a gymnasium.Env or a function making one, got {type(env).__name__}")


def _register(obj, name: str, entry_point) -> str:
    """Register an in-process env under ``rlkit-user/<name>-v<n>``, a new version per object."""
    import gymnasium as gym

    if id(obj) in _registered:
        return _registered[id(obj)]
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "env"
    version = 0
    while f"rlkit-user/{name}-v{version}" in gym.registry:
        version += 1
    env_id = f"rlkit-user/{name}-v{version}"
    gym.register(id=env_id, entry_point=entry_point)
    _registered[id(obj)] = env_id
    return env_id


def _check_in_process(env, algo: str, backend: str, workers) -> None:
    if isinstance(env, str):
        return
    if algo in ("a3c", "rllib-ppo") or backend == "ray" or (workers or 1) > 1:
        raise UsageError(f"{algo} with backend={backend!r}, workers={workers} steps envs in other processes, which "
                         f"cannot see an env object of this one: pass an env id that a module registers "
                         f"(e.g. 'my_module:MyEnv-v0', docs/byo_env.md)")


# --- building, training, loading -------------------------------------------------------------
def make_agent(algo: str, env, *, policy: str | None = None, seed: int = 0, device: str = "auto",
               n_envs: int | None = None, env_kwargs: dict | None = None, backend: str = "local",
               workers: int | None = None, untuned: bool = False, preset: str | None = None,
               **hyperparams) -> Agent:
    """An untrained agent of ``algo`` (see ``rlkit list``) on ``env``, with ``hyperparams`` over the yaml
    entry for that env (``untuned``: over the ``default`` entry alone; ``preset``: over the ``default``
    entry updated by the ``<env id>@<preset>`` entry instead of the env's own, ``rlkit train --preset``)."""
    from rlkit import config as configlib
    from rlkit import registry
    from rlkit.training import _construct, check_device, check_env_for

    if policy is not None and policy not in POLICIES:
        raise UsageError(f"policy '{policy}' is not one of {', '.join(POLICIES)} (rlkit picks the network from "
                         f"the observation space; set hidden=[...] or cnn=... to change it)")
    registry.check_algo(algo)
    _check_in_process(env, algo, backend, workers)
    env_id, env_kwargs, packages = env_id_of(env, env_kwargs)
    check_device(device)
    cls = registry.load_algo(algo)
    sets = dict(hyperparams)
    if n_envs is not None:
        sets["n_envs"] = n_envs
    if env_kwargs:
        sets["env_kwargs"] = env_kwargs
    cfg, env_kwargs = configlib.resolve(cls.Config, algo, env_id, None, sets, untuned, sets_source="hyperparameter",
                                        preset=preset)
    check_env_for(cls, algo, env_id, env_kwargs)
    impl = _construct(cls, env_id, cfg, seed=int(seed), device=device, run_dir=None, logger=None,
                      env_kwargs=env_kwargs, n_envs=getattr(cfg, "n_envs", None), backend=backend,
                      workers=workers, ray_address=None)
    return Agent(impl, packages)


def train(algo: str, env, *, steps: int | None = None, seed: int = 0, runs_root="runs", run_dir=None,
          eval_every: int | None = None, eval_episodes: int = 10, stop_at_return: float | None = None,
          final_eval_episodes: int = 100, device: str = "auto", backend: str = "local", workers: int | None = None,
          env_kwargs: dict | None = None, on_step=None, on_eval=None, progress: bool = False, quiet: bool = True,
          untuned: bool = False, video_every: int | None = None, preset: str | None = None,
          **hyperparams) -> Path:
    """``rlkit train`` from Python: a run directory like the CLI's (returned). ``on_step(num_timesteps,
    agent)`` after every update and ``on_eval(num_timesteps, result, agent)`` after every evaluation may
    return False to end the run there. ``steps`` defaults to the yaml entry's ``n_timesteps``.
    ``video_every``: one evaluation episode to RUN_DIR/videos/step_<n>.gif every that many env steps.
    ``preset``: the ``<env id>@<preset>`` yaml entry instead of the env's own (``rlkit train --preset``)."""
    from rlkit import training

    _check_in_process(env, algo, backend, workers)
    env_id, env_kwargs, packages = env_id_of(env, env_kwargs)
    sets = dict(hyperparams)
    if env_kwargs:
        sets["env_kwargs"] = env_kwargs
    run_dir = training.train(
        algo, env_id, steps=steps, seed=int(seed), device=device, backend=backend, workers=workers, sets=sets,
        runs_root=Path(runs_root), run_dir=Path(run_dir) if run_dir is not None else None, eval_every=eval_every,
        eval_episodes=eval_episodes, stop_at_return=stop_at_return, final_eval_episodes=final_eval_episodes,
        progress=progress, quiet=quiet, untuned=untuned, env_packages=packages,
        command=["# python", f"rlkit.train({algo!r}, {env_id!r}, ...)"], on_step=_wrap(on_step, 2),
        on_eval=_wrap(on_eval, 3), video_every=video_every, preset=preset)
    return Path(run_dir)


def _wrap(fn, arity: int):
    """The user's hook, given the API's Agent instead of the algorithm's object."""
    if fn is None:
        return None
    if not callable(fn):
        raise UsageError(f"{fn!r} is not callable")
    if arity == 2:
        return lambda step, impl: fn(step, Agent(impl))
    return lambda step, result, impl: fn(step, result, Agent(impl))


def load(path, device: str = "cpu", env_packages: list[str] | None = None) -> Agent:
    """An agent from a checkpoint file (``agent.save``, or a run's ``checkpoints/*.pt``)."""
    import gymnasium as gym

    from rlkit import plugins, registry
    from rlkit.checkpoint import load_checkpoint

    plugins.import_packages(env_packages or [])
    _, meta = load_checkpoint(Path(path), "cpu")
    if not isinstance(meta, dict) or not isinstance(meta.get("algo"), str):
        raise UsageError(f"checkpoint {path} has no algorithm in its metadata")
    env_id = meta.get("env_id")
    if env_id not in gym.registry:
        import envs  # noqa: F401

        if env_id not in gym.registry:
            raise UsageError(f"checkpoint {path} is for env {env_id!r}, which no imported module registers: pass "
                             f"env_packages=['the.module'] (or import it first)")
    cls = registry.load_algo(meta["algo"])
    return Agent(cls.load(Path(path), device=device), env_packages)


def load_run(run_dir, checkpoint: str = "latest", device: str = "cpu") -> Agent:
    """The agent of a run directory (``latest``, ``best`` or ``step_<n>``), its env packages imported."""
    from rlkit import runs

    impl, settings = runs.load_run(Path(run_dir), device=device, checkpoint=checkpoint)
    return Agent(impl, settings.get("env_packages"))


class _Spelling:
    """SB3's spelling, ``PPO("MlpPolicy", env, **hyperparams)``, of ``make_agent("ppo", env, ...)``;
    ``PPO.load(path)`` loads a checkpoint and checks it holds that algorithm."""

    algo = ""

    def __new__(cls, policy: str, env, **kwargs) -> Agent:
        return make_agent(cls.algo, env, policy=policy, **kwargs)

    @classmethod
    def load(cls, path, device: str = "cpu", env_packages: list[str] | None = None) -> Agent:
        agent = load(path, device=device, env_packages=env_packages)
        if agent.algo != cls.algo:
            raise UsageError(f"checkpoint {path} holds a {agent.algo} agent, not {cls.algo}")
        return agent


class PPO(_Spelling):
    """Proximal policy optimisation (agents/ppo.py)."""

    algo = "ppo"


class A2C(_Spelling):
    """Synchronous advantage actor-critic (agents/actor_critic.py)."""

    algo = "actor-critic"


class REINFORCE(_Spelling):
    """Monte-Carlo policy gradient (agents/reinforce.py)."""

    algo = "reinforce"


class A3C(_Spelling):
    """Asynchronous advantage actor-critic with Hogwild workers (agents/a3c.py): needs an env id."""

    algo = "a3c"
