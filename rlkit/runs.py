"""Run directories: runs/<env>/<algo>__s<seed>__<time>/ with config.yaml, run.json, checkpoints/
and the ``latest`` pointer; ``load_run`` rebuilds the agent of a run for eval, render and demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from rlkit.checkpoint import atomic_write_text, load_agent_checkpoint
from rlkit.errors import UsageError

DEFAULT_ROOT = Path("runs")


def env_dirname(env_id: str) -> str:
    return env_id.replace("/", "-")


def new_run_dir(root: Path, env_id: str, algo: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / env_dirname(env_id) / f"{algo}__s{seed}__{stamp}"
    path, i = base, 1
    while path.exists():  # two runs started in the same second
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise UsageError(f"{run_dir} is not an rlkit run directory (no config.yaml)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UsageError(f"{path} is not valid YAML") from None
    if not isinstance(cfg, dict) or "algo" not in cfg or "env" not in cfg:
        raise UsageError(f"{path} is not an rlkit run config (needs algo and env)")
    return cfg


def write_run_json(run_dir: Path, info: dict) -> None:
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))


def read_run_json(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint named by checkpoints/latest (falls back to the highest step_<n>.pt)."""
    ckdir = checkpoint_dir(run_dir)
    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    latest = ckdir / "latest"
    if latest.is_file():
        path = ckdir / latest.read_text().strip()
        if path.is_file():
            return path
    candidates = sorted(ckdir.glob("step_*.pt"), key=_step_of)
    if not candidates:
        raise UsageError(f"run directory {run_dir} holds no checkpoint")
    return candidates[-1]


def _step_of(path: Path) -> int:
    try:
        return int(path.stem.split("_")[1])
    except (IndexError, ValueError):
        return -1


def mark_latest(run_dir: Path, ckpt: Path, keep: int = 3) -> None:
    ckdir = checkpoint_dir(run_dir)
    atomic_write_text(ckdir / "latest", ckpt.name)
    old = sorted(ckdir.glob("step_*.pt"), key=_step_of)[:-keep]
    for path in old:
        if path != ckpt:
            path.unlink(missing_ok=True)


def find_runs(paths) -> list[Path]:
    """Every run directory (holding run.json or config.yaml) under the given paths."""
    found = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UsageError(f"path {p} does not exist")
        if (p / "config.yaml").is_file():
            found.append(p)
            continue
        found.extend(sorted(c.parent for c in p.rglob("config.yaml")))
    return found


def load_run(run_dir: Path, device: str = "cpu"):
    """(agent, settings) for the latest checkpoint of a run directory."""
    from rlkit import registry

    settings = read_config(run_dir)
    ckpt = latest_checkpoint(run_dir)
    cls = registry.load_algo(settings["algo"])
    agent = load_agent_checkpoint(cls, ckpt, settings["env"], settings.get("env_kwargs") or {}, device,
                                  algo=settings["algo"])
    return agent, settings
