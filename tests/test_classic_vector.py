"""envs.classic_vector (native numpy Acrobot, MountainCar, MountainCarContinuous, Pendulum) against
SyncVectorEnv of Gymnasium's single envs: bit-identical outputs, exact resume, make_vec_env's switch."""

import math
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import envs
from envs.classic_vector import VECTOR_CLASSES, libm_square, libm_square_f32, make_vector
from rlkit.environments import NATIVE_VECTOR_VAR, env_state, load_env_state, make_vec_env
from rlkit.errors import UsageError

CLASSIC = list(envs.CLASSIC_VECTOR_IDS)
RESET_OPTIONS = {
    "Acrobot-v1": {"low": -0.2, "high": 0.25},
    "MountainCar-v0": {"low": -1.0, "high": -0.3},
    "MountainCarContinuous-v0": {"low": -0.9, "high": -0.2},
    "Pendulum-v1": {"x_init": 1.0, "y_init": 0.5},
}


def _sync(env_id, n, mode=AutoresetMode.NEXT_STEP, **kwargs):
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode},
                        **kwargs)


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def _policy(env_id, rng, obs, dtype=np.float32, scale=1.0):
    """Even copies: a policy that reaches the goal (terminations); odd copies: random actions
    (mostly truncations). Continuous actions scaled past the bounds by ``scale`` > 1."""
    n = len(obs)
    even = np.arange(n) % 2 == 0
    if env_id == "Acrobot-v1":  # torque along the second joint's speed swings the tip up
        return np.where(even, np.where(obs[:, 5] > 0, 2, 0), rng.integers(0, 3, n))
    if env_id == "MountainCar-v0":  # push along the velocity
        return np.where(even, np.where(obs[:, 1] >= 0, 2, 0), rng.integers(0, 3, n))
    if env_id == "MountainCarContinuous-v0":
        push = np.where(obs[:, 1:2] >= 0, 1.0, -1.0)
        a = np.where(even[:, None], push, rng.uniform(-1, 1, (n, 1)))
    else:  # Pendulum: a continuing task, random torques
        a = rng.uniform(-2, 2, (n, 1))
    return (a * scale).astype(dtype)


CASES = [  # env id, kwargs, steps, policy options
    ("Acrobot-v1", {}, 1100, {}),
    ("MountainCar-v0", {}, 500, {}),
    ("MountainCar-v0", {"goal_velocity": 0.005, "max_episode_steps": 160}, 400, {}),
    ("MountainCarContinuous-v0", {}, 1100, {}),
    ("MountainCarContinuous-v0", {"goal_velocity": 0.02, "max_episode_steps": 150}, 400, {"scale": 1.4}),
    ("MountainCarContinuous-v0", {"max_episode_steps": 150}, 400, {"dtype": np.float64, "scale": 1.4}),
    ("Pendulum-v1", {}, 450, {}),
    ("Pendulum-v1", {"g": 9.81, "max_episode_steps": 90}, 300, {"dtype": np.float64, "scale": 1.3}),
]
CASE_IDS = ["acrobot", "mountaincar", "mountaincar-goal-velocity", "mcc", "mcc-clipped-forces",
            "mcc-float64-actions", "pendulum", "pendulum-g-float64-actions"]


@pytest.mark.parametrize("env_id,kwargs,steps,policy", CASES, ids=CASE_IDS)
def test_native_vector_env_matches_sync_exactly(env_id, kwargs, steps, policy):
    """Same seeds, same actions: observations, rewards, terminations and truncations bit for bit
    (dtypes too), across terminations, truncations, autoreset steps and a reseed with options."""
    n = 6
    sync, native = _sync(env_id, n, **kwargs), make_vector(env_id, n, **kwargs)
    assert native.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs = sync.reset(seed=11)[0]
    _same(obs, native.reset(seed=11)[0])
    rng = np.random.default_rng(5)
    terms = truncs = 0
    for t in range(steps):
        if t == steps - 60:  # reseed every copy with a list of seeds and the env's reset options
            seeds = [100 + 7 * i for i in range(n)]
            obs = sync.reset(seed=seeds, options=RESET_OPTIONS[env_id])[0]
            _same(obs, native.reset(seed=seeds, options=RESET_OPTIONS[env_id])[0])
        actions = _policy(env_id, rng, obs, **policy)
        out_s, out_n = sync.step(actions), native.step(actions)
        for a, b in zip(out_s[:4], out_n[:4]):
            _same(a, b)
        assert out_s[4] == out_n[4] == {}
        obs = out_s[0]
        terms += int(out_s[2].sum())
        truncs += int(out_s[3].sum())
    assert truncs >= 2
    if env_id == "Pendulum-v1":
        assert terms == 0
    else:
        assert terms >= 3
    sync.close()
    native.close()


def _set_states(env_id, sync, native, states, fresh):
    """Put copy i of both vector envs into states[i] = (position, velocity): float64 start states
    (``fresh``) or the single env's float32 state after a step (MountainCarContinuous)."""
    for i, (p, v) in enumerate(states):
        single = sync.envs[i].unwrapped
        if env_id == "MountainCar-v0":
            single.state = np.array([p, v])
            native._pos[i], native._vel[i] = p, v
        elif fresh:
            single.state = np.array([p, 0])
            native._pos0[i], native._pos[i], native._vel[i], native._fresh[i] = p, p, 0.0, True
        else:
            single.state = np.array([p, v], dtype=np.float32)
            native._pos[i], native._vel[i], native._fresh[i] = p, v, False


@pytest.mark.parametrize("env_id", ["MountainCar-v0", "MountainCarContinuous-v0"])
@pytest.mark.parametrize("goal_velocity", [0, 0.0700000001])
def test_mountain_car_clipping_edges_match_sync(env_id, goal_velocity):
    """States random actions rarely reach: velocity clipped at +-max_speed (with a goal_velocity
    between 0.07 and float32(0.07), where float32 and float64 comparisons differ), position clipped at
    both ends, the left wall zeroing the velocity, the goal's edge."""
    states = [(-1.19, -0.02), (-1.2, -0.001), (0.0, 0.0699), (-0.3, -0.0699), (0.449, 0.0012),
              (0.44999, 0.0), (0.599, 0.069), (0.44, 0.0699), (0.4995, 0.0004), (-0.5, 0.0)]
    n = len(states)
    sync = _sync(env_id, n, goal_velocity=goal_velocity)
    native = make_vector(env_id, n, goal_velocity=goal_velocity)
    if env_id == "MountainCar-v0":
        action_sets = [np.full(n, a) for a in (0, 1, 2)]
        variants = [False]
    else:
        action_sets = [np.full((n, 1), a, dtype=dt) for a in (1.0, -1.0, 1.5, -1.5, 0.3)
                       for dt in (np.float32, np.float64)]
        variants = [False, True]
    for fresh in variants:
        for actions in action_sets:
            sync.reset(seed=0)
            native.reset(seed=0)
            _set_states(env_id, sync, native, states, fresh)
            for _ in range(3):
                out_s, out_n = sync.step(actions), native.step(actions)
                for a, b in zip(out_s[:4], out_n[:4]):
                    _same(a, b)


def test_libm_squares_match_numpy_scalar_powers():
    """``np.float64(v) ** 2`` is libm's pow and ``np.float32(v) ** 2`` powf: about 1 in 1,000
    differ from the correctly rounded ``v * v`` by an ulp; the helpers agree with them everywhere,
    including squares next to a rounding midpoint. MountainCar's math.cos is numpy's float64 cos."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-30, 30, 60000) * np.exp2(rng.integers(-12, 12, 60000))
    x[:6] = [0.0, 1.0, -2.0, 2.0**-300, 1e100, 3.0]
    want = np.array([np.float64(v) ** 2 for v in x])
    assert np.count_nonzero(want != x * x) > 10  # the difference is real
    _same(libm_square(x), want)
    _same(libm_square(x.reshape(3, -1)), want.reshape(3, -1))
    u = rng.uniform(-2.5, 2.5, 60000).astype(np.float32)
    u[:5] = [0.0, 1e-30, 1 + 2.0**-12, -2.0, 2.0**-8]  # 1 + 2**-12: a square exactly on a midpoint
    want32 = np.array([v**2 for v in u], dtype=np.float32)
    assert np.count_nonzero(want32 != u * u) > 10
    _same(libm_square_f32(u), want32)
    c = rng.uniform(-3.6, 1.8, 20000)  # 3 * position
    _same(np.cos(c), np.array([math.cos(v) for v in c]))


@pytest.mark.parametrize("env_id", CLASSIC)
def test_exact_resume_from_plain_data_state(env_id):
    """rlkit's env_state / load_env_state through RecordEpisodeStatistics: a fresh vector env given
    the state continues identically (taken at a truncation, at the autoreset step after it, and
    mid-episode)."""
    n, limit = 4, 40
    kwargs = {"max_episode_steps": limit}
    run = make_vec_env(env_id, n, seed=3, env_kwargs=kwargs)
    assert type(run.unwrapped) is VECTOR_CLASSES[env_id]
    obs = run.reset(seed=3)[0]
    rng = np.random.default_rng(1)
    actions = []
    for _ in range(limit + 100):
        actions.append(_policy(env_id, rng, obs))
        obs = run.step(actions[-1])[0]
    run.reset(seed=3)
    snapshots = {}
    for t in range(limit + 100):
        if t in (limit, limit + 1, limit + 17):
            snapshots[t] = env_state(run)
        run.step(actions[t])
    run.close()
    for t0, state in snapshots.items():
        whole = make_vec_env(env_id, n, seed=3, env_kwargs=kwargs)
        whole.reset(seed=3)
        for t in range(t0):
            whole.step(actions[t])
        resumed = make_vec_env(env_id, n, seed=77, env_kwargs=kwargs)
        resumed.reset(seed=77)
        load_env_state(resumed, state)
        ended = 0
        for t in range(t0, limit + 100):
            out_w, out_r = whole.step(actions[t]), resumed.step(actions[t])
            for a, b in zip(out_w[:4], out_r[:4]):
                _same(a, b)
            assert ("episode" in out_w[4]) == ("episode" in out_r[4])
            if "episode" in out_w[4]:
                _same(out_w[4]["_episode"], out_r[4]["_episode"])
                for k in ("r", "l"):
                    _same(out_w[4]["episode"][k], out_r[4]["episode"][k])
            ended += int(out_w[2].sum() + out_w[3].sum())
        assert ended > 0
        whole.close()
        resumed.close()


def test_make_vec_env_uses_native_envs_and_the_switch(monkeypatch):
    monkeypatch.delenv(NATIVE_VECTOR_VAR, raising=False)
    for env_id in CLASSIC:
        venv = make_vec_env(env_id, 2)
        assert type(venv).__name__ == "RecordEpisodeStatistics"
        assert type(venv.unwrapped) is VECTOR_CLASSES[env_id]
        assert venv.unwrapped.max_episode_steps == gym.spec(env_id).max_episode_steps
        venv.close()
    assert isinstance(make_vec_env("Pendulum-v1", 2, native=False).unwrapped, SyncVectorEnv)
    monkeypatch.setenv(NATIVE_VECTOR_VAR, "0")
    assert isinstance(make_vec_env("Acrobot-v1", 2).unwrapped, SyncVectorEnv)
    assert type(make_vec_env("Acrobot-v1", 2, native=True).unwrapped) is VECTOR_CLASSES["Acrobot-v1"]
    cartpole = make_vec_env("CartPole-v1", 2).unwrapped  # ids with their own vector env: unaffected
    assert not isinstance(cartpole, SyncVectorEnv)
    monkeypatch.setenv(NATIVE_VECTOR_VAR, "1")
    assert type(make_vec_env("MountainCar-v0", 2).unwrapped) is VECTOR_CLASSES["MountainCar-v0"]
    monkeypatch.setenv(NATIVE_VECTOR_VAR, "maybe")
    with pytest.raises(UsageError, match=NATIVE_VECTOR_VAR):
        make_vec_env("MountainCar-v0", 2)


@pytest.mark.parametrize("env_id,kwargs", [("Pendulum-v1", {"g": 9.0, "max_episode_steps": 7}),
                                           ("MountainCar-v0", {"max_episode_steps": 9})])
def test_make_vec_env_native_equals_sync_with_episode_statistics(env_id, kwargs):
    """What training sees: make_vec_env's native and Sync envs (RecordEpisodeStatistics, env_kwargs,
    a shorter TimeLimit) give the same steps and the same episode returns and lengths."""
    native = make_vec_env(env_id, 3, seed=2, env_kwargs=kwargs, native=True)
    sync = make_vec_env(env_id, 3, seed=2, env_kwargs=kwargs, native=False)
    _same(native.reset(seed=2)[0], sync.reset(seed=2)[0])
    assert native.single_observation_space == sync.single_observation_space
    assert native.single_action_space == sync.single_action_space
    episodes = 0
    for _ in range(30):
        a = sync.action_space.sample()
        out_n, out_s = native.step(a), sync.step(a)
        for x, y in zip(out_n[:4], out_s[:4]):
            _same(x, y)
        if "episode" in out_s[4]:
            episodes += int(out_s[4]["_episode"].sum())
            _same(out_n[4]["_episode"], out_s[4]["_episode"])
            for k in ("r", "l"):
                _same(out_n[4]["episode"][k], out_s[4]["episode"][k])
        else:
            assert "episode" not in out_n[4]
    assert episodes >= 3
    native.close()
    sync.close()


@pytest.mark.parametrize("env_id", CLASSIC)
def test_spaces_seeds_rendering_and_other_autoreset_modes(env_id):
    n = 3
    sync, native = _sync(env_id, n, render_mode="rgb_array"), make_vector(env_id, n, render_mode="rgb_array")
    for name in ("single_observation_space", "single_action_space", "observation_space", "action_space"):
        assert getattr(native, name) == getattr(sync, name)
    assert native.num_envs == n
    _same(sync.reset(seed=4)[0], native.reset(seed=4)[0])
    assert native.np_random_seed == (4, 5, 6)
    sync.action_space.seed(0)
    for _ in range(5):
        a = sync.action_space.sample()
        sync.step(a)
        native.step(a)
    for fs, fn in zip(sync.render(), native.render()):
        _same(fs, fn)
    sync.close()
    native.close()
    # SAME_STEP (final observations in infos) and DISABLED (reset_mask, with reset options)
    kwargs = {"max_episode_steps": 6}
    sync = _sync(env_id, n, AutoresetMode.SAME_STEP, **kwargs)
    native = make_vector(env_id, n, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    _same(sync.reset(seed=1)[0], native.reset(seed=1)[0])
    sync.action_space.seed(1)
    for _ in range(14):
        a = sync.action_space.sample()
        out_s, out_n = sync.step(a), native.step(a)
        for x, y in zip(out_s[:4], out_n[:4]):
            _same(x, y)
        if "final_obs" in out_s[4]:
            _same(out_s[4]["_final_obs"], out_n[4]["_final_obs"])
            for i in np.flatnonzero(out_s[4]["_final_obs"]):
                _same(out_s[4]["final_obs"][i], out_n[4]["final_obs"][i])
    sync = _sync(env_id, n, AutoresetMode.DISABLED, **kwargs)
    native = make_vector(env_id, n, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
    _same(sync.reset(seed=2)[0], native.reset(seed=2)[0])
    done = np.zeros(n, dtype=bool)
    for _ in range(14):
        if done.any():
            opts = dict(RESET_OPTIONS[env_id])
            _same(sync.reset(options={"reset_mask": done.copy(), **opts})[0],
                  native.reset(options={"reset_mask": done.copy(), **opts})[0])
        a = sync.action_space.sample()
        out_s, out_n = sync.step(a), native.step(a)
        for x, y in zip(out_s[:4], out_n[:4]):
            _same(x, y)
        done = out_s[2] | out_s[3]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="no native vector env"):
        make_vector("CartPole-v1", 2)
    with pytest.raises(TypeError):
        make_vector("Pendulum-v1", 2, goal_velocity=1)
    venv = make_vector("Pendulum-v1", 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((2, 2), dtype=np.float32))
    venv = make_vector("MountainCar-v0", 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="values in"):
        venv.step(np.array([0, 3]))
    with pytest.raises(ValueError, match="Lower bound"):
        venv.reset(options={"low": 0.1, "high": -0.1})
