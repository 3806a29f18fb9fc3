"""Loading a trained agent from a run directory, with the checks every command needs."""

from __future__ import annotations

from pathlib import Path

from rlkit import runs
from rlkit.checkpoint import check_spaces, load_checkpoint
from rlkit.environments import make_env
from rlkit.errors import UsageError


def load_agent_checkpoint(cls, path: Path, env_id: str, env_kwargs: dict, device: str = "cpu",
                          algo: str | None = None):
    """Load ``path`` with ``cls.load`` after checking it was made by ``algo`` for this env's spaces."""
    _, meta = load_checkpoint(path)  # weights-only; corrupt or foreign files -> UsageError
    if algo is not None and meta.get("algo") != algo:
        raise UsageError(f"checkpoint {path} holds a '{meta.get('algo')}' agent, this run is '{algo}'")
    env = make_env(env_id, env_kwargs)
    try:
        check_spaces(meta, env.observation_space, env.action_space, where=f"checkpoint {path}")
    finally:
        env.close()
    return cls.load(path, device=device)


def load_run(run_dir: Path, device: str = "cpu"):
    """(agent, settings) for the latest checkpoint of a run directory."""
    from rlkit import registry

    settings = runs.read_config(run_dir)
    ckpt = runs.latest_checkpoint(run_dir)
    cls = registry.load_algo(settings["algo"])
    agent = load_agent_checkpoint(cls, ckpt, settings["env"], settings.get("env_kwargs") or {}, device,
                                  algo=settings["algo"])
    return agent, settings
