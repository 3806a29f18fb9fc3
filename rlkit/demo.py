"""`make run`: the main job on an embedded default, start to finish in a few minutes on 2 cores.

Trains the hand-written PPO and its Stable-Baselines3 baseline on CartPole-v1 (same seed, same
stop-at-475 protocol), evaluates both on fresh seeds, renders one episode of each to a GIF, writes
the comparison table and plot (runs/demo/CartPole-v1/comparison.png: a marker per evaluation, so
the hand-written PPO that solves at its first evaluation is a visible point), and prints the
command that opens TensorBoard.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ENV = "CartPole-v1"
ALGOS = ("ppo", "sb3-ppo")


def main(root: str = "runs/demo") -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    from rlkit.runs import load_run
    from rlkit.compare import compare
    from rlkit.evaluation import CONFIRM_SEED, evaluate
    from rlkit.render import render_run
    from rlkit.runs import read_run_json
    from rlkit.training import train

    root_path = Path(root)
    t0 = time.perf_counter()
    run_dirs = []
    for algo in ALGOS:
        print(f"== training {algo} on {ENV} (stop at eval >= 475, eval every 5120 steps)")
        run_dir = train(algo, ENV, seed=0, steps=100_000, runs_root=root_path, eval_every=5120, eval_episodes=10,
                        stop_at_return=475.0, progress=sys.stdout.isatty())
        info = read_run_json(run_dir)
        print(f"   {run_dir}: {info['status']} at step {info.get('solved_at_step', info['steps'])} "
              f"in {info.get('solved_at_s', info['wall_s'])} s")
        run_dirs.append(run_dir)
    print(f"== evaluating (20 deterministic episodes each, seeds {CONFIRM_SEED}+: never seen by the stop check)")
    for run_dir in run_dirs:
        agent, settings = load_run(run_dir)
        r = evaluate(agent, ENV, 20, seed=CONFIRM_SEED)
        print(f"   {settings['algo']:8s} mean return {r['mean_return']:.1f} ± {r['std_return']:.1f}")
    print("== rendering one episode each")
    for run_dir in run_dirs:
        written = render_run(run_dir, out=run_dir / "videos" / "episode.gif",
                             on_episode=lambda i, seed, ret, n: print(f"   episode seed {seed}: return {ret:.1f}, "
                                                                      f"length {n}"))
        print(f"   wrote {written}")
    print("== comparison")
    compare([root_path / ENV])
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Open the curves with:\n"
          f"   .venv/bin/rlkit tensorboard --logdir {root_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
