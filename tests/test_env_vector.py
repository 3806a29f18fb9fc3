"""The native numpy vector envs against SyncVectorEnv of the same ids: identical outputs."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import envs
from envs._vector import UniformStreams

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("rlkit/GridWorld-v0", {}),
    ("rlkit/GridWorld-v0", {"slip_prob": 0.5, "max_episode_steps": 20, "obs_mode": "coords"}),
    ("rlkit/Catch-v0", {}),
    ("rlkit/Catch-v0", {"obs_type": "vector", "rows": 6, "cols": 7, "n_balls": 3}),
    ("rlkit/Catch-v0", {"rows": 5, "cols": 5, "cell_px": 3, "n_balls": 2, "max_episode_steps": 7}),
    ("rlkit/Inventory-v0", {"max_episode_steps": 90}),
    ("rlkit/Inventory-v0", {"season_period": 3, "season_amplitude": 0.6, "lead_time": 0,
                            "max_episode_steps": 50}),
    ("rlkit/ArmReach-v0", {"max_episode_steps": 110}),
]
CASE_IDS = [f"{i}-{'-'.join(map(str, k.values()))}" for i, k in CASES]


def _pair(env_id, n, kwargs, mode=AutoresetMode.NEXT_STEP):
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": mode}, **kwargs)
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                          autoreset_mode=mode, **kwargs)
    return sync, native


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=CASE_IDS)
def test_native_vector_env_matches_sync(env_id, kwargs):
    n, steps = 5, 320
    sync, native = _pair(env_id, n, kwargs)
    assert native.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert native.single_observation_space == sync.single_observation_space
    assert native.single_action_space == sync.single_action_space
    assert native.observation_space == sync.observation_space
    _same(sync.reset(seed=11)[0], native.reset(seed=11)[0])
    sync.action_space.seed(3)
    ends = 0
    for t in range(steps):
        if t == 200:  # reseed mid-run with a list of seeds
            seeds = [100 + 7 * i for i in range(n)]
            _same(sync.reset(seed=seeds)[0], native.reset(seed=seeds)[0])
        actions = sync.action_space.sample()
        out_s, out_n = sync.step(actions), native.step(actions)
        for a, b in zip(out_s[:4], out_n[:4]):
            _same(a, b)
        assert out_s[4] == out_n[4] == {}
        ends += int(np.sum(out_s[2] | out_s[3]))
    assert ends >= n  # crossed episode ends (terminations or truncations)
    sync.close()
    native.close()


@pytest.mark.parametrize("env_id,kwargs", [CASES[1], CASES[4], CASES[6], CASES[7]],
                         ids=[CASE_IDS[1], CASE_IDS[4], CASE_IDS[6], CASE_IDS[7]])
def test_same_step_autoreset_matches_sync(env_id, kwargs):
    n = 4
    sync, native = _pair(env_id, n, kwargs, AutoresetMode.SAME_STEP)
    assert native.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    _same(sync.reset(seed=2)[0], native.reset(seed=2)[0])
    sync.action_space.seed(0)
    finals = 0
    for _ in range(150):
        a = sync.action_space.sample()
        (os_, rs, ts, us, is_), (on, rn, tn, un, in_) = sync.step(a), native.step(a)
        for x, y in ((os_, on), (rs, rn), (ts, tn), (us, un)):
            _same(x, y)
        assert set(is_) == set(in_)
        if "final_obs" in is_:
            finals += 1
            _same(is_["_final_obs"], in_["_final_obs"])
            _same(is_["_final_info"], in_["_final_info"])
            for i in np.flatnonzero(is_["_final_obs"]):
                _same(is_["final_obs"][i], in_["final_obs"][i])
    assert finals > 0


def test_disabled_autoreset_with_reset_mask_matches_sync():
    n, kwargs = 4, {"max_episode_steps": 9, "slip_prob": 0.3}
    sync, native = _pair("rlkit/GridWorld-v0", n, kwargs, AutoresetMode.DISABLED)
    _same(sync.reset(seed=4)[0], native.reset(seed=4)[0])
    rng = np.random.default_rng(0)
    done = np.zeros(n, dtype=bool)
    for _ in range(60):
        if done.any():
            _same(sync.reset(options={"reset_mask": done.copy()})[0],
                  native.reset(options={"reset_mask": done.copy()})[0])
        a = rng.integers(0, 4, n)
        out_s, out_n = sync.step(a), native.step(a)
        for x, y in zip(out_s[:4], out_n[:4]):
            _same(x, y)
        done = out_s[2] | out_s[3]


@pytest.mark.parametrize("env_id", list(envs.ENV_IDS))
def test_make_vec_defaults_to_native(env_id):
    vec = gym.make_vec(env_id, num_envs=3)
    assert not isinstance(vec, SyncVectorEnv)
    assert type(vec).__module__.startswith("envs.")
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert vec.metadata["task"] == gym.make(env_id).unwrapped.metadata["task"]
    assert vec.max_episode_steps == gym.spec(env_id).max_episode_steps
    obs, info = vec.reset(seed=0)
    assert vec.observation_space.contains(obs) and info == {}
    assert vec.np_random_seed == (0, 1, 2)
    vec.close()


@pytest.mark.parametrize("kwargs", [{}, {"n_balls": 2, "rows": 6, "cols": 6}])
def test_catch_recycled_frames_never_change_under_the_caller(kwargs):
    """Held observations stay intact; dropped ones are recycled (pool) without visible effect."""
    native = gym.make_vec("rlkit/Catch-v0", num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec("rlkit/Catch-v0", num_envs=3, vectorization_mode="sync", **kwargs)
    held, expected = [native.reset(seed=1)[0]], [sync.reset(seed=1)[0]]
    rng = np.random.default_rng(1)
    for t in range(400):
        if t % 97 == 0:  # resets too
            _same(native.reset(seed=t)[0], sync.reset(seed=t)[0])
        a = rng.integers(0, 3, 3)
        obs = native.step(a)[0]
        exp = sync.step(a)[0]
        _same(obs, exp)
        if rng.random() < 0.2:  # keep some, drop the others so their buffers get recycled
            held.append(obs)
            expected.append(exp.copy())
        del obs
    for h, e in zip(held, expected):
        _same(h, e)


def test_uniform_streams_match_sequential_draws():
    streams = UniformStreams(3, buffer_size=8)
    for i, s in enumerate((5, 6, 7)):
        streams.seed(i, s)
    refs = [seeding.np_random(s)[0] for s in (5, 6, 7)]
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 4))
        idx = np.flatnonzero(rng.random(3) < 0.7)
        if k == 1 and rng.random() < 0.5:
            mask = rng.random(3) < 0.5
            u = streams.peek1()
            streams.advance(mask)
            for i in np.flatnonzero(mask):
                assert u[i] == refs[i].random()
        elif len(idx):
            got = streams.take(idx, k)
            for row, i in zip(got, idx):
                assert np.array_equal(row, refs[i].random(k))


def test_bench_script_runs():
    cmd = [sys.executable, "bench/env_throughput.py", "--num-envs", "4", "--seconds", "0.05",
           "--envs", "rlkit/GridWorld-v0"]
    out = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rlkit/GridWorld-v0" in out.stdout and "ratio" in out.stdout
