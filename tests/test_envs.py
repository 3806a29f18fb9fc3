"""Contracts of the rlkit/* environments: registration, API checkers, rendering, seeding,
observation bounds (property tests), kwargs validation and a quick SB3 training sanity run."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs

ROOT = Path(__file__).resolve().parents[1]
IDS = list(envs.ENV_IDS)
CONTINUING = {"rlkit/Inventory-v0", "rlkit/ArmReach-v0"}
# kwargs variants beyond the defaults that change spaces or dynamics
VARIANTS = [
    ("rlkit/GridWorld-v0", {}),
    ("rlkit/GridWorld-v0", {"layout": "16x16", "obs_mode": "coords", "include_layout": True}),
    ("rlkit/Catch-v0", {}),
    ("rlkit/Catch-v0", {"obs_type": "vector"}),
    ("rlkit/Inventory-v0", {}),
    ("rlkit/Inventory-v0", {"season_period": 4, "season_amplitude": 0.5, "lead_time": 1}),
    ("rlkit/ArmReach-v0", {}),
    ("rlkit/ArmReach-v0", {"target_speed": 2.5, "effort_cost": 0.0}),
]
VARIANT_IDS = [f"{i}-{k}" for i, k in VARIANTS]


def test_ids_registered_with_expected_specs():
    assert set(IDS) == {"rlkit/GridWorld-v0", "rlkit/Catch-v0", "rlkit/Inventory-v0", "rlkit/ArmReach-v0"}
    expected_steps = {"rlkit/GridWorld-v0": 100, "rlkit/Catch-v0": None, "rlkit/Inventory-v0": 1000,
                      "rlkit/ArmReach-v0": 500}
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == expected_steps[env_id]
        assert isinstance(spec.vector_entry_point, str) and spec.vector_entry_point.startswith("envs.")
        env = gym.make(env_id)
        md = env.unwrapped.metadata
        assert md["render_modes"] == ["human", "rgb_array"] and md["render_fps"] > 0
        assert md["task"] == ("continuing" if env_id in CONTINUING else "episodic")
        assert "Version History" in type(env.unwrapped).__doc__
        for section in ("Action Space", "Observation Space", "Rewards", "Episode End", "Reference"):
            assert section in type(env.unwrapped).__doc__, (env_id, section)
        env.close()
    envs.register_envs()  # idempotent


def test_import_is_cheap():
    code = ("import sys, envs; bad = [m for m in ('pygame', 'torch', 'envs.catch', 'envs.gridworld', "
            "'envs.inventory', 'envs.arm_reach') if m in sys.modules]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("render_mode", [None, "rgb_array", "human"])
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id, render_mode):
    env = gym.make(env_id, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id,kwargs", VARIANTS, ids=VARIANT_IDS)
def test_sb3_check_env(env_id, kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_rgb_array_frames(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert min(frame.shape[:2]) >= 200 and frame.std() > 0  # something is drawn
    env.close()
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", render_mode="rgb_array")
    vec.reset(seed=0)
    frames = vec.render()
    assert len(frames) == 2 and frames[0].shape == frame.shape
    vec.close()


def test_human_render_headless():
    for env_id in IDS:
        env = gym.make(env_id, render_mode="human")
        env.reset(seed=0)
        assert env.render() is None
        env.step(env.action_space.sample())
        env.close()
        env.close()  # closing twice is allowed


def test_catch_pixels_match_state():
    env = gym.make("rlkit/Catch-v0")
    obs, _ = env.reset(seed=5)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    bx, by, _, px = env.unwrapped.state
    ball = np.argwhere((obs == 255).all(axis=2))
    assert ball[:, 0].min() == by * 4 and ball[:, 1].min() == bx * 4 and len(ball) == 16
    paddle = np.argwhere((obs == [0, 170, 255]).all(axis=2))
    assert paddle[:, 0].min() == 60 and paddle[:, 1].min() == (px - 1) * 4 and len(paddle) == 48


def _rollout(env, seed, steps=60):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        out += [obs, r, term, trunc]
        if term or trunc:
            out.append(env.reset()[0])
    return out


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectory(env_id):
    a = _rollout(gym.make(env_id), 7)
    b = _rollout(gym.make(env_id), 7)
    c = _rollout(gym.make(env_id), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
@pytest.mark.parametrize("env_id,kwargs", VARIANTS, ids=VARIANT_IDS)
def test_property_observations_in_space(env_id, kwargs, seed, data):
    env = gym.make(env_id, **kwargs)
    space = env.observation_space
    obs, _ = env.reset(seed=seed)
    assert space.contains(obs)
    n = data.draw(st.integers(1, 120), label="steps")
    env.action_space.seed(data.draw(st.integers(0, 2**31 - 1), label="action seed"))
    for _ in range(n):
        obs, reward, terminated, truncated, _info = env.step(env.action_space.sample())
        assert space.contains(obs), obs
        assert np.all(np.isfinite(obs)) and np.isfinite(reward) and isinstance(reward, float)
        if env_id in CONTINUING:
            assert not terminated
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       action=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=2))
def test_property_arm_reach_clips_actions(seed, action):
    env = gym.make("rlkit/ArmReach-v0")
    env.reset(seed=seed)
    obs, reward, terminated, _, _ = env.step(np.array(action, dtype=np.float32))
    assert env.observation_space.contains(obs) and not terminated
    assert -4.0 - 0.2 <= reward <= 0.0


def test_reference_api():
    for env_id in IDS:
        ref = envs.reference(env_id)
        assert set(ref) == {"name", "score", "metric"} and isinstance(ref["score"], float)
        want = "reward_per_step" if env_id in CONTINUING else "episode_return"
        assert ref["metric"] == want
        env = gym.make(env_id)
        assert env.unwrapped.reference() == ref  # cached, same value
        env.close()


BAD_KWARGS = [
    ("rlkit/GridWorld-v0", {"slip_prob": 1.5}, "slip_prob"),
    ("rlkit/GridWorld-v0", {"slip_prob": -0.1}, "slip_prob"),
    ("rlkit/GridWorld-v0", {"step_cost": -1}, "step_cost"),
    ("rlkit/GridWorld-v0", {"layout": "9x9"}, "layout"),
    ("rlkit/GridWorld-v0", {"layout": ["S.#G"]}, "reachable"),
    ("rlkit/GridWorld-v0", {"layout": ["..G"]}, "start"),
    ("rlkit/GridWorld-v0", {"layout": ["S.."]}, "goal"),
    ("rlkit/GridWorld-v0", {"layout": ["S.G", ".."]}, "equal length"),
    ("rlkit/GridWorld-v0", {"layout": ["S.X.G"]}, "characters"),
    ("rlkit/GridWorld-v0", {"obs_mode": "pixels"}, "obs_mode"),
    ("rlkit/Catch-v0", {"rows": -3}, "rows"),
    ("rlkit/Catch-v0", {"n_balls": 0}, "n_balls"),
    ("rlkit/Catch-v0", {"paddle_width": 2}, "paddle_width"),
    ("rlkit/Catch-v0", {"cols": 40}, "catchable"),
    ("rlkit/Catch-v0", {"obs_type": "rgb"}, "obs_type"),
    ("rlkit/Catch-v0", {"cell_px": 0}, "cell_px"),
    ("rlkit/Catch-v0", {"cols": 1, "paddle_width": 1}, "cols"),
    ("rlkit/Catch-v0", {"rows": 300, "cols": 300, "cell_px": 4}, "too large"),
    ("rlkit/Catch-v0", {"drift": "yes"}, "drift"),
    ("rlkit/GridWorld-v0", {"layout": ["S" + "." * 40 + "G"] * 30}, "at most"),
    ("rlkit/Inventory-v0", {"max_stock": -1}, "max_stock"),
    ("rlkit/Inventory-v0", {"demand_rate": 0.0}, "demand_rate"),
    ("rlkit/Inventory-v0", {"season_amplitude": 2.0}, "season_amplitude"),
    ("rlkit/Inventory-v0", {"demand_pmf": [0.5, 0.6]}, "demand_pmf"),
    ("rlkit/Inventory-v0", {"initial_stock": 99}, "initial_stock"),
    ("rlkit/Inventory-v0", {"holding_cost": float("nan")}, "holding_cost"),
    ("rlkit/Inventory-v0", {"max_stock": 10**7}, "at most"),
    ("rlkit/Inventory-v0", {"demand_pmf": [0.5, 0.5], "season_period": 3}, "season_period"),
    ("rlkit/Inventory-v0", {"lead_time": 9}, "lead_time"),
    ("rlkit/ArmReach-v0", {"max_torque": 0.0}, "max_torque"),
    ("rlkit/ArmReach-v0", {"effort_cost": -0.1}, "effort_cost"),
    ("rlkit/ArmReach-v0", {"target_speed": 9.0}, "target_speed"),
    ("rlkit/ArmReach-v0", {"render_mode": "ansi"}, "render_mode"),
]


@pytest.mark.parametrize("env_id,kwargs,match", BAD_KWARGS, ids=[f"{i}-{m}" for i, _, m in BAD_KWARGS])
def test_bad_kwargs_raise_value_error(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, **kwargs)
    with pytest.raises(ValueError, match=match):
        gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)


def test_bad_actions_raise():
    env = gym.make("rlkit/GridWorld-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.unwrapped.step(4)
    vec = gym.make_vec("rlkit/Catch-v0", num_envs=3, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    with pytest.raises(ValueError):
        vec.step(np.array([0, 1, 3]))
    with pytest.raises(ValueError):
        vec.step(np.array([0, -1, 2]))


@pytest.mark.parametrize("env_id,kwargs,policy", [
    ("rlkit/GridWorld-v0", {}, "MlpPolicy"),
    ("rlkit/Catch-v0", {}, "CnnPolicy"),
    ("rlkit/Catch-v0", {"obs_type": "vector"}, "MlpPolicy"),
    ("rlkit/Inventory-v0", {}, "MlpPolicy"),
    ("rlkit/ArmReach-v0", {}, "MlpPolicy"),
])
def test_sb3_ppo_runs(env_id, kwargs, policy):
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    env = gym.make(env_id, **kwargs)
    model = PPO(policy, env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu", verbose=0)
    model.set_logger(Logger(None, []))  # SB3's default logger would leave a /tmp/SB3-<date> dir
    model.learn(total_timesteps=256)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)
    env.close()
