"""`rlkit compare`: per-env tables (final eval ± 95% CI, time to threshold, throughput) and curves.

The final eval column is the confirmation score of run.json ``final_eval`` (episodes the stop check
never saw, rlkit/training.py). Runs without one (interrupted, or written before it existed) fall
back to their last periodic evaluation, and the table says how many did.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlkit import runs
from rlkit.errors import UsageError

# Two-sided 95% Student-t quantiles for n-1 degrees of freedom (n = seeds); normal beyond 30.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045]


def ci95(values) -> tuple[float, float]:
    """(mean, half-width of the 95% confidence interval of the mean)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    t = _T95[len(v) - 2] if len(v) - 2 < len(_T95) else 1.96
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def read_curve(run_dir: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return np.zeros(0), np.zeros(0)
    events = sorted(acc.Scalars(tag), key=lambda e: e.step)
    steps = np.array([e.step for e in events], dtype=float)
    values = np.array([e.value for e in events], dtype=float)
    return steps, values


def med(xs, fmt) -> str:
    return fmt(np.median(xs)) if xs else "–"


def _first_at_least(evals: list, threshold: float):
    for step, wall, value in evals:
        if value >= threshold:
            return step, wall
    return None, None


def final_score(run_dir: Path, info: dict, per_step: bool, tag: str) -> tuple[float | None, bool]:
    """(score, confirmed): the fresh-seed ``final_eval`` if the run has one, else its last periodic eval."""
    final = info.get("final_eval") or {}
    if "seed" in final:  # written by TrainingCallback.confirm
        key = "reward_per_step" if per_step and "reward_per_step" in final else "mean_return"
        return float(final[key]), True
    if per_step and info.get("evals"):
        _, values = read_curve(run_dir, tag)
        if len(values):
            return float(values[-1]), False
    if final.get("mean_return") is not None:  # an older run: the last stop-check evaluation
        return float(final["mean_return"]), False
    evals = info.get("evals") or []
    return (float(evals[-1][2]), False) if evals else (None, False)


def collect(paths) -> dict:
    """{env: {algo: [run record, ...]}} for every run under paths."""
    table: dict = defaultdict(lambda: defaultdict(list))
    skipped = []
    for run_dir in runs.find_runs(paths):
        try:  # a damaged config.yaml or run.json: skip the run, and say which and why
            settings = runs.read_config(run_dir)
            info = runs.load_run_info(run_dir) if (run_dir / "run.json").exists() else {}
        except UsageError as exc:
            skipped.append((run_dir, str(exc)))
            continue
        table[settings["env"]][settings["algo"]].append({"dir": run_dir, "settings": settings, "info": info})
    if not table:
        reason = "; skipped " + "; ".join(f"{d} ({why})" for d, why in skipped) if skipped else ""
        raise UsageError(f"no usable rlkit runs under {', '.join(str(p) for p in paths)}{reason}")
    for run_dir, why in skipped:
        print(f"rlkit: skipped run {run_dir}: {why}", file=sys.stderr)
    return table


def _reference(env_id: str, env_kwargs: dict):
    try:
        from rlkit.environments import env_reference

        return env_reference(env_id, env_kwargs)
    except Exception:  # noqa: BLE001  a missing reference must not break the table
        return None


def compare(paths, out: Path | None = None, threshold: float | None = None) -> Path:
    table = collect(paths)
    out = Path(out or paths[0])
    if out.is_file():
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    md = ["# rlkit comparison", ""]
    plots = []
    for env_id, algos in sorted(table.items()):
        any_run = next(iter(algos.values()))[0]
        ref = _reference(env_id, any_run["settings"].get("env_kwargs") or {})
        per_step = ref is not None and ref["metric"] == "reward_per_step"
        tag = "eval/reward_per_step" if per_step else "eval/mean_reward"
        thr = threshold
        if thr is None:
            thr = next((r["settings"].get("stop_at_return") for rs in algos.values() for r in rs
                        if r["settings"].get("stop_at_return") is not None), None)
        header = (f"| algo | seeds | final eval, fresh seeds (mean ± 95% CI) | solved | median steps to {thr} "
                  f"| median s to {thr} | env steps/s |")
        rows = [f"## {env_id}", ""]
        if ref is not None:
            rows += [f"reference: {ref['name']} = {ref['score']:.4f} ({ref['metric']})", ""]
        rows += [header, "|---|---|---|---|---|---|---|"]
        curves = {}
        for algo, recs in sorted(algos.items()):
            finals, steps_to, secs_to, fps = [], [], [], []
            unconfirmed = 0
            for rec in recs:
                info = rec["info"]
                final, confirmed = final_score(rec["dir"], info, per_step, tag)
                if final is not None:
                    finals.append(final)
                    unconfirmed += not confirmed
                if thr is not None:
                    if threshold is None and "solved_at_step" in info:
                        steps_to.append(info["solved_at_step"])
                        secs_to.append(info["solved_at_s"])
                    else:
                        st, wt = _first_at_least(info.get("evals", []), thr)
                        if st is not None:
                            steps_to.append(st)
                            secs_to.append(wt)
                if info.get("wall_s"):
                    fps.append(info.get("steps", 0) / info["wall_s"])
                curves.setdefault(algo, []).append(read_curve(rec["dir"], tag))
            mean, half = ci95(finals)
            ci = f"{mean:.2f} ± {half:.2f}" if not math.isnan(half) else f"{mean:.2f}"
            if unconfirmed:
                ci += f" ({unconfirmed} unconfirmed: last periodic eval)"
            rows.append(f"| {algo} | {len(recs)} | {ci} | {len(steps_to)}/{len(recs)} | "
                        f"{med(steps_to, lambda x: f'{x:.0f}')} | {med(secs_to, lambda x: f'{x:.2f}')} | "
                        f"{med(fps, lambda x: f'{x:.0f}')} |")
        md += rows + [""]
        plots.append((env_id, curves, ref, thr, tag))
    text = "\n".join(md)
    print(text)
    (out / "comparison.md").write_text(text + "\n")
    _plot(plots, out / "comparison.png")
    print(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")
    return out


def _plot(plots, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(6 * len(plots), 4), squeeze=False)
    for ax, (env_id, curves, ref, thr, tag) in zip(axes[0], plots):
        for algo, runs_ in sorted(curves.items()):
            runs_ = [(s, v) for s, v in runs_ if len(s)]
            if not runs_:
                continue
            grid = np.unique(np.concatenate([s for s, _ in runs_]))
            ys = np.full((len(runs_), len(grid)), np.nan)
            for i, (s, v) in enumerate(runs_):
                inside = (grid >= s[0]) & (grid <= s[-1])
                ys[i, inside] = np.interp(grid[inside], s, v)
                # A run stopped at --stop-at-return keeps its last (solving) policy: carry its last
                # evaluation forward, or the mean would be over the slower runs only.
                ys[i, grid > s[-1]] = v[-1]
            n = np.sum(~np.isnan(ys), axis=0)
            mean = np.nanmean(ys, axis=0)
            std = np.nanstd(ys, axis=0, ddof=0)
            half = np.where(n > 1, 1.96 * std / np.sqrt(np.maximum(n, 1)), 0.0)
            (line,) = ax.plot(grid, mean, label=f"{algo} ({len(runs_)})")
            ax.fill_between(grid, mean - half, mean + half, alpha=0.2, color=line.get_color())
        if ref is not None:
            ax.axhline(ref["score"], ls="--", color="k", lw=1, label=ref["name"])
        if thr is not None and not (ref is not None and ref["metric"] == "reward_per_step"):
            ax.axhline(thr, ls=":", color="gray", lw=1, label=f"threshold {thr}")
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(tag)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
