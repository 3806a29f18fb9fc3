"""A user's own env on every path (rlkit/plugins.py, docs/byo_env.md): `--env module:EnvId`,
`--env-package`, `--env module:Class`; recorded in config.yaml and imported again by eval, render,
resume and every kind of worker; never by compare; a module that cannot be imported is exit 2."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, assert_one_line_error

# A user's env in a folder of its own (not in the repo, not on the Python path): a module that
# registers its id on import, and a class nobody registers.
USER_MODULE = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np


    class Hallway(gym.Env):
        """Step right to the end of a 5-cell hallway; -0.01 a step, +1 at the end (optimum 0.97)."""

        metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

        def __init__(self, render_mode=None):
            self.render_mode = render_mode
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
            self.action_space = gym.spaces.Discrete(2)
            self.pos = self.t = 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.pos = self.t = 0
            return np.array([0.0], dtype=np.float32), {}

        def step(self, action):
            self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
            self.t += 1
            done = self.pos == 4
            return (np.array([self.pos / 4], dtype=np.float32), 1.0 if done else -0.01, done,
                    self.t >= 30 and not done, {})

        def render(self):
            return np.zeros((8, 40, 3), dtype=np.uint8)


    class Unregistered(Hallway):
        """The same env, registered by nobody: --env hallway_env:Unregistered."""


    if "Hallway-v0" not in gym.registry:
        gym.register(id="Hallway-v0", entry_point=Hallway)
''')

FAST = ("--no-progress", "--quiet", "--final-eval-episodes", "5", "--eval-every", "100000")


def rlkit_bin() -> Path:
    """The installed console script: unlike `python -m cli`, it does not put the current folder on
    sys.path, as a user's `rlkit` does not."""
    path = Path(sys.executable).parent / "rlkit"
    if not path.exists():
        pytest.skip("the rlkit console script is not installed next to this Python")
    return path


def run_rlkit(cwd, *args, timeout=300, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RLKIT_ENV_PACKAGES")}
    env.update(env_extra or {})
    return subprocess.run([str(rlkit_bin()), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "mywork"
    folder.mkdir()
    (folder / "hallway_env.py").write_text(USER_MODULE)
    return folder


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_module_colon_id_trains_evals_renders_resumes_and_compares_from_other_folders(user_folder, tmp_path):
    run = tmp_path / "runs" / "hallway"
    out = ok(run_rlkit(user_folder, "train", "--algo", "ppo", "--env", "hallway_env:Hallway-v0", "--steps", "4096",
                       "--seed", "0", "--run-dir", run, *FAST))
    assert "final eval 0.97" in out, out  # the optimum: ppo learned the user's env
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["env"] == "Hallway-v0" and cfg["env_packages"] == ["hallway_env"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # eval and render find the module in the folder the run was started from (config.yaml provenance)
    assert "0.970" in ok(run_rlkit(elsewhere, "eval", run, "--episodes", "3"))
    ok(run_rlkit(elsewhere, "render", run, "--out", tmp_path / "h.gif"))
    assert (tmp_path / "h.gif").stat().st_size > 0
    assert "run " in ok(run_rlkit(elsewhere, "train", "--resume", run, "--steps", "6144", "--no-progress", "--quiet"))
    assert yaml.safe_load((run / "config.yaml").read_text())["total_steps"] == 6144
    assert "Hallway-v0" in ok(run_rlkit(elsewhere, "compare", run.parent, "--out", tmp_path / "cmp"))


def test_compare_never_imports_an_env(user_folder, tmp_path):
    run = tmp_path / "runs" / "h"
    ok(run_rlkit(user_folder, "train", "--algo", "ppo", "--env", "hallway_env:Hallway-v0", "--steps", "2048",
                 "--run-dir", run, *FAST))
    # The module is gone (and any import of it would now fail): compare only reads files.
    shutil.rmtree(user_folder)
    assert run_rlkit(tmp_path, "eval", run).returncode == 2
    assert "Hallway-v0" in ok(run_rlkit(tmp_path, "compare", run, "--out", tmp_path / "cmp"))


def test_env_package_flag_and_class_entry_point_with_spawn_workers(user_folder, tmp_path):
    run = tmp_path / "pkg"
    ok(run_rlkit(user_folder, "train", "--algo", "ppo", "--env", "Hallway-v0", "--env-package", "hallway_env",
                 "--steps", "2048", "--run-dir", run, "--workers", "2", *FAST))
    assert yaml.safe_load((run / "config.yaml").read_text())["env_packages"] == ["hallway_env"]

    run = tmp_path / "cls"
    ok(run_rlkit(user_folder, "train", "--algo", "ppo", "--env", "hallway_env:Unregistered", "--steps", "2048",
                 "--run-dir", run, "--workers", "2", *FAST))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["env"] == "Unregistered-v0" and cfg["env_packages"] == ["hallway_env:Unregistered"]
    assert "Unregistered-v0" in ok(run_rlkit(tmp_path, "eval", run, "--episodes", "1"))


def test_a3c_hogwild_workers_import_the_users_env(user_folder, tmp_path):
    run = tmp_path / "a3c"
    ok(run_rlkit(user_folder, "train", "--algo", "a3c", "--env", "hallway_env:Hallway-v0", "--steps", "3000",
                 "--run-dir", run, "--workers", "2", *FAST))
    assert "Hallway-v0" in ok(run_rlkit(tmp_path, "eval", run, "--episodes", "1"))


@pytest.mark.parametrize("env, flags, needle", [
    ("no_such_module:Foo-v0", [], "no_such_module"),
    ("hallway_env:Nope-v0", [], "registers no env 'Nope-v0'"),
    ("Hallway-v0", ["--env-package", "broken_env"], "broken_env"),
    ("Hallway-v0", ["--env-package", "not a module"], "not a module"),
    ("Hallway-v0", [], "unknown env 'Hallway-v0'"),
])
def test_a_package_that_cannot_be_imported_is_one_line_and_leaves_nothing(user_folder, tmp_path, env, flags, needle):
    (user_folder / "broken_env.py").write_text("raise RuntimeError('the user module is broken')\n")
    proc = run_rlkit(user_folder, "train", "--algo", "ppo", "--env", env, *flags, "--runs-root", tmp_path / "r",
                     "--steps", "100")
    assert_one_line_error(proc.returncode, proc.stderr, needle)
    assert not (tmp_path / "r").exists()


def test_a_module_that_raises_is_named(user_folder, tmp_path):
    (user_folder / "broken_env.py").write_text("raise RuntimeError('the user module is broken')\n")
    proc = run_rlkit(user_folder, "train", "--algo", "ppo", "--env", "broken_env:X-v0", "--steps", "100")
    assert_one_line_error(proc.returncode, proc.stderr, "broken_env", "RuntimeError", "the user module is broken")


def test_example_corridor_with_seeds_and_sb3(tmp_path):
    """The repo's own example (examples/corridor.py), as the README shows it, from the repo root."""
    out = ok(run_rlkit(ROOT, "train", "--algo", "sb3-ppo", "--env", "examples.corridor:Corridor-v0", "--steps",
                       "2048", "--seeds", "0", "1", "--runs-root", tmp_path, *FAST))
    assert "2 runs of sb3-ppo on Corridor-v0" in out
    runs = sorted((tmp_path / "Corridor-v0").iterdir())
    assert len(runs) == 2
    assert all(yaml.safe_load((r / "config.yaml").read_text())["env_packages"] == ["examples.corridor"] for r in runs)


@pytest.fixture(params=["spawn", "ray"])
def worker_backend(request):
    if request.param == "ray":
        from ray import cloudpickle

        request.getfixturevalue("ray_session")  # started before the package is imported, as a user's may be
        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this module
        request.addfinalizer(lambda: cloudpickle.unregister_pickle_by_value(sys.modules[__name__]))
        return "ray"
    return "local"


def test_workers_of_both_backends_import_the_drivers_packages(user_folder, monkeypatch, worker_backend):
    """rlkit.workers (rollout workers, A3C, World Models' collectors): spawn processes and Ray actors
    import what the driver imported, handed to them with their constructor arguments."""
    from rlkit import plugins
    from rlkit.workers import WorkerGroup

    monkeypatch.chdir(user_folder)
    monkeypatch.setenv(plugins.ENV_VAR, "")  # (conftest puts the driver's environment back afterwards too)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(plugins, "_imported", [])
    monkeypatch.setattr(plugins, "_added_paths", [])
    monkeypatch.setattr(plugins, "_searched", [])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "hallway_env", raising=False)  # another test's folder's module
    env_id, packages = plugins.resolve_env("hallway_env:Hallway-v0")
    assert (env_id, packages) == ("Hallway-v0", ["hallway_env"])
    group = WorkerGroup(EnvSpaceWorker, n_workers=2, backend=worker_backend)
    try:
        assert group.map("space", [("Hallway-v0",), ("Hallway-v0",)]) == ["Discrete(2)", "Discrete(2)"]
    finally:
        group.close()


class EnvSpaceWorker:
    def __init__(self, rank):
        self.rank = rank

    def space(self, env_id):
        import gymnasium as gym

        return str(gym.make(env_id).action_space)


@pytest.mark.slow
def test_ray_backend_workers_import_the_users_env(tmp_path):
    """The issue's failing case: `--backend ray --workers 2` on a user's env, then plain eval and compare."""
    run = tmp_path / "ray"
    out = ok(run_rlkit(ROOT, "train", "--algo", "ppo", "--env", "examples.corridor:Corridor-v0", "--steps", "4096",
                       "--backend", "ray", "--workers", "2", "--run-dir", run, *FAST, timeout=600))
    assert "final eval 0.94" in out, out
    assert yaml.safe_load((run / "config.yaml").read_text())["backend"] == "ray"
    assert "0.940" in ok(run_rlkit(tmp_path, "eval", run, "--episodes", "2"))
    assert "Corridor-v0" in ok(run_rlkit(tmp_path, "compare", run, "--out", tmp_path / "cmp"))


@pytest.mark.slow
def test_rllib_env_runners_import_the_users_env(tmp_path):
    """RLlib builds its env runners itself: they read the packages from RLKIT_ENV_PACKAGES."""
    run = tmp_path / "rllib"
    ok(run_rlkit(ROOT, "train", "--algo", "rllib-ppo", "--env", "examples.corridor:Corridor-v0", "--steps", "2000",
                 "--run-dir", run, *FAST, timeout=600))
    assert "Corridor-v0" in ok(run_rlkit(tmp_path, "eval", run, "--episodes", "1"))
