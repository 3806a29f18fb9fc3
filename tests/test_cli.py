"""CLI contract (docs/architecture.md §4): round trips, bad input -> exit 2 + one line, kill and resume."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT

TINY_PPO = ["--set", "n_envs=2", "n_steps=64", "n_epochs=1"]


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny ppo and one tiny sb3-ppo run on CartPole-v1, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo, extra in (("ppo", TINY_PPO), ("sb3-ppo", ["--set", "n_envs=2", "n_steps=64", "n_epochs=1"])):
        run_dir = root / "CartPole-v1" / algo
        proc = subprocess.run([sys.executable, "-m", "cli", "train", "--algo", algo, "--env", "CartPole-v1",
                               "--steps", "1024", "--eval-every", "512", "--eval-episodes", "2", "--run-dir",
                               str(run_dir), "--no-progress", *extra], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        out[algo] = run_dir
    return out


def test_help_is_fast_and_light():
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "train" in proc.stdout
    assert time.perf_counter() - t < 1.0
    probe = "import sys, cli; cli.build_parser(); print('torch' in sys.modules, 'ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False False"


def test_list(rlkit_cli):
    proc = rlkit_cli("list", check=True)
    assert "sb3-ppo" in proc.stdout and "ppo" in proc.stdout


# What each verb must not import (start-up time): `rlkit --help` and `rlkit list` no torch at all;
# eval and render of a ppo run neither the baselines' stacks, TensorBoard, pandas, matplotlib, nor
# torch's compiler stack (torch._dynamo, which building any torch optimizer imports).
HEAVY_FOR_EVAL = ("torch._dynamo", "sympy", "stable_baselines3", "ray", "pandas", "tensorboard",
                  "torch.utils.tensorboard", "matplotlib", "scipy")


def _imported_by(args, cwd, watch) -> list[str]:
    """Run ``rlkit ARGS`` through cli.main in a fresh interpreter; which of ``watch`` it imported."""
    probe = ("import sys, cli\ncode = cli.main(sys.argv[1:])\n"
             f"print('IMPORTED', *[m for m in {tuple(watch)!r} if m in sys.modules])\nsys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1].split()[1:]


def test_list_imports_no_torch():
    assert _imported_by(["list"], ROOT, ("torch", "ray", "stable_baselines3", "gymnasium.envs.box2d")) == []


def test_eval_and_render_of_a_ppo_run_import_only_what_they_need(trained, tmp_path):
    assert _imported_by(["eval", trained["ppo"], "--episodes", "1"], ROOT, HEAVY_FOR_EVAL) == []
    assert _imported_by(["render", trained["ppo"], "--out", tmp_path / "ep.gif"], ROOT, HEAVY_FOR_EVAL) == []
    assert (tmp_path / "ep.gif").stat().st_size > 1000


def test_torch_import_is_frozen_out_of_the_collectors_way(trained):
    """The CLI imports torch with the collector off, then freezes what the import made
    (rlkit.commands._FreezeAfterImport); the collector is on again afterwards."""
    probe = ("import gc, sys, cli\ncode = cli.main(sys.argv[1:])\n"
             "print('GC', gc.get_freeze_count(), gc.isenabled(), 'torch' in sys.modules)\nsys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", probe, "eval", str(trained["ppo"]), "--episodes", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _, frozen, enabled, torch_imported = proc.stdout.strip().splitlines()[-1].split()
    assert int(frozen) > 50_000 and enabled == "True" and torch_imported == "True"


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_run_directory_layout(trained, algo):
    run_dir = trained[algo]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 1024 and info["algo"] == algo
    assert {"mean_return", "std_return", "episodes"} <= set(info["final_eval"])
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["algo"] == algo and cfg["env"] == "CartPole-v1" and "hyperparams" in cfg and "versions" in cfg
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_1024.pt"
    assert list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_tensorboard_tags(trained, algo):
    from rlkit.compare import read_curve

    for tag in ("eval/mean_reward", "rollout/ep_rew_mean", "train/approx_kl", "train/value_loss", "time/fps"):
        steps, values = read_curve(trained[algo], tag)
        assert len(steps) > 0, f"{algo} logged no {tag}"
    steps, _ = read_curve(trained[algo], "eval/mean_reward")
    assert list(steps) == [512, 1024]  # x axis = environment steps


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_eval_render_compare_round_trip(trained, algo, rlkit_cli, tmp_path):
    proc = rlkit_cli("eval", trained[algo], "--json", "--episodes", "3", check=True)
    result = json.loads(proc.stdout)
    assert set(result) >= {"mean_return", "std_return", "episodes", "mean_ep_length", "reward_per_step"}
    assert result["episodes"] == 3 and result["mean_return"] == pytest.approx(result["mean_ep_length"])
    gif = tmp_path / "ep.gif"
    rlkit_cli("render", trained[algo], "--out", gif, check=True)
    assert gif.stat().st_size > 1000
    proc = rlkit_cli("compare", trained[algo].parent, "--out", tmp_path, check=True)
    assert "| ppo |" in proc.stdout and "| sb3-ppo |" in proc.stdout
    assert (tmp_path / "comparison.md").is_file() and (tmp_path / "comparison.png").stat().st_size > 1000


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_best_checkpoint_beside_latest(trained, algo, rlkit_cli):
    """checkpoints/best.pt is the agent of the best stop-check evaluation, for baselines as for ours."""
    run_dir = trained[algo]
    info = json.loads((run_dir / "run.json").read_text())
    assert (run_dir / "checkpoints" / "best.pt").is_file() and not list((run_dir / "checkpoints").glob("best_*"))
    assert info["best"]["mean_return"] == max(e[2] for e in info["evals"])
    result = json.loads(rlkit_cli("eval", run_dir, "--checkpoint", "best", "--episodes", "1", "--json",
                                  check=True).stdout)
    assert (result["algo"], result["env"], result["seed"]) == (algo, "CartPole-v1", 0)
    assert result["checkpoint"] == "best" and result["checkpoint_step"] == info["best"]["step"]


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_checkpoint_round_trip_gives_identical_predictions(trained, algo):
    from rlkit.runs import load_run

    agent, _ = load_run(trained[algo])
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    path = trained[algo].parent / f"{algo}-copy.pt"
    agent.save(path)
    again = type(agent).load(path)
    np.testing.assert_array_equal(agent.predict(obs), again.predict(obs))


BAD_TRAIN = [
    (["--algo", "ppoo", "--env", "CartPole-v1"], ["ppoo", "ppo"]),
    (["--algo", "ppo", "--env", "CartPol-v1"], ["CartPol-v1", "CartPole-v1"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--steps", "0"], ["--steps", "0"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--steps", "many"], ["--steps", "many"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--n-envs", "-2"], ["--n-envs", "-2"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--n-envs", "two"], ["--n-envs", "two"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--seed", "-1"], ["--seed", "-1"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--seed", "abc"], ["--seed", "abc"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "learning_rat=1e-3"], ["learning_rat", "learning_rate"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "n_epochs=lots"], ["n_epochs", "lots"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "n_epochs=1.5"], ["n_epochs", "1.5"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "objective=fastest"], ["objective", "fastest"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "novalue"], ["novalue"]),
    (["--algo", "sb3-dqn", "--env", "Pendulum-v1"], ["Discrete", "Pendulum-v1"]),
    (["--algo", "sb3-ppo", "--env", "CartPole-v1", "--set", "policy_kwargs={features_extractor_class: ResNet}"],
     ["ResNet", "PaddedNatureCNN"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--config", "missing.yaml"], ["missing.yaml"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--config", "bad.yaml"], ["bad.yaml", "YAML"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--config", "list.yaml"], ["list.yaml", "mapping"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--device", "tpu"], ["tpu"]),
    (["--resume", "no/such/run"], ["no/such/run"]),
    (["--algo", "ppo", "--env", "CartPole-v1", "--set", "use_sde=true"], ["use_sde", "continuous", "Discrete"]),
    (["--algo", "actor-critic", "--env", "CartPole-v1", "--set", "norm_clip=0"], ["norm_clip", "> 0"]),
]


@pytest.mark.parametrize("args,needles", BAD_TRAIN, ids=[" ".join(a[2:] or a) for a, _ in BAD_TRAIN])
def test_bad_train_input_exits_2_with_one_line(rlkit_cli, tmp_path, args, needles):
    (tmp_path / "bad.yaml").write_text("learning_rate: [1, 2\n  n_epochs: {\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    proc = rlkit_cli("train", *args, "--steps", "512", "--no-progress") if "--steps" not in args else \
        rlkit_cli("train", *args, "--no-progress")
    _one_line_error(proc, *needles)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml")), \
        "a rejected run left a run directory behind"


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_run_directories_exit_2(trained, rlkit_cli, tmp_path):
    _one_line_error(rlkit_cli("eval", tmp_path / "nope"), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(rlkit_cli("eval", empty), "config.yaml")
    no_ckpt = _copy_run(trained["ppo"], tmp_path / "no_ckpt")
    shutil.rmtree(no_ckpt / "checkpoints")
    _one_line_error(rlkit_cli("eval", no_ckpt), "no checkpoint")
    _one_line_error(rlkit_cli("train", "--resume", no_ckpt), "no checkpoint")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "foreign-env", "other-algo"])
def test_damaged_checkpoints_are_refused(trained, rlkit_cli, tmp_path, damage):
    run = _copy_run(trained["ppo"], tmp_path / "run")
    ckpt = run / "checkpoints" / "step_1024.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
        needle = "corrupted"
    elif damage == "garbage":
        ckpt.write_bytes(b"\x00not a checkpoint" * 100)
        needle = "corrupted"
    elif damage == "pickle":  # an arbitrary object: must never be unpickled
        import torch

        torch.save({"format": "rlkit-checkpoint-v1", "meta": {}, "state": {"evil": Path("/")}}, ckpt)
        needle = "corrupted"
    elif damage == "foreign-env":
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["env"] = "Acrobot-v1"
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        needle = "observation space"
    else:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["algo"] = "sb3-ppo"
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        needle = "'ppo' agent"
    _one_line_error(rlkit_cli("eval", run), needle)
    _one_line_error(rlkit_cli("render", run, "--out", tmp_path / "x.gif"), needle)
    assert not (tmp_path / "x.gif").exists()


def test_render_rejects_unknown_format(trained, rlkit_cli, tmp_path):
    _one_line_error(rlkit_cli("render", trained["ppo"], "--out", tmp_path / "x.avi"), "x.avi", ".gif")


def test_kill_and_resume_ends_with_exact_step_count(tmp_path):
    """SIGKILL mid-training, then --resume: same run, exactly the requested steps, no half-written files."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "40960",
           "--eval-every", "4096", "--eval-episodes", "2", "--checkpoint-every", "2048", "--run-dir", str(run_dir),
           "--no-progress", "--set", "n_envs=4", "n_steps=64", "n_epochs=4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run_dir / "checkpoints").glob("step_*.pt"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "running" and info["steps"] < 40960
    from rlkit.checkpoint import load_checkpoint

    for ckpt in (run_dir / "checkpoints").glob("step_*.pt"):  # a kill mid-write leaves only a .tmp file
        load_checkpoint(ckpt)
    resumed = subprocess.run([sys.executable, "-m", "cli", "train", "--resume", str(run_dir), "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 40960
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_40960.pt"


@pytest.mark.parametrize("algo", ["ppo", "sb3-ppo"])
def test_final_eval_is_on_seeds_the_stop_check_never_saw(trained, algo):
    info = json.loads((trained[algo] / "run.json").read_text())
    stop, final = info["stop_check"], info["final_eval"]
    assert final["episodes"] == 100  # the --final-eval-episodes default
    assert final["seed"] >= stop["seed"] + stop["episodes"] or final["seed"] + final["episodes"] <= stop["seed"]


@pytest.mark.parametrize("value", ["-1", "many"])
def test_bad_final_eval_episodes_exits_2(rlkit_cli, value):
    proc = rlkit_cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--final-eval-episodes", value, "--no-progress")
    _one_line_error(proc, "--final-eval-episodes", value)


def test_killed_and_resumed_run_ends_with_the_uninterrupted_parameters(tmp_path):
    """Exact resume through the CLI: SIGKILL after a checkpoint, --resume, and the final weights equal
    those of the same command run without interruption (the envs continue their episodes)."""
    import torch

    from rlkit.checkpoint import load_checkpoint

    def cmd(run_dir):
        return [sys.executable, "-m", "cli", "train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "16384",
                "--eval-every", "4096", "--eval-episodes", "2", "--final-eval-episodes", "2",
                "--checkpoint-every", "1024", "--run-dir", str(run_dir), "--no-progress",
                "--set", "n_envs=4", "n_steps=64", "n_epochs=4"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "checkpoints").glob("step_*.pt"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "run.json").read_text())["steps"] < 16384
    resumed = subprocess.run([sys.executable, "-m", "cli", "train", "--resume", str(killed), "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    subprocess.run(cmd(whole), cwd=ROOT, check=True, capture_output=True)
    a, _ = load_checkpoint(killed / "checkpoints" / "step_16384.pt")
    b, _ = load_checkpoint(whole / "checkpoints" / "step_16384.pt")
    for name, tensor in b["model"].items():
        assert torch.equal(a["model"][name], tensor), name


def test_untuned_trains_with_the_default_entry_alone(rlkit_cli, tmp_path):
    """`--untuned` drops the env's own entry of agents/hyperparams/<algo>.yaml, and only that; it
    sets up a new run, so --resume refuses it."""
    from rlkit.config import read_yaml

    table = read_yaml(ROOT / "agents" / "hyperparams" / "ppo.yaml")
    assert table["CartPole-v1"]["n_steps"] != table["default"]["n_steps"]  # the check below can fail
    for flags, want in (([], table["CartPole-v1"]), (["--untuned"], table["default"])):
        run_dir = tmp_path / ("untuned" if flags else "tuned")
        rlkit_cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "512", "--eval-every", "512",
                  "--eval-episodes", "1", "--final-eval-episodes", "1", "--set", "n_epochs=1",
                  "--run-dir", run_dir, "--no-progress", *flags, check=True)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        used = config["hyperparams"]
        assert used["n_steps"] == want["n_steps"] and used["learning_rate"] == want["learning_rate"]
        assert used["n_epochs"] == 1  # --set still applies on top
        assert config.get("untuned", False) == bool(flags)  # recorded, as --preset is
    _one_line_error(rlkit_cli("train", "--resume", tmp_path / "untuned", "--untuned"), "--untuned")
