"""The standard-suite benchmark: every (agent, env) pair at the RL Zoo's budget, rlkit vs SB3.

Every run is one `python -m cli train --algo A --env E --seed S --steps BUDGET ...` subprocess,
with no stop: it trains its whole budget, evaluating its deterministic policy every --eval-every
env steps (default budget / 20) on --eval-episodes episodes, and is then scored on
--final-eval-episodes fresh episodes (run.json `final_eval`: the "final return" of the table).

Suite (ZOO below): classic control and Box2D for `ppo` and `sb3-ppo` at the RL Zoo's PPO budgets,
and for `actor-critic`, `a3c` and `sb3-a2c` at its A2C budgets; `reinforce` on the classic-control
discrete envs, held to the Zoo's A2C figure and budget (the Zoo has no REINFORCE). The `sb3-*`
rows use the RL Zoo's hyperparameters (agents/hyperparams/sb3-*.yaml); the rlkit rows use their
agents/hyperparams/*.yaml entries. LunarLanderContinuous-v3 is Gymnasium 1.x's own id for
LunarLander-v3 with continuous=True (the Zoo ran the -v2 ids of both landers).

Seeds: 20, 21, 22 by default, held out (no configuration in this repository was tuned on a seed
>= 20). Order: env by env; within an env, seed by seed, every algorithm once per seed, starting one
algorithm later each seed, so machine noise hits all alike and no algorithm always runs first.

Threads: every row, rlkit's and SB3's, runs with `--set torch_threads=1` (--threads): rlkit's
agents default to one torch thread, and so does rlkit's SB3 adapter, but a yaml entry may set
another count, and this keeps the wall-time ratios fair. `a3c` is the exception by design: it
trains with one process per core (its `workers`), each with one thread. Device: cpu (--device).

Per run, from run.json: the final return, the first evaluation at or above the Zoo figure (env
steps and wall seconds to the Zoo score; a run that never gets there counts as "not reached"), and
the total wall time (training and its evaluations, not the final scoring). The table shows, per
(env, algo): final return mean ± std over seeds and its median, the Zoo figure and budget, the gap
(median − Zoo figure), how many runs reached the Zoo figure, median steps and time to it (over the
runs that reached it), median total wall time, and each rlkit row's wall time over its SB3
counterpart's (ratio of medians, paired by seed, 95% bootstrap interval).

Resume: each finished run is appended as one JSON line to --results (bench/results/suite.jsonl,
tracked, so a suite can span sessions and machines); a rerun skips every (algo, env, seed,
budget, hyperparameters' fingerprint) already there, and a run that was interrupted goes on from
its last checkpoint (`cli train --resume`; run directories are named by that key, so an edited
entry starts afresh; results say `"resumed": true`). Its wall time is then the training time up to
that checkpoint plus the rest: the steps after it are trained once, the restart is not counted. It
takes many hours: run it in the background; a 5M-step SB3 A2C run alone takes over two hours here.

    python bench/suite.py                          # the whole suite, seeds 20 21 22
    python bench/suite.py --algos ppo sb3-ppo --envs Acrobot-v1 LunarLander-v3
    python bench/suite.py --budget-scale 0.1       # a tenth of every budget: a quick look
    python bench/suite.py --quick                  # smoke test: CartPole-v1, 20k steps, seeds 20 21
    python bench/suite.py --table-only --write-docs   # the table from the results, into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_solve import ROOT, parse_spec, ratio_of_medians  # noqa: E402

sys.path.insert(0, str(ROOT))
from rlkit.config import config_file_entry, yaml_entry  # noqa: E402
from rlkit.errors import did_you_mean  # noqa: E402
from rlkit.registry import ALGOS  # noqa: E402

# The RL Zoo's published scores and budgets: rl-baselines3-zoo benchmark.md (last changed in
# commit 61a0d13, 2023-04-11), its ppo and a2c rows. The Zoo's LunarLander and
# LunarLanderContinuous rows are the -v2 envs. PPO BipedalWalker-v3 is 287.939 in that table since
# 2022-06 (issue 18 quotes 213.299, the figure before).
# env: (PPO score, PPO budget, A2C score, A2C budget); score: mean episode return, budget: env steps.
ZOO_TABLE: dict[str, tuple[float, int, float, int]] = {
    "CartPole-v1": (500.0, 100_000, 500.0, 500_000),
    "Acrobot-v1": (-73.506, 1_000_000, -83.353, 500_000),
    "MountainCar-v0": (-110.423, 1_000_000, -111.263, 1_000_000),
    "MountainCarContinuous-v0": (88.343, 20_000, 91.166, 100_000),
    "Pendulum-v1": (-172.225, 100_000, -162.965, 1_000_000),
    "LunarLander-v3": (242.119, 1_000_000, 155.751, 200_000),
    "LunarLanderContinuous-v3": (270.863, 1_000_000, 84.225, 5_000_000),
    "BipedalWalker-v3": (287.939, 5_000_000, 299.754, 5_000_000),
}
ZOO = {"ppo": {env: row[:2] for env, row in ZOO_TABLE.items()},
       "a2c": {env: row[2:] for env, row in ZOO_TABLE.items()}}
ENVS = list(ZOO_TABLE)
CLASSIC_DISCRETE = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]

# algo -> (the Zoo algorithm whose figures and budgets it is held to, its SB3 counterpart, its envs).
# The order is the table's and the default alternation's.
SUITE: dict[str, tuple[str, str | None, list[str]]] = {
    "ppo": ("ppo", "sb3-ppo", ENVS),
    "sb3-ppo": ("ppo", None, ENVS),
    "actor-critic": ("a2c", "sb3-a2c", ENVS),
    "a3c": ("a2c", "sb3-a2c", ENVS),
    "sb3-a2c": ("a2c", None, ENVS),
    "reinforce": ("a2c", "sb3-a2c", CLASSIC_DISCRETE),
}
SUITE = {algo: row for algo, row in SUITE.items() if algo in ALGOS}  # a3c only where it is registered
NO_OWN_FIGURE = {"reinforce"}  # held to another algorithm's figure: labelled so in the table
DEFAULT_SEEDS = [20, 21, 22]
QUICK_STEPS = 20_000
# The results file is tracked (a few hundred bytes a run: figures, no weights): the suite takes
# longer than any one session or machine, and docs/benchmarks.md's table is made from it.
DEFAULT_RESULTS = "bench/results/suite.jsonl"
DEFAULT_RUNS_ROOT = "runs/bench/suite"  # run directories (checkpoints, TensorBoard): never tracked
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


class SuiteError(Exception):
    """Bad input: main prints it as one line and exits with 2."""


class _Terminated(Exception):
    """SIGTERM while a run trains: the run is stopped and redone on the next invocation."""


def _raise_terminated(signum, frame):
    raise _Terminated()


# ---------------------------------------------------------------------------------------------
# The plan


def reference(algo: str, env: str) -> tuple[float, int, str]:
    """(Zoo score, Zoo budget, label) an algorithm is held to on an env."""
    zoo = SUITE[algo][0]
    score, budget = ZOO[zoo][env]
    label = zoo.upper() + ("'s" if algo in NO_OWN_FIGURE else "")
    return score, budget, label


def budget_of(algo: str, env: str, scale: float = 1.0, steps: int | None = None) -> int:
    return int(steps) if steps else max(1, int(round(reference(algo, env)[1] * scale)))


def resolve_specs(algos: list[str] | None) -> list[tuple[str, Path | None, str]]:
    """--algos -> [(algo, config or None, label)], refusing what the suite does not hold."""
    specs = [parse_spec(s) for s in (algos or list(SUITE))]
    for algo, config, label in specs:
        if algo not in SUITE:
            hint = did_you_mean(algo, SUITE)
            raise SuiteError(f"unknown algo '{algo}'{hint}; suite algos: {', '.join(SUITE)}")
        if isinstance(config, str):  # ALGO@untuned, ALGO@preset:NAME: time_to_solve.py rows, not the suite's
            raise SuiteError(f"'{label}': suite algos are ALGO or ALGO@FILE.yaml (untuned and preset rows are "
                             f"bench/time_to_solve.py's)")
        if config is not None and not config.is_file():
            raise SuiteError(f"config file {config} of '{label}' does not exist")
    labels = [label for _, _, label in specs]
    if len(set(labels)) != len(labels):
        raise SuiteError(f"two algos share a label: {' '.join(labels)}")
    return specs


def check_envs(envs: list[str] | None) -> list[str]:
    envs = envs or list(ENVS)
    for env in envs:
        if env not in ENVS:
            raise SuiteError(f"unknown env '{env}'{did_you_mean(env, ENVS)}; suite envs: {', '.join(ENVS)}")
    return envs


def plan(specs, envs: list[str], seeds: list[int], scale: float = 1.0, steps: int | None = None) -> list[dict]:
    """Every run, in the order they train: env by env, seed by seed, the first algo rotated per seed."""
    jobs = []
    for env in envs:
        here = [spec for spec in specs if env in SUITE[spec[0]][2]]
        for k, seed in enumerate(seeds):
            for i in range(len(here)):
                algo, config, label = here[(i + k) % len(here)]
                jobs.append({"label": label, "algo": algo, "config": str(config) if config else None,
                             "env": env, "seed": int(seed), "budget": budget_of(algo, env, scale, steps),
                             "budget_scale": None if steps else scale,
                             "hyperparams": hyperparams_of(algo, env, str(config) if config else None)})
    return jobs


def hyperparams_of(algo: str, env: str, config: str | None) -> str:
    """A short fingerprint of the hyperparameters a run trains with (its yaml entry, then its
    config file): editing an entry makes its rows pending again instead of mixing old results in."""
    entry = yaml_entry(algo, env)
    if config:
        entry.update(config_file_entry(Path(config), env))
    text = json.dumps(entry, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def key(entry: dict) -> tuple:
    """What makes a run the same run: the resume key."""
    return entry["label"], entry["env"], int(entry["seed"]), int(entry["budget"]), entry.get("hyperparams")


def load_results(path: Path) -> list[dict]:
    """The results file's runs; a line cut short by a kill is skipped (that run is redone)."""
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key(entry)
        except (ValueError, KeyError, TypeError):
            print(f"{path}:{n}: not a complete result, ignored (that run is redone)", file=sys.stderr)
            continue
        out.append(entry)
    return out


def pending(jobs: list[dict], results: list[dict]) -> list[dict]:
    done = {key(r) for r in results}
    return [j for j in jobs if key(j) not in done]


# ---------------------------------------------------------------------------------------------
# One run


def first_reach(evals, score: float) -> tuple[int, float] | None:
    """(step, wall seconds) of the first evaluation whose mean return is at or above ``score``."""
    for step, wall_s, mean_return in evals or []:
        if mean_return >= score:
            return int(step), float(wall_s)
    return None


def run_dir_of(job: dict, runs_root: Path) -> Path:
    """One directory per resume key: an edited entry (a new fingerprint) never resumes an old run."""
    slug = job["algo"] if job["config"] is None else f"{job['algo']}-{Path(job['config']).stem}"
    return runs_root / job["env"] / f"{slug}__s{job['seed']}__b{job['budget']}__h{job['hyperparams']}"


def eval_every_of(job: dict, args) -> int:
    return args.eval_every or max(job["budget"] // 20, 1)


def train_command(job: dict, run_dir: Path, args) -> list[str]:
    flags = {"--algo": job["algo"], "--env": job["env"], "--seed": job["seed"], "--steps": job["budget"],
             "--eval-every": eval_every_of(job, args),
             "--eval-episodes": args.eval_episodes, "--final-eval-episodes": args.final_eval_episodes,
             "--device": args.device, "--run-dir": run_dir.resolve()}
    if job["config"]:
        flags["--config"] = job["config"]
    cmd = [sys.executable, "-m", "cli", "train"]
    for flag, value in flags.items():
        cmd += [flag, str(value)]
    if args.threads:
        cmd += ["--set", f"torch_threads={args.threads}"]
    return cmd + ["--no-progress"]


def resume_command(run_dir: Path, args) -> list[str]:
    return [sys.executable, "-m", "cli", "train", "--resume", str(run_dir.resolve()), "--device", args.device,
            "--no-progress"]


def call(cmd: list[str]) -> tuple[int, str]:
    """Run one CLI command; (exit code, stderr). Interrupted, it stops the CLI first (as on Ctrl-C)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _, err = proc.communicate()
    except BaseException:
        proc.terminate()  # the CLI stops as on Ctrl-C (its workers too) and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return proc.returncode, err


def run_one(job: dict, args) -> dict:
    """Train one run. A directory left by an interrupted attempt (the same run: its name holds the
    entry's fingerprint) is continued from its last checkpoint by the CLI's own resume
    (rlkit/training.py: the run's wall time is its training time up to that checkpoint plus the
    rest, and the steps after the checkpoint are trained once). A directory the CLI had not yet
    written its config.yaml in, or one it refuses to resume (exit 2), is started again."""
    run_dir = run_dir_of(job, Path(args.runs_root))
    resumed = (run_dir / "config.yaml").is_file()
    if resumed:
        cmd = resume_command(run_dir, args)
        code, err = call(cmd)
        if code == 2:
            print(f"note: {run_dir} could not be resumed ({err.strip()[-300:]}); starting it again",
                  file=sys.stderr, flush=True)
            resumed = False
    if not resumed:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = train_command(job, run_dir, args)
        code, err = call(cmd)
    if code != 0:
        raise RuntimeError(f"exit {code}: {' '.join(cmd)}\n{err[-2000:]}")
    info = json.loads((run_dir / "run.json").read_text())
    final = info.get("final_eval") or {}
    score = reference(job["algo"], job["env"])[0]
    return {**job, "final": final.get("mean_return"), "final_std": final.get("std_return"),
            "final_episodes": final.get("episodes"), "steps": info["steps"], "wall_s": info["wall_s"],
            "evals": info.get("evals") or [], "zoo_score": score, "status": info.get("status"),
            "threads": args.threads, "device": args.device, "eval_every": eval_every_of(job, args),
            "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "run_dir": str(run_dir),
            "resumed": resumed}


def append_result(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def progress_line(i: int, n: int, r: dict) -> str:
    hit = first_reach(r["evals"], r["zoo_score"])
    reach = (f"Zoo {r['zoo_score']:g} reached at {hit[0]:,} steps ({fmt_secs(hit[1])})" if hit
             else f"Zoo {r['zoo_score']:g} not reached")
    final = "–" if r["final"] is None else f"{r['final']:.1f}"
    return f"[{i}/{n}] {r['label']} {r['env']} seed {r['seed']}: final {final}, {fmt_secs(r['wall_s'])}; {reach}"


# ---------------------------------------------------------------------------------------------
# The table


def fmt_secs(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_steps(n: float) -> str:
    """A budget: 100k, 1M, 1.25M; other counts as 30,720."""
    n = int(round(n))
    if n < 1000 or n % 1000:
        return f"{n:,}"
    return f"{n / 1_000_000:g}M" if n >= 1_000_000 else f"{n // 1000}k"


def summarize_row(rs: list[dict], algo: str, env: str) -> dict:
    score = reference(algo, env)[0]
    finals = np.array([r["final"] for r in rs if r["final"] is not None], dtype=float)
    hits = [h for h in (first_reach(r["evals"], score) for r in rs) if h is not None]
    return {"n": len(rs), "finals": finals, "hits": hits, "score": score,
            "median": float(np.median(finals)) if len(finals) else None,
            "walls": {r["seed"]: r["wall_s"] for r in rs}}


def rows_of(results: list[dict], jobs: list[dict]) -> dict[tuple[str, str], dict]:
    """(env, label) -> that row's planned runs in ``results`` and their summary, in suite order:
    env by env, then the algorithms as SUITE lists them."""
    wanted = {key(j) for j in jobs}
    chosen = [r for r in results if key(r) in wanted]
    labels = list(dict.fromkeys(j["label"] for j in sorted(jobs, key=lambda j: list(SUITE).index(j["algo"]))))
    rows: dict[tuple[str, str], dict] = {}
    for env in ENVS:
        for label in labels:
            rs = sorted((r for r in chosen if r["env"] == env and r["label"] == label), key=lambda r: r["seed"])
            if rs:
                rows[env, label] = {"runs": rs, **summarize_row(rs, rs[0]["algo"], env)}
    return rows


def table(results: list[dict], jobs: list[dict], n_boot: int = 10_000) -> tuple[str, list[str]]:
    """(markdown table, sentences naming each row below the Zoo figure) over the planned runs in ``results``."""
    rows = rows_of(results, jobs)
    lines = ["| env | algo | budget | final return, mean ± std | median (n) | RL Zoo figure | gap | reached Zoo "
             "| median steps to Zoo | median time to Zoo | median wall time | wall time / SB3 [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    misses = []
    for (env, label), row in rows.items():
        first = row["runs"][0]
        algo, budget, scale = first["algo"], first["budget"], first.get("budget_scale")
        score, zoo_budget, zoo_label = reference(algo, env)
        fin = row["finals"]
        mean_std = f"{fin.mean():.1f} ± {fin.std():.1f}" if len(fin) else "—"
        median = f"{row['median']:.1f} ({len(fin)})" if row["median"] is not None else f"— ({row['n']})"
        gap = row["median"] - score if row["median"] is not None else None
        budget_s = fmt_steps(budget) + (f" ({scale:g}×)" if scale not in (None, 1, 1.0) else "")
        if scale is None and budget != zoo_budget:
            budget_s += " (fixed)"
        hits = row["hits"]
        steps_to = f"{np.median([h[0] for h in hits]):,.0f}" if hits else "—"
        secs_to = fmt_secs(float(np.median([h[1] for h in hits]))) if hits else "—"
        wall = fmt_secs(float(np.median(list(row["walls"].values()))))
        ratio = "—"
        counterpart = SUITE[algo][1]
        base = rows.get((env, counterpart))  # the plain SB3 row (no @CONFIG) of this env
        if counterpart and base is not None:
            seeds = sorted(set(row["walls"]) & set(base["walls"]))
            if seeds:
                est = ratio_of_medians([row["walls"][s] for s in seeds], [base["walls"][s] for s in seeds], n_boot)
                ratio = f"{est[0]:.2f} [{est[1]:.2f}, {est[2]:.2f}] vs {counterpart}"
        lines.append(f"| {env} | {label} | {budget_s} | {mean_std} | {median} | {score:g} ({zoo_label}, "
                     f"{fmt_steps(zoo_budget)}) | {'—' if gap is None else f'{gap:+.1f}'} | {len(hits)}/{row['n']} "
                     f"| {steps_to} | {secs_to} | {wall} | {ratio} |")
        if gap is not None and gap < 0:
            at = "" if budget == zoo_budget else f" at {fmt_steps(budget)} steps (the Zoo's: {fmt_steps(zoo_budget)})"
            misses.append(f"{label} on {env} misses the Zoo's {zoo_label} {score:g} by {-gap:.1f}{at}"
                          f": median {row['median']:.1f} over {len(fin)} seeds, {len(hits)}/{row['n']} runs "
                          f"reached it at an evaluation")
    return "\n".join(lines), misses


# ---------------------------------------------------------------------------------------------
# rlkit against SB3 at the same settings, paired by seed
#
# ppo and actor-critic port the Zoo's entries of sb3-ppo and sb3-a2c key by key
# (tests/test_zoo_entries.py), so their final returns can be compared run for run. a3c and
# reinforce are other algorithms held to A2C's figure: they get no verdict.

EQUAL_SETTINGS = {"ppo": "sb3-ppo", "actor-critic": "sb3-a2c"}
# A verdict needs the protocol's ten paired seeds: a percentile bootstrap over three or four
# pairs is far narrower than the truth. Rows with fewer show their numbers and "too few seeds".
VERDICT_SEEDS = 10


def iqm(x) -> float:
    """Interquartile mean: the mean of the middle half of the runs (rliable's aggregate); scipy's
    trim_mean cuts a quarter from each end."""
    from scipy.stats import trim_mean
    return float(trim_mean(np.asarray(x, dtype=float), 0.25))


def paired_difference(a, b, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """mean(a - b) and its 95% percentile-bootstrap interval; a[i] and b[i] are one seed, resampled together."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def probability_of_improvement(a, b) -> float:
    """P(X > Y) + P(X = Y) / 2 for X a run of ``a`` and Y a run of ``b``: rliable's probability of
    improvement (the Mann-Whitney U statistic over len(a) * len(b)). 0.5: neither is ahead."""
    a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


def verdict(lo: float, hi: float) -> str:
    """"better" or "worse" where the interval of the difference excludes 0, else "equal"."""
    return "better" if lo > 0 else "worse" if hi < 0 else "equal"


def paired_table(results: list[dict], jobs: list[dict], n_boot: int = 10_000) -> tuple[str, list[dict]]:
    """(markdown table, one dict per compared row) of every ppo / actor-critic row against its SB3
    row on the seeds both finished."""
    rows = rows_of(results, jobs)
    lines = ["| env | rlkit | SB3 | seeds | IQM rlkit | IQM SB3 | rlkit − SB3, mean [95% CI] | "
             "P(rlkit > SB3) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    out = []
    for (env, label), row in rows.items():
        base = rows.get((env, EQUAL_SETTINGS.get(label, "")))  # plain rows only: ALGO@CONFIG has its own label
        if base is None:
            continue
        ours = {r["seed"]: r["final"] for r in row["runs"] if r["final"] is not None}
        theirs = {r["seed"]: r["final"] for r in base["runs"] if r["final"] is not None}
        seeds = sorted(ours.keys() & theirs.keys())
        if len(seeds) < 2:
            continue
        a, b = [ours[s] for s in seeds], [theirs[s] for s in seeds]
        mean, lo, hi = paired_difference(a, b, n_boot)
        cmp = {"env": env, "label": label, "baseline": EQUAL_SETTINGS[label], "seeds": seeds, "iqm": iqm(a),
               "iqm_baseline": iqm(b), "difference": (mean, lo, hi), "p_improvement": probability_of_improvement(a, b),
               "verdict": (verdict(lo, hi) if len(seeds) >= VERDICT_SEEDS
                           else f"— ({len(seeds)} < {VERDICT_SEEDS} seeds)")}
        out.append(cmp)
        lines.append(f"| {env} | {label} | {cmp['baseline']} | {len(seeds)} | {cmp['iqm']:.1f} | "
                     f"{cmp['iqm_baseline']:.1f} | {mean:+.1f} [{lo:+.1f}, {hi:+.1f}] | "
                     f"{cmp['p_improvement']:.2f} | {cmp['verdict']} |")
    return "\n".join(lines), out


def render(results: list[dict], jobs: list[dict], args, command: str) -> str:
    """The markdown of the docs section: how it was made, the table and the misses in words."""
    tbl, misses = table(results, jobs, args.bootstrap)
    wanted = {key(j) for j in jobs}
    chosen = [r for r in results if key(r) in wanted]
    have = len({key(r) for r in chosen})
    dates = sorted(r["date"] for r in chosen if r.get("date"))
    cpus = sorted({r["cpus"] for r in chosen if r.get("cpus")})
    made = f"runs dated {dates[0]} to {dates[-1]}" if dates else "no runs yet"
    every = f"{args.eval_every:,}" if args.eval_every else "budget/20"
    out = [f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; {have} of {len(jobs)} planned runs done, "
           f"{made}; {platform.machine()}, {', '.join(map(str, cpus)) or os.cpu_count()} CPUs).",
           "",
           f"Every run trains its whole budget with torch_threads={args.threads} on {args.device} (a3c: one "
           f"process per core), is evaluated every {every} steps on {args.eval_episodes} episodes and scored "
           f"at the end on {args.final_eval_episodes} fresh episodes (the final return). Seeds "
           f"{' '.join(map(str, args.seeds))}, held out. \"reached Zoo\": runs with an evaluation at or above "
           "the Zoo figure; steps and time to it are medians over those runs. Gap: median final return "
           "minus the Zoo figure. Wall time: training and its evaluations; the ratio is the median over "
           "seeds of this row over the SB3 row of the same env (paired by seed, 95% bootstrap interval). "
           "The Zoo figures: rl-baselines3-zoo benchmark.md (its landers are the -v2 envs); reinforce is "
           "held to the Zoo's A2C figure and budget (A2C's).",
           "", tbl, ""]
    resumed = [f"{r['label']} {r['env']} seed {r['seed']}" for r in chosen if r.get("resumed")]
    if resumed:
        out += [f"Resumed from a checkpoint after an interruption (`cli train --resume`; wall time up to that "
                f"checkpoint plus the rest): {', '.join(resumed)}.", ""]
    if misses:
        out += ["Below the RL Zoo figure (median final return):", ""] + [f"- {m}" for m in misses]
    else:
        out += ["No row is below its RL Zoo figure."] if have else []
    paired, compared = paired_table(results, jobs, args.bootstrap)
    if compared:
        out += ["", "rlkit against SB3 at the same settings, paired by seed (the final returns above, on the "
                "seeds both rows finished). IQM: interquartile mean over seeds. The difference: mean over "
                "seeds of rlkit's final return minus SB3's, with a 95% paired bootstrap interval (seeds "
                "resampled together). P(rlkit > SB3): the probability that a run of rlkit scores above a run "
                "of SB3, ties counted half (rliable's probability of improvement). Verdict: \"better\" or "
                "\"worse\" where the interval excludes 0, else \"equal\" (no difference these seeds can show); "
                f"only with {VERDICT_SEEDS} paired seeds or more.",
                "", paired]
    return "\n".join(out).rstrip() + "\n"


def markers(title: str | None) -> tuple[str, str, str]:
    """(begin, end, heading) of a docs section: the suite's own, or one titled ``title`` (--section)."""
    if not title:
        return BEGIN, END, "## Standard suite (bench/suite.py)"
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"<!-- suite:{slug}:begin -->", f"<!-- suite:{slug}:end -->", f"## {title} (bench/suite.py)"


def write_docs(path: Path, section: str, title: str | None = None) -> None:
    """Replace the marked section of ``path`` (appended, or the file created, if missing): the suite's,
    or the one titled ``title``."""
    begin, end_mark, heading = markers(title)
    block = f"{begin}\n{heading}\n\n{section}{end_mark}\n"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmarks\n\nTables written by the scripts in bench/; each marked section belongs "
                        "to the script that writes it.\n\n" + block)
        return
    text = path.read_text()
    start, end = text.find(begin), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_mark):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def shown_command(argv: list[str]) -> str:
    """The command that trains this table: argv without the table-only / docs flags."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--docs", "--section"):
            skip = True
        elif a not in ("--table-only", "--write-docs") and not a.startswith(("--docs=", "--section=")):
            out.append(a)
    return " ".join(["python bench/suite.py", *out])


# ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/suite.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", nargs="+", metavar="ALGO[@CONFIG]",
                   help=f"algorithms (default: {' '.join(SUITE)}); ALGO@FILE.yaml adds --config FILE")
    p.add_argument("--envs", nargs="+", metavar="ENV", help=f"envs (default: {' '.join(ENVS)})")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: 20 21 22, held out)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every RL Zoo budget (0.1: a quick look); shown in the table")
    p.add_argument("--steps", type=int, default=None, help="train every run this many steps instead")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: CartPole-v1, {QUICK_STEPS:,} steps, seeds 20 21 (unless given)")
    p.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations (default: budget/20)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-eval-episodes", type=int, default=20)
    p.add_argument("--threads", type=int, default=1,
                   help="torch_threads of every run, rlkit's and SB3's (0: each config's own)")
    p.add_argument("--device", default="cpu", help="--device of every run (default: cpu)")
    p.add_argument("--results", default=DEFAULT_RESULTS, help=f"results file, one JSON line a run "
                                                              f"(default: {DEFAULT_RESULTS})")
    p.add_argument("--runs-root", default=DEFAULT_RUNS_ROOT, help=f"run directories (default: {DEFAULT_RUNS_ROOT})")
    p.add_argument("--dry-run", action="store_true", help="print the runs still to do, in order, and stop")
    p.add_argument("--table-only", action="store_true", help="no training: the table from the results file")
    p.add_argument("--write-docs", action="store_true", help="write the table into the suite section of --docs")
    p.add_argument("--docs", default="docs/benchmarks.md", help="(default: docs/benchmarks.md)")
    p.add_argument("--section", metavar="TITLE", default=None,
                   help="with --write-docs: write a section of this title of its own instead of the suite's "
                        "(a selection, e.g. 10 seeds on the cheap envs, beside the whole suite's table)")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples of the wall-time ratios")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    try:
        specs = resolve_specs(args.algos)
        envs = check_envs(args.envs or (["CartPole-v1"] if args.quick else None))
        if args.budget_scale <= 0 or (args.steps is not None and args.steps <= 0):
            raise SuiteError("--budget-scale and --steps must be > 0")
    except SuiteError as exc:
        print(f"bench/suite.py: error: {exc}", file=sys.stderr)
        return 2
    args.seeds = args.seeds or ([20, 21] if args.quick else DEFAULT_SEEDS)
    steps = args.steps or (QUICK_STEPS if args.quick else None)
    jobs = plan(specs, envs, args.seeds, args.budget_scale, steps)
    if not jobs:
        print("bench/suite.py: error: no suite pair in this selection (reinforce runs on "
              f"{' '.join(CLASSIC_DISCRETE)} only)", file=sys.stderr)
        return 2
    results_path = Path(args.results)
    results = load_results(results_path)
    todo = [] if args.table_only else pending(jobs, results)

    print(f"$ python bench/suite.py {' '.join(argv)}".rstrip())
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{len(jobs)} runs planned, {len(jobs) - len(pending(jobs, results))} in {results_path}, "
          f"{len(todo)} to train")
    if min(args.seeds) < 20 or (len(args.seeds) < 3 and not args.quick):
        print("note: the suite's protocol is >= 3 seeds, all >= 20 (held out)")
    if args.dry_run:
        for j in todo:
            print(f"{j['label']} {j['env']} seed {j['seed']} budget {j['budget']:,}")
        return 0

    failed = 0
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        for i, job in enumerate(todo, 1):
            try:
                r = run_one(job, args)
            except RuntimeError as exc:  # the CLI failed: say so, go on, and exit 1 at the end
                failed += 1
                print(f"[{i}/{len(todo)}] {job['label']} {job['env']} seed {job['seed']}: FAILED {exc}", flush=True)
                continue
            append_result(results_path, r)
            results.append(r)
            print(progress_line(i, len(todo), r), flush=True)
    except (KeyboardInterrupt, _Terminated) as exc:
        print(f"bench/suite.py: {'terminated' if isinstance(exc, _Terminated) else 'interrupted'}; "
              "run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130

    section = render(results, jobs, args, shown_command(argv))
    print()
    print(section, end="")
    if args.write_docs:
        write_docs(Path(args.docs), section, args.section)
        print(f"\nwrote the suite section of {args.docs}")
    if failed:
        print(f"bench/suite.py: {failed} run(s) failed (above); a rerun tries them again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
