"""``async_envs``: the training env's copies in processes of their own (Gymnasium's AsyncVectorEnv,
one spawn process per copy), rlkit/environments.py.

The same data as SyncVectorEnv for the same seeds and actions; the processes end with ``close()``
and with their parent; exact resume of plain-data envs across the processes; usage errors for the
combinations that cannot work or would only be slower.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.ppo import PPO
from rlkit.environments import AUTORESET, EnvFactory, async_vector_env, env_state, load_env_state, make_vec_env
from rlkit.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as ended: it runs nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids, timeout: float = 20.0) -> list[int]:
    """Poll until every pid has ended (or ``timeout`` passed); returns those still alive."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.mark.parametrize("env_id,steps", [("CartPole-v1", 300), ("LunarLander-v3", 400)])
def test_async_copies_step_as_the_sync_ones(env_id, steps):
    """Observations, rewards, terminations and truncations equal SyncVectorEnv's, bit for bit and
    dtype for dtype, over a few hundred random-action steps with episode ends and NEXT_STEP resets,
    copy i seeded seed + i by the first reset in both."""
    n = 3
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n)], autoreset_mode=AUTORESET)
    procs = async_vector_env(env_id, n)
    try:
        assert procs.metadata["autoreset_mode"] == AUTORESET
        obs_s, _ = sync.reset(seed=7)
        obs_a, _ = procs.reset(seed=7)
        np.testing.assert_array_equal(obs_a, obs_s)
        sync.action_space.seed(0)
        ends = 0
        for t in range(steps):
            actions = sync.action_space.sample()
            out_s, out_a = sync.step(actions), procs.step(actions)
            for name, a, s in zip(("obs", "reward", "terminated", "truncated"), out_a[:4], out_s[:4]):
                assert a.dtype == s.dtype, (t, name)
                np.testing.assert_array_equal(a, s, err_msg=f"{name} at step {t}")
            ends += int((out_s[2] | out_s[3]).sum())
        assert ends >= 3  # the comparison went through resets
    finally:
        sync.close()
        procs.close()


def test_make_vec_env_async_matches_sync_with_wrappers_and_seeds():
    """make_vec_env(async_envs=True) on an id without a vector env of its own: the same episode
    statistics, action-space seeding and outputs as the default SyncVectorEnv."""
    kwargs = {"max_episode_steps": 40}
    sync = make_vec_env("LunarLander-v3", 2, seed=11, env_kwargs=kwargs)
    procs = make_vec_env("LunarLander-v3", 2, seed=11, env_kwargs=kwargs, async_envs=True)
    try:
        assert type(procs.unwrapped).__name__ == "AsyncVectorEnv"
        np.testing.assert_array_equal(procs.reset(seed=11)[0], sync.reset(seed=11)[0])
        returns_s, returns_a = [], []
        for _ in range(100):
            a_s, a_a = sync.action_space.sample(), procs.action_space.sample()
            np.testing.assert_array_equal(a_a, a_s)  # the action spaces were seeded alike
            out_s, out_a = sync.step(a_s), procs.step(a_a)
            for a, s in zip(out_a[:4], out_s[:4]):
                np.testing.assert_array_equal(a, s)
            for infos, into in ((out_s[4], returns_s), (out_a[4], returns_a)):
                if "episode" in infos:
                    into.extend(infos["episode"]["r"][infos["_episode"]].tolist())
        assert returns_s and returns_a == returns_s
    finally:
        sync.close()
        procs.close()


def test_close_ends_the_processes():
    venv = make_vec_env("LunarLander-v3", 3, seed=0, async_envs=True)
    pids = [p.pid for p in venv.unwrapped.processes]
    assert all(_alive(p) for p in pids) and os.getpid() not in pids
    venv.reset(seed=0)
    venv.close()
    assert _wait_gone(pids) == []


def test_the_processes_end_with_a_killed_parent(tmp_path):
    """SIGKILL closes nothing: the copies notice their parent is gone and end (no orphans)."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from rlkit.environments import make_vec_env

        if __name__ == "__main__":
            venv = make_vec_env("LunarLander-v3", 2, seed=0, async_envs=True)
            venv.reset(seed=0)
            print(" ".join(str(p.pid) for p in venv.unwrapped.processes), flush=True)
            sys.stdin.read()  # until killed
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _wait_gone(pids) == []


def test_a_resumed_async_env_continues_its_episodes():
    """Exact resume across the processes: a snapshot taken where some copies are due a reset step,
    loaded into fresh processes, continues step for step (the reset step included)."""
    kwargs = {"max_episode_steps": 5}  # frequent truncations
    whole = make_vec_env("Pendulum-v1", 3, seed=2, env_kwargs=kwargs, native=False, async_envs=True)
    resumed = make_vec_env("Pendulum-v1", 3, seed=9, env_kwargs=kwargs, native=False, async_envs=True)
    try:
        whole.reset(seed=2)
        whole.action_space.seed(0)
        actions = [whole.action_space.sample() for _ in range(12)]
        for t in range(5):  # after step 5 every copy has truncated: the next step is a reset step
            out = whole.step(actions[t])
        assert out[3].all()
        state = env_state(whole)
        assert all(isinstance(c, dict) for c in state["env"]["__object__"]["__copies__"])
        expected = [whole.step(a) for a in actions[5:]]
        resumed.reset(seed=9)  # other episodes, other RNG streams: the snapshot must replace them
        load_env_state(resumed, state)
        for t, (want, a) in enumerate(zip(expected, actions[5:])):
            got = resumed.step(a)
            for x, y in zip(got[:4], want[:4]):
                np.testing.assert_array_equal(x, y, err_msg=f"step {5 + t}")
        assert not expected[0][1].any() and not expected[0][3].any()  # the reset step: reward 0, no end
    finally:
        whole.close()
        resumed.close()


def test_ppo_with_async_envs_resumes_exactly(tmp_path, monkeypatch):
    """As tests/test_onpolicy.py::test_exact_resume, with the copies in processes: stopped at N of
    2N, saved, loaded and run on to 2N gives the uninterrupted run's parameters."""
    monkeypatch.setenv("RLKIT_NATIVE_VECTOR", "0")  # Pendulum through SyncVectorEnv's path: async allowed
    cfg = PPO.Config(n_envs=2, n_steps=16, batch_size=32, n_epochs=2, norm_obs=True, async_envs=True,
                     train_time_limit=12)
    per_update = cfg.n_envs * cfg.n_steps
    whole = PPO("Pendulum-v1", cfg, seed=4, device="cpu")
    first = resumed = None
    try:
        assert type(whole.parts.collector.venv.unwrapped).__name__ == "AsyncVectorEnv"
        whole.learn(4 * per_update)
        first = PPO("Pendulum-v1", cfg, seed=4, device="cpu")  # after: building seeds the process's RNGs

        class KillAtHalf:
            def on_step(self, num_timesteps, agent):
                return num_timesteps < 2 * per_update

        first.learn(4 * per_update, callback=KillAtHalf())
        first.save(tmp_path / "half.pt")
        first.close()
        torch.manual_seed(999)
        np.random.seed(999)
        resumed = PPO.load(tmp_path / "half.pt")
        resumed.learn(4 * per_update)
        assert resumed.num_timesteps == whole.num_timesteps
        for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
            assert torch.equal(p, q)
    finally:
        for agent in (whole, first, resumed):
            if agent is not None:
                agent.close()


def test_a_box2d_env_in_processes_saves_no_env_state(tmp_path):
    """LunarLander's state is in Box2D objects, in the copies' processes too: no snapshot, and a
    loaded agent starts new episodes (as with SyncVectorEnv)."""
    cfg = PPO.Config(n_envs=2, n_steps=4, batch_size=8, n_epochs=1, async_envs=True)
    agent = PPO("LunarLander-v3", cfg, seed=0, device="cpu")
    try:
        agent.learn(8)
        assert agent.parts.collector.state() is None
        agent.save(tmp_path / "a.pt")
    finally:
        agent.close()
    loaded = PPO.load(tmp_path / "a.pt")
    try:
        loaded.learn(16)
        assert loaded.num_timesteps == 16
    finally:
        loaded.close()


def test_usage_errors():
    with pytest.raises(UsageError, match="async_envs: CartPole-v1 has a numpy vector env"):
        EnvFactory("CartPole-v1", async_envs=True).make(2)  # gymnasium's own vector env
    with pytest.raises(UsageError, match="async_envs: Pendulum-v1"):
        make_vec_env("Pendulum-v1", 2, async_envs=True, native=True)  # envs/classic_vector.py
    with pytest.raises(UsageError, match="async_envs runs the learner's own env copies"):
        PPO("LunarLander-v3", PPO.Config(n_envs=2, async_envs=True), seed=0, device="cpu", workers=2)
    with pytest.raises(UsageError, match="async_envs runs the learner's own env copies"):
        PPO("LunarLander-v3", PPO.Config(n_envs=2, async_envs=True), seed=0, device="cpu", backend="ray")


def test_async_envs_is_a_bool_setting():
    """Set from the command line as any bool: a non-bool is refused (exit 2) by rlkit.config."""
    from rlkit.config import resolve

    cfg, _ = resolve(PPO.Config, "ppo", "LunarLander-v3", None, {"async_envs": True}, False)
    assert cfg.async_envs is True
    with pytest.raises(UsageError, match="async_envs"):
        resolve(PPO.Config, "ppo", "LunarLander-v3", None, {"async_envs": 3}, False)
