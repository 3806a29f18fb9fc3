"""`rlkit compare` as a newcomer saw it (issue 34): local and Ray runs are different rows, the legend
counts seeds as the table does, runs evaluated at different steps are put on one step grid before
they are averaged, and the y axis says what it shows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml


def _run(root: Path, name: str, seed: int, evals: list, *, algo: str = "ppo", backend: str = "local",
         workers: int | None = None, eval_every: int = 1000, eval_episodes: int = 10) -> Path:
    """A run directory as far as compare reads it: config.yaml, run.json, the eval/mean_reward scalars."""
    from rlkit.logger import Logger

    run = root / "CartPole-v1" / name
    run.mkdir(parents=True)
    cfg = {"algo": algo, "env": "CartPole-v1", "env_kwargs": {}, "seed": seed, "stop_at_return": None,
           "backend": backend, "workers": workers, "eval_every": eval_every, "eval_episodes": eval_episodes,
           "hyperparams": {"n_epochs": 10}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    final = evals[-1][1]
    info = {"algo": algo, "env": "CartPole-v1", "seed": seed, "status": "finished", "steps": evals[-1][0],
            "wall_s": 10.0, "evals": [[s, s / 1000, m] for s, m in evals],
            "final_eval": {"mean_return": final, "std_return": 0.0, "episodes": 100, "mean_ep_length": final,
                           "reward_per_step": 1.0, "seed": 20_000}}
    (run / "run.json").write_text(json.dumps(info))
    logger = Logger(run, progress=False)
    for s, m in evals:
        logger.scalar("eval/mean_reward", m, s)
    logger.close()
    return run


def _figure(monkeypatch, root: Path):
    """compare() on root/CartPole-v1; (the figure it drew, its stdout table rows by label)."""
    from rlkit import compare as comparemod

    figures = []
    draw = comparemod._plot
    monkeypatch.setattr(comparemod, "_plot", lambda *a: figures.append(draw(*a)) or figures[-1])
    comparemod.compare([root / "CartPole-v1"], out=root / "out")
    return figures[-1]


def _rows(out: str) -> dict:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| algo")}


def test_backend_and_workers_are_part_of_the_configuration(tmp_path, monkeypatch, capsys):
    """A local and a Ray run of ppo used to be one row; now each is its own, labelled by where it ran."""
    _run(tmp_path, "local", 0, [(1000, 100.0), (2000, 200.0)])
    _run(tmp_path, "ray", 0, [(1000, 300.0), (2000, 400.0)], backend="ray", workers=2)
    fig = _figure(monkeypatch, tmp_path)
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == {"ppo (local)", "ppo (ray, 2 workers)"}, rows
    assert rows["ppo (local)"][1:3] == ["1", "200.00"] and rows["ppo (ray, 2 workers)"][1:3] == ["1", "400.00"]
    labels = {line.get_label() for line in fig.axes[0].get_lines()}
    assert {"ppo (local) (1 seed)", "ppo (ray, 2 workers) (1 seed)"} <= labels

    # Where the workers differ too: the count follows the backend; differing settings stay in brackets.
    from rlkit.compare import group_runs

    recs = [{"settings": {"algo": "a3c", "backend": "local", "workers": w, "hyperparams": {"lr": lr}}}
            for w, lr in ((1, 1), (4, 1), (4, 2))]
    assert set(group_runs(recs)) == {"a3c (local, 1 worker) [lr=1]", "a3c (local, 4 workers) [lr=1]",
                                     "a3c (local, 4 workers) [lr=2]"}


def test_the_legend_counts_seeds_and_runs_as_the_table_does(tmp_path, monkeypatch, capsys):
    """Three runs of one seed: the table says "1 (3 runs)", and so does the legend; three seeds: 3."""
    for i in range(3):
        _run(tmp_path, f"same{i}", 0, [(1000, 100.0 * (i + 1))], algo="ppo")
        _run(tmp_path, f"seed{i}", i, [(1000, 100.0 * (i + 1))], algo="sb3-ppo")
    fig = _figure(monkeypatch, tmp_path)
    rows = _rows(capsys.readouterr().out)
    assert rows["ppo"][1] == "1 (3 runs)" and rows["sb3-ppo"][1] == "3"
    labels = {line.get_label() for line in fig.axes[0].get_lines()}
    assert {"ppo (1 seed, 3 runs)", "sb3-ppo (3 seeds)"} <= labels, labels


def test_runs_evaluated_at_different_steps_are_averaged_on_one_grid(tmp_path, monkeypatch, capsys):
    """A3C's evaluation points drift: one seed at 1010, 2030, 3005, the other at 1050, 2001, 3040. The
    union of their steps made a zig-zag of points where one seed had a value and the other had not;
    now both are interpolated onto one grid (every eval_every = 1000 steps from 1050, where both have
    been evaluated, to 3040) and every point averages both seeds."""
    from rlkit.compare import seed_curves

    a = ([1010, 2030, 3005], [10.0, 200.0, 300.0])
    b = ([1050, 2001, 3040], [30.0, 100.0, 500.0])
    _run(tmp_path, "s0", 0, list(zip(*a)), algo="a3c")
    _run(tmp_path, "s1", 1, list(zip(*b)), algo="a3c")
    fig = _figure(monkeypatch, tmp_path)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("a3c")]
    grid = np.array([1050.0, 2050.0, 3040.0])
    np.testing.assert_allclose(line.get_xdata(), grid)
    expected = (np.interp(grid, *a) + np.interp(grid, *b)) / 2
    np.testing.assert_allclose(line.get_ydata(), expected)
    # the band covers every point: both seeds are present at each one
    (band,) = fig.axes[0].collections
    xs = np.concatenate([p.vertices[:, 0] for p in band.get_paths()])
    assert xs.min() == grid[0] and xs.max() == grid[-1]

    steps, ys = seed_curves({0: [tuple(map(np.array, a))], 1: [tuple(map(np.array, b))]}, 1000)
    assert np.isfinite(ys).all() and ys.shape == (2, 3)
    # a seed that stopped early (solved) keeps its last value to the end of the grid
    steps, ys = seed_curves({0: [(np.array([1000.0]), np.array([500.0]))],
                             1: [(np.array([1000.0, 2000.0, 3000.0]), np.array([100.0, 200.0, 300.0]))]}, 1000)
    np.testing.assert_allclose(steps, [1000, 2000, 3000])
    np.testing.assert_allclose(ys[0], [500, 500, 500])


def test_the_y_axis_is_the_evaluation_return_and_the_chart_says_how_curves_are_made(tmp_path, monkeypatch, capsys):
    _run(tmp_path, "s0", 0, [(1000, 10.0), (2000, 20.0)], eval_episodes=5)
    fig = _figure(monkeypatch, tmp_path)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "evaluation return (mean over 5 episodes)"
    assert "eval/mean_reward" not in ax.get_ylabel()
    assert "interpolated linearly" in ax.get_xlabel()
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "interpolated linearly onto one step grid" in caption and "bootstrap" in caption
