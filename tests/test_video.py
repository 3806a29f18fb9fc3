"""`train --video-every N` (issue 34): an evaluation episode recorded every N env steps as
videos/step_<n>.gif (.mp4 for large frames), for hand-written agents and baselines alike, from the
training driver's callback through rlkit.render; bad values and envs without frames exit 2."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import yaml

from tests.conftest import assert_one_line_error, main_in_process

TINY = {"ppo": {"n_envs": 2, "n_steps": 64, "n_epochs": 1},
        "sb3-ppo": {"n_envs": 2, "n_steps": 64, "n_epochs": 1, "batch_size": 64}}


def _train(tmp_path, algo: str, name: str = "run", **kwargs):
    from rlkit import training

    return training.train(algo, "CartPole-v1", steps=512, run_dir=tmp_path / name, eval_every=256, eval_episodes=1,
                          final_eval_episodes=0, progress=False, quiet=True, sets=dict(TINY[algo]), **kwargs)


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_video_every_records_an_evaluation_episode_every_n_steps(algo, tmp_path, monkeypatch):
    """Every 256 steps of a 512-step run: step_256 and step_512, each one deterministic episode (its
    frames: one per step and the last), recorded for the hand-written agent and the SB3 baseline alike.
    CartPole renders 600x400 frames, which go to MP4; with the GIF limit above that (ppo), to GIF."""
    import imageio.v2 as imageio

    from rlkit import render
    from rlkit.evaluation import evaluate
    from rlkit.runs import load_run

    run_dir = _train(tmp_path, algo, video_every=256)
    videos = run_dir / "videos"
    assert sorted(p.name for p in videos.iterdir()) == ["step_256.mp4", "step_512.mp4"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["video_every"] == 256
    # TensorBoard: four of each clip's frames as one image (add_video is broken with moviepy 2)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("eval/video_frames")] == [256, 512]
    # The last clip is the final agent's first stop-check episode: as long as that episode, plus its last frame.
    agent, _ = load_run(run_dir)
    length = evaluate(agent, "CartPole-v1", 1, seed=10_000)["mean_ep_length"]
    frames = imageio.mimread(videos / "step_512.mp4", memtest=False)
    assert len(frames) == int(length) + 1 and frames[0].shape[:2] == (400, 600)

    if algo != "ppo":
        return
    monkeypatch.setattr(render, "GIF_MAX_SIDE", 600)  # frames this size are small enough for a GIF
    gif_run = _train(tmp_path, algo, name="gif", video_every=512)
    assert [p.name for p in (gif_run / "videos").iterdir()] == ["step_512.gif"]
    assert imageio.mimread(gif_run / "videos" / "step_512.gif")[0].shape[:2] == (400, 600)


def test_a_run_without_the_flag_records_no_video(tmp_path):
    run_dir = _train(tmp_path, "ppo")
    assert not (run_dir / "videos").exists() or not list((run_dir / "videos").iterdir())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["video_every"] is None


def test_resume_records_on_with_the_runs_own_video_every(tmp_path):
    from rlkit import training

    run_dir = _train(tmp_path, "ppo", video_every=256)
    for video in (run_dir / "videos").iterdir():
        video.unlink()
    training.resume(run_dir, progress=False, steps=768, quiet=True)
    assert [p.name for p in (run_dir / "videos").iterdir()] == ["step_768.mp4"]
    assert json.loads((run_dir / "run.json").read_text())["steps"] == 768


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_bad_video_every_exits_2(value, tmp_path, capsys):
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--video-every", value,
                                   "--runs-root", tmp_path / "runs")
    assert_one_line_error(code, err, "--video-every")
    assert not (tmp_path / "runs").exists()


def test_video_every_with_resume_exits_2(tmp_path, capsys):
    code, _, err = main_in_process(capsys, "train", "--resume", tmp_path / "nowhere", "--video-every", "100")
    assert_one_line_error(code, err, "--video-every")


def test_bad_video_every_from_python_is_a_usage_error(tmp_path):
    import rlkit
    from rlkit.errors import UsageError

    for value in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="--video-every"):
            rlkit.train("ppo", "CartPole-v1", steps=64, runs_root=tmp_path / "runs", video_every=value)
    assert not (tmp_path / "runs").exists()


class NoFrames(gym.Env):
    """An env that renders nothing (no rgb_array)."""

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


def test_an_env_without_frames_exits_2_before_the_run_starts(tmp_path, capsys):
    gym.register("rlkit_test/NoFrames-v0", entry_point=NoFrames, max_episode_steps=10)
    try:
        code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "rlkit_test/NoFrames-v0",
                                       "--video-every", "100", "--runs-root", tmp_path / "runs")
    finally:
        gym.registry.pop("rlkit_test/NoFrames-v0", None)
    assert_one_line_error(code, err, "--video-every", "rgb_array")
    assert not (tmp_path / "runs").exists()


def test_video_time_is_off_the_training_clock(tmp_path, monkeypatch):
    """A run's wall_s (and solved_at_s) measure training alone: the two videos below cost 3 s each (a
    stand-in for slow encoding); counted, wall_s would be at least their 6 s, which the 512 steps of
    training alone come nowhere near."""
    import time

    from rlkit import training

    spent = []

    def slow_video(self, num_timesteps, agent):
        started = time.perf_counter()
        time.sleep(3.0)  # the cost of a recording, not a wait for anything
        spent.append(time.perf_counter() - started)

    monkeypatch.setattr(training.TrainingCallback, "record_video", slow_video)
    run_dir = _train(tmp_path, "ppo", video_every=256)
    wall_s = json.loads((run_dir / "run.json").read_text())["wall_s"]
    assert len(spent) == 2 and wall_s < sum(spent), (wall_s, spent)
