"""Checkpoints: the file format, the metadata that rebuilds an agent, RNG state, loading with checks.

A checkpoint file holds ``{"format": FORMAT, "meta": {...}, "state": {name: state_dict}}``.
``torch.load(weights_only=True)`` accepts exactly that (tensors, numbers, strings, lists,
dicts), so a file someone hands you can never run code when it is loaded. Files are written
atomically (temp file, fsync, ``os.replace``), so a kill never leaves half a checkpoint.
Running statistics live in rlkit.normalization; the run directory's ``latest`` pointer in rlkit.runs.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from rlkit.errors import UsageError

FORMAT = "rlkit-checkpoint-v1"


def atomic_write_bytes(path: Path, data: bytes, shared: bool = False) -> None:
    """Write to a temp file in the same folder, fsync, then os.replace: never half-written.
    The file is private to its owner (mkstemp's 0600) unless ``shared``: then it gets the mode a
    plain ``open`` would give it (0666 less the umask), as for videos and comparison charts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _name_the_file(exc, path)
        raise
    try:
        if shared:
            umask = os.umask(0o022)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            _name_the_file(exc, path)
        raise


def _name_the_file(exc: OSError, path: Path) -> None:
    """Make the error name the file being written (a full disk's names none; mkstemp's, the temp file),
    so that callers can tell their output file failed (rlkit/commands.py ``_output_errors``)."""
    if exc.filename is None or Path(exc.filename).parent == path.parent:
        exc.filename = str(path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def space_signature(space) -> dict:
    """A JSON description of a Gymnasium space, compared on load to refuse a mismatched env."""
    from gymnasium import spaces

    # Lists, never tuples, and a "start" only where it is not 0: the signatures older checkpoints
    # recorded compare equal to these.
    if isinstance(space, spaces.Discrete):
        out = {"type": "Discrete", "n": int(space.n)}
        if int(space.start) != 0:
            out["start"] = int(space.start)
        return out
    if isinstance(space, spaces.MultiDiscrete):
        out = {"type": "MultiDiscrete", "nvec": [int(n) for n in space.nvec.ravel()]}
        if space.nvec.ndim != 1:
            out["shape"] = list(space.nvec.shape)
        if space.start.any():
            out["start"] = [int(s) for s in space.start.ravel()]
        return out
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "shape": list(space.shape)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": [[str(k), space_signature(s)] for k, s in space.spaces.items()]}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_signature(s) for s in space.spaces]}
    return {"type": type(space).__name__, "repr": repr(space)}


def save_checkpoint(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Save ``state`` (name -> state_dict / tensor / plain value) and JSON-able ``meta``."""
    import io

    import torch

    json.dumps(meta)  # fail early and loudly if meta is not plain data
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "meta": meta, "state": state}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a checkpoint weights-only. Bad files raise UsageError (exit 2), never unpickle code."""
    import torch

    path = Path(path)
    if not path.is_file():
        what = ("is a directory, not a checkpoint file" if path.is_dir() else
                "is not a regular file" if path.exists() else "does not exist")
        raise UsageError(f"checkpoint {path} {what}")
    if path.stat().st_size == 0:
        raise UsageError(f"checkpoint {path} is empty (0 bytes): not an rlkit checkpoint")
    try:
        # Tensors land on the CPU unless a concrete device is named; agents move them to theirs.
        blob = torch.load(path, map_location="cpu" if device == "auto" else device, weights_only=True)
    except Exception as exc:  # truncated, corrupted, or holding pickled objects
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"checkpoint {path} is corrupted or not an rlkit checkpoint ({first[:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UsageError(f"checkpoint {path} is not an rlkit checkpoint (expected format {FORMAT})")
    return blob["state"], blob["meta"]


def check_spaces(meta: dict, observation_space, action_space, where: str = "checkpoint") -> None:
    """Refuse a checkpoint whose recorded spaces differ from the env's."""
    want_obs, want_act = meta.get("observation_space"), meta.get("action_space")
    got_obs, got_act = space_signature(observation_space), space_signature(action_space)
    if want_obs is not None and want_obs != got_obs:
        raise UsageError(f"{where} was trained on observation space {want_obs}, this env has {got_obs}")
    if want_act is not None and want_act != got_act:
        raise UsageError(f"{where} was trained on action space {want_act}, this env has {got_act}")


def agent_meta(algo: str, agent, **extra) -> dict:
    """JSON-able metadata: enough to rebuild the agent (config, env, seed) and to refuse a wrong env."""
    meta = {"algo": algo, "env_id": agent.env_id, "env_kwargs": agent.env_kwargs, "seed": agent.seed,
            "config": dataclasses.asdict(agent.config), "num_timesteps": int(agent.num_timesteps),
            "observation_space": space_signature(agent.observation_space),
            "action_space": space_signature(agent.action_space)}
    meta.update(extra)
    return meta


def rng_state() -> dict:
    """Python, numpy and torch global RNG states as plain data (weights-only loadable)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.as_tensor(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(cached)],
            "python": repr(random.getstate())}


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_gauss"][0], state["numpy_gauss"][1]))
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


# Metadata every agent's ``save`` writes and its ``load`` reads: (key, check, what it must be).
REQUIRED_META = (
    ("algo", lambda v: isinstance(v, str), "a string"),
    ("env_id", lambda v: isinstance(v, str), "a string"),
    ("config", lambda v: isinstance(v, dict), "a mapping"),
    ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    ("num_timesteps", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
)


def check_meta(meta, path: Path) -> None:
    """Refuse a checkpoint whose format is right but whose metadata an agent could not be rebuilt from."""
    if not isinstance(meta, dict):
        raise UsageError(f"checkpoint {path} has no metadata")
    for key, ok, what in REQUIRED_META:
        if key not in meta:
            raise UsageError(f"checkpoint {path} is incomplete: its metadata has no '{key}'")
        if not ok(meta[key]):
            raise UsageError(f"checkpoint {path} is damaged: metadata '{key}' = {meta[key]!r} is not {what}")
    if not isinstance(meta.get("env_kwargs") or {}, dict):
        raise UsageError(f"checkpoint {path} is damaged: metadata 'env_kwargs' is not a mapping")


def load_agent_checkpoint(cls, path: Path, env_id: str, env_kwargs: dict, device: str = "cpu",
                          algo: str | None = None):
    """Load ``path`` with ``cls.load`` after checking it was made by ``algo`` for this env's spaces.

    A file whose metadata is incomplete, or whose tensors do not fit the agent its metadata
    describes (renamed, missing or reshaped), is refused with UsageError (exit 2)."""
    from rlkit.environments import make_env

    _, meta = load_checkpoint(path)  # weights-only; corrupt or foreign files -> UsageError
    check_meta(meta, path)
    if algo is not None and meta.get("algo") != algo:
        raise UsageError(f"checkpoint {path} holds a '{meta.get('algo')}' agent, this run is '{algo}'")
    env = make_env(env_id, env_kwargs)
    try:
        check_spaces(meta, env.observation_space, env.action_space, where=f"checkpoint {path}")
    finally:
        env.close()
    try:
        return cls.load(path, device=device)
    except UsageError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        # What a state dict that does not match its model raises (torch: RuntimeError on shapes,
        # KeyError on missing entries; plain values of the wrong kind: TypeError / ValueError).
        reason = " ".join(str(exc).split()) or type(exc).__name__  # torch's report spans lines
        raise UsageError(f"checkpoint {path} does not fit a {meta['algo']} agent for {meta['env_id']} "
                         f"({type(exc).__name__}: {reason[:240]})") from None
