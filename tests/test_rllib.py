"""rllib-ppo (rlkit/baselines/rllib.py): RLlib's PPO behind the agent protocol.

The Ray tests share the session's local Ray (tests/conftest.py ``ray_session``); the agents join
it and leave it running. Loading, eval and bad input need no Ray: an agent builds its RLlib
Algorithm only when it learns.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, assert_one_line_error, main_in_process

pytest.importorskip("ray.rllib")

TINY = {"n_envs": 2, "train_batch_size": 500, "minibatch_size": 100, "num_epochs": 1}
QUICK = ["--eval-episodes", "2", "--final-eval-episodes", "2", "--no-progress"]
OBS = np.random.default_rng(0).uniform(-0.2, 0.2, size=(64, 4)).astype(np.float32)  # CartPole states


def _scalars(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(np.asarray(a[k])), torch.as_tensor(b[k]))
                                        for k in a)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, ray_session):
    """A finished 1000-step rllib-ppo run on CartPole-v1 (two train() iterations of ~500 steps, an
    evaluation after each), with what the live agent predicted on OBS whenever it saved a
    checkpoint, and whether each evaluation ran the learner's latest weights."""
    from rlkit import training
    from rlkit.baselines.rllib import MODULE_ID, RLlibPPO

    saved, eval_sees_learner = {}, []
    save, run_eval = RLlibPPO.save, training.TrainingCallback.run_eval

    def spy_save(agent, path):
        save(agent, path)
        saved[Path(path).name] = agent.predict(OBS)

    def spy_eval(callback, num_timesteps, agent):
        learner = agent.algo.learner_group.get_weights(module_ids=[MODULE_ID])[MODULE_ID]
        eval_sees_learner.append(_weights_equal(learner, agent.module.state_dict()))
        return run_eval(callback, num_timesteps, agent)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RLlibPPO, "save", spy_save)
        mp.setattr(training.TrainingCallback, "run_eval", spy_eval)
        run_dir = training.train("rllib-ppo", "CartPole-v1", steps=1000, seed=0, sets=dict(TINY), eval_every=500,
                                 eval_episodes=2, final_eval_episodes=3, checkpoint_every=500,
                                 run_dir=tmp_path_factory.mktemp("rllib") / "run", progress=False, quiet=True)
    info = json.loads((run_dir / "run.json").read_text())
    return {"run_dir": run_dir, "info": info, "saved": saved, "eval_sees_learner": eval_sees_learner}


def _copy_run(short_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the short run and the checkpoint file its ``latest`` names."""
    run = tmp_path / "run"
    shutil.copytree(short_run["run_dir"], run)
    return run, run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


# --- (1) a short run writes the shared tags, evaluated after every train() ----------------------
def test_short_run_writes_the_shared_tags_after_every_iteration(short_run):
    info, tags = short_run["info"], _scalars(short_run["run_dir"])
    assert info["status"] == "finished" and info["steps"] >= 1000
    for tag in ("rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/policy_gradient_loss",
                "train/value_loss", "train/entropy_loss", "train/approx_kl", "eval/mean_reward"):
        assert tag in tags, f"{tag} missing; written: {sorted(tags)}"
    steps = [s for s, _ in tags["rollout/ep_rew_mean"]]
    assert len(steps) == 2 and steps[0] >= 500 and steps[-1] == info["steps"]  # x = env steps sampled
    assert all(5 <= v <= 500 for _, v in tags["rollout/ep_rew_mean"])  # CartPole returns, not a loss
    # rlkit's callback ran after each train() iteration, on the weights that iteration produced.
    assert [e[0] for e in info["evals"]] == steps
    assert short_run["eval_sees_learner"] and all(short_run["eval_sees_learner"])


# --- (2) the checkpoint round-trips: same actions, same evaluation, render, resume ----------------
def test_checkpoints_load_to_the_same_actions(short_run):
    from rlkit.baselines.rllib import RLlibPPO

    ckpts = short_run["run_dir"] / "checkpoints"
    step_files = [name for name in short_run["saved"] if name.startswith("step_")]
    assert len(step_files) == 2
    for name in step_files:
        agent = RLlibPPO.load(ckpts / name)
        assert agent.algo is None  # loading starts no Ray and builds no Algorithm
        np.testing.assert_array_equal(agent.predict(OBS), short_run["saved"][name])
    assert agent.num_timesteps == short_run["info"]["steps"]


def test_eval_and_render_of_the_run(short_run, capsys, tmp_path):
    code, out, err = main_in_process(capsys, "eval", short_run["run_dir"], "--episodes", "3", "--json")
    assert code == 0, err
    # The loaded agent plays the final evaluation's episodes (same seeds) exactly as the live one did.
    assert json.loads(out)["mean_return"] == pytest.approx(short_run["info"]["final_eval"]["mean_return"])
    gif = tmp_path / "episode.gif"
    code, out, err = main_in_process(capsys, "render", short_run["run_dir"], "--episodes", "1", "--out", gif)
    assert code == 0, err
    assert gif.stat().st_size > 0


@pytest.mark.parametrize("space", ["CartPole-v1", "Pendulum-v1"])
def test_predict_is_greedy_and_in_the_action_space(space, tmp_path):
    """No Ray needed: the agent's own RLModule copy acts. Box actions are RLlib's unsquashed mean,
    clipped to the Box; sampled actions differ from the greedy ones."""
    from rlkit.baselines.rllib import Config, RLlibPPO

    agent = RLlibPPO(space, Config(), seed=0)
    obs = np.stack([agent.observation_space.sample() for _ in range(256)])
    greedy = agent.predict(obs)
    assert greedy.shape == (256, *agent.action_space.shape)
    assert all(agent.action_space.contains(a) for a in greedy)
    np.testing.assert_array_equal(agent.predict(obs), greedy)
    assert not np.array_equal(agent.predict(obs, deterministic=False), greedy)
    agent.save(tmp_path / "a.pt")
    np.testing.assert_array_equal(RLlibPPO.load(tmp_path / "a.pt").predict(obs), greedy)


def test_resume_continues_from_the_checkpoint(short_run, tmp_path, monkeypatch):
    """The resumed Algorithm's learner starts from the checkpoint's module and Adam state."""
    from rlkit import training
    from rlkit.baselines.rllib import RLlibPPO
    from rlkit.checkpoint import load_checkpoint

    run, latest = _copy_run(short_run, tmp_path)
    state, meta = load_checkpoint(latest)
    restored = []
    build = RLlibPPO._build_algo

    def spy_build(agent):
        build(agent)
        learner = agent.algo.learner_group.get_state(components="learner")["learner"]
        optimizer = next(iter(learner["optimizer"].values()))["state"]["state"]
        saved_optimizer = next(iter(state["optimizer"].values()))["state"]["state"]
        restored.append((_weights_equal(learner["rl_module"]["default_policy"], state["module"]),
                         float(optimizer[0]["step"]) == float(saved_optimizer[0]["step"]) > 0))

    monkeypatch.setattr(RLlibPPO, "_build_algo", spy_build)
    training.resume(run, steps=1500, progress=False, quiet=True)
    info = json.loads((run / "run.json").read_text())
    assert restored == [(True, True)]
    assert info["status"] == "finished" and info["steps"] >= 1500
    assert [e[0] for e in info["evals"]][:2] == [e[0] for e in short_run["info"]["evals"]]
    steps = [s for s, _ in _scalars(run)["rollout/ep_rew_mean"]]
    assert steps[-1] == info["steps"] and steps[2] > meta["num_timesteps"]  # counted on from the checkpoint


# --- (3) bad input: one line, exit 2 -------------------------------------------------------------
@pytest.mark.parametrize("setting, needle", [
    ("minibatch_size=0", "minibatch_size must be >= 1"),
    ("minibatch_size=8000", "minibatch_size (8000) must be <= train_batch_size (4000)"),
    ("lambda_=1.5", "lambda_ must lie in [0, 1]"),
    ("grad_clip=0", "grad_clip must be > 0 or null"),
    ("fcnet_activation=sigmoid", "fcnet_activation 'sigmoid' is not one of"),
    ("fcnet_hiddens=[]", "fcnet_hiddens must be a non-empty list"),
    ("learning_rate=0.1", "unknown --set key 'learning_rate'"),
])
def test_bad_config_exits_2_with_one_line(setting, needle, capsys, tmp_path):
    code, _, err = main_in_process(capsys, "train", "--algo", "rllib-ppo", "--env", "CartPole-v1", "--steps", "1000",
                                   "--set", setting, "--runs-root", tmp_path / "runs", *QUICK)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_unsupported_env_exits_2_and_leaves_nothing(capsys, tmp_path):
    code, _, err = main_in_process(capsys, "train", "--algo", "rllib-ppo", "--env", "rlkit/Catch-v0", "--steps", "1000",
                                   "--runs-root", tmp_path / "runs", *QUICK)
    assert_one_line_error(code, err, "flat (1-D) Box observations", "rlkit/Catch-v0")
    assert not list((tmp_path / "runs").rglob("*.pt")) and not list((tmp_path / "runs").rglob("config.yaml"))


def _foreign(kind: str, path: Path, tmp_path: Path) -> None:
    """Replace the checkpoint at ``path`` by a foreign or damaged one."""
    from rlkit.baselines.rllib import Config, RLlibPPO
    from rlkit.checkpoint import load_checkpoint, save_checkpoint

    if kind == "corrupt":
        path.write_bytes(b"not a checkpoint" * 100)
    elif kind == "pickled":  # RLlib's own checkpoints are pickles: never loaded
        torch.save({"format": "rlkit-checkpoint-v1", "meta": {}, "state": {"obj": Config()}}, path)
    elif kind == "ppo":
        from agents.ppo import PPO
        from agents.ppo import Config as PPOConfig

        PPO("CartPole-v1", PPOConfig(n_envs=1, n_steps=8), seed=0).save(path)
    elif kind == "other env":
        RLlibPPO("Pendulum-v1", Config(), seed=0).save(path)
    elif kind == "misfit":
        state, meta = load_checkpoint(path)
        key = next(k for k in state["module"] if k.endswith("weight"))
        state["module"][key] = state["module"][key][:, :-1]
        save_checkpoint(path, state, meta)


@pytest.mark.parametrize("kind, needle", [
    ("corrupt", "is corrupted or not an rlkit checkpoint"),
    ("pickled", "is corrupted or not an rlkit checkpoint"),
    ("ppo", "holds a 'ppo' agent, this run is 'rllib-ppo'"),
    ("other env", "observation space"),
    ("misfit", "does not fit this rllib-ppo model"),
])
def test_foreign_or_damaged_checkpoint_exits_2(kind, needle, short_run, capsys, tmp_path):
    run, latest = _copy_run(short_run, tmp_path)
    _foreign(kind, latest, tmp_path)
    code, _, err = main_in_process(capsys, "eval", run, "--episodes", "1")
    assert_one_line_error(code, err, needle)


def test_sigterm_stops_the_run_resumably(tmp_path):
    """ray.init installs its own SIGTERM handlers (exit 1, and a C++ one that aborts with a stack
    dump); the agent puts rlkit's back, so SIGTERM ends the run as on Ctrl-C: exit 143, resumable.
    A CLI process of its own, since only a process that starts Ray itself shows it."""
    run = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in TINY.items()]
    proc = subprocess.Popen([sys.executable, "-m", "cli", "train", "--algo", "rllib-ppo", "--env", "CartPole-v1",
                             "--steps", "100000", "--eval-every", "500", "--checkpoint-every", "500",
                             "--run-dir", str(run), *[a for kv in sets for a in ("--set", kv)], *QUICK],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "run.json").exists():  # the first commit
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=60)
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "rlkit: terminated" in err and "SIGTERM received" not in err and "Traceback" not in err, err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert f"resume with: rlkit train --resume {run}" in out


# --- rlkit's own envs in RLlib's env-runner actors ----------------------------------------------
def test_ray_env_runners_build_rlkit_envs(ray_session, tmp_path):
    """--backend ray: sampling in an RLlib env-runner actor, another process, which must register
    the rlkit/* ids itself (rlkit.baselines.rllib.EnvCreator)."""
    from rlkit import training

    run_dir = training.train("rllib-ppo", "rlkit/GridWorld-v0", steps=400, seed=0, backend="ray", workers=1,
                             sets={"n_envs": 2, "train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
                             eval_every=400, eval_episodes=2, final_eval_episodes=2, run_dir=tmp_path / "run",
                             progress=False, quiet=True)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] >= 400
    assert "time/fps" in _scalars(run_dir)


# --- (4) learning ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_cartpole_reaches_475_within_300k_steps(ray_session, tmp_path):
    """The yaml's CartPole-v1 entry, seed 0, rlkit's stop check (10 episodes every 5120 steps).
    Measured: solved at 36k steps, about 25 s on two cores."""
    from rlkit import training

    run_dir = training.train("rllib-ppo", "CartPole-v1", steps=300_000, seed=0, eval_every=5120, eval_episodes=10,
                             stop_at_return=475, final_eval_episodes=10, run_dir=tmp_path / "run", progress=False,
                             quiet=True)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "solved" and info["solved_at_step"] <= 300_000, info.get("evals")
