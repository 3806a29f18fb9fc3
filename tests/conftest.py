import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
ROOT = Path(__file__).resolve().parent.parent


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
