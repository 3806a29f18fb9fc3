"""The Python API (rlkit/api.py, docs/python_api.md): SB3's spelling, callbacks, run directories,
loading, and envs given as ids, instances or functions."""

import json
import re
import sys

import gymnasium as gym
import numpy as np
import pytest

import rlkit
from conftest import ROOT


def blocks(path):
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), flags=re.S)


@pytest.mark.slow
def test_docs_python_api_blocks_run(tmp_path, monkeypatch, capsys):
    """Every ```python block of docs/python_api.md, in order, in one namespace (as a reader would)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict = {}
    code = blocks("docs/python_api.md")
    assert len(code) >= 5
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"docs/python_api.md block {i + 1}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"docs/python_api.md block {i + 1} failed: {exc!r}\n{block}") from exc
    out = capsys.readouterr().out
    assert "<rlkit ppo on CartPole-v1" in out and "rlkit-user/Corridor-v0" in out
    assert (tmp_path / "ppo_cartpole.pt").is_file() and (tmp_path / "runs" / "Corridor-v0").is_dir()


def test_sb3_spelling_learn_predict_save_load(tmp_path):
    agent = rlkit.PPO("MlpPolicy", "CartPole-v1", seed=0, n_envs=2, n_steps=64)
    assert agent.learn(256) is agent and agent.num_timesteps == 256
    agent.learn(128)  # learn(n) trains n more steps
    assert agent.num_timesteps == 384
    obs, _ = gym.make("CartPole-v1").reset(seed=0)
    action = agent.predict(obs)
    assert agent.impl.action_space.contains(np.asarray(action).item())
    batch = agent.predict(np.stack([obs, obs]))
    assert np.asarray(batch).shape == (2,)
    path = agent.save(tmp_path / "sub" / "a.pt")
    loaded = rlkit.PPO.load(path)
    assert loaded.num_timesteps == 384 and loaded.predict(obs) == action
    for p, q in zip(agent.impl.model.parameters(), loaded.impl.model.parameters()):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())
    with pytest.raises(rlkit.UsageError, match="not actor-critic"):
        rlkit.A2C.load(path)


@pytest.mark.parametrize("bad, match", [
    (dict(learning_rte=1e-3), "did you mean learning_rate"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(policy="MlpPolicyy"), "MlpPolicy"),
])
def test_bad_hyperparameters_raise_usage_errors(bad, match):
    policy = bad.pop("policy", "MlpPolicy")
    with pytest.raises(rlkit.UsageError, match=match):
        rlkit.PPO(policy, "CartPole-v1", **bad)


def test_unknown_env_and_algo_raise_usage_errors():
    with pytest.raises(rlkit.UsageError, match="CartPole-v1"):
        rlkit.make_agent("ppo", "CartPole-v9")
    with pytest.raises(rlkit.UsageError, match="did you mean ppo"):
        rlkit.make_agent("ppoo", "CartPole-v1")


def test_callbacks_are_called_and_can_stop():
    agent = rlkit.PPO("MlpPolicy", "CartPole-v1", seed=0, n_envs=2, n_steps=64)
    seen = []

    def stop_after_three(step, a):
        seen.append((step, a.num_timesteps))
        return len(seen) < 3

    agent.learn(10_000, callback=stop_after_three)
    assert [s for s, _ in seen] == [128, 256, 384] and agent.num_timesteps == 384
    assert all(isinstance(n, int) for _, n in seen)

    calls = []
    ev = rlkit.EvalCallback(eval_every=256, episodes=2, on_eval=lambda s, r, a: calls.append((s, r["episodes"])),
                            stop_at_return=-1.0)  # any return clears it: stops at the first evaluation
    agent.learn(10_000, callback=ev)
    assert calls == [(512, 2)] and len(ev.results) == 1 and agent.num_timesteps == 512


def test_train_makes_a_run_directory_with_hooks(tmp_path):
    evals, steps = [], []
    run = rlkit.train("ppo", "CartPole-v1", steps=4096, seed=3, runs_root=tmp_path, eval_every=1024, eval_episodes=2,
                      final_eval_episodes=3, n_envs=2, n_steps=256,
                      on_step=lambda s, a: steps.append(s), on_eval=lambda s, r, a: evals.append(s) or s < 2048)
    info = json.loads((run / "run.json").read_text())
    assert run.parent == tmp_path / "CartPole-v1" and (run / "config.yaml").is_file()
    assert evals == [1024, 2048] and steps[-1] == 2048  # on_eval returning False ended the run there
    assert info["status"] == "finished" and info["steps"] == 2048 and info["final_eval"]["episodes"] == 3
    agent = rlkit.load_run(run)
    assert agent.num_timesteps == 2048 and agent.seed == 3


def test_a_run_a_hook_ended_is_not_confirmed_when_asked_not_to(tmp_path):
    """rlkit.tune's pruned trials: ended by their on_eval hook, scored by nobody, so the 100
    fresh episodes are not played (training.train(confirm_stopped=False)); a run that ends on its
    own is still confirmed."""
    from rlkit import training

    kw = dict(seed=0, eval_every=512, eval_episodes=1, final_eval_episodes=3, progress=False, quiet=True,
              sets={"n_envs": 2, "n_steps": 256, "n_epochs": 1}, confirm_stopped=False)
    stopped = training.train("ppo", "CartPole-v1", steps=2048, run_dir=tmp_path / "stopped",
                             on_eval=lambda s, r, a: False, **kw)
    ended = training.train("ppo", "CartPole-v1", steps=1024, run_dir=tmp_path / "ended", **kw)
    info, done = (json.loads((run / "run.json").read_text()) for run in (stopped, ended))
    assert info["steps"] == 512 and info["status"] == "finished" and "final_eval" not in info
    assert done["final_eval"]["episodes"] == 3


def test_env_instances_and_functions(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.corridor import Corridor

    env = Corridor(length=5)
    a = rlkit.make_agent("ppo", env, n_envs=2, n_steps=32)
    b = rlkit.make_agent("ppo", env, n_envs=2, n_steps=32)
    assert a.env_id == b.env_id and a.env_id.startswith("rlkit-user/Corridor-v")  # one object, one id
    assert gym.make(a.env_id).unwrapped.length == 5  # a copy of the instance, with its settings
    c = rlkit.make_agent("reinforce", lambda: Corridor(length=3), n_envs=2)
    assert c.env_id.startswith("rlkit-user/") and gym.make(c.env_id).unwrapped.length == 3
    made = rlkit.make_agent("ppo", gym.make("CartPole-v1", max_episode_steps=50))
    assert made.env_id == "CartPole-v1" and made.env_kwargs == {"max_episode_steps": 50}
    with pytest.raises(rlkit.UsageError, match="other processes"):
        rlkit.make_agent("ppo", env, workers=2)
    with pytest.raises(rlkit.UsageError, match="env id"):
        rlkit.make_agent("ppo", 42)


def test_import_rlkit_stays_light():
    import subprocess

    code = "import sys, rlkit; print(sorted(m for m in ('torch', 'gymnasium', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
