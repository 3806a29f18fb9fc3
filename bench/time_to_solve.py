"""Time-to-solve benchmark: `rlkit train ... --stop-at-return R` for several algorithms and seeds.

Protocol (rlkit/training.py, the same for every row): each run evaluates its deterministic policy
every --eval-every env steps on --eval-episodes episodes (seeds 10000...), always after an update,
and stops at the first mean >= R: solved_at_step / solved_at_s. rlkit's PPO and SB3's PPO update
once per rollout (8 x 32 = 256 steps on CartPole), so the granularity of a measurement is
max(--eval-every, rollout size). The clock starts when the agent is built and includes its
evaluations. When a run ends it is scored on --final-eval-episodes fresh episodes (seeds 20000...,
never seen by the stop check): the "final eval" column.

Seeds: the default, 20-29, is held out: no configuration in this repository was tuned on it.
Tuning used seeds 0-4 for rlkit's CartPole-v1 PPO and Actor-Critic, 0-9 for REINFORCE, and at most
0-2 elsewhere (each agents/hyperparams/*.yaml entry says which); the SB3 rows use the RL Zoo's
published hyperparameters, not tuned here. Tune on seeds below 20 and report on these.

Rows: ALGO, ALGO@CONFIG to pass a --config file, ALGO@untuned to train with the default entry of
agents/hyperparams/ALGO.yaml alone (`train --untuned`: how the defaults do where nothing was
tuned), or ALGO@preset:NAME to train with that file's `<env>@NAME` entry instead of the env's own
(`train --preset NAME`; the row is labelled "ALGO@NAME"). On CartPole-v1 the default rows are ppo,
sb3-ppo (RL Zoo hyperparameters) and sb3-ppo@bench/sb3_ppo_rlkit_cartpole.yaml, labelled
"sb3-ppo (rlkit hp)" (SB3 with rlkit's own hyperparameters), so the table separates what the
implementation buys from what the hyperparameters buy.

Order: every row runs once per seed before the next seed, starting one row later each seed, so
machine noise hits all rows alike and no row always runs first. SB3 runs with one torch thread
(--baseline-threads 1), as rlkit's PPO does (torch_threads: 1).

Statistics: medians over seeds with 95% percentile-bootstrap intervals (resampling seeds), and the
ratio of medians of each row to each baseline with a paired bootstrap (both rows resampled on the
same seeds). A run that does not solve counts as its whole budget (steps, wall time), so when runs
fail the medians are lower bounds and the row says how many solved.

    python bench/time_to_solve.py                 # the README's CartPole table (make bench)
    python bench/time_to_solve.py --quick         # 2 seeds, 30k-step budget: a smoke test
    python bench/time_to_solve.py --env Pendulum-v1 --algos ppo sb3-ppo --steps 100000 --eval-every 10240
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0, "Acrobot-v1": -100.0, "LunarLander-v3": 200.0,
              "MountainCar-v0": -110.0}
DEFAULT_ALGOS = {"CartPole-v1": ["ppo", "sb3-ppo", "sb3-ppo@bench/sb3_ppo_rlkit_cartpole.yaml"]}
HELD_OUT_SEEDS = list(range(20, 30))
# Short names of the config files in bench/, for the table.
CONFIG_LABELS = {"sb3_ppo_rlkit_cartpole": "rlkit hp", "a3c_one_worker": "1 worker",
                 "ppo_cartpole_tuned_seeds0-4": "tuned on 0-4"}
BASELINE_PREFIXES = ("sb3-", "rllib-")
UNTUNED = "untuned"  # ALGO@untuned: `train --untuned`, the yaml's default entry without the env's own
PRESET = "preset:"  # ALGO@preset:NAME: `train --preset NAME`, the yaml's <env>@NAME entry instead of the env's own


def preset_of(config) -> str | None:
    """NAME of a row's config 'preset:NAME' (parse_spec); None for a config file, UNTUNED or None."""
    if isinstance(config, str) and config.startswith(PRESET):
        return config[len(PRESET):]
    return None


def parse_spec(spec: str) -> tuple[str, Path | str | None, str]:
    """'ALGO', 'ALGO@CONFIG', 'ALGO@untuned' or 'ALGO@preset:NAME' -> (algo, config, label); config is
    None, a config file's Path, UNTUNED or 'preset:NAME' (labelled 'ALGO@NAME')."""
    algo, sep, config = spec.partition("@")
    if not sep:
        return algo, None, algo
    if config == UNTUNED:
        return algo, UNTUNED, f"{algo} (untuned)"
    if config.startswith(PRESET):
        return algo, config, f"{algo}@{config[len(PRESET):]}"
    path = Path(config)
    if not path.is_absolute():
        path = (ROOT / path) if (ROOT / path).is_file() else path.resolve()
    return algo, path, f"{algo} ({CONFIG_LABELS.get(path.stem, path.stem)})"


def check_spec(algo: str, config, label: str, env: str) -> str | None:
    """What is wrong with a row before any run starts (None if nothing): a config file that does not
    exist, a preset that agents/hyperparams/ALGO.yaml does not hold for ``env``."""
    preset = preset_of(config)
    if preset is not None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from rlkit.config import yaml_entry
        from rlkit.errors import UsageError

        try:
            yaml_entry(algo, env, preset=preset)
        except UsageError as exc:
            return f"row '{label}': {exc}"
        return None
    if config not in (None, UNTUNED) and not config.is_file():
        return f"config file {config} of row '{label}' does not exist"
    return None


def median_ci(x, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(median, 2.5th, 97.5th percentile of the bootstrap medians), resampling seeds."""
    x = np.asarray(x, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(np.median(x[idx], axis=1), [2.5, 97.5])
    return float(np.median(x)), float(lo), float(hi)


def ratio_of_medians(a, b, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) and its 95% interval; a[i] and b[i] are the same seed, resampled together."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    lo, hi = np.percentile(np.median(a[idx], axis=1) / np.median(b[idx], axis=1), [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def run_one(algo: str, config: Path | None, label: str, seed: int, args) -> dict:
    preset = preset_of(config)
    if config is None:
        slug = algo
    elif preset is not None:
        slug = f"{algo}-preset-{preset}"
    else:
        slug = f"{algo}-{UNTUNED if config == UNTUNED else config.stem}"
    run_dir = Path(args.runs_root) / args.env.replace("/", "-") / f"{slug}__s{seed}__bench{args.tag}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "cli", "train", "--algo", algo, "--env", args.env, "--seed", str(seed),
           "--stop-at-return", str(args.threshold), "--eval-every", str(args.eval_every),
           "--eval-episodes", str(args.eval_episodes), "--final-eval-episodes", str(args.final_eval_episodes),
           "--run-dir", str(run_dir.resolve()), "--no-progress"]
    if config == UNTUNED:
        cmd += ["--untuned"]
    elif preset is not None:
        cmd += ["--preset", preset]
    elif config is not None:
        cmd += ["--config", str(config)]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.baseline_threads and algo.startswith(BASELINE_PREFIXES):
        cmd += ["--set", f"torch_threads={args.baseline_threads}"]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{label} seed {seed} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    info = json.loads((run_dir / "run.json").read_text())
    final = info.get("final_eval") or {}
    solved = info.get("solved_at_step") is not None
    return {"label": label, "algo": algo, "config": str(config) if config else None, "seed": seed,
            "solved": solved, "solved_at_step": info.get("solved_at_step"), "solved_at_s": info.get("solved_at_s"),
            # unsolved: the whole budget (a lower bound on the time it would take)
            "steps_to": info["solved_at_step"] if solved else info["steps"],
            "secs_to": info["solved_at_s"] if solved else info["wall_s"],
            "steps": info["steps"], "wall_s": info["wall_s"], "final": final.get("mean_return"),
            "final_episodes": final.get("episodes"), "final_seed": final.get("seed"), "run_dir": str(run_dir)}


def _fmt(est: tuple[float, float, float], digits: int) -> str:
    m, lo, hi = est
    return f"{m:,.{digits}f} [{lo:,.{digits}f}, {hi:,.{digits}f}]"


def summarize(results: list[dict], labels: list[str], baselines: list[str], threshold: float,
              n_boot: int) -> str:
    by = {lab: sorted((r for r in results if r["label"] == lab), key=lambda r: r["seed"]) for lab in labels}
    lines = [f"| algo | solved | median steps to {threshold:g} [95% CI] | median s to {threshold:g} [95% CI] "
             f"| final eval, fresh seeds (median) |", "|---|---|---|---|---|"]
    for lab in labels:
        rs = by[lab]
        finals = [r["final"] for r in rs if r["final"] is not None]
        final = f"{np.median(finals):.1f}" if finals else "–"
        lines.append(f"| {lab} | {sum(r['solved'] for r in rs)}/{len(rs)} "
                     f"| {_fmt(median_ci([r['steps_to'] for r in rs], n_boot), 0)} "
                     f"| {_fmt(median_ci([r['secs_to'] for r in rs], n_boot), 2)} | {final} |")
    lines += ["", "| ratio of medians (paired by seed) | env steps [95% CI] | wall time [95% CI] |", "|---|---|---|"]
    for lab in labels:
        for base in baselines:
            # every non-baseline row against every baseline, and each later baseline against the first
            if lab == base or (lab in baselines and base != baselines[0]):
                continue
            a, b = by[lab], by[base]
            assert [r["seed"] for r in a] == [r["seed"] for r in b]
            steps = ratio_of_medians([r["steps_to"] for r in a], [r["steps_to"] for r in b], n_boot)
            secs = ratio_of_medians([r["secs_to"] for r in a], [r["secs_to"] for r in b], n_boot)
            lines.append(f"| {lab} / {base} | {_fmt(steps, 2)} | {_fmt(secs, 2)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--algos", nargs="+", default=None, metavar="ALGO[@CONFIG]",
                   help="rows: ALGO, ALGO@FILE.yaml (--config FILE), ALGO@untuned (--untuned) or ALGO@preset:NAME "
                        "(--preset NAME, labelled ALGO@NAME) (default on CartPole-v1: "
                        + " ".join(DEFAULT_ALGOS["CartPole-v1"]) + "; elsewhere: ppo sb3-ppo)")
    p.add_argument("--baseline", nargs="+", default=None, metavar="LABEL",
                   help="rows the others are divided by (default: every sb3-/rllib- row, else the last row)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help=f"training seeds (default: the held-out {HELD_OUT_SEEDS[0]}-{HELD_OUT_SEEDS[-1]})")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: seeds 20 21, a 30k-step budget and 20 final-eval episodes unless given")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--steps", type=int, default=None, help="step budget per run (default: the config's)")
    p.add_argument("--eval-every", type=int, default=2048,
                   help="env steps between stop checks (effective: max(this, the rollout size))")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-eval-episodes", type=int, default=None, help="fresh-seed score at the end (default 100)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--tag", default="")
    p.add_argument("--baseline-threads", type=int, default=1,
                   help="torch threads of SB3/RLlib runs (rlkit's PPO uses torch_threads 1); 0 = torch's default")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--out", default=None, help="also write every run and the tables to this JSON file")
    args = p.parse_args()

    if args.seeds is None:
        args.seeds = [20, 21] if args.quick else HELD_OUT_SEEDS
    if args.quick:
        args.steps = args.steps or 30_000
    if args.final_eval_episodes is None:
        args.final_eval_episodes = 20 if args.quick else 100
    if args.threshold is None:
        if args.env not in THRESHOLDS:
            p.error(f"no default threshold for {args.env}: pass --threshold")
        args.threshold = THRESHOLDS[args.env]
    specs = [parse_spec(s) for s in (args.algos or DEFAULT_ALGOS.get(args.env, ["ppo", "sb3-ppo"]))]
    for algo, config, label in specs:
        problem = check_spec(algo, config, label, args.env)
        if problem:
            p.error(problem)
    labels = [label for _, _, label in specs]
    if len(set(labels)) != len(labels):
        p.error(f"two rows share a label: {labels}")
    baselines = args.baseline or ([lab for (algo, _, lab) in specs if algo.startswith(BASELINE_PREFIXES)]
                                  or [labels[-1]])
    for base in baselines:
        if base not in labels:
            p.error(f"--baseline '{base}' is not one of the rows: {', '.join(labels)}")

    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{args.env}: threshold {args.threshold:g}, stop check every {args.eval_every} steps on "
          f"{args.eval_episodes} episodes, final eval on {args.final_eval_episodes} fresh episodes, "
          f"seeds {args.seeds}, budget {args.steps or 'the config n_timesteps'}")
    width = max(len(lab) for lab in labels)
    print(f"{'algo':{width}s} {'seed':>4s} {'solved_at_step':>14s} {'solved_at_s':>11s} {'final eval':>10s}")
    results = []
    for k, seed in enumerate(args.seeds):
        for i in range(len(specs)):
            algo, config, label = specs[(i + k) % len(specs)]
            r = run_one(algo, config, label, seed, args)
            results.append(r)
            final = f"{r['final']:10.1f}" if r["final"] is not None else f"{'–':>10s}"
            step, secs = (r["solved_at_step"], r["solved_at_s"]) if r["solved"] else ("–", "–")
            print(f"{label:{width}s} {seed:4d} {step!s:>14s} {secs!s:>11s} {final}", flush=True)

    table = summarize(results, labels, baselines, args.threshold, args.bootstrap)
    print()
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"argv": sys.argv, "settings": vars(args), "runs": results,
                                              "table": table}, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
