"""The time-to-solve protocol (rlkit/training.py, rlkit/baselines/sb3.py, bench/time_to_solve.py).

SB3's on-policy baselines are evaluated at the same point of their cycle as rlkit's agents (after
the update), every run is scored at its end on episodes the stop check never saw, SB3's reward
metrics are in the env's own units, and the bench's statistics are paired by seed.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent  # not `from tests.conftest`: works under a bare `pytest` too

TINY_SB3_PPO = {"n_envs": 2, "n_steps": 64, "n_epochs": 1, "batch_size": 64}


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _train(tmp_path, algo="sb3-ppo", name="run", **kwargs):
    from rlkit import training

    kwargs.setdefault("sets", dict(TINY_SB3_PPO) if algo == "sb3-ppo" else {})
    kwargs.setdefault("eval_episodes", 2)
    kwargs.setdefault("final_eval_episodes", 3)
    run_dir = training.train(algo, "CartPole-v1", run_dir=tmp_path / name, progress=False, **kwargs)
    return run_dir, json.loads((run_dir / "run.json").read_text())


def test_sb3_ppo_is_evaluated_after_its_update(tmp_path, monkeypatch):
    """At every evaluation, SB3 PPO's policy is the one its latest train() produced."""
    import stable_baselines3 as sb3

    from rlkit import training

    trains, evals = [], []
    sb3_train = sb3.PPO.train

    def spy_train(model):
        before = _params(model)
        sb3_train(model)
        trains.append((model.num_timesteps, before, _params(model)))

    run_eval = training.TrainingCallback.run_eval

    def spy_eval(callback, num_timesteps, agent):
        evals.append((num_timesteps, _params(agent.model)))
        return run_eval(callback, num_timesteps, agent)

    monkeypatch.setattr(sb3.PPO, "train", spy_train)
    monkeypatch.setattr(training.TrainingCallback, "run_eval", spy_eval)
    _, info = _train(tmp_path, steps=512, eval_every=128)

    assert [step for step, _ in evals] == [128, 256, 384, 512]
    first_step, first_params = evals[0]
    step, before, after = trains[0]
    assert step == first_step == 128  # one rollout of 2 x 64 steps
    assert _same(first_params, after), "the first evaluation did not see the first update"
    assert not _same(first_params, before)  # ...and the update changed the policy: the check has teeth
    after_train = {step: after for step, _, after in trains}
    for step, params in evals:
        assert _same(params, after_train[step]), f"evaluation at {step} is not the policy after train()"
    assert info["steps"] == 512 and info["status"] == "finished"


def test_sb3_on_policy_stops_on_the_evaluated_step(tmp_path):
    run_dir, info = _train(tmp_path, steps=1024, eval_every=128, stop_at_return=1.0)
    assert info["status"] == "solved"
    assert info["solved_at_step"] == info["steps"] == 128  # no env step after the stop decision
    assert [e[0] for e in info["evals"]] == [128]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_128.pt"


def test_sb3_off_policy_keeps_per_step_evaluation(tmp_path):
    _, info = _train(tmp_path, algo="sb3-dqn", steps=300, eval_every=100,
                     sets={"learning_starts": 50, "train_freq": 50, "gradient_steps": 1})
    assert [e[0] for e in info["evals"]] == [100, 200, 300]


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_final_eval_comes_from_episodes_the_stop_check_never_saw(tmp_path, algo):
    sets = {"n_envs": 2, "n_steps": 64, "n_epochs": 1} if algo == "ppo" else dict(TINY_SB3_PPO)
    run_dir, info = _train(tmp_path, algo=algo, steps=512, eval_every=256, eval_episodes=4, final_eval_episodes=7,
                           sets=sets)
    stop, final = info["stop_check"], info["final_eval"]
    stop_seeds = set(range(stop["seed"], stop["seed"] + stop["episodes"]))
    final_seeds = set(range(final["seed"], final["seed"] + final["episodes"]))
    assert stop["episodes"] == 4 and final["episodes"] == 7
    assert not stop_seeds & final_seeds
    # `rlkit eval` defaults to the confirmation seeds: it reproduces final_eval from the last checkpoint.
    proc = subprocess.run([sys.executable, "-m", "cli", "eval", str(run_dir), "--episodes", "7", "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mean_return"] == pytest.approx(final["mean_return"])


def test_confirmation_seeds_stay_clear_of_a_long_stop_check(tmp_path, monkeypatch):
    from rlkit import training
    from rlkit.logger import NullLogger

    seen = []
    monkeypatch.setattr(training, "evaluate", lambda agent, env_id, episodes, seed, env_kwargs: seen.append(
        (seed, episodes)) or {"mean_return": 0.0, "std_return": 0.0, "episodes": episodes, "mean_ep_length": 1.0,
                              "reward_per_step": 0.0})
    info = {}
    callback = training.TrainingCallback(tmp_path, "CartPole-v1", {}, NullLogger(), info, eval_every=100,
                                         eval_episodes=15_000, stop_at_return=None, checkpoint_every=0)
    callback.confirm(agent=None, episodes=100)
    assert seen == [(training.EVAL_SEED + 15_000, 100)]
    assert info["final_eval"]["seed"] == training.EVAL_SEED + 15_000


def test_final_eval_is_not_training_time_and_can_be_skipped(tmp_path):
    _, info = _train(tmp_path, steps=256, eval_every=128, final_eval_episodes=0)
    assert "final_eval" not in info and info["status"] == "finished"


def test_compare_shows_the_confirmed_score(tmp_path, capsys):
    from rlkit.compare import compare

    run_dir, info = _train(tmp_path / "runs", steps=256, eval_every=128, final_eval_episodes=5)
    compare([tmp_path / "runs"], out=tmp_path / "out")
    out = capsys.readouterr().out
    assert "fresh seeds" in out
    assert f"| sb3-ppo | 1 | {info['final_eval']['mean_return']:.2f} |" in out
    # A run without a confirmation shows its last periodic evaluation, and says so.
    info.pop("final_eval")
    (run_dir / "run.json").write_text(json.dumps(info))
    compare([tmp_path / "runs"], out=tmp_path / "out")
    out = capsys.readouterr().out
    assert f"| sb3-ppo | 1 | {info['evals'][-1][2]:.2f} (1 unconfirmed: last periodic eval) |" in out


def test_sb3_reward_metrics_are_in_env_units_under_vecnormalize(tmp_path):
    from rlkit.compare import read_curve

    run_dir, _ = _train(tmp_path, steps=2048, eval_every=2048,
                        sets={"n_envs": 4, "n_steps": 64, "n_epochs": 1, "batch_size": 256, "normalize": True})
    _, per_step = read_curve(run_dir, "rollout/reward_per_step")
    assert len(per_step) and np.allclose(per_step, 1.0)  # CartPole pays exactly 1 per step
    steps, ep_rew = read_curve(run_dir, "rollout/ep_rew_mean")
    _, ep_len = read_curve(run_dir, "rollout/ep_len_mean")
    assert len(ep_rew) and np.allclose(ep_rew, ep_len)


def test_sb3_vecnormalize_discounts_with_the_entrys_gamma():
    """As in the RL Zoo, VecNormalize's return estimate uses the algorithm's gamma (not always 0.99)."""
    from rlkit import config, registry

    cls = registry.load_algo("sb3-ppo")
    cfg, _ = config.resolve(cls.Config, "sb3-ppo", "CartPole-v1", sets={"normalize": True, "gamma": 0.9})
    agent = cls("CartPole-v1", cfg, seed=0, device="cpu")
    assert agent.vecnorm.gamma == 0.9


def _bench():
    spec = importlib.util.spec_from_file_location("time_to_solve", ROOT / "bench" / "time_to_solve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_bootstrap_is_paired_by_seed():
    bench = _bench()
    base = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0])
    # Each seed's run takes exactly half the baseline's: every paired resample gives ratio 0.5.
    ratio, lo, hi = bench.ratio_of_medians(base / 2, base)
    assert ratio == lo == hi == 0.5
    med, lo, hi = bench.median_ci(base)
    assert med == 55.0 and 10.0 <= lo < med < hi <= 100.0
    med, lo, hi = bench.median_ci(np.full(10, 7.0))
    assert med == lo == hi == 7.0


def test_bench_algo_specs():
    bench = _bench()
    assert bench.parse_spec("ppo") == ("ppo", None, "ppo")
    algo, config, label = bench.parse_spec("sb3-ppo@bench/sb3_ppo_rlkit_cartpole.yaml")
    assert (algo, config.name, label) == ("sb3-ppo", "sb3_ppo_rlkit_cartpole.yaml", "sb3-ppo (rlkit hp)")
    assert config.is_file()
    assert bench.parse_spec("ppo@untuned") == ("ppo", bench.UNTUNED, "ppo (untuned)")
