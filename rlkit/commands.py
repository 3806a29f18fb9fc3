"""The CLI verbs. Bad input raises UsageError -> one line on stderr, exit code 2.

``dispatch`` is the one top-level handler (docs/architecture.md §4): UsageError -> exit 2 and its
message as one line; Ctrl-C -> 130, SIGTERM -> 143 (a run commits its next update boundary and
stops, rlkit.training.StopAtBoundary; stdout then gets the exact ``rlkit train --resume RUN_DIR``
command when the run has a commit to continue from); a
closed stdout pipe (``rlkit list | head -1``) -> quiet, 141; anything else -> exit 1 and one line
naming the crash log that holds the traceback (in the run directory being trained, else a temp file).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from rlkit.errors import Terminated, UsageError, first_line


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


# Set by the SIGTERM handler: code between the handler and ``dispatch`` may turn its Terminated into a
# plain KeyboardInterrupt (Ray's C++ waits report any exception a signal handler raised as one).
_sigterm_received = False


def _raise_terminated(signum, frame):
    global _sigterm_received
    _sigterm_received = True
    raise Terminated()


class _FreezeAfterImport:
    """Import hook that moves the objects torch's import creates out of the garbage collector's way.

    ``import torch`` (and ``torch._dynamo``, which training's optimizers import) creates a quarter
    of a million long-lived objects; the collector walks them all in every full collection while
    the import runs and again at interpreter exit: about 0.5 s of CPU in a 1.6 s ``rlkit eval``.
    These imports run with the collector off and end with ``gc.freeze()``, which puts every object
    alive at that moment (module-level objects that live until exit anyway) in the permanent
    generation; objects made later are collected as usual. One-shot per module, and installed only
    in a process that has not imported torch yet (the CLI's own; not tests calling ``dispatch``
    in-process, whose other objects it would freeze too)."""

    NAMES = ("torch", "torch._dynamo")

    def __init__(self):
        self.pending = {name for name in self.NAMES if name not in sys.modules}

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        import importlib.util

        self.pending.discard(name)
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the finders after this one
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            import gc

            enabled = gc.isenabled()
            gc.disable()
            try:
                run(module)
            finally:
                gc.freeze()
                if enabled:
                    gc.enable()

        spec.loader.exec_module = exec_module  # this spec's own loader object
        return spec

    @classmethod
    def install(cls) -> None:
        if "torch" in sys.modules or any(isinstance(finder, cls) for finder in sys.meta_path):
            return
        sys.meta_path.insert(0, cls())


def dispatch(args) -> int:
    _FreezeAfterImport.install()  # start-up time: docs/architecture.md §4
    if not getattr(args, "window", False):  # headless unless a window was asked for
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # no ALSA noise on machines without sound
    training = sys.modules.get("rlkit.training")
    if training is not None:
        training.current_run_dir = None
    _seeds_left.clear()
    global _sigterm_received
    _sigterm_received = False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        code = COMMANDS[args.command](args) or 0
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except UsageError as exc:
        print(f"rlkit: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("rlkit: terminated", file=sys.stderr)
        _resume_hint()
        return 143
    except KeyboardInterrupt:
        if _sigterm_received:  # SIGTERM exits 143, whatever became of its exception on the way
            print("rlkit: terminated", file=sys.stderr)
            _resume_hint()
            return 143
        print("rlkit: interrupted", file=sys.stderr)
        _resume_hint()
        return 130
    except BrokenPipeError:
        _drop_stdout()
        return 141
    except Exception as exc:  # noqa: BLE001  the last resort: one line, the traceback in a file
        from rlkit.workers import WorkerError

        if isinstance(exc, WorkerError):  # a worker that raised or kept dying: named, the run resumable
            print(f"rlkit: error: {_one_line(first_line(exc))}", file=sys.stderr)
            _resume_hint()
            return 1
        path = _crash_log(exc)
        print(f"rlkit: unexpected error: {type(exc).__name__}: {_one_line(first_line(exc))} "
              f"(traceback in {path})", file=sys.stderr)
        return 1
    finally:
        if main_thread:  # None: a handler installed outside Python; the default is the closest
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# Seeds of `train --seeds` not started yet (for the hint after Ctrl-C).
_seeds_left: list[int] = []


def _resume_hint() -> None:
    """After Ctrl-C / SIGTERM in training: the command that continues the stopped run (on stdout, the
    run's own output; stderr keeps its one line). Nothing if the run never committed: it is gone."""
    training = sys.modules.get("rlkit.training")
    run_dir = getattr(training, "current_run_dir", None)
    lines = []
    try:
        from rlkit.runs import committed_checkpoint

        if run_dir is not None and Path(run_dir).is_dir() and committed_checkpoint(run_dir) is not None:
            lines.append(f"resume with: rlkit train --resume {shlex.quote(str(run_dir))}")
        if _seeds_left:
            lines.append(f"seeds not started: {' '.join(map(str, _seeds_left))}")
        if lines:
            sys.stderr.flush()
            print("\n".join(lines), flush=True)
    except (OSError, ValueError):  # stdout closed: the hint is lost, the exit code stays
        pass


def _drop_stdout() -> None:
    """The reader of our stdout has gone: send what is still buffered to /dev/null, so the
    interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in tests)
        pass


def _crash_log(exc: BaseException) -> str:
    """Write the traceback to RUN_DIR/crash.log (the run being trained) or a temp file; its path."""
    import tempfile
    import traceback

    try:
        text = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} rlkit {' '.join(sys.argv[1:])}\n"
                + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except Exception as problem:  # noqa: BLE001  the log must not fail in turn
        text = f"--- rlkit: the traceback could not be formatted ({problem!r})\n{exc!r}\n"
    # Text that cannot be encoded (a non-UTF-8 file name, as surrogates) is written escaped, not refused.
    opened = {"encoding": "utf-8", "errors": "backslashreplace"}
    training = sys.modules.get("rlkit.training")
    run_dir = getattr(training, "current_run_dir", None)
    try:
        if run_dir is not None and Path(run_dir).is_dir():
            path = Path(run_dir) / "crash.log"
            with open(path, "a", **opened) as f:
                f.write(text)
            return str(path)
    except (OSError, ValueError):
        pass
    try:
        fd, path = tempfile.mkstemp(prefix="rlkit-crash-", suffix=".log")
        with os.fdopen(fd, "w", **opened) as f:
            f.write(text)
        return path
    except (OSError, ValueError) as problem:
        return f"nowhere: no crash log could be written ({problem.__class__.__name__}: {problem})"


def _writable_file(out: Path, flag: str) -> None:
    """Refuse an output file that cannot be written, before the work that produces it."""
    from rlkit.runs import check_creatable

    if out.is_dir():
        raise UsageError(f"{flag} {out} is a directory, not a file")
    check_creatable(out.parent, flag, shown=out)


def _output_errors(out: Path, files: list[Path], flag: str):
    """OSErrors on writing ``files`` (or on making the folders above them) become one-line usage
    errors naming ``flag out``; any other OSError goes on."""
    import contextlib

    ours = {p.resolve() for f in files for p in (f, *f.parents)}

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except OSError as exc:
            name = getattr(exc, "filename", None)
            if name is None or Path(name).resolve() not in ours:
                raise
            raise UsageError(f"{flag} {out} cannot be written: {exc.strerror or first_line(exc)}") from None

    return guard()


def cmd_list(args) -> int:
    from rlkit import registry
    from rlkit.config import list_presets

    print("algorithms:")
    for name in registry.ALGOS:
        mark = "" if registry.available(name) else "  (not available yet)"
        print(f"  {name:14s} {registry.DESCRIPTIONS[name]}{mark}")
        presets = [f"{env_id}@{preset}" for env_id, names in list_presets(name).items() for preset in names]
        if presets:  # `train --preset NAME` (agents/hyperparams/<algo>.yaml entries keyed <env id>@NAME)
            print(f"  {'':14s} presets: {', '.join(presets)}")
    import gymnasium as gym

    import envs  # noqa: F401

    ours = sorted(k for k in gym.registry if k.startswith("rlkit/"))
    print("rlkit environments:")
    for env_id in ours:
        print(f"  {env_id}")
    print("plus every registered Gymnasium id, e.g. CartPole-v1, Pendulum-v1, Acrobot-v1, "
          "LunarLander-v3, CarRacing-v3")
    return 0


# Options that set up a new run; --resume continues a run with the settings in its config.yaml.
NEW_RUN_ONLY = (("algo", "--algo"), ("env", "--env"), ("seed", "--seed"), ("n_envs", "--n-envs"),
                ("backend", "--backend"), ("workers", "--workers"), ("ray_address", "--ray-address"),
                ("config", "--config"), ("set", "--set"), ("runs_root", "--runs-root"), ("run_dir", "--run-dir"),
                ("eval_every", "--eval-every"), ("eval_episodes", "--eval-episodes"),
                ("stop_at_return", "--stop-at-return"), ("final_eval_episodes", "--final-eval-episodes"),
                ("checkpoint_every", "--checkpoint-every"), ("untuned", "--untuned"), ("preset", "--preset"),
                ("env_package", "--env-package"), ("video_every", "--video-every"))


def _given(args, dest):
    return getattr(args, dest, None) is not None


def cmd_train(args) -> int:
    from rlkit import training

    progress = not args.no_progress
    quiet = bool(getattr(args, "quiet", False))
    if getattr(args, "seeds", None) is not None:
        return _train_seeds(args, progress, quiet)
    if args.resume:
        given = [flag for dest, flag in NEW_RUN_ONLY if _given(args, dest)]
        if given:
            raise UsageError(f"--resume continues {args.resume} with the settings in its config.yaml: "
                             f"{', '.join(given)} cannot change them (with --resume, --steps extends the run "
                             f"and --device picks the device)")
        run_dir = training.resume(Path(args.resume), progress=progress, device=args.device, steps=args.steps,
                                  quiet=quiet)
    else:
        if not args.algo or not args.env:
            raise UsageError("train needs --algo and --env (or --resume RUN_DIR)")
        run_dir = _train_new(args, args.seed if args.seed is not None else 0, progress, quiet)
    _print_run_line(run_dir)
    return 0


def _train_new(args, seed: int, progress: bool, quiet: bool) -> Path:
    from rlkit import config as configlib
    from rlkit import training

    def default(value, fallback):
        return fallback if value is None else value

    run_dir = getattr(args, "run_dir", None)
    return training.train(
        args.algo, args.env, steps=args.steps, seed=seed, n_envs=args.n_envs,
        device=default(args.device, "auto"), backend=default(args.backend, "local"), workers=args.workers,
        ray_address=args.ray_address, config_file=Path(args.config) if args.config else None,
        sets=configlib.parse_set(args.set or []), runs_root=Path(default(args.runs_root, "runs")),
        run_dir=Path(run_dir) if run_dir else None, eval_every=args.eval_every,
        eval_episodes=default(args.eval_episodes, 10), stop_at_return=args.stop_at_return,
        checkpoint_every=args.checkpoint_every, final_eval_episodes=default(args.final_eval_episodes, 100),
        progress=progress, quiet=quiet, command=getattr(args, "argv", None),
        untuned=bool(getattr(args, "untuned", False)), preset=getattr(args, "preset", None),
        env_packages=getattr(args, "env_package", None),
        video_every=getattr(args, "video_every", None))


def _train_seeds(args, progress: bool, quiet: bool) -> int:
    """`train --seeds S1 S2 ...`: one new run per seed, one after another, in RUNS_ROOT/<env>/."""
    import statistics

    from rlkit.runs import read_run_json

    clash = [flag for dest, flag in (("seed", "--seed"), ("run_dir", "--run-dir"), ("resume", "--resume"))
             if _given(args, dest)]
    if clash:
        raise UsageError(f"--seeds starts one new run per seed in RUNS_ROOT/<env>/: it cannot be combined with "
                         f"{', '.join(clash)}")
    seeds = list(args.seeds)
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UsageError(f"--seeds {' '.join(map(str, seeds))}: seed {', '.join(map(str, twice))} given more than "
                         f"once (a repeated seed repeats the same run)")
    if not args.algo or not args.env:
        raise UsageError("train --seeds needs --algo and --env")
    done: list[Path] = []
    for i, seed in enumerate(seeds):
        _seeds_left[:] = seeds[i + 1:]
        if not quiet and len(seeds) > 1:
            print(f"== seed {seed} ({i + 1}/{len(seeds)})", flush=True)
        run_dir = _train_new(args, seed, progress, quiet)
        _print_run_line(run_dir)
        done.append(run_dir)
    _seeds_left.clear()
    infos = [read_run_json(d) for d in done]
    finals = [i["final_eval"]["mean_return"] for i in infos if (i.get("final_eval") or {}).get("mean_return")
              is not None]
    folder = done[0].parent
    env_id = infos[0].get("env") or args.env  # the canonical id, not the module:EnvId form
    line = f"{len(done)} runs of {args.algo} on {env_id} (seeds {' '.join(map(str, seeds))}) in {folder}"
    if finals:
        spread = f" ± {statistics.stdev(finals):.2f} (std over seeds)" if len(finals) > 1 else ""
        line += f": final eval {statistics.fmean(finals):.2f}{spread}"
    if args.stop_at_return is not None:
        line += f", solved {sum('solved_at_step' in i for i in infos)}/{len(done)}"
    print(f"{line}; compare them with: rlkit compare {shlex.quote(str(folder))}")
    return 0


def _print_run_line(run_dir: Path) -> None:
    from rlkit.runs import read_run_json

    info = read_run_json(run_dir)
    ev = info.get("final_eval") or {}
    line = f"run {run_dir}: {info.get('status')} after {info.get('steps')} steps in {info.get('wall_s')} s"
    if ev:
        line += (f", final eval {ev['mean_return']:.2f} ± {ev['std_return']:.2f} over {ev['episodes']} fresh "
                 f"episodes")
    if "solved_at_step" in info:
        line += f", solved at step {info['solved_at_step']} ({info['solved_at_s']} s)"
    print(line, flush=True)


def cmd_eval(args) -> int:
    from rlkit.runs import load_run
    from rlkit.evaluation import CONFIRM_SEED, evaluate

    which = getattr(args, "checkpoint", "latest")
    agent, settings = load_run(Path(args.run_dir), checkpoint=which)
    seed = CONFIRM_SEED if args.seed is None else args.seed
    result = evaluate(agent, settings["env"], args.episodes, seed=seed,
                      env_kwargs=settings.get("env_kwargs") or {}, reference=True)
    result.pop("returns")
    step = int(getattr(agent, "num_timesteps", 0))
    if args.json:  # what was scored, then the score
        print(json.dumps({"algo": settings["algo"], "env": settings["env"], "seed": settings.get("seed"),
                          "checkpoint": which, "checkpoint_step": step, "eval_seed": seed,
                          "run_dir": str(args.run_dir), **result}))
        return 0
    print(f"{settings['algo']} on {settings['env']} (seed {settings.get('seed')}, checkpoint {which} at step {step}): "
          f"{result['mean_return']:.3f} ± {result['std_return']:.3f} "
          f"over {result['episodes']} episodes (mean length {result['mean_ep_length']:.1f}, "
          f"reward/step {result['reward_per_step']:.4f})")
    if "reference" in result:
        ref = result["reference"]
        print(f"reference: {ref['name']} = {ref['score']:.4f} ({ref['metric']}); "
              f"fraction of reference: {result['fraction_of_reference']:.3f}")
    return 0


def cmd_render(args) -> int:
    from rlkit.render import render_run

    out = Path(args.out) if args.out else None
    if args.window:  # before the checkpoint is loaded and episodes are played into nowhere
        from rlkit.render import check_display

        check_display()
    else:  # the file is checked before episodes are rendered, not after
        _writable_file(out or Path(args.run_dir) / "videos" / "episode.gif", "--out")
    target = out or Path(args.run_dir) / "videos" / "episode.gif"

    def report(index, seed, episode_return, length):
        print(f"episode {index + 1} (seed {seed}): return {episode_return:.2f}, length {length}", flush=True)

    with _output_errors(target, [target], "--out"):  # write_video's errors name the target, not its temp file
        written = render_run(Path(args.run_dir), episodes=args.episodes, seed=args.seed, out=out, window=args.window,
                             checkpoint=getattr(args, "checkpoint", "latest"), on_episode=report)
    if written is not None:
        print(f"wrote {written}")
    return 0


def cmd_compare(args) -> int:
    from rlkit.compare import compare
    from rlkit.runs import check_creatable

    out = Path(args.out or args.paths[0])
    if out.is_file():  # as rlkit.compare does: the files go next to it
        out = out.parent
    check_creatable(out, "--out")
    with _output_errors(out, [out / "comparison.md", out / "comparison.png"], "--out"):
        compare([Path(p) for p in args.paths], out=Path(args.out) if args.out else None, threshold=args.threshold)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go: a port in use (or a host that is not this machine's)
    is refused with one line, before TensorBoard starts and fails on it."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise UsageError(f"--host {host}: not an address of this machine ({why})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TensorBoard's server binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"--port {port} is in use on {host} (another TensorBoard?); pick another "
                                 f"with --port") from None
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None


def cmd_tensorboard(args) -> int:
    import subprocess

    logdir = Path(args.logdir)
    if not logdir.is_dir():
        raise UsageError(f"--logdir {logdir} does not exist (train something first)")
    host = getattr(args, "host", "127.0.0.1")
    shown = f"[{host}]" if ":" in host else host
    _check_port_free(host, args.port)  # before the banner: TensorBoard's own bind error is a traceback
    print(f"TensorBoard on http://{shown}:{args.port} (logdir {logdir}); Ctrl-C to stop")
    return subprocess.call([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                            "--host", host, "--port", str(args.port)])


def cmd_tune(args) -> int:
    """`rlkit tune`: Optuna trials as run directories, best.yaml, charts (rlkit/tune.py, docs/tune.md)."""
    from rlkit import tune

    try:
        tune.tune(args.algo, args.env, args.trials, timeout=args.timeout, jobs=args.jobs, backend=args.backend,
                  ray_address=args.ray_address, runs_root=Path(args.runs_root), storage=args.storage,
                  study=args.study, sampler=args.sampler, pruner=args.pruner, space=args.space, seed=args.seed,
                  seeds=getattr(args, "seeds", None), objective=getattr(args, "objective", None),
                  steps=args.steps, stop_at_return=args.stop_at_return, eval_every=args.eval_every,
                  eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                  startup_trials=args.startup_trials, env_packages=args.env_package,
                  command=getattr(args, "argv", None), preset=getattr(args, "preset", None))
    except tune.TrialsFailed as exc:  # the study is fine and kept; this run's trials all failed
        print(f"rlkit: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "render": cmd_render,
            "compare": cmd_compare, "tensorboard": cmd_tensorboard, "tune": cmd_tune}
