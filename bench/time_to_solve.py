"""Time-to-solve benchmark: `rlkit train ... --stop-at-return R` for several algorithms and seeds.

Algorithms alternate within each seed (ppo s0, sb3-ppo s0, ppo s1, ...) so machine noise hits
both alike. Prints per-seed solved_at_step / solved_at_s, the medians, and the ratio of every
algorithm to the baseline (the last --algos entry unless --baseline is given).

    python bench/time_to_solve.py --env CartPole-v1 --algos ppo sb3-ppo --seeds 0 1 2 3 4
    python bench/time_to_solve.py --env Pendulum-v1 --algos ppo --threshold -200 --steps 100000 --eval-every 10240
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0, "Acrobot-v1": -100.0, "LunarLander-v3": 200.0}


def run_one(algo, env, seed, args) -> dict:
    run_dir = Path(args.runs_root) / env.replace("/", "-") / f"{algo}__s{seed}__bench{args.tag}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "cli", "train", "--algo", algo, "--env", env, "--seed", str(seed),
           "--stop-at-return", str(args.threshold), "--eval-every", str(args.eval_every),
           "--eval-episodes", str(args.eval_episodes), "--run-dir", str(run_dir), "--no-progress"]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.baseline_threads and algo.startswith("sb3-"):
        cmd += ["--set", f"torch_threads={args.baseline_threads}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    info = json.loads((run_dir / "run.json").read_text())
    return {"algo": algo, "seed": seed, "solved_at_step": info.get("solved_at_step"),
            "solved_at_s": info.get("solved_at_s"), "steps": info["steps"], "wall_s": info["wall_s"],
            "final": info["final_eval"]["mean_return"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--algos", nargs="+", default=["ppo", "sb3-ppo"])
    p.add_argument("--baseline", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--steps", type=int, default=None, help="step budget per run (default: the config's)")
    p.add_argument("--eval-every", type=int, default=5120)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--tag", default="")
    p.add_argument("--baseline-threads", type=int, default=0,
                   help="pin SB3's torch threads (rlkit agents use torch_threads=1 from their config); "
                        "0 = torch's default, as SB3 users get it")
    args = p.parse_args()
    if args.threshold is None:
        args.threshold = THRESHOLDS[args.env]
    baseline = args.baseline or args.algos[-1]

    results = []
    print(f"{args.env}: threshold {args.threshold}, eval every {args.eval_every} steps on "
          f"{args.eval_episodes} episodes, seeds {args.seeds}")
    print(f"{'algo':12s} {'seed':>4s} {'solved_at_step':>14s} {'solved_at_s':>11s} {'final eval':>10s}")
    for seed in args.seeds:
        for algo in args.algos:
            r = run_one(algo, args.env, seed, args)
            results.append(r)
            print(f"{algo:12s} {seed:4d} {r['solved_at_step']!s:>14s} {r['solved_at_s']!s:>11s} "
                  f"{r['final']:10.1f}", flush=True)

    print("\nmedians (unsolved runs count as their full steps/time):")
    med = {}
    for algo in args.algos:
        rs = [r for r in results if r["algo"] == algo]
        steps = [r["solved_at_step"] if r["solved_at_step"] is not None else r["steps"] for r in rs]
        secs = [r["solved_at_s"] if r["solved_at_s"] is not None else r["wall_s"] for r in rs]
        solved = sum(r["solved_at_step"] is not None for r in rs)
        med[algo] = (statistics.median(steps), statistics.median(secs))
        print(f"{algo:12s} solved {solved}/{len(rs)}  median solved_at_step {med[algo][0]:>8.0f}  "
              f"median solved_at_s {med[algo][1]:7.2f}")
    for algo in args.algos:
        if algo != baseline:
            print(f"ratio {algo} / {baseline}: solved_at_s {med[algo][1] / med[baseline][1]:.2f}, "
                  f"solved_at_step {med[algo][0] / med[baseline][0]:.2f}")


if __name__ == "__main__":
    main()
