"""bench/suite.py: the plan and its alternation, resume, reaching the Zoo score, the table, bad input.

Everything but the last test runs no training (a fake subprocess writes run.json); the last trains
one 2k-step PPO run on CartPole-v1 end to end and checks that a rerun skips it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("bench_suite", ROOT / "bench" / "suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _specs(suite, *algos):
    return suite.resolve_specs(list(algos))


def _result(suite, label, env, seed, budget, final, wall, evals, algo=None):
    return {"label": label, "algo": algo or label, "config": None, "env": env, "seed": seed, "budget": budget,
            "budget_scale": 1.0, "final": final, "final_std": 0.0, "steps": budget, "wall_s": wall,
            "evals": evals, "zoo_score": 0.0, "date": "2026-01-01 00:00", "cpus": 2,
            "hyperparams": suite.hyperparams_of(algo or label, env, None)}


def test_plan_alternates_the_first_algo_and_runs_each_pair_once_per_seed(suite):
    specs = _specs(suite, "ppo", "sb3-ppo", "reinforce")
    jobs = suite.plan(specs, ["CartPole-v1", "Pendulum-v1"], [20, 21, 22])
    cart = [j for j in jobs if j["env"] == "CartPole-v1"]
    assert [j["label"] for j in cart] == ["ppo", "sb3-ppo", "reinforce",
                                          "sb3-ppo", "reinforce", "ppo",
                                          "reinforce", "ppo", "sb3-ppo"]
    assert [j["seed"] for j in cart] == [20] * 3 + [21] * 3 + [22] * 3
    # env by env; reinforce has no Pendulum-v1 row
    assert [j["env"] for j in jobs] == ["CartPole-v1"] * 9 + ["Pendulum-v1"] * 6
    assert {j["label"] for j in jobs if j["env"] == "Pendulum-v1"} == {"ppo", "sb3-ppo"}


def test_budgets_are_the_zoos_scaled_or_fixed(suite):
    specs = _specs(suite, "ppo", "actor-critic", "reinforce")
    by = {(j["label"], j["env"]): j for j in suite.plan(specs, ["CartPole-v1", "BipedalWalker-v3"], [20])}
    assert by["ppo", "CartPole-v1"]["budget"] == 100_000
    assert by["actor-critic", "CartPole-v1"]["budget"] == 500_000
    assert by["reinforce", "CartPole-v1"]["budget"] == 500_000  # the A2C budget
    assert by["ppo", "BipedalWalker-v3"]["budget"] == 5_000_000
    tenth = suite.plan(specs, ["CartPole-v1"], [20], scale=0.1)
    assert [(j["budget"], j["budget_scale"]) for j in tenth] == [(10_000, 0.1), (50_000, 0.1), (50_000, 0.1)]
    fixed = suite.plan(specs, ["CartPole-v1"], [20], steps=20_000)
    assert {(j["budget"], j["budget_scale"]) for j in fixed} == {(20_000, None)}


def test_resume_skips_finished_runs_and_ignores_a_cut_line(suite, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    done = [_result(suite, "ppo", "CartPole-v1", 20, 20_000, 500.0, 10.0, []),
            _result(suite, "sb3-ppo", "CartPole-v1", 21, 20_000, 500.0, 10.0, []),
            _result(suite, "ppo", "CartPole-v1", 22, 100_000, 500.0, 10.0, [])]  # another budget: not this plan's
    results.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"label": "ppo", "env": "CartP')
    loaded = suite.load_results(results)
    assert len(loaded) == 3 and "not a complete result" in capsys.readouterr().err
    jobs = suite.plan(_specs(suite, "ppo", "sb3-ppo"), ["CartPole-v1"], [20, 21, 22], steps=20_000)
    todo = suite.pending(jobs, loaded)
    assert [(j["label"], j["seed"]) for j in todo] == [("sb3-ppo", 20), ("ppo", 21), ("ppo", 22), ("sb3-ppo", 22)]
    assert suite.main(["--algos", "ppo", "sb3-ppo", "--seeds", "20", "21", "22", "--steps", "20000",
                       "--envs", "CartPole-v1", "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs planned, 2 in" in out and "4 to train" in out
    assert "ppo CartPole-v1 seed 21 budget 20,000" in out


def test_an_edited_entry_makes_its_rows_pending_again(suite, tmp_path, monkeypatch):
    # Results are keyed by the hyperparameters' fingerprint too: a row trained with an older yaml
    # entry is not reused (nor shown) once the entry changes; other rows are untouched.
    specs = _specs(suite, "ppo", "sb3-ppo")
    jobs = suite.plan(specs, ["CartPole-v1"], [20], steps=20_000)
    done = [_result(suite, label, "CartPole-v1", 20, 20_000, 500.0, 10.0, []) for label in ("ppo", "sb3-ppo")]
    assert suite.pending(jobs, done) == []
    config = tmp_path / "ppo.yaml"
    config.write_text("CartPole-v1: {n_epochs: 3}\n")
    assert suite.hyperparams_of("ppo", "CartPole-v1", str(config)) != done[0]["hyperparams"]
    real = suite.yaml_entry
    monkeypatch.setattr(suite, "yaml_entry",
                        lambda algo, env: {**real(algo, env), **({"n_epochs": 3} if algo == "ppo" else {})})
    edited = suite.plan(specs, ["CartPole-v1"], [20], steps=20_000)
    assert [j["label"] for j in suite.pending(edited, done)] == ["ppo"]


class _FakeTrain:
    """subprocess.Popen stand-in: writes the run.json the CLI would, from the --run-dir it is given."""
    calls: list[list[str]] = []

    def __init__(self, cmd, **kwargs):
        type(self).calls.append(cmd)
        run_dir = Path(cmd[cmd.index("--run-dir" if "--run-dir" in cmd else "--resume") + 1])
        run_dir.mkdir(parents=True, exist_ok="--resume" in cmd)
        info = {"steps": 20_480, "wall_s": 12.5, "status": "finished",
                "evals": [[1024, 1.0, 20.0], [2048, 2.0, 480.0], [3072, 3.0, 500.0], [4096, 4.0, 450.0]],
                "final_eval": {"mean_return": 498.0, "std_return": 3.0, "episodes": 20}}
        (run_dir / "run.json").write_text(json.dumps(info))
        self.returncode = 0

    def communicate(self):
        return "", ""


def _left_by_a_kill(suite, tmp_path, monkeypatch, algo: str, seed: int, files: dict):
    """(job, args, run directory) of a 20k-step CartPole-v1 run whose directory an interrupted
    attempt left holding ``files`` (name -> text; None: a folder); the CLI is _FakeTrain."""
    monkeypatch.setattr(suite.subprocess, "Popen", _FakeTrain)
    args = suite.parser().parse_args(["--runs-root", str(tmp_path), "--algos", algo])
    job = suite.plan(_specs(suite, algo), ["CartPole-v1"], [seed], steps=20_000)[0]
    run_dir = suite.run_dir_of(job, tmp_path)
    run_dir.mkdir(parents=True)
    for name, text in files.items():
        (run_dir / name).mkdir() if text is None else (run_dir / name).write_text(text)
    return job, args, run_dir


def test_run_one_starts_a_run_killed_before_its_config_again_and_reads_run_json(suite, tmp_path, monkeypatch):
    job, args, stale = _left_by_a_kill(suite, tmp_path, monkeypatch, "sb3-ppo", 20, {"left-by-a-kill": ""})
    r = suite.run_one(job, args)
    assert not (stale / "left-by-a-kill").exists()
    cmd = _FakeTrain.calls[-1]
    assert cmd[cmd.index("--steps") + 1] == "20000" and cmd[cmd.index("--eval-every") + 1] == "1000"
    assert "torch_threads=1" in cmd and cmd[cmd.index("--device") + 1] == "cpu"
    assert (r["final"], r["wall_s"], r["steps"], r["eval_every"]) == (498.0, 12.5, 20_480, 1000)
    assert suite.first_reach(r["evals"], r["zoo_score"]) == (3072, 3.0)
    assert "reached at 3,072 steps" in suite.progress_line(1, 4, r)


def test_run_one_resumes_an_interrupted_run_from_its_checkpoint(suite, tmp_path, monkeypatch):
    """A directory the CLI wrote its config.yaml in is continued by `cli train --resume`, not
    deleted; an edited entry (a new fingerprint) names another directory and starts afresh."""
    job, args, interrupted = _left_by_a_kill(suite, tmp_path, monkeypatch, "ppo", 21,
                                             {"config.yaml": "algo: ppo\n", "checkpoints": None})
    r = suite.run_one(job, args)
    cmd = _FakeTrain.calls[-1]
    assert cmd[cmd.index("--resume") + 1] == str(interrupted.resolve()) and "--run-dir" not in cmd
    assert (interrupted / "checkpoints").is_dir() and r["resumed"] is True and r["final"] == 498.0
    args.seeds = [21]
    assert "Resumed from a checkpoint after an interruption (`cli train --resume`; wall time up to that " \
           "checkpoint plus the rest): ppo CartPole-v1 seed 21." in suite.render([r], [job], args, "cmd")
    edited = suite.run_dir_of({**job, "hyperparams": "0123456789"}, tmp_path)
    assert edited != interrupted and edited.parent == interrupted.parent


def test_first_reach_is_the_first_evaluation_at_or_above_the_score(suite):
    evals = [[1000, 1.5, -300.0], [2000, 3.0, -110.4], [3000, 4.5, -100.0]]
    assert suite.first_reach(evals, -110.423) == (2000, 3.0)
    assert suite.first_reach(evals, -90.0) is None
    assert suite.first_reach([], 0.0) is None


def test_table_shows_dashes_for_unreached_rows_and_the_ratio_to_sb3(suite):
    env = "Acrobot-v1"  # Zoo PPO -73.506 at 1M
    jobs = suite.plan(_specs(suite, "ppo", "sb3-ppo", "reinforce"), [env], [20, 21, 22])
    never = [[500_000, 100.0, -90.0], [1_000_000, 200.0, -80.0]]
    results = [_result(suite, "ppo", env, s, 1_000_000, -80.0 - s, 200.0 + s, never) for s in (20, 21, 22)]
    results += [_result(suite, "sb3-ppo", env, s, 1_000_000, -70.0, 400.0,
                        [[500_000, 150.0, -72.0], [1_000_000, 400.0, -70.0]]) for s in (20, 21, 22)]
    tbl, misses = suite.table(results, jobs, n_boot=200)
    rows = {line.split(" | ")[1]: line for line in tbl.splitlines()[2:]}
    assert set(rows) == {"ppo", "sb3-ppo"}  # no reinforce results: no row
    ppo = [c.strip() for c in rows["ppo"].split("|")]
    assert ppo[4:12] == ["-101.0 ± 0.8", "-101.0 (3)", "-73.506 (PPO, 1M)", "-27.5", "0/3", "—", "—", "3.7 min"]
    assert ppo[12].startswith("0.55 [") and ppo[12].endswith("] vs sb3-ppo")  # median 221 s / 400 s
    sb3 = [c.strip() for c in rows["sb3-ppo"].split("|")]
    assert sb3[7:13] == ["+3.5", "3/3", "500,000", "2.5 min", "6.7 min", "—"]
    assert len(misses) == 1 and misses[0].startswith("ppo on Acrobot-v1 misses the Zoo's PPO -73.506 by 27.5")


def test_reinforce_is_labelled_with_the_a2c_figure(suite):
    env = "CartPole-v1"
    jobs = suite.plan(_specs(suite, "reinforce"), [env], [20])
    results = [_result(suite, "reinforce", env, 20, 500_000, 500.0, 60.0, [[500_000, 60.0, 500.0]])]
    tbl, misses = suite.table(results, jobs, n_boot=100)
    assert "| 500 (A2C's, 500k) | +0.0 | 1/1 |" in tbl and misses == []


def test_write_docs_replaces_only_its_section(suite, tmp_path):
    docs = tmp_path / "docs" / "benchmarks.md"
    suite.write_docs(docs, "first\n")
    assert docs.read_text().startswith("# Benchmarks") and "first" in docs.read_text()
    docs.write_text(docs.read_text() + "\n## Another bench\n\nkept\n")
    suite.write_docs(docs, "second\n")
    text = docs.read_text()
    assert "first" not in text and "second" in text and text.endswith("kept\n")
    assert text.count(suite.BEGIN) == 1 and text.count(suite.END) == 1
    assert suite.shown_command(["--seeds", "20", "--table-only", "--write-docs", "--docs", "x.md"]) == \
        "python bench/suite.py --seeds 20"


def test_paired_statistics_iqm_bootstrap_interval_and_probability_of_improvement(suite):
    assert suite.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # the middle half: 3 4 5 6
    # the same gap on every seed: the interval is that gap, whatever the resample
    assert suite.paired_difference([10, 20, 35], [12, 22, 37], n_boot=500) == pytest.approx((-2.0, -2.0, -2.0))
    mean, lo, hi = suite.paired_difference([5, -5, 5, -5, 5, -5], [0] * 6, n_boot=2000)
    assert mean == 0 and lo < 0 < hi
    assert suite.probability_of_improvement([3, 4], [1, 2]) == 1.0
    assert suite.probability_of_improvement([1, 2], [1, 2]) == 0.5  # ties count half
    assert suite.probability_of_improvement([0, 10], [5, 5]) == 0.5
    assert [suite.verdict(*ci) for ci in ((0.1, 2.0), (-2.0, -0.1), (-1.0, 1.0), (0.0, 0.0))] == \
        ["better", "worse", "equal", "equal"]


def test_paired_table_gives_ppo_and_actor_critic_a_verdict_on_the_seeds_both_finished(suite):
    env = "Pendulum-v1"
    seeds = list(range(20, 31))
    jobs = suite.plan(_specs(suite, "ppo", "sb3-ppo", "actor-critic", "a3c", "sb3-a2c"), [env], seeds)
    results = [_result(suite, "ppo", env, s, 100_000, -200.0 - s, 30.0, []) for s in seeds]
    results += [_result(suite, "sb3-ppo", env, s, 100_000, -150.0 - s, 40.0, []) for s in seeds[:10]]
    results += [_result(suite, algo, env, s, 1_000_000, -150.0 + (s % 2) * 20, 100.0, [], algo=algo)
                for algo in ("actor-critic", "sb3-a2c") for s in seeds]
    results += [_result(suite, "a3c", env, s, 1_000_000, 0.0, 50.0, []) for s in seeds]
    tbl, rows = suite.paired_table(results, jobs, n_boot=500)
    assert [(r["label"], r["baseline"]) for r in rows] == [("ppo", "sb3-ppo"), ("actor-critic", "sb3-a2c")]
    ppo, ac = rows
    assert ppo["seeds"] == list(range(20, 30))  # sb3-ppo has no seed 30: unpaired, left out
    assert ppo["difference"] == pytest.approx((-50.0, -50.0, -50.0)) and ppo["verdict"] == "worse"
    assert ppo["p_improvement"] == 0.0
    assert ac["verdict"] == "equal" and ac["difference"] == pytest.approx((0.0, 0.0, 0.0))
    assert ac["p_improvement"] == 0.5
    assert "| Pendulum-v1 | ppo | sb3-ppo | 10 | -224.5 | -174.5 | -50.0 [-50.0, -50.0] | 0.00 | worse |" in tbl
    assert "a3c" not in tbl  # another algorithm than SB3's: no verdict
    few = [r for r in results if r["seed"] < 23]  # three pairs: the numbers, and no verdict
    assert [r["verdict"] for r in suite.paired_table(few, jobs, n_boot=100)[1]] == ["— (3 < 10 seeds)"] * 2


def test_a_titled_section_is_written_beside_the_suites(suite, tmp_path):
    docs = tmp_path / "benchmarks.md"
    suite.write_docs(docs, "whole suite\n")
    suite.write_docs(docs, "ten seeds\n", "Ten seeds against SB3")
    suite.write_docs(docs, "ten seeds, again\n", "Ten seeds against SB3")
    text = docs.read_text()
    assert "whole suite" in text and "ten seeds, again" in text and "ten seeds\n" not in text
    assert text.count("<!-- suite:ten-seeds-against-sb3:begin -->") == 1
    assert "## Ten seeds against SB3 (bench/suite.py)" in text
    assert suite.shown_command(["--seeds", "20", "--write-docs", "--section", "Ten seeds"]) == \
        "python bench/suite.py --seeds 20"


@pytest.mark.parametrize("argv, word", [(["--algos", "ppo2"], "unknown algo 'ppo2'"),
                                        (["--envs", "Cartpole-v1"], "unknown env 'Cartpole-v1'"),
                                        (["--algos", "reinforce", "--envs", "Pendulum-v1"], "no suite pair")])
def test_bad_selection_exits_2_with_one_line(argv, word):
    proc = subprocess.run([sys.executable, "bench/suite.py", *argv, "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and word in proc.stderr and "Traceback" not in proc.stderr


def test_one_real_run_then_a_rerun_trains_nothing(tmp_path):
    results = tmp_path / "results.jsonl"
    cmd = [sys.executable, "bench/suite.py", "--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "20",
           "--steps", "2048", "--final-eval-episodes", "3", "--eval-episodes", "3", "--results", str(results),
           "--runs-root", str(tmp_path / "runs"), "--write-docs", "--docs", str(tmp_path / "benchmarks.md")]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "[1/1] ppo CartPole-v1 seed 20: final" in first.stdout
    (entry,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert entry["steps"] >= 2048 and entry["evals"] and entry["final"] is not None
    assert (tmp_path / "runs" / "CartPole-v1" / f"ppo__s20__b2048__h{entry['hyperparams']}" / "run.json").is_file()
    assert entry["resumed"] is False
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "0 to train" in again.stdout and "[1/" not in again.stdout
    assert "| CartPole-v1 | ppo | 2,048 (fixed) |" in (tmp_path / "benchmarks.md").read_text()


def test_curves_reports_each_runs_take_off_and_refuses_an_empty_selection(suite, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_curves", ROOT / "bench" / "curves.py")
    curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curves)
    env, budget = "Pendulum-v1", 1000
    evals_late = [[250, 1.0, -900.0], [500, 2.0, -600.0], [750, 3.0, -150.0], [1000, 4.0, -140.0]]
    evals_early = [[250, 1.0, -190.0], [500, 2.0, -160.0], [750, 3.0, -150.0], [1000, 4.0, -145.0]]
    evals_never = [[250, 1.0, -1200.0], [500, 2.0, -1100.0], [750, 3.0, -900.0], [1000, 4.0, -800.0]]
    results = [_result(suite, "ppo", env, 20, budget, -141.0, 4.0, evals_late),
               _result(suite, "sb3-ppo", env, 20, budget, -146.0, 4.0, evals_early),
               _result(suite, "ppo", env, 21, budget, -801.0, 4.0, evals_never),
               _result(suite, "sb3-ppo", env, 21, budget, -147.0, 4.0, evals_early)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in results))
    argv = ["--algos", "ppo", "sb3-ppo", "--env", env, "--seeds", "20", "21", "--steps", str(budget),
            "--reach", "-200", "--results", str(path)]
    assert curves.main(argv) == 0
    out = capsys.readouterr().out
    assert "| 20 | ppo | -900.0 | -600.0 | -150.0 | -141.0 | 750 |" in out
    assert "| 20 | sb3-ppo | -190.0 | -160.0 | -150.0 | -146.0 | 250 |" in out
    assert "| 21 | ppo | -1200.0 | -1100.0 | -900.0 | -801.0 | not reached |" in out
    assert "- ppo: 1/2 runs reached -200 within 1,000 steps; median 750 steps" in out
    assert "- sb3-ppo: 2/2 runs reached -200 within 1,000 steps; median 250 steps" in out
    assert curves.main([*argv[:-2], "--results", str(tmp_path / "none.jsonl")]) == 2
    assert "no finished run of this selection" in capsys.readouterr().err
