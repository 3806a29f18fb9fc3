"""A3C scaling: env steps/s and updates/s with N = 1, 2, ... workers, on both backends.

For each backend and N, one A3C run on CartPole-v1 (the committed hyperparameters, no evaluation)
collects ``--steps`` env steps; the rate is measured between the moment the workers have
collected ``--warmup`` steps and the end, so process / actor start-up is left out. Efficiency is
steps/s(N) / (N x steps/s(1)) of the same backend. Backends and N alternate within each repeat,
and the median over ``--repeats`` is reported.

    python bench/a3c_scaling.py                       # N = 1 .. cores, local and ray
    python bench/a3c_scaling.py --workers 1 2 4 8 16 --backends local
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Clock:
    """A training callback that only records (time, steps); it never stops the run."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.last = warmup, None, None

    def on_step(self, num_timesteps: int, agent) -> bool:
        now = time.perf_counter()
        if self.start is None and num_timesteps >= self.warmup:
            self.start = (now, num_timesteps)
        self.last = (now, num_timesteps)
        return True


def measure(backend: str, n: int, steps: int, warmup: int, env: str) -> tuple[float, float]:
    from agents.a3c import A3C
    from rlkit.config import resolve

    cfg, env_kwargs = resolve(A3C.Config, "a3c", env)
    agent = A3C(env, cfg, seed=0, device="cpu", env_kwargs=env_kwargs, workers=n, backend=backend)
    clock = Clock(warmup)
    try:
        agent.learn(steps, callback=clock)
    finally:
        agent.close()
    (t0, s0), (t1, s1) = clock.start, clock.last
    sps = (s1 - s0) / (t1 - t0)
    return sps, sps / (cfg.n_envs * cfg.n_steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    p.add_argument("--workers", nargs="+", type=int, default=list(range(1, cores + 1)))
    p.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    p.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    p.add_argument("--warmup", type=int, default=20_000, help="steps before the clock starts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--env", default="CartPole-v1")
    args = p.parse_args()
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for n in args.workers:
            for backend in args.backends:
                rates.setdefault((backend, n), []).append(measure(backend, n, args.steps, args.warmup, args.env))
                sps, ups = rates[(backend, n)][-1]
                print(f"  {backend:5s} N={n:2d}: {sps:9.0f} steps/s {ups:8.1f} updates/s", flush=True)
    print(f"\n{args.env}, {cores} cores, median of {args.repeats} runs of {args.steps} steps "
          f"(clock from step {args.warmup})\n")
    print("| backend | workers | env steps/s | updates/s | efficiency |")
    print("|---|---|---|---|---|")
    for backend in args.backends:
        one = statistics.median(r[0] for r in rates[(backend, args.workers[0])]) / args.workers[0]
        for n in args.workers:
            sps = statistics.median(r[0] for r in rates[(backend, n)])
            ups = statistics.median(r[1] for r in rates[(backend, n)])
            print(f"| {backend} | {n} | {sps:,.0f} | {ups:,.1f} | {sps / (n * one):.2f} |")


if __name__ == "__main__":
    main()
