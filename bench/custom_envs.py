"""Fraction of the optimum/reference reached on rlkit's own envs, with the step budgets used.

Trains each (algorithm, env) with its committed hyperparameters (agents/hyperparams/*.yaml) for
the budget below, then evaluates it with `rlkit eval --json` on many deterministic episodes.

    python bench/custom_envs.py                      # every row of PLAN
    python bench/custom_envs.py --only ppo:rlkit/GridWorld-v0 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (algo, env, env-step budget, eval episodes, target fraction)
PLAN = [
    ("ppo", "rlkit/GridWorld-v0", 100_000, 1000, 0.99),
    ("ppo", "rlkit/Inventory-v0", 200_000, 20, 0.95),
    ("ppo", "rlkit/Catch-v0", 300_000, 100, 0.90),
    ("ppo", "rlkit/ArmReach-v0", 8_000_000, 100, 0.90),
    ("actor-critic", "rlkit/GridWorld-v0", 200_000, 1000, 0.95),
    ("actor-critic", "rlkit/Inventory-v0", 200_000, 20, 0.95),
    ("a3c", "rlkit/GridWorld-v0", 300_000, 1000, 0.90),
    ("a3c", "rlkit/Inventory-v0", 200_000, 20, 0.90),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help="algo:env pairs to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--runs-root", default="runs/bench-custom")
    args = p.parse_args()
    plan = [row for row in PLAN if args.only is None or f"{row[0]}:{row[1]}" in args.only]
    print(f"{'algo':13s} {'env':20s} {'seed':>4s} {'steps':>9s} {'train s':>8s} {'score':>10s} "
          f"{'reference':>10s} {'fraction':>8s} {'95% ci':>6s} {'target':>6s}")
    for algo, env, steps, episodes, target in plan:
        fractions = []
        for seed in args.seeds:
            run_dir = Path(args.runs_root) / env.replace("/", "-") / f"{algo}__s{seed}"
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            subprocess.run([sys.executable, "-m", "cli", "train", "--algo", algo, "--env", env, "--seed", str(seed),
                            "--steps", str(steps), "--eval-every", str(max(steps // 5, 1)), "--run-dir", str(run_dir),
                            "--no-progress"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            out = subprocess.run([sys.executable, "-m", "cli", "eval", str(run_dir), "--json", "--episodes",
                                  str(episodes)], check=True, cwd=ROOT, capture_output=True, text=True).stdout
            r = json.loads(out)
            info = json.loads((run_dir / "run.json").read_text())
            ref = r["reference"]
            score = r["reward_per_step"] if ref["metric"] == "reward_per_step" else r["mean_return"]
            ok = "ok" if r["fraction_of_reference"] >= target else "MISSED"
            fractions.append(r["fraction_of_reference"])
            # 95% interval of an episodic mean (t ~ normal for >= 20 episodes); a reward rate over
            # long continuing episodes has no per-step spread in the eval output, so none is printed.
            half = 1.96 * r["std_return"] / r["episodes"] ** 0.5 / abs(ref["score"]) \
                if ref["metric"] != "reward_per_step" else float("nan")
            print(f"{algo:13s} {env:20s} {seed:4d} {info['steps']:9d} {info['wall_s']:8.1f} {score:10.4f} "
                  f"{ref['score']:10.4f} {r['fraction_of_reference']:8.3f} ±{half:5.3f} {target:6.2f} {ok}", flush=True)
        if len(fractions) > 1:
            median = statistics.median(fractions)
            held = sum(f >= target for f in fractions)
            print(f"{algo:13s} {env:20s} {'med':>4s} {'':9s} {'':8s} {'':10s} {'':10s} {median:8.3f} {target:6.2f} "
                  f"{'ok' if median >= target else 'MISSED'} ({held}/{len(fractions)} seeds)", flush=True)


if __name__ == "__main__":
    main()
