"""`rlkit tune` (rlkit/tune.py, docs/tune.md): a real tiny study (sqlite db, trial run dirs, best.yaml that
`train --config` takes, charts; two worker processes), continuing it, pruning and failing trials (with a
stand-in for training), Ctrl-C, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, assert_one_line_error, main_in_process

optuna = pytest.importorskip("optuna")

# Two real trials take ~2 s each: 2048 steps of PPO on CartPole-v1 with the tuned entry's small rollouts.
TINY_SPACE = {"learning_rate": {"type": "float", "low": 1.0e-3, "high": 3.0e-3, "log": True},
              "n_epochs": {"type": "categorical", "choices": [4, 8]},
              "hidden": {"type": "categorical", "choices": [[32], [64, 64]]},
              "n_envs": 4}
REAL = ["--algo", "ppo", "--env", "CartPole-v1", "--steps", "2048", "--eval-every", "1024", "--eval-episodes", "2",
        "--stop-at-return", "475", "--seed", "0", "--pruner", "none"]


def _space(folder: Path, space: dict, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(space))
    return path


def _trials(db: Path, name: str):
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """3 trials, 2 at a time in worker processes: `rlkit tune` as a user runs it."""
    cwd = tmp_path_factory.mktemp("tune")
    space = _space(cwd, TINY_SPACE)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "tune", *REAL, "--space", str(space), "--trials", "3",
                             "--jobs", "2"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout, proc.stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_dir = cwd / "runs" / "tune" / "CartPole-v1"
    return {"cwd": cwd, "space": space, "proc": proc, "s": time.perf_counter() - t, "folder": env_dir / "ppo",
            "db": env_dir / "ppo.db"}


def test_a_tiny_study_writes_its_db_trial_runs_best_yaml_and_charts(study):
    folder, proc = study["folder"], study["proc"]
    trials = _trials(study["db"], "ppo-CartPole-v1")
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials), [t.state for t in trials]
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent == folder and run_dir.name == f"trial_{t.number:04d}"
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] in ("finished", "solved")
        assert t.user_attrs["wall_s"] == info["wall_s"]  # wall time recorded with the value
        assert t.value == info.get("solved_at_step", t.value)
        hyper = yaml.safe_load((run_dir / "config.yaml").read_text())["hyperparams"]
        assert hyper["learning_rate"] == pytest.approx(t.user_attrs["values"]["learning_rate"])
        assert hyper["n_envs"] == 4  # the space's fixed value
    for name in ("best.yaml", "history.png", "importances.png", "trials.csv"):
        assert (folder / name).is_file(), name
    assert (folder / "history.png").read_bytes()[:4] == b"\x89PNG"
    best = yaml.safe_load((folder / "best.yaml").read_text())
    winner = min(trials, key=lambda t: t.value)
    assert best["CartPole-v1"]["learning_rate"] == pytest.approx(winner.user_attrs["values"]["learning_rate"])
    assert best["CartPole-v1"]["n_timesteps"] == 2048
    out = proc.stdout
    assert "3 trials (3 in this run): 3 complete, 0 pruned, 0 failed" in out
    assert f"best: trial {winner.number}" in out and "learning_rate" in out
    assert "wrote runs/tune/CartPole-v1/ppo/best.yaml: rlkit train --algo ppo --env CartPole-v1 --config" in out


def test_jobs_2_runs_trials_in_two_worker_processes(study):
    trials = _trials(study["db"], "ppo-CartPole-v1")
    first_two = sorted(trials, key=lambda t: t.number)[:2]
    # Both were handed out before either finished, to different workers, each its own process.
    assert {t.user_attrs["worker"] for t in first_two} == {0, 1}
    pids = {t.user_attrs["pid"] for t in first_two}
    assert len(pids) == 2 and study["proc"].pid not in pids
    assert first_two[1].datetime_start < first_two[0].datetime_complete


def test_the_same_command_continues_the_study_and_best_yaml_trains(study, capsys, monkeypatch):
    monkeypatch.chdir(study["cwd"])
    code, out, err = main_in_process(capsys, "tune", *REAL, "--space", study["space"], "--trials", "1")
    assert code == 0, err
    assert "continued, 3 trials so far" in out and "4 trials (1 in this run)" in out
    trials = _trials(study["db"], "ppo-CartPole-v1")
    assert len(trials) == 4 and (study["folder"] / "trial_0003" / "run.json").is_file()
    # Settings that change what a value means are refused for a study that has values.
    code, out, err = main_in_process(capsys, "tune", *REAL[:5], "4096", *REAL[6:], "--space", study["space"],
                                     "--trials", "1")
    assert_one_line_error(code, err, "--steps 2048, not 4096", "--study NAME")
    assert len(_trials(study["db"], "ppo-CartPole-v1")) == 4
    code, out, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--config",
                                     study["folder"] / "best.yaml", "--steps", "256", "--eval-every", "256",
                                     "--eval-episodes", "1", "--final-eval-episodes", "0", "--run-dir",
                                     study["cwd"] / "from_best", "--quiet")
    assert code == 0, err
    best = yaml.safe_load((study["folder"] / "best.yaml").read_text())["CartPole-v1"]
    hyper = yaml.safe_load((study["cwd"] / "from_best" / "config.yaml").read_text())["hyperparams"]
    assert hyper["learning_rate"] == pytest.approx(best["learning_rate"]) and hyper["hidden"] == best["hidden"]


# --- a stand-in for rlkit.training.train: the study's logic without the training ------------------------
def fake_train(algo, env_id, *, steps, run_dir, eval_every, on_eval, on_step, stop_at_return, sets, seed=0, **kw):
    """Trial n: n in BAD evaluates 10 every time, FAILS raise, NAN diverges, INVALID is a refused
    configuration; the others climb 100, 200, ... (CLIMB {n: c}: c, 2c, ...; SCALE {seed: f}: times f
    on that seed; BAD_SEED {n: [seeds]}: 10 on those seeds of trial n). Each evaluation is 0.1 s of
    run.json wall time (SEC_PER_EVAL {n: s}: s), and SLEEP {n: s} really sleeps s seconds per evaluation.
    Writes the run.json fields the objective reads."""
    from rlkit.errors import UsageError

    trial_dir = Path(run_dir).parent if Path(run_dir).name.startswith("seed_") else Path(run_dir)
    number = int(trial_dir.name.split("_")[1].split("-")[0])
    plan = json.loads(os.environ["RLKIT_FAKE_PLAN"])
    if number in plan.get("invalid", []):
        raise UsageError("objective 'average' needs raw rewards: set norm_reward false")
    if number in plan.get("fails", []):
        raise RuntimeError(f"trial {number} broke")
    Path(run_dir).mkdir(parents=True)
    climb = plan.get("climb", {}).get(str(number), 100.0) * plan.get("scale", {}).get(str(seed), 1.0)
    bad = number in plan.get("bad", []) or seed in plan.get("bad_seed", {}).get(str(number), [])
    per_eval = plan.get("sec_per_eval", {}).get(str(number), 0.1)
    evals, step, solved = [], 0, False
    for k in range(1, steps // eval_every + 1):
        step = k * eval_every
        on_step(step, None)
        time.sleep(plan.get("sleep", {}).get(str(number), 0.0))
        mean = float("nan") if number in plan.get("nan", []) else 10.0 if bad else climb * k
        evals.append([step, per_eval * k, mean])
        solved = stop_at_return is not None and mean >= stop_at_return
        if on_eval(step, {"mean_return": mean}, None) is False or solved:  # as TrainingCallback stops
            break
    means = [e[2] for e in evals if not math.isnan(e[2])]
    info = {"steps": step, "wall_s": round(per_eval * len(evals), 3), "status": "solved" if solved else "finished",
            "evals": evals, "best": {"step": step, "mean_return": max(means)} if means else None,
            "final_eval": {"mean_return": evals[-1][2]}, "confirm_stopped": kw.get("confirm_stopped")}
    if solved:
        info.update(solved_at_step=step, solved_at_s=round(per_eval * len(evals), 3))
    (Path(run_dir) / "run.json").write_text(json.dumps(info))
    return Path(run_dir)


def _fake_study(tmp_path, monkeypatch, trials: int, plan: dict, **kw):
    from rlkit import tune

    monkeypatch.setenv("RLKIT_FAKE_PLAN", json.dumps(plan))
    space = _space(tmp_path, {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True}})
    settings = dict(steps=500, eval_every=100, seed=0, runs_root=tmp_path / "runs", space=space, sampler="random",
                    train_fn="tests.test_tune:fake_train", startup_trials=2, warmup_steps=0)
    settings.update(kw)
    if "seeds" in kw:
        settings.pop("seed")
    return tune.tune("ppo", "CartPole-v1", trials, **settings)


def test_the_median_pruner_stops_trials_below_the_complete_ones(tmp_path, monkeypatch, capsys):
    result = _fake_study(tmp_path, monkeypatch, 4, {"bad": [2, 3]})
    trials = _trials(tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo.db", "ppo-CartPole-v1")
    states = {t.number: t.state.name for t in trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "PRUNED"}, states
    for t in trials[2:]:  # stopped at their first evaluation: the on_eval hook said False
        assert t.user_attrs["pruned_at_step"] == 100 and t.intermediate_values == {100: 10.0}
        assert json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["steps"] == 100
        # a pruned run is not scored on 100 fresh episodes (trials may run in other processes: run.json says)
        assert json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["confirm_stopped"] is False
    assert trials[0].value == 500.0 and result["counts"]["pruned"] == 2
    assert "trial 2: pruned at step 100 (evaluation 10.0)" in capsys.readouterr().out


def test_a_time_to_solve_study_prunes_against_trials_that_solved_earlier(tmp_path, monkeypatch):
    """Solved trials stop early; their value is carried forward, so a slow trial is still compared."""
    _fake_study(tmp_path, monkeypatch, 3, {"bad": [2]}, stop_at_return=200, steps=1000, warmup_steps=300)
    trials = _trials(tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo.db", "ppo-CartPole-v1")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[0].value == 200.0  # solved at its second evaluation
    assert max(trials[0].intermediate_values) == 200  # ... and reported nothing after it
    assert trials[2].user_attrs["pruned_at_step"] == 300  # the first evaluation past the warm-up
    # unsolved at that point: budget * (1 + (R - best) / R)
    assert trials[2].intermediate_values[300] == pytest.approx(1000 * (1 + (200 - 10) / 200))


def test_failing_and_diverging_trials_are_recorded_failed_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    result = _fake_study(tmp_path, monkeypatch, 5, {"fails": [1], "nan": [2], "invalid": [3]}, pruner="none")
    trials = _trials(tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo.db", "ppo-CartPole-v1")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE"]
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials]
    assert reasons[1] == "RuntimeError: trial 1 broke"
    assert "Traceback" in Path(trials[1].user_attrs["crash_log"]).read_text()
    assert reasons[2].startswith("diverged: evaluation mean return nan at step 100")
    assert reasons[3].startswith("invalid configuration: objective 'average'")
    assert result["best"] in (0, 4)
    out = capsys.readouterr().out
    assert "trial 1: failed: RuntimeError: trial 1 broke (traceback in" in out
    assert "5 trials (5 in this run): 2 complete, 0 pruned, 3 failed" in out


def test_a_run_whose_every_trial_failed_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    from rlkit import tune

    with pytest.raises(tune.TrialsFailed, match="all 2 trials of this run failed; the first: RuntimeError"):
        _fake_study(tmp_path, monkeypatch, 2, {"fails": [0, 1]})
    out = capsys.readouterr().out
    assert "no complete trial yet: no best.yaml" in out and "history.png: not drawn" in out


def test_ctrl_c_exits_130_and_leaves_the_study_resumable(tmp_path, monkeypatch):
    space = _space(tmp_path, TINY_SPACE)
    args = ["--algo", "ppo", "--env", "CartPole-v1", "--steps", "20000", "--eval-every", "512",
            "--eval-episodes", "1", "--space", str(space), "--seed", "0", "--trials", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "cli", "tune", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    latest = tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo" / "trial_0000" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the first commit, not a fixed wait
    assert latest.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == "rlkit: interrupted"
    assert "keeps its 0 finished trials; the same command continues it: rlkit tune --algo ppo" in out
    assert "train --resume" not in out
    db = tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo.db"
    (trial,) = _trials(db, "ppo-CartPole-v1")
    assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"] is True
    assert json.loads((latest.parent.parent / "run.json").read_text())["status"] == "interrupted"
    # The same study goes on (a stand-in trains here: the settings are the interrupted run's).
    monkeypatch.chdir(tmp_path)
    from rlkit import tune

    monkeypatch.setenv("RLKIT_FAKE_PLAN", "{}")
    tune.tune("ppo", "CartPole-v1", 1, steps=20000, eval_every=512, eval_episodes=1, seed=0, space=space,
              train_fn="tests.test_tune:fake_train", pruner="none")
    assert [t.state.name for t in _trials(db, "ppo-CartPole-v1")] == ["FAIL", "COMPLETE"]


# --- --seeds and --objective ---------------------------------------------------------------------------
DB = ("runs", "tune", "CartPole-v1", "ppo.db")


def test_a_trial_of_several_seeds_is_the_median_of_their_values_each_its_own_run(tmp_path, monkeypatch, capsys):
    # Seed 0 climbs 100 a evaluation (R 300 at step 300), seed 1 300 (step 100), seed 2 50 (step 600).
    _fake_study(tmp_path, monkeypatch, 2, {"scale": {"1": 3.0, "2": 0.5}}, seeds=[0, 1, 2], stop_at_return=300,
                steps=1000, pruner="none")
    trials = _trials(tmp_path.joinpath(*DB), "ppo-CartPole-v1")
    folder = tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo"
    t = trials[0]
    assert t.value == 300.0  # the median of 300, 100, 600 (their mean would be 333)
    a = t.user_attrs
    assert a["seed_values"] == {"0": 300.0, "1": 100.0, "2": 600.0}
    assert a["seed_solved_at_step"] == {"0": 300, "1": 100, "2": 600} and a["solved_at_step"] == 300
    assert a["seed_steps"] == {"0": 300, "1": 100, "2": 600} and a["steps"] == 300
    assert a["seed_wall_s"] == {"0": 0.3, "1": 0.1, "2": 0.6} and a["wall_s"] == 0.3
    assert a["solved_at_s"] == 0.3 and a["seed_solved_at_s"]["2"] == 0.6
    assert Path(a["run_dir"]) == folder / "trial_0000"
    for seed in (0, 1, 2):  # one ordinary run directory per seed, under the trial's folder
        run = folder / "trial_0000" / f"seed_{seed}"
        assert a["seed_run_dir"][str(seed)] == str(run)
        assert json.loads((run / "run.json").read_text())["steps"] == a["seed_steps"][str(seed)]
    # Seed k reports milestone m at k * stride + m, stride = 1000 rounded up to 100s, plus 100.
    assert sorted(t.intermediate_values) == [100, 200, 300, 1200, 2300, 2400, 2500, 2600, 2700, 2800]
    assert t.intermediate_values[1200] == 100.0 and t.intermediate_values[2800] == 600.0
    out = capsys.readouterr().out
    assert "; the median over seeds 0 1 2, each a run of its own" in out
    assert "trial 0: solved at step 300 (0.3 s) [median; seeds 0 1 2: 300 100 600]  " in out
    assert "best: trial 0, solved at step 300 (0.3 s), the median of seeds 0 1 2: 300 100 600" in out
    table = out[out.index("top 2 of 2 complete:"):].splitlines()
    assert table[1].split()[:2] == ["trial", "median"] and "per_seed" in table[1]
    assert "300 100 600" in table[2]
    best = (folder / "best.yaml").read_text()
    assert "--seeds 0 1 2 --eval-every 100" in best and "seeds 0 1 2; its runs:" in best


def test_a_real_trial_of_two_seeds_is_two_runs_rlkit_compare_finds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, TINY_SPACE)
    args = [*REAL[:4], "--steps", "512", "--eval-every", "512", "--eval-episodes", "1", "--stop-at-return", "475",
            "--pruner", "none", "--space", space, "--trials", "1"]
    code, out, err = main_in_process(capsys, "tune", *args, "--seeds", "3", "5")
    assert code == 0, err
    trial = tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo" / "trial_0000"
    assert sorted(p.name for p in trial.iterdir()) == ["seed_3", "seed_5"]
    config = yaml.safe_load((trial / "seed_5" / "config.yaml").read_text())
    assert config["seed"] == 5 and "--seed 5 " in config["provenance"]["command"]
    assert "--seeds 3 5" in out
    code, out, err = main_in_process(capsys, "compare", tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo")
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if line.startswith("| ppo")]
    assert row.split("|")[2].strip() == "2"  # one configuration, its two seeds' runs


def _pruned_by(values: dict, others: list[dict], stride: int | None, warmup: int = 0) -> bool:
    """CarriedMedianPruner's decision for a running trial with ``values`` among complete ones."""
    from optuna.trial import TrialState, create_trial

    from rlkit import tune

    study = optuna.create_study(direction="minimize")
    for inter in others:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=min(inter.values()),
                                     intermediate_values=inter))
    trial = study.ask()
    for step, value in values.items():
        trial.report(value, step)
    frozen = study._storage.get_trial(trial._trial_id)
    return tune.CarriedMedianPruner(n_startup_trials=2, n_warmup_steps=warmup, seed_stride=stride).prune(study, frozen)


def test_the_pruner_compares_seed_k_of_a_trial_with_seed_k_of_the_others():
    stride = 1100  # budget 1000, --eval-every 100
    others = [{100: 150.0, 200: 120.0, 1200: 5000.0, 1300: 4000.0}, {100: 160.0, 1200: 5200.0, 1300: 4200.0}]
    # Great on seed 0, worse than the others' seed 1 at its milestone 100 (step 1200): pruned there;
    # without the seed blocks its seed-0 value (50) would hide it.
    assert _pruned_by({100: 50.0, 1200: 6000.0}, others, stride)
    assert not _pruned_by({100: 50.0, 1200: 6000.0}, others, None)
    # Better than the others' seed 1 (5000, 5200) though worse than every seed-0 value: not pruned.
    assert not _pruned_by({100: 140.0, 1200: 4500.0}, others, stride)
    # Seed 1 at milestone 200 (step 1300) meets the others' seed 1 at 200: 4000, 4200.
    assert _pruned_by({100: 140.0, 1200: 4500.0, 1300: 4500.0}, others, stride)
    # The warm-up counts from the start of each seed: step 1200 is milestone 100 of seed 1.
    assert not _pruned_by({100: 50.0, 1200: 6000.0}, others, stride, warmup=300)
    assert _pruned_by({100: 50.0, 1200: 6000.0}, others, None, warmup=300) is False  # (its best is 50)


def test_a_trial_pruned_on_one_seed_trains_no_later_seed(tmp_path, monkeypatch, capsys):
    # Trial 2 evaluates 10 on its seed 1: as good as the others on seed 0, far worse on seed 1.
    result = _fake_study(tmp_path, monkeypatch, 3, {"bad_seed": {"2": [1]}}, seeds=[0, 1, 2], stop_at_return=300,
                         steps=500)
    trials = _trials(tmp_path.joinpath(*DB), "ppo-CartPole-v1")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"] and result["counts"]["pruned"] == 1
    pruned = trials[2]
    assert pruned.user_attrs["pruned_seed"] == 1 and pruned.user_attrs["pruned_at_step"] == 100
    assert pruned.user_attrs["seed_values"] == {"0": 300.0, "1": None}
    # seed 1's first evaluation at step 600 + 100 (stride 500 + 100): 500 * (1 + (300 - 10) / 300)
    assert max(pruned.intermediate_values) == 700
    assert pruned.intermediate_values[700] == pytest.approx(500 * (1 + 290 / 300))
    trial_dir = Path(pruned.user_attrs["run_dir"])
    assert sorted(p.name for p in trial_dir.iterdir()) == ["seed_0", "seed_1"]  # seed 2 never trained
    assert json.loads((trial_dir / "seed_1" / "run.json").read_text())["steps"] == 100
    assert "trial 2: pruned at step 100 on seed 1 (evaluation 10.0)" in capsys.readouterr().out


def test_continuing_a_study_with_other_seeds_or_objective_exits_2(tmp_path, monkeypatch, capsys):
    from rlkit import tune

    _fake_study(tmp_path, monkeypatch, 1, {}, seeds=[0, 1], stop_at_return=300, pruner="none")
    db = tmp_path.joinpath(*DB)
    common = ["tune", "--algo", "ppo", "--env", "CartPole-v1", "--trials", "1", "--steps", "500", "--eval-every",
              "100", "--stop-at-return", "300", "--runs-root", tmp_path / "runs", "--space", tmp_path / "space.yaml"]
    for extra, needle in ((["--seeds", "0", "2"], "measures --seeds 0 1, not 0 2"),
                          (["--seed", "0"], "measures --seeds 0 1, not 0:"),
                          ([], "measures --seeds 0 1, not 0:"),
                          (["--seeds", "0", "1", "--objective", "time"], "measures --objective steps, not time")):
        code, out, err = main_in_process(capsys, *common, *extra)
        assert_one_line_error(code, err, needle, "--study NAME")
    assert len(_trials(db, "ppo-CartPole-v1")) == 1
    # A study made before --seeds recorded one seed (and no objective): the same seed continues it.
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    study_id = storage.get_study_id_from_name("ppo-CartPole-v1")
    old = dict(storage.get_study_user_attrs(study_id)[tune.ATTR])
    old.pop("seeds"), old.pop("objective")
    old["seed"] = 1
    storage.set_study_user_attr(study_id, tune.ATTR, old)
    storage.engine.dispose()
    code, out, err = main_in_process(capsys, *common, "--seeds", "0", "1")
    assert_one_line_error(code, err, "measures --seeds 1, not 0 1")
    _fake_study(tmp_path, monkeypatch, 1, {}, seed=1, stop_at_return=300, pruner="none")
    assert len(_trials(db, "ppo-CartPole-v1")) == 2


def test_objective_time_picks_the_faster_configuration_though_it_needs_more_steps(tmp_path, monkeypatch, capsys):
    # Trial 0 reaches 200 at step 200 in 2 s; trial 1 at step 400 in 0.4 s (and really sleeps 0.02 s an
    # evaluation); trial 2 never does: its run's 0.5 s times 1 + (200 - 10) / 200.
    plan = {"climb": {"1": 50.0}, "sec_per_eval": {"0": 1.0}, "sleep": {"1": 0.02}, "bad": [2]}
    (tmp_path / "time").mkdir(), (tmp_path / "steps").mkdir()
    result = _fake_study(tmp_path / "time", monkeypatch, 3, plan, stop_at_return=200, objective="time", pruner="none")
    steps = _fake_study(tmp_path / "steps", monkeypatch, 2, plan, stop_at_return=200, pruner="none")
    assert result["best"] == 1 and steps["best"] == 0
    trials = _trials(tmp_path.joinpath("time", *DB), "ppo-CartPole-v1")
    assert [t.value for t in trials] == pytest.approx([2.0, 0.4, 0.5 * (1 + 190 / 200)])
    assert trials[1].user_attrs["solved_at_step"] == 400 and trials[1].user_attrs["solved_at_s"] == 0.4
    # Its reports: the seconds since its training started; unsolved ones projected to the budget, penalised.
    inter = trials[1].intermediate_values
    assert sorted(inter) == [100, 200, 300, 400]
    assert 0.08 <= inter[400] < 5 and all(inter[s] > inter[400] for s in (100, 200, 300))
    out = capsys.readouterr().out
    assert "objective: minimise training wall seconds to an evaluation mean return >= 200" in out
    assert "trial 1: solved in 0.4 s (step 400)" in out and "best: trial 1, solved in 0.4 s (step 400)" in out
    best = (tmp_path / "time" / "runs" / "tune" / "CartPole-v1" / "ppo" / "best.yaml").read_text()
    assert "mean return >= 200 in 0.4 s (step 400)" in best


def test_bad_seeds_and_objective_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["tune", "--algo", "ppo", "--env", "CartPole-v1", "--trials", "1"]
    for args, needle in ((["--seeds", "1", "2", "1"], "--seeds 1 2 1: seed 1 given more than once"),
                         (["--seeds"], "--seeds: expected at least one argument"),
                         (["--seeds", "-1"], "--seeds must be an integer >= 0"),
                         (["--seed", "0", "--seeds", "1"], "--seeds: not allowed with argument --seed"),
                         (["--objective", "time"], "--objective time measures the way to --stop-at-return R"),
                         (["--objective", "fast", "--stop-at-return", "1"], "invalid choice: 'fast'")):
        code, out, err = main_in_process(capsys, *base, *args)
        assert_one_line_error(code, err, needle)
    assert list(tmp_path.iterdir()) == []
    from rlkit import tune
    from rlkit.errors import UsageError

    for kw, needle in ((dict(seeds=[]), "at least one seed"), (dict(seeds=[2**32]), "--seeds must be integers in"),
                       (dict(seed=1, seeds=[1]), "do not go together"),
                       (dict(objective="time"), "give R too")):
        with pytest.raises(UsageError, match=needle):
            tune.tune("ppo", "CartPole-v1", 1, **kw)
    assert list(tmp_path.iterdir()) == []


# --- bad input: exit 2, one line, nothing written ------------------------------------------------------
BAD_SPACES = [
    ("not-yaml", "a: [1, 2", "is not valid YAML"),
    ("unknown-key", {"learnin_rate": 0.1}, "unknown ppo key 'learnin_rate' (did you mean learning_rate"),
    ("low-above-high", {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}}, "low (0.1) must be below"),
    ("bad-type", {"n_steps": {"type": "integer", "low": 1, "high": 4}}, "type 'integer' is not one of"),
    ("out-of-range", {"gamma": {"type": "float", "low": 0.5, "high": 2.0}}, "must lie in [0, 1]"),
    ("wrong-kind", {"hidden": {"type": "categorical", "choices": ["big"]}}, "is not a valid list"),
    ("log-of-zero", {"ent_coef": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log needs low > 0"),
    ("budget", {"n_timesteps": {"type": "int", "low": 1, "high": 9}}, "is not searched"),
    ("other-algo", {"sb3-ppo": {"n_steps": 64}}, "has no entry for ppo"),
    ("bad-combination", {"objective": "average", "norm_reward": True}, "objective 'average' needs raw rewards"),
]


@pytest.mark.parametrize("name,content,needle", BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_a_bad_space_file_exits_2_with_one_line(tmp_path, capsys, name, content, needle):
    space = tmp_path / "space.yaml"
    space.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    code, out, err = main_in_process(capsys, "tune", "--algo", "ppo", "--env", "CartPole-v1", "--trials", "1",
                                     "--space", space, "--runs-root", tmp_path / "runs")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    base = ["--algo", "ppo", "--env", "CartPole-v1", "--trials", "1"]
    cases = [
        (["--algo", "ppx", "--env", "CartPole-v1", "--trials", "1"], "unknown algorithm 'ppx'"),
        (["--algo", "ppo", "--env", "CartPole-v9", "--trials", "1"], "CartPole-v9"),
        (["--algo", "sb3-dqn", "--env", "CartPole-v1", "--trials", "1"], "no default search space for sb3-dqn"),
        ([*base[:4], "--trials", "0"], "--trials must be an integer >= 1"),
        ([*base, "--sampler", "grid"], "invalid choice: 'grid'"),
        ([*base, "--pruner", "hyperband"], "invalid choice: 'hyperband'"),
        ([*base, "--storage", "not a url"], "--storage 'not a url' is not a database URL"),
        ([*base, "--storage", "nosuchdb://host/db"], "'nosuchdb' is not a database kind"),
        ([*base, "--storage", "sqlite://"], "an SQLite study needs a file"),
        ([*base, "--storage", f"sqlite:///{text}"], "is not an SQLite database"),
        ([*base, "--study", "../up"], "--study '../up' must be letters"),
        ([*base, "--space", "missing.yaml"], "config file missing.yaml does not exist"),
        ([*base, "--timeout", "0"], "--timeout must be a number of seconds > 0"),
        ([*base, "--ray-address", "auto"], "--ray-address goes with --backend ray"),
    ]
    for args, needle in cases:
        code, out, err = main_in_process(capsys, "tune", *args)
        assert_one_line_error(code, err, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert text.read_text() == "not a database"


@pytest.mark.slow
def test_ray_backend_runs_trials_on_ray_actors(tmp_path, monkeypatch, ray_session):
    from rlkit import tune

    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, TINY_SPACE)
    result = tune.tune("ppo", "CartPole-v1", 2, jobs=2, backend="ray", steps=1024, eval_every=512, eval_episodes=1,
                       stop_at_return=475, space=space, pruner="none")
    trials = _trials(tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo.db", "ppo-CartPole-v1")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] and result["counts"]["complete"] == 2
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}


def test_tune_preset_starts_trials_from_the_preset_entry_in_a_study_of_its_own(tmp_path, monkeypatch, capsys):
    from rlkit import config
    from rlkit.errors import UsageError

    folder = tmp_path / "hyperparams"
    folder.mkdir()
    (folder / "ppo.yaml").write_text("default: {n_envs: 8, n_steps: 64}\nCartPole-v1: {n_steps: 32, gamma: 0.98}\n"
                                     "CartPole-v1@fast: {n_envs: 32, n_steps: 16}\n")
    monkeypatch.setattr(config, "HYPERPARAMS_DIR", folder)
    result = _fake_study(tmp_path, monkeypatch, 1, {}, preset="fast", stop_at_return=300)
    assert result["folder"].name == "ppo@fast" and result["study"] == "ppo@fast-CartPole-v1"
    (trial,) = _trials(tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo@fast.db", result["study"])
    cfg = trial.user_attrs["config"]
    assert cfg["n_envs"] == 32 and cfg["n_steps"] == 16 and "gamma" not in cfg  # the preset, not the env's entry
    best = (result["folder"] / "best.yaml").read_text()
    assert "--preset fast --config" in best  # best.yaml goes on top of the preset's entry
    with pytest.raises(UsageError, match="no preset 'slow'"):
        _fake_study(tmp_path, monkeypatch, 1, {}, preset="slow", stop_at_return=300)
    assert not (tmp_path / "runs" / "tune" / "CartPole-v1" / "ppo@slow").exists()
