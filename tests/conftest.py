import os
import signal
import sys
from pathlib import Path

import pytest

# A test run started in the background by a script without job control (`make test &`) inherits
# SIGINT ignored, and so would the CLI subprocesses the Ctrl-C tests interrupt: Python installs its
# KeyboardInterrupt handler only when SIGINT is not ignored at start-up. Give it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _env_packages_stay_in_their_test():
    """rlkit.plugins hands the env packages a process imported on to the processes it starts, through
    os.environ (RLKIT_ENV_PACKAGES, PYTHONPATH): one test's user module must not follow later tests'
    subprocesses, which could not import it. Put both, and the module's record, back after each test."""
    from rlkit import plugins

    names = (plugins.ENV_VAR, "PYTHONPATH")
    saved_env = {name: os.environ.get(name) for name in names}
    saved = [list(plugins._imported), list(plugins._added_paths), list(plugins._searched)]
    yield
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    plugins._imported[:], plugins._added_paths[:], plugins._searched[:] = saved


@pytest.fixture
def rlkit_cli(tmp_path):
    """Run `python -m cli ...` in a subprocess from tmp_path; returns CompletedProcess."""
    import subprocess

    def run(*args, timeout=300, check=False):
        proc = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if check and proc.returncode != 0:
            raise AssertionError(f"rlkit {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def main_in_process(capsys, *args) -> tuple[int, str, str]:
    """``rlkit ARGS`` in this process, as the console script runs it: (exit code, stdout, stderr)."""
    import cli

    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *needles) -> None:
    """Bad input: exit 2, one line on stderr naming each needle, no traceback."""
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (two CPUs, loopback, no dashboard) for every Ray test of the session, started
    through rlkit.workers.start_ray and shut down when the session ends."""
    ray = pytest.importorskip("ray")
    from rlkit.workers import start_ray

    started = start_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


class SolveCallback:
    """``on_step(num_timesteps, agent)``: evaluate every ``every`` steps; False (stop) once solved."""

    def __init__(self, env_id: str, threshold: float, every: int, episodes: int, env_kwargs: dict | None = None):
        self.env_id, self.threshold, self.every, self.episodes = env_id, threshold, every, episodes
        self.env_kwargs = env_kwargs or {}
        self.next_eval = every
        self.history: list[tuple[int, float]] = []
        self.solved_at: int | None = None

    def on_step(self, num_timesteps: int, agent) -> bool:
        if num_timesteps < self.next_eval:
            return True
        from rlkit.evaluation import evaluate
        from rlkit.training import EVAL_SEED

        self.next_eval = (num_timesteps // self.every + 1) * self.every
        mean = evaluate(agent, self.env_id, self.episodes, seed=EVAL_SEED, env_kwargs=self.env_kwargs)["mean_return"]
        self.history.append((num_timesteps, round(mean, 1)))
        if mean >= self.threshold:
            self.solved_at = num_timesteps
            return False
        return True
