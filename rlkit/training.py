"""The train driver: config -> run directory -> agent.learn with one callback for every algorithm.

The callback is where the time-to-solve protocol lives (evaluate every ``eval_every`` env steps
on ``eval_episodes`` deterministic episodes with fixed seeds, stop at the first mean >= R), so
hand-written agents and baselines are timed identically. When a run ends, it is scored once more
on ``final_eval_episodes`` episodes the stop check never saw (``final_eval`` in run.json): a run
stops when its stop-check episodes happen to clear R, so their mean is biased upwards.

A run directory has one writer, which holds its lock (rlkit.runs.lock_run_dir) for the whole
run, and one commit point per checkpoint (rlkit.runs.commit): the agent file, then the run state
(run.json's content: evaluation history, ``solved_at_*``, wall time), then the ``latest`` pointer.
``resume`` continues from the last commit and rewrites run.json from it, so a run killed at any
instant and resumed ends with the run.json and parameters of an uninterrupted run (on-policy
agents; tests/test_robustness.py). Ctrl-C and SIGTERM commit the update boundary the run reaches
next and then stop (``StopAtBoundary``). A run that stops before its first commit leaves nothing
behind (a stop before its first update, an error) or, after SIGKILL, a directory that ``resume``
starts from step 0.

The best stop-check evaluation so far is run.json's ``best`` (step, mean return); its agent is
staged when it is evaluated and becomes ``checkpoints/best.pt`` with the next commit
(rlkit.runs.promote_best). Every evaluation is reported on the console (rlkit.logger
``Logger.evaluation``). config.yaml's ``provenance`` records the command line, the working
directory and the git commit of the code that ran.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from rlkit import config as configlib
from rlkit import runs
from rlkit.errors import UsageError, first_line
from rlkit.evaluation import CONFIRM_SEED, evaluate
from rlkit.logger import Logger

EVAL_SEED = 10_000  # eval env seeds are far from training seeds
DEFAULT_EVAL_EVERY = 10_000  # env steps between evaluations unless the algorithm has its own
CHECKPOINT_EVERY_CAP = 100_000  # the default checkpoint interval, max(eval_every, steps / 10), is capped here
MAX_SEED = 2**32 - 1  # numpy's global seed (SB3 seeds it with the run's seed) is 32 bits

STOP_GRACE_S = 10.0  # how long a stop waits for the next update boundary before it stops at once

# The run directory being trained in this process, if any: rlkit.commands puts the crash log of an
# unexpected error there.
current_run_dir: Path | None = None


class StopAtBoundary:
    """Ctrl-C and SIGTERM while a run trains (docs/architecture.md §4, §5).

    A signal can land anywhere: inside an env step, half way through an update. Once armed (by the
    callback, at the run's first update boundary), the first signal is only noted; the callback's
    next ``on_step``, the next update boundary, commits a checkpoint there and then stops the run
    with the signal's own exception (KeyboardInterrupt, or rlkit's Terminated for SIGTERM). So a stop
    loses no training and commits exactly the state a resumed run needs (the one a checkpoint at that
    step of an uninterrupted run holds). A second signal, or no boundary within ``STOP_GRACE_S``
    seconds, stops at once with the last commit (each commit is atomic). Before it is armed, a signal
    stops at once: a run that never reached an update leaves nothing behind.

    Only signals whose handler is Python code that raises are held (Python's KeyboardInterrupt, the
    CLI's SIGTERM handler); main thread only. ``disarm`` puts those handlers back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace: float = STOP_GRACE_S):
        self.grace = grace
        self.previous: dict = {}  # signal -> the handler it had (and gets back)
        self.pending: int | None = None  # the signal received, not acted on yet
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self.previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):
                self.previous[sig] = handler
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum
            self._timer = threading.Timer(self.grace, self._expire)
            self._timer.daemon = True
            self._timer.start()
            return
        self.raise_now(signum, frame)  # a second signal: at once

    def _expire(self) -> None:
        """No update boundary within the grace period: deliver the signal again, to stop at once."""
        if self.pending is not None and self.previous:
            signal.pthread_kill(threading.main_thread().ident, self.pending)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def disarm(self) -> None:
        self.cancel_timer()
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self.previous.items():
            if signal.getsignal(sig) == self._handle:  # not replaced meanwhile by someone else
                signal.signal(sig, handler)
        self.previous = {}

    def raise_now(self, signum=None, frame=None) -> None:
        """Stop: the handlers go back, then the signal's own handler raises its exception."""
        signum = self.pending if signum is None else signum
        handler = self.previous.get(signum)
        self.disarm()
        if callable(handler):
            handler(signum, frame)
        raise KeyboardInterrupt  # a handler that did not raise: stop all the same


class TrainingCallback:
    """Called by every agent as ``callback.on_step(num_timesteps, agent)``; False means stop.

    ``committed`` is the run state of the last commit (None before the first): what run.json says
    if the run stops before the next one. A resumed run passes the state it resumes from and
    ``solved`` if that state was solved.
    """

    def __init__(self, run_dir: Path, env_id: str, env_kwargs: dict, logger: Logger, info: dict,
                 eval_every: int, eval_episodes: int, stop_at_return: float | None,
                 checkpoint_every: int, start_step: int = 0, wall_offset: float = 0.0,
                 committed: dict | None = None, solved: bool = False, video_every: int | None = None):
        self.run_dir, self.env_id, self.env_kwargs, self.logger = run_dir, env_id, env_kwargs, logger
        self.info = info
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.stop_at_return = stop_at_return
        self.checkpoint_every = checkpoint_every
        self.next_eval = (start_step // eval_every + 1) * eval_every if eval_every else math.inf
        self.next_ckpt = (start_step // checkpoint_every + 1) * checkpoint_every if checkpoint_every else math.inf
        self.t0 = time.perf_counter()
        self.wall_offset = wall_offset
        self.solved = solved
        self.last_eval: dict | None = None
        self.last_ckpt_step = start_step
        self.committed = committed
        self.info["stop_check"] = {"seed": EVAL_SEED, "episodes": int(eval_episodes)}
        best = self.info.get("best")
        self.best: dict | None = best if isinstance(best, dict) and "mean_return" in best else None
        self.staged: Path | None = None  # the best agent written since the last commit
        # The Python API's hooks (rlkit.api): on_step(num_timesteps, agent) after every update and
        # on_eval(num_timesteps, result, agent) after every stop-check evaluation; False stops the run.
        self.user_on_step = None
        self.user_on_eval = None
        self.stopped_by_user = False
        self.stop_guard: StopAtBoundary | None = None  # set by the driver (_run): Ctrl-C / SIGTERM commit here
        # --video-every: one evaluation episode to videos/step_<n>.gif every video_every env steps
        self.video_every = int(video_every) if video_every else None
        self.next_video = ((start_step // self.video_every + 1) * self.video_every if self.video_every
                           else math.inf)

    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.t0

    def on_step(self, num_timesteps: int, agent) -> bool:
        go_on = True
        due = num_timesteps >= self.next_eval
        if due:
            self.next_eval = (num_timesteps // self.eval_every + 1) * self.eval_every
        if due and has_policy(agent):
            self.run_eval(num_timesteps, agent)
            if (self.stop_at_return is not None and not self.solved
                    and self.last_eval["mean_return"] >= self.stop_at_return):
                self.solved = True
                self.info["solved_at_step"] = int(num_timesteps)
                self.info["solved_at_s"] = round(self.wall(), 3)
            self.after_eval(num_timesteps, agent)
            if self.user_on_eval is not None and self.user_on_eval(num_timesteps, dict(self.last_eval), agent) is False:
                go_on = False
        if num_timesteps >= self.next_video:
            self.next_video = (num_timesteps // self.video_every + 1) * self.video_every
            started = time.perf_counter()
            self.record_video(num_timesteps, agent)
            self.t0 += time.perf_counter() - started  # off the training clock: wall_s means the same with videos
        if self.user_on_step is not None and self.user_on_step(num_timesteps, agent) is False:
            go_on = False
        self.stopped_by_user = self.stopped_by_user or not go_on
        if num_timesteps >= self.next_ckpt or self.solved or not go_on:
            self.next_ckpt = (num_timesteps // self.checkpoint_every + 1) * self.checkpoint_every
            self.checkpoint(num_timesteps, agent)
        if self.stop_guard is not None:  # an update boundary: from here on a stop commits (StopAtBoundary)
            self.stop_guard.arm()
            self.stop_if_asked(num_timesteps, agent)
        return go_on and not self.solved

    def record_video(self, num_timesteps: int, agent) -> Path:
        """--video-every: the stop check's first episode (seed EVAL_SEED), deterministic, to
        videos/step_<n>.gif (rlkit.render.record_training_video: .mp4 for large frames); four of its
        frames go to TensorBoard as an image (add_video is broken with moviepy 2)."""
        from rlkit.render import record_training_video

        return record_training_video(agent, self.env_id, self.env_kwargs, self.run_dir / "videos", num_timesteps,
                                     EVAL_SEED, logger=self.logger)

    def stop_if_asked(self, num_timesteps: int, agent) -> None:
        """At an update boundary: after Ctrl-C or SIGTERM, commit this step (unless it is committed
        already, evaluations included) and stop with the signal's exception."""
        guard = self.stop_guard
        if guard is None or guard.pending is None:
            return
        guard.cancel_timer()  # the commit below is the point of waiting: no grace period cuts it short
        if self.committed is None or self.committed.get("steps") != int(num_timesteps):
            self.checkpoint(num_timesteps, agent)
        guard.raise_now()

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

    def after_eval(self, num_timesteps: int, agent) -> None:
        """After an evaluation is scored (and ``solved_at_*`` taken): stage the agent if it is the best
        so far (rlkit.runs.promote_best makes it best.pt at the next commit), and report the evaluation."""
        result = self.last_eval
        mean = round(result["mean_return"], 4)
        if self.best is None or mean > self.best["mean_return"]:
            path = runs.staged_best(self.run_dir, num_timesteps)
            agent.save(path)
            if self.staged is not None and self.staged != path:
                self.staged.unlink(missing_ok=True)  # superseded before any commit named it
            self.staged = path
            self.best = {"step": int(num_timesteps), "mean_return": mean}
            self.info["best"] = dict(self.best)
        note = ""
        if self.solved and self.info.get("solved_at_step") == int(num_timesteps):
            note = f", solved (>= {self.stop_at_return:g})"
        self.logger.evaluation(num_timesteps, result["mean_return"], result["std_return"], result["episodes"],
                               self.best["mean_return"], self.wall(), note)

    def confirm(self, agent, episodes: int) -> dict:
        """Score the final policy on fresh episodes, seeded after every stop-check seed."""
        seed = max(CONFIRM_SEED, EVAL_SEED + self.eval_episodes)
        result = evaluate(agent, self.env_id, episodes, seed=seed, env_kwargs=self.env_kwargs)
        self.info["final_eval"] = {k: result[k] for k in ("mean_return", "std_return", "episodes",
                                                          "mean_ep_length", "reward_per_step")}
        self.info["final_eval"]["seed"] = seed
        return result

    def checkpoint(self, num_timesteps: int, agent) -> Path:
        """Write the agent, commit it with the run state (rlkit.runs.commit), then run.json."""
        path = runs.checkpoint_dir(self.run_dir) / f"step_{num_timesteps}.pt"
        agent.save(path)
        self.commit(num_timesteps, path)
        return path

    def commit(self, num_timesteps: int, path: Path) -> None:
        """Commit the run state with the agent file at ``path`` (written before), then run.json.
        Committing the state of an already committed step again (after a last evaluation) is safe:
        the run state is replaced atomically and ``latest`` names the same file."""
        self.info.update(steps=int(num_timesteps), wall_s=round(self.wall(), 3), status="running")
        state = json.loads(json.dumps(self.info))  # a copy, as it is committed
        runs.commit(self.run_dir, path, state)  # also turns the staged best agent into best.pt
        self.committed = state
        self.staged = None
        self.last_ckpt_step = num_timesteps
        runs.write_run_json(self.run_dir, state)

    def write_info(self, num_timesteps: int, status: str, wall_s: float | None = None) -> None:
        wall_s = self.wall() if wall_s is None else wall_s
        self.info.update(steps=int(num_timesteps), wall_s=round(wall_s, 3), status=status)
        runs.write_run_json(self.run_dir, self.info)

    def mark_stopped(self, status: str) -> None:
        """run.json after an interruption or error: the last commit's state with ``status``
        (nothing if nothing was committed: the caller removes such a run directory)."""
        committed = self.committed
        ckpt = runs.committed_checkpoint(self.run_dir)  # a commit a second Ctrl-C cut short may have moved `latest`
        on_disk = runs.committed_state(ckpt) if ckpt is not None else None
        if isinstance(on_disk, dict):
            committed = on_disk
        if committed is None:
            return
        runs.write_run_json(self.run_dir, {**committed, "status": status})


def has_policy(agent) -> bool:
    """False for an agent that cannot act yet: a World Models run that has trained V or M but no
    controller. Scoring it would score a zero controller, which means nothing, so it is not
    evaluated (nor confirmed at the end) until it has one."""
    return bool(getattr(agent, "has_policy", True))


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
    from importlib import metadata

    try:
        out["ray"] = metadata.version("ray")  # without importing it (seconds)
    except metadata.PackageNotFoundError:  # pragma: no cover
        pass
    return out


def _git_commit() -> str:
    """The git commit of the code that runs (the checkout holding rlkit/), "+ uncommitted changes"
    when its tracked files differ from it, or "not a git checkout" (an installed copy)."""
    import rlkit

    root = Path(rlkit.__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return "not a git checkout"
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return f"unknown ({first_line(head.stderr or 'git rev-parse HEAD failed')})"
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError) as exc:  # no git on this machine
        return f"unknown ({first_line(exc)})"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def provenance(command: list[str] | None = None) -> dict:
    """config.yaml's record of how a run was started: the command line, where, and which code."""
    argv = ["rlkit", *command] if command is not None else [Path(sys.executable).name, *sys.argv]
    return {"command": shlex.join(str(a) for a in argv), "cwd": os.getcwd(), "git_commit": _git_commit()}


def _construct(cls, env_id, cfg, **kwargs):
    """Pass the runtime kwargs an algorithm's constructor accepts (all agents share these names)."""
    return cls(env_id, cfg, **{k: v for k, v in kwargs.items() if _accepts(cls, k)})


def _accepts(cls, name: str) -> bool:
    """Whether an algorithm's constructor takes the runtime option ``name``."""
    params = inspect.signature(cls).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_device(device: str, hint: str = "") -> None:
    """auto | cpu | cuda | cuda:<i>, and CUDA only where there is one (every algorithm alike)."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device '{device}' is not one of auto, cpu, cuda, cuda:<i>")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} asked for, but CUDA is not available on this machine{hint}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _family_spaces(cls):
    """(observation space types, action space types) an algorithm's networks accept, or None if
    the agent checks its env itself (World Models). Hand-written agents: rlkit.spaces (observations:
    Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple; actions: Box, Discrete, MultiDiscrete,
    MultiBinary). Baseline adapters: what SB3's preprocessing accepts (or the adapter's own
    ``observation_spaces``), and its ``action_spaces``."""
    from gymnasium import spaces

    from rlkit.spaces import ACTION_SPACES, OBSERVATION_SPACES

    module = cls.__module__
    if module.startswith("rlkit.baselines."):  # SB3 preprocesses these; an adapter may narrow them
        obs = getattr(cls, "observation_spaces",
                      (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict))
        return tuple(obs), tuple(cls.action_spaces)
    names = {f for f in getattr(cls.Config, "__dataclass_fields__", {})}
    if {"hidden", "activation", "cnn"} <= names:  # built by rlkit.onpolicy.build_parts
        return OBSERVATION_SPACES, ACTION_SPACES
    return None


def check_env_for(cls, algo: str, env_id: str, env_kwargs: dict) -> None:
    """Build the env once before anything is written: env_kwargs the env refuses, extras that are
    not installed and spaces the algorithm does not support become one-line usage errors."""
    import gymnasium as gym

    def build(make):
        try:
            return make()
        except gym.error.DependencyNotInstalled as exc:
            raise UsageError(f"env {env_id} needs a package that is not installed: {first_line(exc)}") from None
        except (TypeError, ValueError, KeyError, AssertionError, gym.error.Error) as exc:
            reason = first_line(exc).split(" was raised from the environment creator")[0]
            given = f" with env_kwargs {env_kwargs}" if env_kwargs else ""
            raise UsageError(f"env {env_id} cannot be built{given}: {reason}") from None

    env = build(lambda: gym.make(env_id, **env_kwargs))
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if gym.spec(env_id).vector_entry_point is not None:  # its native vector env takes the same kwargs
        build(lambda: gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", **env_kwargs)).close()
    supported = _family_spaces(cls)
    if supported is None:
        return
    for kind, space, accepted in (("observation", obs_space, supported[0]), ("action", act_space, supported[1])):
        if not isinstance(space, accepted):
            raise UsageError(f"{algo} does not support {env_id}: its {kind} space is {space} "
                             f"({algo} accepts {', '.join(t.__name__ for t in accepted)})")
    if gym.spaces.Tuple in supported[0]:  # the hand-written agents: every part of a Dict / Tuple too
        from rlkit.spaces import check_observation_space

        try:
            check_observation_space(obs_space)
        except ValueError as exc:
            raise UsageError(f"{algo} does not support {env_id}: {exc}") from None


def _start_run_dir(runs_root: Path | None, run_dir: Path | None, env_id: str, algo: str,
                   seed: int) -> tuple[Path, list[Path], runs.RunLock]:
    """Create (or take an empty) run directory and lock it. Returns (run_dir, the folders created, lock)."""
    if run_dir is not None:
        run_dir = Path(run_dir)
        runs.check_utf8_name(run_dir, "--run-dir")
        runs.check_creatable(run_dir, "--run-dir")
        if run_dir.is_dir() and not runs.is_empty_run_dir(run_dir):
            runs.check_not_in_use(run_dir)  # a writer at work there: name it (read-only: a refusal changes nothing)
            raise UsageError(f"--run-dir {run_dir} exists and is not empty (use --resume to continue it)")
        created = runs.make_dirs(run_dir, "--run-dir")
        try:
            lock = runs.lock_run_dir(run_dir)
        except BaseException:
            runs.remove_created(created)
            raise
        if not runs.is_empty_run_dir(run_dir):  # another run started and ended there meanwhile
            lock.release()
            raise UsageError(f"--run-dir {run_dir} exists and is not empty (use --resume to continue it)")
        return run_dir, created, lock
    root = Path(runs_root or runs.DEFAULT_ROOT)
    runs.check_utf8_name(root, "--runs-root")
    runs.check_creatable(root, "--runs-root")
    runs.check_path_name(root / runs.env_dirname(env_id) / f"{algo}__s{seed}__YYYYmmdd-HHMMSS-NN", "--runs-root",
                         shown=root)  # the run's own folder fits under it
    base = runs.new_run_dir(root, env_id, algo, seed)
    created = runs.make_dirs(base.parent, "--runs-root", shown=root)
    path, i = base, 1
    while True:
        try:
            path.mkdir()  # exclusive: two runs started in the same second take different names
            break
        except FileExistsError:
            path = base.with_name(f"{base.name}-{i}")
            i += 1
        except OSError as exc:
            runs.remove_created(created)
            raise UsageError(f"--runs-root {root}: cannot create {path}: {exc.strerror or first_line(exc)}") from None
    created.append(path)
    return path, created, runs.lock_run_dir(path)


def _undo_start(run_dir: Path, created: list[Path]) -> None:
    """A run that never committed leaves nothing behind: its files, and the folders it created."""
    if run_dir in created:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif run_dir.is_dir():  # an empty directory given with --run-dir: empty it again
        for child in run_dir.iterdir():
            if child.name == runs.LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        (run_dir / runs.LOCK_FILE).unlink(missing_ok=True)
    runs.remove_created([c for c in created if c != run_dir])


def train(algo: str, env_id: str, *, steps: int | None = None, seed: int = 0, n_envs: int | None = None,
          device: str = "auto", backend: str = "local", workers: int | None = None, ray_address: str | None = None,
          config_file: Path | None = None, sets: dict | None = None, runs_root: Path | None = None,
          run_dir: Path | None = None, eval_every: int | None = None, eval_episodes: int = 10,
          stop_at_return: float | None = None, checkpoint_every: int | None = None,
          final_eval_episodes: int = 100, progress: bool = True, quiet: bool = False,
          command: list[str] | None = None, untuned: bool = False, env_packages: list[str] | None = None,
          on_step=None, on_eval=None, video_every: int | None = None, preset: str | None = None,
          confirm_stopped: bool = True) -> Path:
    """Train a fresh run. Everything is validated before the run directory is created.

    ``quiet``: no progress bar and no evaluation lines. ``command``: the CLI arguments, recorded in
    config.yaml (default: this process's command line). ``env_id`` may name a user's env as
    ``module:EnvId`` or ``module:Class``, and ``env_packages`` lists modules to import first
    (rlkit.plugins); config.yaml records the canonical id and the imports. ``on_step(num_timesteps,
    agent)`` and ``on_eval(num_timesteps, result, agent)`` are the Python API's callbacks (rlkit.api);
    either returning False ends the run there (committed, status finished). ``video_every``: one
    evaluation episode to RUN_DIR/videos/step_<n>.gif every that many env steps (rlkit.render). ``preset``:
    the `<env id>@<preset>` entry of agents/hyperparams/<algo>.yaml instead of the env's own (rlkit.config),
    recorded in config.yaml as ``preset``. ``confirm_stopped`` False: a run that ``on_step`` or
    ``on_eval`` ended is not confirmed on fresh episodes (rlkit.tune's pruned trials, whose score
    nobody reads). ``eval_every`` None: the algorithm's ``default_eval_every``
    (world-models: its stages take no env steps and a controller generation tens of thousands), else
    DEFAULT_EVAL_EVERY."""
    from rlkit import plugins, registry

    global current_run_dir
    registry.check_algo(algo)
    env_id, env_packages = plugins.resolve_env(env_id, env_packages)
    if not 0 <= int(seed) <= MAX_SEED:
        raise UsageError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
    check_device(device)
    cls = registry.load_algo(algo)
    if eval_every is None:
        eval_every = int(getattr(cls, "default_eval_every", DEFAULT_EVAL_EVERY))
    sets = dict(sets or {})
    if n_envs is not None:
        sets["n_envs"] = n_envs
    cfg, env_kwargs = configlib.resolve(cls.Config, algo, env_id, config_file, sets, untuned, preset=preset)
    if steps is None:
        steps = int(getattr(cfg, "n_timesteps", 0) or 100_000)
    if backend not in ("local", "ray"):
        raise UsageError(f"--backend '{backend}' is not one of local, ray")
    if backend == "ray" and not getattr(cls, "supports_ray", False):
        raise UsageError(f"algorithm '{algo}' does not support --backend ray")
    # Options an algorithm would ignore are refused, not recorded in config.yaml as if they applied.
    if workers is not None and not _accepts(cls, "workers"):
        raise UsageError(f"--workers {workers}: algorithm '{algo}' has no workers (it trains in this process); "
                         f"leave --workers out")
    if ray_address is not None and backend != "ray" and not getattr(cls, "runs_on_ray", False):
        raise UsageError(f"--ray-address {ray_address} names a Ray cluster for --backend ray, and the backend is "
                         f"{backend} (add --backend ray, or leave --ray-address out)")
    check_env_for(cls, algo, env_id, env_kwargs)
    if video_every is not None:
        import numbers

        if isinstance(video_every, bool) or not isinstance(video_every, numbers.Integral) or video_every < 1:
            raise UsageError(f"--video-every must be an integer >= 1 (env steps between videos), got {video_every!r}")
        video_every = int(video_every)
        from rlkit.render import check_rgb_array

        check_rgb_array(env_id, env_kwargs)
    if ray_address is not None:  # its syntax, and a Ray head answering there: in seconds, before any file
        from rlkit.workers import check_reachable

        check_reachable(ray_address)
    if checkpoint_every is None:
        checkpoint_every = min(max(eval_every, steps // 10), CHECKPOINT_EVERY_CAP)
    settings = dict(algo=algo, env=env_id, env_packages=env_packages, env_kwargs=env_kwargs, seed=seed,
                    total_steps=int(steps),
                    device=device, backend=backend, workers=workers, ray_address=ray_address,
                    eval_every=eval_every, eval_episodes=eval_episodes, stop_at_return=stop_at_return,
                    checkpoint_every=checkpoint_every, final_eval_episodes=int(final_eval_episodes),
                    video_every=video_every,
                    # the entry the hyperparams came from; resume and eval use the values recorded below
                    **({"preset": preset} if preset is not None else {}),
                    **({"untuned": True} if untuned else {}),
                    hyperparams=asdict(cfg), versions=_versions(), provenance=provenance(command))

    run_dir, created, lock = _start_run_dir(runs_root, run_dir, env_id, algo, seed)
    current_run_dir = run_dir
    try:
        runs.write_config(run_dir, settings)
        return _run(cls, cfg, settings, run_dir, progress=progress, device=device, quiet=quiet,
                    hooks=(on_step, on_eval), confirm_stopped=confirm_stopped)
    except BaseException:
        # A run that never reached its first commit is not worth keeping half-made.
        if runs.committed_checkpoint(run_dir) is None:
            _undo_start(run_dir, created)
        raise
    finally:
        lock.release()


def resume(run_dir: Path, progress: bool = True, device: str | None = None, steps: int | None = None,
           quiet: bool = False) -> Path:
    """Continue a run from its last commit (rlkit.runs.commit); run.json is rewritten from it first.

    ``steps`` extends the run to that many steps (a solved run, or fewer steps than it has, is
    refused); ``device`` replaces the one in config.yaml for this process. A run killed before its
    first commit starts again from step 0; a finished run is left as it is.
    """
    global current_run_dir
    run_dir = Path(run_dir)
    runs.read_config(run_dir)  # exists, and is a run directory, before anything is written in it
    lock = runs.lock_run_dir(run_dir)
    current_run_dir = run_dir
    try:
        return _resume_locked(run_dir, progress, device, steps, quiet)
    except UsageError:
        lock.release(restore=True)  # refused: the .lock is left as it was found (docs/architecture.md §5)
        raise
    finally:
        lock.release()


def _resume_locked(run_dir: Path, progress: bool, device: str | None, steps: int | None, quiet: bool) -> Path:
    from rlkit import registry

    settings = runs.read_config(run_dir, training=True)
    device = device or settings.get("device") or "auto"
    check_device(device, hint=" (pass --device cpu to resume on the CPU)")
    cls = registry.load_algo(settings["algo"])
    cfg = configlib.check_saved(cls.Config, settings.get("hyperparams") or {}, f"{run_dir / 'config.yaml'} hyperparams")
    total = int(settings["total_steps"])
    ckpt = runs.committed_checkpoint(run_dir)
    if ckpt is None and not (run_dir / "run.json").exists():
        # Killed before its first commit: nothing of it counts. Start again from step 0.
        runs.clean_uncommitted(run_dir, None)
        for events in run_dir.glob("events.out.tfevents.*"):
            events.unlink()
        extended = steps is not None and steps != total
        if extended:
            settings["total_steps"] = int(steps)
        return _run(cls, cfg, settings, run_dir, progress=progress, device=device, quiet=quiet,
                    on_ready=lambda: extended and runs.write_config(run_dir, settings))

    if ckpt is None:
        ckpt = runs.latest_checkpoint(run_dir)  # an older run without `latest`; none: exit 2
    runs.clean_uncommitted(run_dir, ckpt)
    info = runs.committed_state(ckpt)
    if info is None:  # a checkpoint committed without its run state (runs older than run-state commits)
        info = runs.load_run_info(run_dir) if (run_dir / "run.json").exists() else {}
    done = int(info.get("steps", 0))
    solved = info.get("solved_at_step") is not None
    extended = steps is not None and steps != total
    if extended:
        if steps < done:
            raise UsageError(f"--steps {steps} is fewer than the {done} steps {run_dir} has trained")
        if solved:
            raise UsageError(f"{run_dir} was solved at step {info['solved_at_step']}; a solved run is not "
                             f"extended (--steps {steps})")
        settings["total_steps"] = total = int(steps)
    shown = runs.read_run_json(run_dir)
    if (shown.get("status") in ("finished", "solved") and shown.get("steps") == done
            and shown.get("total_steps") == total and (done >= total or solved)):
        from rlkit.checkpoint import load_checkpoint

        load_checkpoint(ckpt)  # the commit it ended on can still be loaded (not truncated, not emptied)
        return run_dir  # finished: nothing to do, nothing rewritten

    def ready():  # the checkpoint loaded: now config.yaml and run.json may change
        if extended:
            runs.write_config(run_dir, settings)
        runs.write_run_json(run_dir, {**info, "status": "running"})  # run.json = the commit resumed from

    return _run(cls, cfg, settings, run_dir, progress=progress, checkpoint=ckpt, device=device, info=info,
                on_ready=ready, quiet=quiet)


def _run(cls, cfg, settings, run_dir, progress, checkpoint=None, device=None, info=None, on_ready=None,
         quiet=False, hooks=(None, None), confirm_stopped=True) -> Path:
    """Build (or load from ``checkpoint``) the agent, call ``on_ready()`` once it exists, train,
    evaluate, commit the last checkpoint, confirm, and write the final run.json."""
    from rlkit.checkpoint import load_agent_checkpoint

    env_id, seed, total = settings["env"], int(settings["seed"]), int(settings["total_steps"])
    device = device or settings.get("device", "auto")
    committed = json.loads(json.dumps(info)) if checkpoint is not None else None
    info = dict(info or {})
    wall_offset = float(info.get("wall_s", 0.0))
    solved = info.get("solved_at_step") is not None
    info.update(algo=settings["algo"], env=env_id, seed=seed, total_steps=total, run_dir=str(run_dir))
    info.pop("status", None)
    info.pop("final_eval", None)  # a resumed run is confirmed again when it ends

    start_step = 0
    if checkpoint is not None:
        agent = load_agent_checkpoint(cls, checkpoint, env_id, settings.get("env_kwargs") or {}, device,
                                      algo=settings["algo"])
        if hasattr(agent, "set_backend"):  # resume where the run trained: its workers and backend
            agent.set_backend(settings.get("backend", "local"), settings.get("workers"), settings.get("ray_address"))
        start_step = int(agent.num_timesteps)
        if on_ready is not None:
            on_ready()
    logger = Logger(run_dir, progress=progress and not quiet, total_steps=total, desc=f"{settings['algo']} {env_id}",
                    initial_step=start_step, echo=not quiet)
    # torch imports its compiler stack (~1 s) on the first optimizer construction; importing it here
    # keeps library import time off the training clock for every algorithm alike.
    import torch._dynamo  # noqa: F401

    t0 = time.perf_counter()  # the clock starts when the agent is built: same for every algorithm
    callback = TrainingCallback(run_dir, env_id, settings.get("env_kwargs") or {}, logger, info,
                                int(settings["eval_every"]), int(settings["eval_episodes"]),
                                settings.get("stop_at_return"), int(settings["checkpoint_every"]),
                                start_step=start_step, wall_offset=wall_offset, committed=committed, solved=solved,
                                video_every=settings.get("video_every"))
    callback.t0 = t0
    callback.user_on_step, callback.user_on_eval = hooks
    callback.stop_guard = guard = StopAtBoundary()
    try:
        if checkpoint is None:
            agent = _construct(cls, env_id, cfg, seed=seed, device=device, run_dir=run_dir, logger=logger,
                               env_kwargs=settings.get("env_kwargs") or {}, n_envs=getattr(cfg, "n_envs", None),
                               backend=settings.get("backend", "local"), workers=settings.get("workers"),
                               ray_address=settings.get("ray_address"))
            if on_ready is not None:
                on_ready()
        else:
            agent.logger, agent.run_dir = logger, run_dir
        if not callback.solved:  # a run resumed from its solving commit does not train on
            agent.learn(total, callback=callback)
        steps = int(agent.num_timesteps)
        callback.stop_if_asked(steps, agent)  # stopped after the last boundary: learn's end is one too
        evals = callback.info.get("evals") or []
        # resuming a committed end evaluates nothing twice; an agent with no policy is not scored
        evaluated = (not evals or evals[-1][0] != steps) and has_policy(agent)
        if evaluated:
            callback.run_eval(steps, agent)
            callback.after_eval(steps, agent)
        if callback.committed is None or callback.committed.get("steps") != steps:
            callback.checkpoint(steps, agent)
        elif evaluated:  # step `steps` was committed before its last evaluation: commit that evaluation too
            callback.commit(steps, runs.checkpoint_dir(run_dir) / f"step_{steps}.pt")
        callback.stop_if_asked(steps, agent)
        guard.disarm()  # everything is committed: the confirmation below stops at once
        wall_s = callback.wall()  # the confirmation below is scoring, not training time
        confirm = has_policy(agent) and (confirm_stopped or not callback.stopped_by_user)
        if int(settings.get("final_eval_episodes", 100)) > 0 and confirm:
            callback.confirm(agent, int(settings.get("final_eval_episodes", 100)))
        callback.write_info(steps, status="solved" if callback.solved else "finished", wall_s=wall_s)
    except BaseException as exc:
        try:
            callback.mark_stopped("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        except OSError:  # a full disk must not hide the error that stopped the run
            pass
        raise
    finally:
        guard.disarm()
        logger.close()
        close = getattr(locals().get("agent"), "close", None)
        if callable(close):
            close()
    return run_dir
