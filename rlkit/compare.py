"""`rlkit compare`: per-env tables (final eval with a 95% interval, time to threshold, throughput) and curves.

Runs are grouped by algorithm and configuration (the resolved hyperparameters and env kwargs in
config.yaml, and where the run trained: its backend and number of workers), so two settings of one
algorithm are two rows, labelled by what tells them apart ("ppo (ray, 2 workers)", "ppo [n_epochs=4]");
a row counts its distinct seeds, and runs that repeat a seed of the same configuration are averaged
into one sample before any statistic. The chart's legend counts seeds (and runs) as the table does.
Intervals are percentile-bootstrap 95% intervals of the mean over seeds
(``scipy.stats.bootstrap``): every resample's mean lies between the smallest and the largest of the
seeds' scores, so an interval never leaves their range (CartPole's band never rises above 500).

Curves: runs are not all evaluated at the same steps (A3C evaluates at the first update past each
``eval_every``, so its points drift from run to run), so before any averaging each run's evaluation
returns are put on one step grid per row by linear interpolation (``np.interp``) between its own
evaluations: the grid starts at the step by which every run of the row has been evaluated and goes
every ``eval_every`` steps (the smallest of the row's runs) to the last evaluation, which is on it too.
A run that ended earlier (stopped at --stop-at-return) keeps its last (solving) value from there on.
Every grid point then averages the same seeds, so drift never turns into a zig-zag. A marker is drawn
at every grid point, so a run with a single evaluation (solved at its first) is a visible point. The
y axis is the evaluation return: the mean over the stop check's ``eval_episodes`` deterministic
episodes (TensorBoard tag ``eval/mean_reward``), or the reward per step for continuing tasks.

The final eval column is the confirmation score of run.json ``final_eval`` (episodes the stop check
never saw, rlkit/training.py). Runs without one (interrupted, or written before it existed) fall
back to their last periodic evaluation, and the table says how many did.
"""

from __future__ import annotations

import io
import json
import math
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlkit import runs
from rlkit.checkpoint import atomic_write_bytes
from rlkit.errors import UsageError

CONFIDENCE = 0.95
N_RESAMPLES = 9_999
BOOTSTRAP_SEED = 0  # the same runs give the same interval every time
MAX_LABEL = 60
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
MAX_GRID_POINTS = 1000  # a curve's common step grid is at most this fine (step_grid)


def bootstrap_ci(values, axis: int = 0) -> tuple:
    """(mean, low, high): the mean over ``axis`` and its percentile-bootstrap 95% interval
    (scipy.stats.bootstrap). Fewer than two values: the interval is nan. Works column-wise on a
    2-D array (one interval per column)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = v.mean(axis=axis)
    if v.shape[axis] < 2:
        nan = np.full_like(mean, np.nan) if np.ndim(mean) else float("nan")
        return mean if np.ndim(mean) else float(mean), nan, nan
    with warnings.catch_warnings():  # identical values give a zero-width interval, which is right
        warnings.simplefilter("ignore")
        res = stats.bootstrap((v,), np.mean, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                              method="percentile", axis=axis, vectorized=True,
                              rng=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = res.confidence_interval.low, res.confidence_interval.high
    # A percentile interval is made of resample means, so it lies within [min, max] of the values; clip
    # away the last floating-point ulp of the sums.
    low = np.clip(low, v.min(axis=axis), v.max(axis=axis))
    high = np.clip(high, v.min(axis=axis), v.max(axis=axis))
    if np.ndim(mean):
        return mean, low, high
    return float(mean), float(low), float(high)


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
            settings = runs.read_config(run_dir, import_env=False)  # compare never imports an env
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


def _reference(env_id: str, env_kwargs: dict, env_packages=None):
    """The env's reference score, for rlkit's and Gymnasium's own envs; a user's env (one that needs
    its ``env_packages`` imported) is never imported by compare, so it has none here."""
    if env_packages:
        return None
    try:
        from rlkit.environments import env_reference

        return env_reference(env_id, env_kwargs)
    except Exception:  # noqa: BLE001  a missing reference must not break the table
        return None


def config_key(settings: dict) -> str:
    """What makes two runs of one algorithm the same configuration: hyperparameters, env kwargs, and
    where it trained (the backend and the number of workers: a Ray run is not a local one)."""
    return json.dumps({"hyperparams": settings.get("hyperparams") or {},
                       "env_kwargs": settings.get("env_kwargs") or {},
                       "backend": settings.get("backend") or "local", "workers": settings.get("workers")},
                      sort_keys=True, default=str)


def _where(cfg: dict) -> str:
    """'ray, 2 workers', 'local': the backend and the workers of a configuration (config_key)."""
    workers = cfg.get("workers")
    text = str(cfg.get("backend") or "local")
    if workers is not None:
        text += f", {workers} worker{'s' if workers != 1 else ''}"
    return text


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(value, default=str) if not isinstance(value, str) else value}


def group_runs(recs: list[dict]) -> dict:
    """{label: [run record, ...]} for one env: one group per (algorithm, configuration). The label is
    the algorithm, followed by what tells its configurations apart when it has several: where they
    trained in parentheses ("ppo (ray, 2 workers)"), differing settings in brackets ("ppo [n_epochs=4]")."""
    groups: dict = defaultdict(list)
    for rec in recs:
        groups[(rec["settings"]["algo"], config_key(rec["settings"]))].append(rec)
    by_algo: dict = defaultdict(list)
    for algo, key in groups:
        by_algo[algo].append(key)
    labels = {}
    for algo, keys in by_algo.items():
        if len(keys) == 1:
            labels[(algo, keys[0])] = algo
            continue
        flat, where = {}, {}
        for key in keys:
            cfg = json.loads(key)
            flat[key] = {**_flatten(cfg["hyperparams"]), **_flatten(cfg["env_kwargs"], "env_kwargs.")}
            where[key] = _where(cfg)
        names = sorted({n for f in flat.values() for n in f})
        differ = [n for n in names if len({f.get(n, "–") for f in flat.values()}) > 1]
        where_differs = len(set(where.values())) > 1
        for key in keys:
            label = algo + (f" ({where[key]})" if where_differs else "")
            if differ:
                text = ", ".join(f"{n}={flat[key].get(n, '–')}" for n in differ)
                if len(text) > MAX_LABEL:
                    text = text[: MAX_LABEL - 1] + "…"
                label += f" [{text}]"
            labels[(algo, key)] = label
        if len({labels[(algo, k)] for k in keys}) < len(keys):  # cut to the same text: number them
            for i, key in enumerate(sorted(keys)):
                labels[(algo, key)] = f"{labels[(algo, key)]} #{i + 1}"
    return {labels[g]: recs_ for g, recs_ in sorted(groups.items(), key=lambda kv: labels[kv[0]])}


def per_seed(recs: list[dict], values: list) -> dict:
    """{seed: [value, ...]} of the runs' values (None skipped)."""
    out: dict = defaultdict(list)
    for rec, value in zip(recs, values):
        if value is not None:
            out[rec["settings"].get("seed")].append(value)
    return out


def _fmt_interval(mean: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def compare(paths, out: Path | None = None, threshold: float | None = None) -> Path:
    table = collect(paths)
    out = Path(out or paths[0])
    if out.is_file():
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    md = ["# rlkit comparison", ""]
    plots = []
    for env_id, algos in sorted(table.items()):
        all_recs = [r for rs in algos.values() for r in rs]
        first = all_recs[0]["settings"]
        ref = _reference(env_id, first.get("env_kwargs") or {}, first.get("env_packages"))
        per_step = ref is not None and ref["metric"] == "reward_per_step"
        tag = "eval/reward_per_step" if per_step else "eval/mean_reward"
        thr = threshold
        if thr is None:
            thr = next((r["settings"].get("stop_at_return") for r in all_recs
                        if r["settings"].get("stop_at_return") is not None), None)
        to = f"{thr:g}" if thr is not None else "threshold (none set)"
        header = (f"| algo | seeds | final eval, fresh seeds (mean [95% CI] over seeds) | solved "
                  f"| median steps to {to} | median s to {to} | env steps/s |")
        rows = [f"## {env_id}", ""]
        if ref is not None:
            rows += [f"reference: {ref['name']} = {ref['score']:.4f} ({ref['metric']})", ""]
        rows += [header, "|---|---|---|---|---|---|---|"]
        curves = {}
        for label, recs in group_runs(all_recs).items():
            finals, steps_to, secs_to, fps = [], [], [], []
            unconfirmed = 0
            for rec in recs:
                info = rec["info"]
                final, confirmed = final_score(rec["dir"], info, per_step, tag)
                finals.append(final)
                if final is not None:
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
            seeds = per_seed(recs, finals)
            n_seeds = len({r["settings"].get("seed") for r in recs})
            cell = _fmt_interval(*bootstrap_ci([np.mean(v) for v in seeds.values()])) if seeds else "–"
            if unconfirmed:
                cell += f" ({unconfirmed} unconfirmed: last periodic eval)"
            count = f"{n_seeds}" if n_seeds == len(recs) else f"{n_seeds} ({len(recs)} runs)"
            # The legend counts as this column does: seeds, and runs when a seed was run more than once.
            legend = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}" + (
                f", {len(recs)} runs" if n_seeds != len(recs) else "")
            rows.append(f"| {label.replace('|', '/')} | {count} | {cell} | {len(steps_to)}/{len(recs)} | "
                        f"{med(steps_to, lambda x: f'{x:.0f}')} | {med(secs_to, lambda x: f'{x:.2f}')} | "
                        f"{med(fps, lambda x: f'{x:.0f}')} |")
            curves[label] = {"by_seed": per_seed(recs, [read_curve(rec["dir"], tag) for rec in recs]),
                             "count": legend, "every": _eval_interval(recs)}
        rows += ["", f"Intervals: percentile bootstrap of the mean over seeds (scipy.stats.bootstrap, "
                     f"{N_RESAMPLES} resamples), within the seeds' range; runs repeating a seed of one "
                     f"configuration count as one seed (averaged)."]
        md += rows + [""]
        episodes = sorted({int(r["settings"]["eval_episodes"]) for r in all_recs
                           if isinstance(r["settings"].get("eval_episodes"), int)})
        plots.append((env_id, curves, ref, thr, tag, episodes))
    text = "\n".join(md)
    print(text)
    # Each file to a temp file in its folder, then renamed: a kill or a full disk mid-write leaves the
    # previous file whole (rlkit.checkpoint.atomic_write_bytes), never a half-written one.
    atomic_write_bytes(out / "comparison.md", (text + "\n").encode(), shared=True)
    _plot(plots, out / "comparison.png")
    print(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")
    return out


def _eval_interval(recs: list[dict]) -> int | None:
    """The smallest ``eval_every`` of the runs (the step of their common grid), None if none says."""
    every = [r["settings"].get("eval_every") for r in recs]
    every = [int(e) for e in every if isinstance(e, (int, float)) and not isinstance(e, bool) and e >= 1]
    return min(every) if every else None


def step_grid(curves: list, every: float | None = None) -> np.ndarray:
    """The common step grid of some runs' evaluation curves [(steps, values), ...]: from the step by
    which every run has been evaluated (its first evaluation), every ``every`` steps (default: the
    median spacing of their evaluations) up to the last evaluation of any run, which ends the grid."""
    curves = [(np.asarray(s, dtype=float), v) for s, v in curves if len(s)]
    if not curves:
        return np.zeros(0)
    start = max(s[0] for s, _ in curves)
    end = max(s[-1] for s, _ in curves)
    if every is None:
        gaps = np.concatenate([np.diff(s) for s, _ in curves])
        gaps = gaps[gaps > 0]
        every = float(np.median(gaps)) if len(gaps) else None
    if not every or end <= start:
        return np.array([start]) if end <= start else np.array([start, end])
    every = max(float(every), (end - start) / MAX_GRID_POINTS)  # the band bootstraps every column
    grid = np.arange(start, end, every)
    return np.append(grid, end) if grid[-1] < end else grid


def seed_curves(by_seed: dict, every: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(grid, values[seed, grid]): every run's evaluations linearly interpolated (``np.interp``) onto
    one step grid (``step_grid``), then each seed's runs averaged. Runs evaluated at different steps
    (A3C's drift) are averaged at the same steps, over the same seeds at every point. A run stopped at
    --stop-at-return keeps its last (solving) policy: its last evaluation is carried forward, or the
    mean would be over the slower runs only."""
    curves = [(np.asarray(s, dtype=float), np.asarray(v, dtype=float))
              for runs_ in by_seed.values() for s, v in runs_ if len(s)]
    grid = step_grid(curves, every)
    if not len(grid):
        return np.zeros(0), np.zeros((0, 0))
    rows = []
    for runs_ in by_seed.values():
        ys = [np.interp(grid, np.asarray(s, dtype=float), np.asarray(v, dtype=float))  # flat past the last
              for s, v in runs_ if len(s)]
        if ys:
            rows.append(np.mean(np.array(ys), axis=0))
    return grid, np.array(rows)


def band(ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high, seeds) per grid column over the seeds present there; low/high are nan where
    fewer than two seeds are. Columns are bootstrapped together when the same seeds are present."""
    present = ~np.isnan(ys)
    n = present.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ys, axis=0)
    low, high = np.full(ys.shape[1], np.nan), np.full(ys.shape[1], np.nan)
    patterns: dict = defaultdict(list)
    for j in range(ys.shape[1]):
        patterns[present[:, j].tobytes()].append(j)
    for cols in patterns.values():
        rows = present[:, cols[0]]
        if rows.sum() < 2:
            continue
        _, lo, hi = bootstrap_ci(ys[np.ix_(rows, cols)], axis=0)
        low[cols], high[cols] = lo, hi
    return mean, low, high, n


CAPTION = ("Lines: mean over seeds; bands: 95% percentile-bootstrap interval over seeds. Each run's evaluations are "
           "interpolated linearly onto one step grid per row (every eval_every steps, from the step by which all "
           "its runs have been evaluated); a run that stopped early keeps its last value.")


def y_label(tag: str, episodes: list) -> str:
    """The y axis: what the plotted number is (not the TensorBoard tag it is read from)."""
    n = "/".join(map(str, episodes)) if episodes else "N"
    what = "evaluation reward per step" if tag.endswith("reward_per_step") else "evaluation return"
    return f"{what} (mean over {n} episodes)"


def _plot(plots, path: Path):
    """Draw one panel per env and save it; returns the (closed) figure, whose artists tests inspect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(6 * len(plots), 4.8), squeeze=False)
    for ax, (env_id, curves, ref, thr, tag, episodes) in zip(axes[0], plots):
        for i, (label, curve) in enumerate(curves.items()):
            grid, ys = seed_curves(curve["by_seed"], curve["every"])
            if not len(grid):
                continue
            mean, low, high, _ = band(ys)
            every = max(1, len(grid) // 40)  # a marker at every grid point, thinned on long curves
            # Each group its own marker shape, later ones smaller: two groups that end on the same
            # point (both solved at the same evaluation) stay visible one inside the other.
            (line,) = ax.plot(grid, mean, marker=MARKERS[i % len(MARKERS)], markersize=max(4, 8 - 1.5 * i),
                              markevery=every, lw=1.5, zorder=3 + 0.01 * i, label=f"{label} ({curve['count']})")
            if np.isfinite(low).any():
                ax.fill_between(grid, low, high, alpha=0.2, color=line.get_color(), lw=0)
        if ref is not None:
            ax.axhline(ref["score"], ls="--", color="k", lw=1, label=ref["name"])
        if thr is not None and not (ref is not None and ref["metric"] == "reward_per_step"):
            ax.axhline(thr, ls=":", color="gray", lw=1, label=f"threshold {thr}")
        ax.set_title(env_id)
        ax.set_xlabel("environment steps (evaluations interpolated linearly onto one grid)")
        ax.set_ylabel(y_label(tag, episodes))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.text(0.5, 0.01, CAPTION, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue(), shared=True)
    return fig
