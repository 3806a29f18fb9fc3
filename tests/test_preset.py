"""Named presets (issue 36 item 1): an agents/hyperparams/<algo>.yaml entry keyed `<env id>@<name>` that
`rlkit train --preset NAME` takes instead of the env's own entry (docs/configuration.md, "Presets").

Every test reads a hyperparams folder of its own (rlkit.config.HYPERPARAMS_DIR monkeypatched), so the
lead's real presets can change without touching these tests; the CLI runs in-process for that reason."""

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, assert_one_line_error, main_in_process

PPO_YAML = textwrap.dedent("""
    default:
      n_envs: 2
      n_steps: 32
      n_epochs: 1
      batch_size: 32
      learning_rate: 1.0e-3
    CartPole-v1:
      n_steps: 64
      batch_size: 64
      learning_rate: 2.0e-3
      gamma: 0.98
    CartPole-v1@fast:
      n_steps: 16
      learning_rate: 3.0e-3
    Acrobot-v1@fast:
      n_steps: 16
    CartPole-v1@big:
      n_envs: 4
""")
SB3_PPO_YAML = textwrap.dedent("""
    default:
      n_envs: 1
      policy: MlpPolicy
    CartPole-v1:
      n_envs: 8
      n_steps: 32
    CartPole-v1@fast:
      n_steps: 16
      learning_rate: lin_0.001
""")
TINY = ("--steps", "64", "--eval-every", "64", "--eval-episodes", "1", "--final-eval-episodes", "1",
        "--no-progress", "--quiet")


@pytest.fixture
def hyperparams(tmp_path, monkeypatch):
    """A hyperparams folder with ppo.yaml and sb3-ppo.yaml presets; the folder is returned."""
    from rlkit import config

    folder = tmp_path / "hyperparams"
    folder.mkdir()
    (folder / "ppo.yaml").write_text(PPO_YAML)
    (folder / "sb3-ppo.yaml").write_text(SB3_PPO_YAML)
    monkeypatch.setattr(config, "HYPERPARAMS_DIR", folder)
    return folder


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_yaml_entry_takes_the_preset_instead_of_the_env_entry(hyperparams):
    from rlkit.config import list_presets, yaml_entry

    table = yaml.safe_load(PPO_YAML)
    assert yaml_entry("ppo", "CartPole-v1") == {**table["default"], **table["CartPole-v1"]}
    fast = yaml_entry("ppo", "CartPole-v1", preset="fast")
    assert fast == {**table["default"], **table["CartPole-v1@fast"]}
    assert "gamma" not in fast and fast["batch_size"] == 32  # not layered on the env's entry
    assert yaml_entry("ppo", "CartPole-v1", untuned=True) == table["default"]
    assert list_presets("ppo") == {"CartPole-v1": ["fast", "big"], "Acrobot-v1": ["fast"]}
    assert list_presets("reinforce") == {}  # no file in this folder


def test_preset_run_records_the_preset_and_its_values(hyperparams, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--preset", "fast",
                                   "--set", "learning_rate=0.004", "--run-dir", run, *TINY)
    assert code == 0, err
    cfg = _config(run)
    assert cfg["preset"] == "fast"
    hp = cfg["hyperparams"]
    assert hp["n_steps"] == 16  # the preset's
    assert hp["batch_size"] == 32 and hp["gamma"] == 0.99  # the default's, not CartPole-v1's 64 and 0.98
    assert hp["learning_rate"] == 0.004  # --set over the preset

    # eval rebuilds the same agent; --resume keeps the preset and its values, and refuses --preset
    code, out, err = main_in_process(capsys, "eval", run, "--episodes", "1")
    assert code == 0 and "ppo on CartPole-v1" in out, err
    code, _, err = main_in_process(capsys, "train", "--resume", run, "--steps", "128", "--no-progress", "--quiet")
    assert code == 0, err
    again = _config(run)
    assert again["preset"] == "fast" and again["hyperparams"] == hp and again["total_steps"] == 128
    code, _, err = main_in_process(capsys, "train", "--resume", run, "--preset", "fast")
    assert_one_line_error(code, err, "--preset")


def test_a_run_without_preset_records_none(hyperparams, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--run-dir", run, *TINY)
    assert code == 0, err
    cfg = _config(run)
    assert "preset" not in cfg and cfg["hyperparams"]["n_steps"] == 64 and cfg["hyperparams"]["gamma"] == 0.98


def test_seeds_train_every_seed_with_the_preset(hyperparams, tmp_path, capsys):
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--preset", "big",
                                   "--seeds", "0", "1", "--runs-root", tmp_path / "runs", *TINY)
    assert code == 0, err
    configs = [_config(p.parent) for p in (tmp_path / "runs" / "CartPole-v1").glob("*/config.yaml")]
    assert len(configs) == 2
    assert all(c["preset"] == "big" and c["hyperparams"]["n_envs"] == 4 for c in configs)


@pytest.mark.parametrize("env, preset, needles", [
    ("CartPole-v1", "slow", ["ppo", "CartPole-v1", "'slow'", "fast, big"]),
    ("Pendulum-v1", "fast", ["ppo", "Pendulum-v1", "'fast'", "none"]),
])
def test_an_unknown_preset_exits_2_and_writes_nothing(hyperparams, tmp_path, capsys, env, preset, needles):
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", env, "--preset", preset,
                                   "--runs-root", tmp_path / "runs", *TINY)
    assert_one_line_error(code, err, "--preset", *needles)
    assert not (tmp_path / "runs").exists()


def test_preset_and_untuned_together_is_a_usage_error(hyperparams, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--preset", "fast",
                                   "--untuned", "--run-dir", run, *TINY)
    assert_one_line_error(code, err, "--preset", "--untuned")
    assert not run.exists()


@pytest.mark.parametrize("name", ["", "a@b", "has space"])
def test_a_bad_preset_name_is_a_usage_error(hyperparams, capsys, name):
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1", "--preset", name, *TINY)
    assert_one_line_error(code, err, "--preset")


@pytest.mark.parametrize("key", ["Foo@", "@fast", "CartPole-v1@a@b"])
def test_a_malformed_preset_key_is_a_usage_error_when_read(hyperparams, tmp_path, capsys, key):
    (hyperparams / "ppo.yaml").write_text(PPO_YAML + f"'{key}':\n  n_steps: 8\n")  # quoted: @ starts no plain YAML key
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "CartPole-v1",
                                   "--runs-root", tmp_path / "runs", *TINY)
    assert_one_line_error(code, err, f"'{key}'", "malformed")
    assert not (tmp_path / "runs").exists()
    code, _, err = main_in_process(capsys, "list")
    assert_one_line_error(code, err, f"'{key}'")


def test_list_names_the_presets(hyperparams, capsys):
    code, out, err = main_in_process(capsys, "list")
    assert code == 0, err
    lines = out.splitlines()
    ppo = next(i for i, line in enumerate(lines) if line.split()[:1] == ["ppo"])
    assert lines[ppo + 1].split() == ["presets:", "CartPole-v1@fast,", "CartPole-v1@big,", "Acrobot-v1@fast"]
    sb3 = next(i for i, line in enumerate(lines) if line.split()[:1] == ["sb3-ppo"])
    assert lines[sb3 + 1].split() == ["presets:", "CartPole-v1@fast"]
    assert sum("presets:" in line for line in lines) == 2  # nothing for the algorithms without presets


def test_sb3_baselines_take_presets(hyperparams):
    from rlkit.baselines.sb3 import SB3PPO
    from rlkit.config import resolve

    cfg, _ = resolve(SB3PPO.Config, "sb3-ppo", "CartPole-v1", preset="fast")
    assert (cfg.n_steps, cfg.learning_rate, cfg.n_envs) == (16, "lin_0.001", 1)  # n_envs: default, not 8


def test_a_plugin_env_looks_its_preset_up_by_its_canonical_id(hyperparams, tmp_path, monkeypatch, capsys):
    (tmp_path / "preset_user_env.py").write_text(textwrap.dedent("""
        import gymnasium as gym

        if "PresetCart-v0" not in gym.registry:
            gym.register(id="PresetCart-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                         max_episode_steps=50)
    """))
    with open(hyperparams / "ppo.yaml", "a") as f:
        f.write("PresetCart-v0@fast:\n  n_steps: 8\n")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code, _, err = main_in_process(capsys, "train", "--algo", "ppo", "--env", "preset_user_env:PresetCart-v0",
                                   "--preset", "fast", "--run-dir", run, *TINY)
    assert code == 0, err
    cfg = _config(run)
    assert cfg["env"] == "PresetCart-v0" and cfg["preset"] == "fast" and cfg["hyperparams"]["n_steps"] == 8


def test_python_api_takes_preset(hyperparams, tmp_path):
    import rlkit
    from rlkit.errors import UsageError

    agent = rlkit.make_agent("ppo", "CartPole-v1", preset="fast", device="cpu")
    try:
        assert agent.config.n_steps == 16 and agent.config.batch_size == 32
    finally:
        agent.close()
    run = rlkit.train("ppo", "CartPole-v1", preset="fast", steps=64, eval_every=64, eval_episodes=1,
                      final_eval_episodes=1, runs_root=tmp_path / "runs", device="cpu", n_epochs=2)
    cfg = _config(run)
    assert cfg["preset"] == "fast" and cfg["hyperparams"]["n_steps"] == 16 and cfg["hyperparams"]["n_epochs"] == 2
    with pytest.raises(UsageError, match="no preset 'slow'"):
        rlkit.make_agent("ppo", "CartPole-v1", preset="slow")


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import time_to_solve
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return time_to_solve


def test_time_to_solve_rows_take_a_preset(hyperparams, tmp_path, monkeypatch):
    import json
    import subprocess
    import types

    bench = _bench()
    algo, config, label = bench.parse_spec("ppo@preset:fast")
    assert (algo, label, bench.preset_of(config)) == ("ppo", "ppo@fast", "fast")
    assert bench.check_spec(algo, config, label, "CartPole-v1") is None
    problem = bench.check_spec("ppo", "preset:slow", "ppo@slow", "CartPole-v1")
    assert "ppo@slow" in problem and "fast, big" in problem
    assert bench.parse_spec("ppo@untuned")[1] == bench.UNTUNED  # the other rows are as they were

    seen = []

    def fake_run(cmd, **kwargs):  # what run_one asks `rlkit train` for, and a run.json it would write
        seen.append(cmd)
        run_dir = Path(cmd[cmd.index("--run-dir") + 1])
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"steps": 64, "wall_s": 1.0}))
        return types.SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    args = types.SimpleNamespace(runs_root=str(tmp_path / "runs"), env="CartPole-v1", tag="", threshold=475.0,
                                 eval_every=64, eval_episodes=1, final_eval_episodes=1, steps=64, baseline_threads=1)
    row = bench.run_one(algo, config, label, 20, args)
    cmd = seen[0]
    assert cmd[cmd.index("--preset") + 1] == "fast" and "--config" not in cmd and "--untuned" not in cmd
    assert row["label"] == "ppo@fast" and "preset-fast" in row["run_dir"]
