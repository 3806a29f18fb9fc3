"""When each run of bench/suite.py takes off: its evaluations along the way and its first at a score.

The suite's table gives each run's final return and when it reached the RL Zoo's figure. Telling
*why* two implementations end apart needs the curve before that: on which evaluation each seed
first reached a lower line (a take-off), and where every run stood at a quarter, half and three
quarters of its budget. This reads the same results file and the same plan (algorithms, env,
seeds, budget, the entries' fingerprints) as bench/suite.py; it trains nothing.

    python bench/suite.py --algos actor-critic sb3-a2c --envs BipedalWalker-v3 --steps 1000000 \\
        --seeds 20 21 22 23 24                     # train the runs (resumable)
    python bench/curves.py --algos actor-critic sb3-a2c --env BipedalWalker-v3 --steps 1000000 \\
        --seeds 20 21 22 23 24 --reach 100         # then read them

A run that never reached --reach counts as "not reached"; each algorithm's median step over the
runs that did is printed with how many did.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _suite():
    spec = importlib.util.spec_from_file_location("bench_suite", HERE / "suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


suite = _suite()


def return_at(evals, step: int) -> float | None:
    """The mean return of the last evaluation at or before ``step`` (None before the first)."""
    before = [r for s, _, r in evals or [] if s <= step]
    return float(before[-1]) if before else None


def curve_table(results: list[dict], jobs: list[dict], reach: float) -> str:
    wanted = {suite.key(j) for j in jobs}
    order = {label: i for i, label in enumerate(dict.fromkeys(j["label"] for j in jobs))}
    runs = sorted((r for r in results if suite.key(r) in wanted), key=lambda r: (r["seed"], order[r["label"]]))
    if not runs:
        raise suite.SuiteError("no finished run of this selection in the results file (train it with "
                               "bench/suite.py and the same --algos/--envs/--seeds/--steps)")
    budget = jobs[0]["budget"]
    marks = [budget // 4, budget // 2, 3 * budget // 4]
    head = " | ".join(f"at {suite.fmt_steps(m)}" for m in marks)
    lines = [f"| seed | algo | {head} | final return | first evaluation >= {reach:g} |",
             "|---|---|" + "---|" * (len(marks) + 2)]
    firsts: dict[str, list[int | None]] = {}
    for r in runs:
        hit = suite.first_reach(r["evals"], reach)
        firsts.setdefault(r["label"], []).append(hit[0] if hit else None)
        cells = ["—" if (v := return_at(r["evals"], m)) is None else f"{v:.1f}" for m in marks]
        final = "—" if r["final"] is None else f"{r['final']:.1f}"
        lines.append(f"| {r['seed']} | {r['label']} | {' | '.join(cells)} | {final} | "
                     f"{'not reached' if hit is None else f'{hit[0]:,}'} |")
    lines.append("")
    for label, steps in firsts.items():
        hit = [s for s in steps if s is not None]
        median = f"median {int(np.median(hit)):,} steps" if hit else "none reached it"
        lines.append(f"- {label}: {len(hit)}/{len(steps)} runs reached {reach:g} within {budget:,} steps; {median}")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/curves.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", nargs="+", required=True, metavar="ALGO[@CONFIG]")
    p.add_argument("--env", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=suite.DEFAULT_SEEDS)
    p.add_argument("--steps", type=int, default=None, help="the runs' --steps (default: the Zoo budget)")
    p.add_argument("--reach", type=float, required=True, help="the take-off line: a mean evaluation return")
    p.add_argument("--results", default=suite.DEFAULT_RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        specs = suite.resolve_specs(args.algos)
        envs = suite.check_envs([args.env])
        if args.steps is not None and args.steps <= 0:
            raise suite.SuiteError("--steps must be > 0")
        jobs = suite.plan(specs, envs, args.seeds, steps=args.steps)
        print(curve_table(suite.load_results(Path(args.results)), jobs, args.reach), end="")
    except suite.SuiteError as exc:
        print(f"bench/curves.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
