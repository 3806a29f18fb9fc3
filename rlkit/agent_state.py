"""State every hand-written agent saves and restores: metadata, RNGs, observation statistics."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from rlkit.checkpoint import space_signature


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
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.as_tensor(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(cached)],
            "python": repr(random.getstate())}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_gauss"][0], state["numpy_gauss"][1]))
    import ast

    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


def rms_state(rms) -> dict:
    return {"mean": torch.as_tensor(np.asarray(rms.mean, dtype=np.float64)),
            "var": torch.as_tensor(np.asarray(rms.var, dtype=np.float64)), "count": float(rms.count)}


def load_rms(rms, state: dict) -> None:
    # keep the dtype the wrapper computes in, so a loaded agent normalises bit for bit the same
    rms.mean = state["mean"].numpy().astype(np.asarray(rms.mean).dtype)
    rms.var = state["var"].numpy().astype(np.asarray(rms.var).dtype)
    rms.count = state["count"]


def normalize(obs: np.ndarray, rms, eps: float = 1e-8) -> np.ndarray:
    """Frozen observation normalisation for predict(), matching Gymnasium's NormalizeObservation."""
    return ((obs - rms.mean) / np.sqrt(rms.var + eps)).astype(np.float32)
