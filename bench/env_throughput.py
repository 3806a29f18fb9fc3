"""Steps/s of each native numpy vector env vs SyncVectorEnv of the same id.

    python bench/env_throughput.py [--num-envs 256] [--seconds 3] [--envs rlkit/Catch-v0 ...]

The ids: rlkit's four envs (their ``vector_entry_point``) and Gymnasium's Acrobot-v1, MountainCar-v0,
MountainCarContinuous-v0 and Pendulum-v1 (``envs.classic_vector``, what rlkit's make_vec_env builds).

Both vector envs run in the default NEXT_STEP autoreset mode with the registered TimeLimit,
on the same pre-sampled random actions (so episode ends and autoreset steps are included).
Prints one row per env and the ratio native / sync; the target is >= 20x at 256 copies.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym

import envs

N_ACTIONS = 64  # distinct pre-sampled action batches, cycled


def make_native(env_id: str, num_envs: int):
    if env_id in envs.CLASSIC_VECTOR_IDS:
        from envs.classic_vector import make_vector

        return make_vector(env_id, num_envs)
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")


def steps_per_second(venv, seconds: float, seed: int = 0) -> float:
    venv.reset(seed=seed)
    venv.action_space.seed(seed)  # the same random actions for the native and the Sync env
    actions = [venv.action_space.sample() for _ in range(N_ACTIONS)]
    for k in range(5):  # warm-up (first-step checks, buffer fills)
        venv.step(actions[k])
    steps, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for k in range(16):
            venv.step(actions[(steps + k) % N_ACTIONS])
        steps += 16
        now = time.perf_counter()
        if now >= deadline:
            break
    return steps * venv.num_envs / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=256, help="copies per vector env (256)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (3)")
    parser.add_argument("--envs", nargs="+", default=list(envs.ENV_IDS) + list(envs.CLASSIC_VECTOR_IDS),
                        help="ids to measure (default: all eight)")
    args = parser.parse_args(argv)
    if args.num_envs < 1 or args.seconds <= 0:
        print("--num-envs must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2

    print(f"num_envs={args.num_envs}, {args.seconds:g} s per measurement, numpy {np.__version__}, "
          f"gymnasium {gym.__version__}")
    header = f"{'env':<26} {'sync steps/s':>14} {'native steps/s':>16} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    worst = float("inf")
    for env_id in args.envs:
        sync = gym.make_vec(env_id, num_envs=args.num_envs, vectorization_mode="sync")
        native = make_native(env_id, args.num_envs)
        s = steps_per_second(sync, args.seconds)
        v = steps_per_second(native, args.seconds)
        sync.close()
        native.close()
        ratio = v / s
        worst = min(worst, ratio)
        print(f"{env_id:<26} {s:>14,.0f} {v:>16,.0f} {ratio:>7.1f}x", flush=True)
    print(f"minimum ratio: {worst:.1f}x (target >= 20x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
