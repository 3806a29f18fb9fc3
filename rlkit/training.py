"""The train driver: config -> run directory -> agent.learn with one callback for every algorithm.

The callback is where the time-to-solve protocol lives (evaluate every ``eval_every`` env steps
on ``eval_episodes`` deterministic episodes with fixed seeds, stop at the first mean >= R), so
hand-written agents and baselines are timed identically. When a run ends, it is scored once more
on ``final_eval_episodes`` episodes the stop check never saw (``final_eval`` in run.json): a run
stops when its stop-check episodes happen to clear R, so their mean is biased upwards.
"""

from __future__ import annotations

import inspect
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rlkit import config as configlib
from rlkit import runs
from rlkit.errors import UsageError
from rlkit.evaluation import CONFIRM_SEED, evaluate
from rlkit.logger import Logger

EVAL_SEED = 10_000  # eval env seeds are far from training seeds


class TrainingCallback:
    """Called by every agent as ``callback.on_step(num_timesteps, agent)``; False means stop."""

    def __init__(self, run_dir: Path, env_id: str, env_kwargs: dict, logger: Logger, info: dict,
                 eval_every: int, eval_episodes: int, stop_at_return: float | None,
                 checkpoint_every: int, start_step: int = 0, wall_offset: float = 0.0):
        self.run_dir, self.env_id, self.env_kwargs, self.logger = run_dir, env_id, env_kwargs, logger
        self.info = info
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.stop_at_return = stop_at_return
        self.checkpoint_every = checkpoint_every
        self.next_eval = (start_step // eval_every + 1) * eval_every if eval_every else math.inf
        self.next_ckpt = (start_step // checkpoint_every + 1) * checkpoint_every if checkpoint_every else math.inf
        self.t0 = time.perf_counter()
        self.wall_offset = wall_offset
        self.solved = False
        self.last_eval: dict | None = None
        self.last_ckpt_step = start_step
        self.info["stop_check"] = {"seed": EVAL_SEED, "episodes": int(eval_episodes)}

    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.t0

    def on_step(self, num_timesteps: int, agent) -> bool:
        if num_timesteps >= self.next_eval:
            self.next_eval = (num_timesteps // self.eval_every + 1) * self.eval_every
            self.run_eval(num_timesteps, agent)
            if (self.stop_at_return is not None and not self.solved
                    and self.last_eval["mean_return"] >= self.stop_at_return):
                self.solved = True
                self.info["solved_at_step"] = int(num_timesteps)
                self.info["solved_at_s"] = round(self.wall(), 3)
        if num_timesteps >= self.next_ckpt or self.solved:
            self.next_ckpt = (num_timesteps // self.checkpoint_every + 1) * self.checkpoint_every
            self.checkpoint(num_timesteps, agent)
        return not self.solved

    def run_eval(self, num_timesteps: int, agent) -> dict:
        result = evaluate(agent, self.env_id, self.eval_episodes, seed=EVAL_SEED, env_kwargs=self.env_kwargs)
        self.last_eval = result
        self.logger.scalar("eval/mean_reward", result["mean_return"], num_timesteps)
        self.logger.scalar("eval/mean_ep_length", result["mean_ep_length"], num_timesteps)
        self.logger.scalar("eval/reward_per_step", result["reward_per_step"], num_timesteps)
        self.logger.flush()
        self.info.setdefault("evals", []).append(
            [int(num_timesteps), round(self.wall(), 3), round(result["mean_return"], 4)])
        return result

    def confirm(self, agent, episodes: int) -> dict:
        """Score the final policy on fresh episodes, seeded after every stop-check seed."""
        seed = max(CONFIRM_SEED, EVAL_SEED + self.eval_episodes)
        result = evaluate(agent, self.env_id, episodes, seed=seed, env_kwargs=self.env_kwargs)
        self.info["final_eval"] = {k: result[k] for k in ("mean_return", "std_return", "episodes",
                                                          "mean_ep_length", "reward_per_step")}
        self.info["final_eval"]["seed"] = seed
        return result

    def checkpoint(self, num_timesteps: int, agent) -> Path:
        path = runs.checkpoint_dir(self.run_dir) / f"step_{num_timesteps}.pt"
        agent.save(path)
        runs.mark_latest(self.run_dir, path)
        self.last_ckpt_step = num_timesteps
        self.write_info(num_timesteps, status="running")
        return path

    def write_info(self, num_timesteps: int, status: str, wall_s: float | None = None) -> None:
        wall_s = self.wall() if wall_s is None else wall_s
        self.info.update(steps=int(num_timesteps), wall_s=round(wall_s, 3), status=status)
        runs.write_run_json(self.run_dir, self.info)


def _versions() -> dict:
    import gymnasium
    import numpy
    import torch

    import rlkit

    out = {"rlkit": rlkit.__version__, "python": sys.version.split()[0], "torch": str(torch.__version__),
           "gymnasium": gymnasium.__version__, "numpy": numpy.__version__}
    try:
        import stable_baselines3

        out["stable_baselines3"] = stable_baselines3.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _construct(cls, env_id, cfg, **kwargs):
    """Pass the runtime kwargs an algorithm's constructor accepts (all agents share these names)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls(env_id, cfg, **kwargs)
    return cls(env_id, cfg, **{k: v for k, v in kwargs.items() if k in params})


def train(algo: str, env_id: str, *, steps: int | None = None, seed: int = 0, n_envs: int | None = None,
          device: str = "auto", backend: str = "local", workers: int | None = None, ray_address: str | None = None,
          config_file: Path | None = None, sets: dict | None = None, runs_root: Path | None = None,
          run_dir: Path | None = None, eval_every: int = 10_000, eval_episodes: int = 10,
          stop_at_return: float | None = None, checkpoint_every: int | None = None,
          final_eval_episodes: int = 100, progress: bool = True) -> Path:
    """Train a fresh run. Everything is validated before the run directory is created."""
    from rlkit import registry

    registry.check_algo(algo)
    registry.check_env(env_id)
    cls = registry.load_algo(algo)
    sets = dict(sets or {})
    if n_envs is not None:
        sets["n_envs"] = n_envs
    cfg, env_kwargs = configlib.resolve(cls.Config, algo, env_id, config_file, sets)
    if steps is None:
        steps = int(getattr(cfg, "n_timesteps", 0) or 100_000)
    if backend not in ("local", "ray"):
        raise UsageError(f"--backend '{backend}' is not one of local, ray")
    if backend == "ray" and not getattr(cls, "supports_ray", False):
        raise UsageError(f"algorithm '{algo}' does not support --backend ray")
    if run_dir is None:
        run_dir = runs.new_run_dir(runs_root or runs.DEFAULT_ROOT, env_id, algo, seed)
    elif Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        raise UsageError(f"--run-dir {run_dir} exists and is not empty (use --resume to continue it)")
    if checkpoint_every is None:
        checkpoint_every = max(eval_every, steps // 10)
    settings = dict(algo=algo, env=env_id, env_kwargs=env_kwargs, seed=seed, total_steps=int(steps),
                    device=device, backend=backend, workers=workers, ray_address=ray_address,
                    eval_every=eval_every, eval_episodes=eval_episodes, stop_at_return=stop_at_return,
                    checkpoint_every=checkpoint_every, final_eval_episodes=int(final_eval_episodes),
                    hyperparams=asdict(cfg), versions=_versions())

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        runs.write_config(run_dir, settings)
        return _run(cls, cfg, settings, run_dir, start_step=0, wall_offset=0.0, progress=progress)
    except BaseException:
        # A run that never reached its first checkpoint is not worth keeping half-made.
        if created and not any(runs.checkpoint_dir(run_dir).glob("step_*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume(run_dir: Path, progress: bool = True, device: str | None = None) -> Path:
    from rlkit import registry

    run_dir = Path(run_dir)
    settings = runs.read_config(run_dir)
    ckpt = runs.latest_checkpoint(run_dir)
    for stale in runs.checkpoint_dir(run_dir).glob(".*.tmp"):  # left by a kill in mid-write
        stale.unlink()
    cls = registry.load_algo(settings["algo"])
    cfg = configlib.config_from_dict(cls.Config, settings.get("hyperparams") or {})
    info = runs.read_run_json(run_dir)
    return _run(cls, cfg, settings, run_dir, start_step=None, wall_offset=float(info.get("wall_s", 0.0)),
                progress=progress, checkpoint=ckpt, device=device, info=info)


def _run(cls, cfg, settings, run_dir, start_step, wall_offset, progress, checkpoint=None, device=None,
         info=None) -> Path:
    from rlkit.checkpoint import load_agent_checkpoint

    env_id, seed, total = settings["env"], int(settings["seed"]), int(settings["total_steps"])
    device = device or settings.get("device", "auto")
    info = dict(info or {})
    info.update(algo=settings["algo"], env=env_id, seed=seed, total_steps=total, run_dir=str(run_dir))
    info.pop("status", None)
    info.pop("final_eval", None)  # a resumed run is confirmed again when it ends

    if checkpoint is not None:
        agent = load_agent_checkpoint(cls, checkpoint, env_id, settings.get("env_kwargs") or {}, device,
                                      algo=settings["algo"])
        start_step = int(agent.num_timesteps)
    logger = Logger(run_dir, progress=progress, total_steps=total, desc=f"{settings['algo']} {env_id}",
                    initial_step=start_step)
    # torch imports its compiler stack (~1 s) on the first optimizer construction; importing it here
    # keeps library import time off the training clock for every algorithm alike.
    import torch._dynamo  # noqa: F401

    t0 = time.perf_counter()  # the clock starts when the agent is built: same for every algorithm
    callback = TrainingCallback(run_dir, env_id, settings.get("env_kwargs") or {}, logger, info,
                                int(settings["eval_every"]), int(settings["eval_episodes"]),
                                settings.get("stop_at_return"), int(settings["checkpoint_every"]),
                                start_step=start_step, wall_offset=wall_offset)
    callback.t0 = t0
    try:
        if checkpoint is None:
            agent = _construct(cls, env_id, cfg, seed=seed, device=device, run_dir=run_dir, logger=logger,
                               env_kwargs=settings.get("env_kwargs") or {}, n_envs=getattr(cfg, "n_envs", None),
                               backend=settings.get("backend", "local"), workers=settings.get("workers"),
                               ray_address=settings.get("ray_address"))
        else:
            agent.logger, agent.run_dir = logger, run_dir
        agent.learn(total, callback=callback)
        steps = int(agent.num_timesteps)
        if callback.last_eval is None or callback.info.get("evals", [[None]])[-1][0] != steps:
            callback.run_eval(steps, agent)
        if callback.last_ckpt_step != steps or not any(runs.checkpoint_dir(run_dir).glob("step_*.pt")):
            callback.checkpoint(steps, agent)
        wall_s = callback.wall()  # the confirmation below is scoring, not training time
        if int(settings.get("final_eval_episodes", 100)) > 0:
            callback.confirm(agent, int(settings.get("final_eval_episodes", 100)))
        callback.write_info(steps, status="solved" if callback.solved else "finished", wall_s=wall_s)
    except BaseException:
        info["status"] = "interrupted"
        raise
    finally:
        logger.close()
        close = getattr(locals().get("agent"), "close", None)
        if callable(close):
            close()
    return run_dir
