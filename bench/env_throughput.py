"""Steps/s of each native numpy vector env vs SyncVectorEnv of the same id.

    python bench/env_throughput.py [--num-envs 256] [--seconds 3] [--envs rlkit/Catch-v0 ...]
    python bench/env_throughput.py --processes [--copies 8 16] [--envs LunarLander-v3] [--seconds 3]

The ids: rlkit's four envs (their ``vector_entry_point``) and Gymnasium's Acrobot-v1, MountainCar-v0,
MountainCarContinuous-v0 and Pendulum-v1 (``envs.classic_vector``, what rlkit's make_vec_env builds).

Both vector envs run in the default NEXT_STEP autoreset mode with the registered TimeLimit,
on the same pre-sampled random actions (so episode ends and autoreset steps are included).
Prints one row per env and the ratio native / sync; the target is >= 20x at 256 copies.

``--processes``: SyncVectorEnv vs AsyncVectorEnv as rlkit builds it for ``async_envs: true``
(rlkit.environments.async_vector_env: one spawn process per copy, shared-memory observations) for
slow-stepping envs (default LunarLander-v3), one row per copy count, the ratio async / sync. The
processes' start-up is outside the timing; the machine's core count is printed with the figures.
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


def processes(env_ids: list[str], copies: list[int], seconds: float) -> int:
    """SyncVectorEnv vs rlkit's AsyncVectorEnv (one process per copy), steps/s and the ratio."""
    from rlkit.environments import AUTORESET, async_vector_env

    print(f"SyncVectorEnv vs AsyncVectorEnv (one spawn process per copy), {seconds:g} s per measurement, "
          f"{os.cpu_count()} cores, gymnasium {gym.__version__}")
    header = f"{'env':<18} {'copies':>6} {'sync steps/s':>14} {'async steps/s':>15} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    for env_id in env_ids:
        for n in copies:
            sync = gym.vector.SyncVectorEnv([lambda e=env_id: gym.make(e) for _ in range(n)], autoreset_mode=AUTORESET)
            procs = async_vector_env(env_id, n)
            try:
                s = steps_per_second(sync, seconds)
                a = steps_per_second(procs, seconds)
            finally:
                sync.close()
                procs.close()
            print(f"{env_id:<18} {n:>6} {s:>14,.0f} {a:>15,.0f} {a / s:>7.2f}x", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=256, help="copies per vector env (256)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (3)")
    parser.add_argument("--envs", nargs="+", default=None,
                        help="ids to measure (default: all eight; with --processes LunarLander-v3)")
    parser.add_argument("--processes", action="store_true",
                        help="SyncVectorEnv vs AsyncVectorEnv (rlkit's async_envs) instead of native vs sync")
    parser.add_argument("--copies", type=int, nargs="+", default=[8, 16],
                        help="with --processes: copy counts, one row each (8 16)")
    args = parser.parse_args(argv)
    if args.num_envs < 1 or args.seconds <= 0 or min(args.copies) < 1:
        print("--num-envs and --copies must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    if args.processes:
        return processes(args.envs or ["LunarLander-v3"], args.copies, args.seconds)
    args.envs = args.envs or list(envs.ENV_IDS) + list(envs.CLASSIC_VECTOR_IDS)

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
