"""PPO rollout collection: env steps/s in one process vs N rollout workers (Ray actors, or spawn
processes with ``--modes local-N``), on a cheap env and an expensive one.

What is timed is ``collect()`` of the collector PPO's ``learn`` uses, weights and normaliser
statistics shipped to the workers and the merged ``Batch`` back on the learner included; the
update itself is not (it is the same in every mode). Every mode's workers are started, and one
warm-up rollout collected, before any clock runs; then the modes alternate within each round (the
order rotating from round to round), ``--collects`` rollouts each, and the ratios to the
one-process rate are taken within a round. Reported: median steps/s over rounds, and the median
(min-max) of the per-round ratio.

    python bench/ray_scaling.py                                   # CartPole-v1 and CarRacing-v3, Ray N=2
    python bench/ray_scaling.py --envs CarRacing-v3 --workers 2 4 8 16 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def collectors(env_id: str, modes: list[str], n_envs: int | None):
    """A PPO learner for ``env_id`` (its committed hyperparameters) and one collector per mode."""
    from agents.ppo import PPO
    from rlkit.config import resolve
    from rlkit.onpolicy import ParallelCollector

    sets = {"n_envs": n_envs} if n_envs else {}
    cfg, env_kwargs = resolve(PPO.Config, "ppo", env_id, None, sets)
    agent = PPO(env_id, cfg, seed=0, device="cpu", env_kwargs=env_kwargs)
    out = {}
    for mode in modes:
        if mode == "one process":
            out[mode] = agent.parts.collector
        else:
            backend, n = mode.split("-")
            out[mode] = ParallelCollector(agent.parts, cfg, seed=0, backend=backend, n_workers=int(n))
    return agent, cfg, out


def rate(collector, collects: int) -> float:
    t0 = time.perf_counter()
    steps = sum(collector.collect().rewards.numel() for _ in range(collects))
    return steps / (time.perf_counter() - t0)


def bench_env(env_id: str, modes: list[str], args) -> None:
    from rlkit.onpolicy import env_step_seconds

    agent, cfg, cols = collectors(env_id, modes, args.n_envs)
    step_us = env_step_seconds(agent.parts.env_factory) * 1e6
    try:
        for c in cols.values():  # warm-up: workers started, first rollout (and its allocations) done
            c.collect()
        rates: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for mode in order:
                rates[mode].append(rate(cols[mode], args.collects))
            print(f"  round {r + 1}: " + ", ".join(f"{m} {rates[m][-1]:,.0f}" for m in modes), flush=True)
    finally:
        for mode, c in cols.items():
            if mode != "one process":
                c.close()
        agent.close()
    base = rates["one process"]
    print(f"\n{env_id}: PPO rollout collection, n_envs={cfg.n_envs} in total, n_steps={cfg.n_steps}, "
          f"{os.cpu_count()} cores; one env step {step_us:.0f} µs (random actions); "
          f"{args.rounds} rounds x {args.collects} rollouts per mode\n")
    print("| mode | env steps/s (median) | ratio to one process, median (min-max) | efficiency |")
    print("|---|---|---|---|")
    for mode in modes:
        ratios = [a / b for a, b in zip(rates[mode], base)]
        n = 1 if mode == "one process" else int(mode.split("-")[1])
        med = statistics.median(ratios)
        print(f"| {mode} | {statistics.median(rates[mode]):,.0f} | {med:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
              f"| {med / n:.2f} |")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["CartPole-v1", "CarRacing-v3"])
    p.add_argument("--workers", nargs="+", type=int, default=[2], help="Ray workers per mode (default: 2)")
    p.add_argument("--modes", nargs="*", default=[], help="extra modes, e.g. local-2 (spawn processes)")
    p.add_argument("--n-envs", type=int, default=None, help="total env copies (default: the ppo.yaml entry's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--collects", type=int, default=2, help="rollouts per mode per round")
    args = p.parse_args()
    modes = ["one process", *[f"ray-{n}" for n in args.workers], *args.modes]
    from rlkit.workers import start_ray

    started = start_ray(max([os.cpu_count() or 1, *args.workers]))
    try:
        for env_id in args.envs:
            bench_env(env_id, modes, args)
    finally:
        if started:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    main()
