"""The first hour of a new user (issue 17): compare that shows every run and counts seeds, runs that
say how they go, a best checkpoint, playback that tells what it played, provenance, several seeds
in one command, TensorBoard's --host.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import cli
from tests.conftest import ROOT, assert_one_line_error, main_in_process

TINY = ["--set", "n_envs=2", "n_steps=64", "n_epochs=1"]
QUICK = ["--eval-episodes", "2", "--final-eval-episodes", "2", "--no-progress"]
EVAL_LINE = re.compile(r"^step (\d+): eval (-?[\d.]+) ± ([\d.]+) over (\d+) episodes, best (-?[\d.]+), "
                       r"elapsed ([\d.]+) s")


def _cli(*args, env=None, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**(env if env is not None else os.environ), "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny ppo run on CartPole-v1: 1024 steps, an evaluation every 256, checkpoints every 512."""
    from rlkit import training

    root = tmp_path_factory.mktemp("first_hour")
    return training.train("ppo", "CartPole-v1", steps=1024, run_dir=root / "run", eval_every=256, eval_episodes=2,
                          checkpoint_every=512, final_eval_episodes=2, progress=False, quiet=True,
                          sets={"n_envs": 2, "n_steps": 64, "n_epochs": 1},
                          command=["train", "--algo", "ppo", "--env", "CartPole-v1"])


# --- compare ------------------------------------------------------------------------------------
def _fake_run(root: Path, name: str, algo: str, seed: int, evals: list, final: float | None = None,
              hyperparams: dict | None = None, stop: float | None = 475.0) -> Path:
    """A run directory as training leaves it, as far as compare reads it: config.yaml, run.json and the
    eval/mean_reward scalars."""
    from rlkit.logger import Logger

    run = root / "CartPole-v1" / name
    run.mkdir(parents=True)
    cfg = {"algo": algo, "env": "CartPole-v1", "env_kwargs": {}, "seed": seed, "stop_at_return": stop,
           "hyperparams": hyperparams if hyperparams is not None else {"n_epochs": 10}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    info = {"algo": algo, "env": "CartPole-v1", "seed": seed, "status": "finished", "steps": evals[-1][0],
            "wall_s": 1.0 + evals[-1][0] / 10_000, "evals": [[s, s / 10_000, m] for s, m in evals]}
    if stop is not None and any(m >= stop for _, m in evals):
        step = next(s for s, m in evals if m >= stop)
        info.update(status="solved", solved_at_step=step, solved_at_s=step / 10_000)
    if final is not None:
        info["final_eval"] = {"mean_return": final, "std_return": 0.0, "episodes": 100, "mean_ep_length": final,
                              "reward_per_step": 1.0, "seed": 20_000}
    (run / "run.json").write_text(json.dumps(info))
    logger = Logger(run, progress=False)
    for s, m in evals:
        logger.scalar("eval/mean_reward", m, s)
    logger.close()
    return run


def _compare_figure(monkeypatch, *args, **kwargs):
    """Run rlkit.compare.compare and return the figure it drew."""
    from rlkit import compare as comparemod

    figures = []
    draw = comparemod._plot

    def keep(*a):
        figures.append(draw(*a))
        return figures[-1]

    monkeypatch.setattr(comparemod, "_plot", keep)
    comparemod.compare(*args, **kwargs)
    return figures[-1]


def test_compare_draws_a_run_with_a_single_evaluation(tmp_path, monkeypatch, capsys):
    """The demo's case: ppo solved at its first evaluation (one point), sb3-ppo over three. Both show."""
    _fake_run(tmp_path, "ppo", "ppo", 0, [(5120, 500.0)], final=500.0)
    _fake_run(tmp_path, "sb3", "sb3-ppo", 0, [(5120, 120.0), (10240, 300.0), (15360, 500.0)], final=499.0)
    fig = _compare_figure(monkeypatch, [tmp_path / "CartPole-v1"], out=tmp_path / "out")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    ppo, sb3 = lines["ppo (1 seed)"], lines["sb3-ppo (1 seed)"]
    assert list(ppo.get_xdata()) == [5120] and list(ppo.get_ydata()) == [500.0]
    for line in (ppo, sb3):
        assert line.get_marker() not in (None, "", " ", "None") and line.get_markersize() >= 3
        assert line.get_visible()
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "| ppo | 1 | 500.00 |" in out and "| sb3-ppo | 1 | 499.00 |" in out


def test_compare_counts_distinct_seeds_per_configuration(tmp_path, capsys):
    from rlkit.compare import compare

    # seeds {0, 1, 1} of one configuration: two seeds (the repeated seed is averaged into one sample)
    _fake_run(tmp_path, "a0", "ppo", 0, [(256, 100.0)], final=100.0)
    _fake_run(tmp_path, "a1", "ppo", 1, [(256, 200.0)], final=200.0)
    _fake_run(tmp_path, "a1-again", "ppo", 1, [(256, 300.0)], final=300.0)
    # the same algorithm with another configuration: a row of its own
    _fake_run(tmp_path, "b1", "ppo", 1, [(256, 50.0)], final=50.0, hyperparams={"n_epochs": 4})
    compare([tmp_path / "CartPole-v1"], out=tmp_path / "out")
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ppo")}
    assert set(rows) == {"ppo [n_epochs=10]", "ppo [n_epochs=4]"}, out
    ten = [c.strip() for c in rows["ppo [n_epochs=10]"].split("|")]
    assert ten[2] == "2 (3 runs)"
    # mean over seeds of per-seed means: (100 + (200 + 300) / 2) / 2 = 175, interval within [100, 250]
    mean, low, high = map(float, re.match(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", ten[3]).groups())
    assert mean == 175.0 and 100.0 <= low <= mean <= high <= 250.0
    four = [c.strip() for c in rows["ppo [n_epochs=4]"].split("|")]
    assert four[2] == "1" and four[3] == "50.00"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=12))
def test_bootstrap_interval_stays_within_the_scores(scores):
    from rlkit.compare import bootstrap_ci

    mean, low, high = bootstrap_ci(scores)
    assert min(scores) <= low <= high <= max(scores)
    assert low <= mean + 1e-6 * max(1.0, abs(mean)) and mean - 1e-6 * max(1.0, abs(mean)) <= high


def test_compare_band_never_leaves_the_runs_range(tmp_path, monkeypatch, capsys):
    """CartPole's maximum is 500: the mean ± t band used to rise above it; the bootstrap band cannot."""
    for seed, curve in enumerate([[100, 480, 500], [300, 500, 500], [50, 500, 500], [400, 450, 500]]):
        _fake_run(tmp_path, f"s{seed}", "ppo", seed, list(zip([2048, 4096, 6144], map(float, curve))),
                  final=float(curve[-1]), stop=None)
    fig = _compare_figure(monkeypatch, [tmp_path / "CartPole-v1"], out=tmp_path / "out")
    (band,) = fig.axes[0].collections
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert ys.max() <= 500.0 and ys.min() >= 50.0
    out = capsys.readouterr().out
    assert "| ppo | 4 | 500.00 [500.00, 500.00] |" in out


# --- training talks -------------------------------------------------------------------------------
def test_an_evaluation_line_per_evaluation_when_stdout_is_not_a_terminal(tmp_path):
    proc = _cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "1024", "--eval-every", "256",
                "--run-dir", tmp_path / "run", *QUICK, *TINY)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    evals = [EVAL_LINE.match(line) for line in lines[:-1]]
    assert all(evals) and [int(m.group(1)) for m in evals] == [256, 512, 768, 1024], proc.stdout
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    means = [float(m.group(2)) for m in evals]
    assert means == pytest.approx([e[2] for e in info["evals"]], abs=0.006)
    assert [float(m.group(5)) for m in evals] == pytest.approx(np.maximum.accumulate(means), abs=0.006)
    assert lines[-1].startswith(f"run {tmp_path / 'run'}: finished")

    quiet = _cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "512", "--eval-every", "256",
                 "--run-dir", tmp_path / "quiet", "--quiet", *QUICK, *TINY)
    assert quiet.returncode == 0 and quiet.stdout.strip().splitlines() == [quiet.stdout.strip()]
    assert quiet.stdout.startswith(f"run {tmp_path / 'quiet'}: finished") and not quiet.stderr


def test_ctrl_c_prints_the_resume_command(tmp_path):
    run = tmp_path / "my run"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "train", "--algo", "ppo", "--env", "CartPole-v1",
                             "--steps", "400000", "--eval-every", "1024", "--checkpoint-every", "1024", "--run-dir",
                             str(run), *QUICK, *TINY], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.decode().strip() == "rlkit: interrupted"
    assert out.decode().strip().splitlines()[-1] == f"resume with: rlkit train --resume '{run}'"


# --- the best checkpoint ------------------------------------------------------------------------------
class _Agent:
    """Stands in for an agent: its 'checkpoint' is the step it was saved at."""

    def __init__(self):
        self.num_timesteps = 0

    def save(self, path):
        from rlkit.checkpoint import atomic_write_text

        atomic_write_text(path, str(self.num_timesteps))


def _scripted_callback(tmp_path, monkeypatch, means, checkpoint_every):
    from rlkit import training
    from rlkit.logger import NullLogger

    scores = iter(means)

    def evaluate(agent, env_id, episodes, seed, env_kwargs=None, **kw):
        m = next(scores)
        return {"mean_return": m, "std_return": 0.0, "episodes": episodes, "mean_ep_length": m,
                "reward_per_step": 1.0, "returns": [m] * episodes}

    monkeypatch.setattr(training, "evaluate", evaluate)
    (tmp_path / "checkpoints").mkdir(parents=True, exist_ok=True)
    info = {}
    return training.TrainingCallback(tmp_path, "CartPole-v1", {}, NullLogger(), info, eval_every=100,
                                     eval_episodes=2, stop_at_return=None, checkpoint_every=checkpoint_every), info


def test_best_checkpoint_is_the_best_stop_check_evaluation(tmp_path, monkeypatch):
    from rlkit import runs

    callback, info = _scripted_callback(tmp_path, monkeypatch, [1.0, 5.0, 3.0, 5.0, 2.0, 4.0], 200)
    agent = _Agent()
    best = tmp_path / "checkpoints" / "best.pt"
    for step in (100, 200, 300, 400, 500, 600):
        agent.num_timesteps = step
        callback.on_step(step, agent)
        if step == 100:  # staged, not committed yet: no best.pt before the commit that names it
            assert not best.exists() and (tmp_path / "checkpoints" / "best_100.pt").is_file()
    # the first of two equal evaluations stays best; superseded staged files are gone
    assert info["best"] == {"step": 200, "mean_return": 5.0}
    assert best.read_text() == "200"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("best*")) == ["best.pt"]
    committed = runs.committed_state(runs.committed_checkpoint(tmp_path))
    assert committed["best"] == {"step": 200, "mean_return": 5.0}
    assert runs.find_checkpoint(tmp_path, "best") == best


def test_a_kill_between_commit_and_best_rename_is_finished_on_resume(tmp_path, monkeypatch):
    """best.pt only ever holds a whole, committed best: a kill after `latest` moved but before the
    staged file was renamed leaves the old best.pt, and resuming (clean_uncommitted) finishes it."""
    from rlkit import runs

    callback, info = _scripted_callback(tmp_path, monkeypatch, [1.0, 2.0, 9.0], 100)
    agent = _Agent()
    for step in (100, 200):
        agent.num_timesteps = step
        callback.on_step(step, agent)
    assert (tmp_path / "checkpoints" / "best.pt").read_text() == "200"
    monkeypatch.setattr(runs, "promote_best", lambda run_dir, state: None)  # killed right after `latest`
    agent.num_timesteps = 300
    callback.on_step(300, agent)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "best.pt").read_text() == "200"
    runs.clean_uncommitted(tmp_path, runs.committed_checkpoint(tmp_path))
    assert (tmp_path / "checkpoints" / "best.pt").read_text() == "300"
    assert not list((tmp_path / "checkpoints").glob("best_*.pt"))


def test_an_uncommitted_best_is_dropped_on_resume(tmp_path, monkeypatch):
    from rlkit import runs

    callback, info = _scripted_callback(tmp_path, monkeypatch, [1.0, 2.0, 9.0], 200)
    agent = _Agent()
    for step in (100, 200, 300):  # 300 is the best, evaluated after the last commit (200)
        agent.num_timesteps = step
        callback.on_step(step, agent)
    assert (tmp_path / "checkpoints" / "best_300.pt").is_file()
    runs.clean_uncommitted(tmp_path, runs.committed_checkpoint(tmp_path))
    assert (tmp_path / "checkpoints" / "best.pt").read_text() == "200"
    assert not list((tmp_path / "checkpoints").glob("best_*.pt"))


def test_eval_and_render_pick_a_checkpoint(tiny_run, tmp_path, capsys):
    info = json.loads((tiny_run / "run.json").read_text())
    best = info["best"]
    assert best["mean_return"] == max(e[2] for e in info["evals"])
    assert best["step"] == next(e[0] for e in info["evals"] if e[2] == best["mean_return"])
    code, out, err = main_in_process(capsys, "eval", tiny_run, "--checkpoint", "best", "--episodes", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["checkpoint"] == "best" and result["checkpoint_step"] == best["step"]
    code, out, err = main_in_process(capsys, "eval", tiny_run, "--checkpoint", "step_512", "--episodes", "1", "--json")
    assert code == 0 and json.loads(out)["checkpoint_step"] == 512, err
    code, out, err = main_in_process(capsys, "eval", tiny_run, "--episodes", "1", "--json")
    assert code == 0 and json.loads(out)["checkpoint"] == "latest" and json.loads(out)["checkpoint_step"] == 1024
    code, _, err = main_in_process(capsys, "eval", tiny_run, "--checkpoint", "step_7")
    assert_one_line_error(code, err, "step_7", "available", "best", "step_1024")
    code, _, err = main_in_process(capsys, "eval", tiny_run, "--checkpoint", "first")
    assert_one_line_error(code, err, "--checkpoint", "first")

    gif = tmp_path / "best.gif"
    code, out, err = main_in_process(capsys, "render", tiny_run, "--checkpoint", "best", "--episodes", "2",
                                     "--out", gif)
    assert code == 0, err
    episodes = re.findall(r"^episode (\d) \(seed (\d+)\): return ([\d.]+), length (\d+)$", out, re.M)
    assert [(i, s) for i, s, _, _ in episodes] == [("1", "10000"), ("2", "10001")], out
    assert all(float(r) == float(n) for _, _, r, n in episodes)  # CartPole: +1 per step
    assert gif.stat().st_size > 1000


def test_render_window_without_a_display_exits_2_at_once(tiny_run):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    t = time.perf_counter()
    proc = _cli("render", tiny_run, "--window", env=env)
    assert_one_line_error(proc.returncode, proc.stderr, "--window", "DISPLAY", "--out")
    assert time.perf_counter() - t < 20 and not proc.stdout
    proc = _cli("render", tiny_run, "--window", env={**env, "SDL_VIDEODRIVER": "dummy"})
    assert_one_line_error(proc.returncode, proc.stderr, "--window", "SDL_VIDEODRIVER=dummy")


@pytest.mark.parametrize("environ,ok", [({"DISPLAY": ":0"}, True), ({"WAYLAND_DISPLAY": "wayland-0"}, True),
                                        ({}, False), ({"SDL_VIDEODRIVER": "offscreen", "DISPLAY": ":0"}, False),
                                        ({"SDL_VIDEODRIVER": "x11"}, False), ({"SDL_VIDEODRIVER": "kmsdrm"}, True)])
def test_check_display(monkeypatch, environ, ok):
    from rlkit.errors import UsageError
    from rlkit.render import check_display

    monkeypatch.setattr(sys, "platform", "linux")
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    if ok:
        check_display()
    else:
        with pytest.raises(UsageError, match="--window"):
            check_display()


# --- provenance ---------------------------------------------------------------------------------------
def test_config_records_command_line_and_git_commit(tiny_run):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    prov = cfg["provenance"]
    assert prov["command"] == "rlkit train --algo ppo --env CartPole-v1" and prov["cwd"] == os.getcwd()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # this checkout is a git repository (a copy without .git says so, below)
        assert prov["git_commit"].split()[0] == head.stdout.strip()
    else:
        assert prov["git_commit"] == "not a git checkout"


def test_provenance_outside_a_git_checkout(tmp_path, monkeypatch):
    import rlkit
    from rlkit import training

    monkeypatch.setattr(rlkit, "__file__", str(tmp_path / "rlkit" / "__init__.py"))
    assert training._git_commit() == "not a git checkout"
    monkeypatch.setattr(sys, "argv", ["bench/x.py", "--fast"])
    assert training.provenance()["command"].endswith("bench/x.py --fast")
    assert training.provenance(["train", "--set", "a=b c"])["command"] == "rlkit train --set 'a=b c'"


def test_the_cli_records_its_own_arguments(tmp_path):
    proc = _cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "256", "--eval-every", "256",
                "--run-dir", tmp_path / "run", "--quiet", *QUICK, *TINY)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["provenance"]["command"].startswith("rlkit train --algo ppo --env CartPole-v1 --steps 256 ")
    assert cfg["provenance"]["command"].endswith("--set n_envs=2 n_steps=64 n_epochs=1")


def test_eval_json_says_what_it_scored(tiny_run, capsys):
    code, out, err = main_in_process(capsys, "eval", tiny_run, "--episodes", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {k: result[k] for k in ("algo", "env", "seed", "checkpoint", "checkpoint_step", "eval_seed")} == {
        "algo": "ppo", "env": "CartPole-v1", "seed": 0, "checkpoint": "latest", "checkpoint_step": 1024,
        "eval_seed": 20_000}


# --- several seeds --------------------------------------------------------------------------------------
def test_train_seeds_runs_each_seed_into_one_env_folder(tmp_path):
    proc = _cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "256", "--eval-every", "256",
                "--seeds", "3", "1", "--runs-root", tmp_path / "runs", *QUICK, *TINY)
    assert proc.returncode == 0, proc.stderr
    runs_ = sorted((tmp_path / "runs" / "CartPole-v1").iterdir())
    assert [yaml.safe_load((r / "config.yaml").read_text())["seed"] for r in runs_] == [1, 3]
    assert all(json.loads((r / "run.json").read_text())["status"] == "finished" for r in runs_)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("2 runs of ppo on CartPole-v1 (seeds 3 1)") and "rlkit compare" in last


@pytest.mark.parametrize("extra,needles", [
    (["--seed", "4"], ["--seeds", "--seed"]),
    (["--run-dir", "somewhere"], ["--seeds", "--run-dir"]),
    (["--resume", "somewhere"], ["--seeds", "--resume"]),
    ([], ["seed 1", "more than once"]),
])
def test_train_seeds_misuse_exits_2(tmp_path, capsys, extra, needles):
    seeds = ["--seeds", "1", "2", "1"] if not extra else ["--seeds", "1", "2"]
    where = [] if "--run-dir" in extra else ["--runs-root", tmp_path / "runs"]
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", *seeds, *extra, *where)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists() and not Path("somewhere").exists()


# --- tensorboard --host -----------------------------------------------------------------------------------
def test_tensorboard_host(tmp_path, monkeypatch, capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["tensorboard"]).host == "127.0.0.1"
    assert parser.parse_args(["tensorboard", "--host", "0.0.0.0"]).host == "0.0.0.0"
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    code, out, err = main_in_process(capsys, "tensorboard", "--logdir", tmp_path, "--host", "0.0.0.0", "--port", "6010")
    assert code == 0, err
    argv = calls[0]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "6010"
    assert "http://0.0.0.0:6010" in out
    code, _, err = main_in_process(capsys, "tensorboard", "--logdir", tmp_path, "--host", "")
    assert_one_line_error(code, err, "--host")
