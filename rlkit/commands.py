"""The CLI verbs. Bad input raises UsageError -> one line on stderr, exit code 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rlkit.errors import UsageError


def dispatch(args) -> int:
    if not getattr(args, "window", False):  # headless unless a window was asked for
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # no ALSA noise on machines without sound
    try:
        return COMMANDS[args.command](args) or 0
    except UsageError as exc:
        print(f"rlkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlkit: interrupted", file=sys.stderr)
        return 130


def cmd_list(args) -> int:
    from rlkit import registry

    print("algorithms:")
    for name in registry.ALGOS:
        mark = "" if registry.available(name) else "  (not available yet)"
        print(f"  {name:14s} {registry.DESCRIPTIONS[name]}{mark}")
    import gymnasium as gym

    import envs  # noqa: F401

    ours = sorted(k for k in gym.registry if k.startswith("rlkit/"))
    print("rlkit environments:")
    for env_id in ours:
        print(f"  {env_id}")
    print("plus every registered Gymnasium id, e.g. CartPole-v1, Pendulum-v1, Acrobot-v1, "
          "LunarLander-v3, CarRacing-v3")
    return 0


def cmd_train(args) -> int:
    from rlkit import config as configlib
    from rlkit import training

    progress = not args.no_progress
    if args.resume:
        run_dir = training.resume(Path(args.resume), progress=progress)
    else:
        if not args.algo or not args.env:
            raise UsageError("train needs --algo and --env (or --resume RUN_DIR)")
        run_dir = training.train(
            args.algo, args.env, steps=args.steps, seed=args.seed, n_envs=args.n_envs, device=args.device,
            backend=args.backend, workers=args.workers, ray_address=args.ray_address,
            config_file=Path(args.config) if args.config else None, sets=configlib.parse_set(args.set),
            runs_root=Path(args.runs_root), run_dir=Path(args.run_dir) if args.run_dir else None,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes, stop_at_return=args.stop_at_return,
            checkpoint_every=args.checkpoint_every, final_eval_episodes=args.final_eval_episodes,
            progress=progress)
    from rlkit.runs import read_run_json

    info = read_run_json(run_dir)
    ev = info.get("final_eval") or {}
    line = f"run {run_dir}: {info.get('status')} after {info.get('steps')} steps in {info.get('wall_s')} s"
    if ev:
        line += (f", final eval {ev['mean_return']:.2f} ± {ev['std_return']:.2f} over {ev['episodes']} fresh "
                 f"episodes")
    if "solved_at_step" in info:
        line += f", solved at step {info['solved_at_step']} ({info['solved_at_s']} s)"
    print(line)
    return 0


def cmd_eval(args) -> int:
    from rlkit.runs import load_run
    from rlkit.evaluation import CONFIRM_SEED, evaluate

    agent, settings = load_run(Path(args.run_dir))
    seed = CONFIRM_SEED if args.seed is None else args.seed
    result = evaluate(agent, settings["env"], args.episodes, seed=seed,
                      env_kwargs=settings.get("env_kwargs") or {}, reference=True)
    result.pop("returns")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{settings['algo']} on {settings['env']}: {result['mean_return']:.3f} ± {result['std_return']:.3f} "
          f"over {result['episodes']} episodes (mean length {result['mean_ep_length']:.1f}, "
          f"reward/step {result['reward_per_step']:.4f})")
    if "reference" in result:
        ref = result["reference"]
        print(f"reference: {ref['name']} = {ref['score']:.4f} ({ref['metric']}); "
              f"fraction of reference: {result['fraction_of_reference']:.3f}")
    return 0


def cmd_render(args) -> int:
    from rlkit.render import render_run

    out = render_run(Path(args.run_dir), episodes=args.episodes, seed=args.seed,
                     out=Path(args.out) if args.out else None, window=args.window)
    if out is not None:
        print(f"wrote {out}")
    return 0


def cmd_compare(args) -> int:
    from rlkit.compare import compare

    compare([Path(p) for p in args.paths], out=Path(args.out) if args.out else None, threshold=args.threshold)
    return 0


def cmd_tensorboard(args) -> int:
    import subprocess

    logdir = Path(args.logdir)
    if not logdir.is_dir():
        raise UsageError(f"--logdir {logdir} does not exist (train something first)")
    print(f"TensorBoard on http://localhost:{args.port} (logdir {logdir}); Ctrl-C to stop")
    return subprocess.call([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                            "--port", str(args.port)])


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "render": cmd_render,
            "compare": cmd_compare, "tensorboard": cmd_tensorboard}
