"""rlkit's custom Gymnasium environments, registered under the ``rlkit/`` namespace on import.

================================  ==========  ==============================  ===================
id                                task        observation                     action
================================  ==========  ==============================  ===================
``rlkit/GridWorld-v0``            episodic    Box one-hot cell (64,)          Discrete(4)
``rlkit/Catch-v0``                episodic    pixels uint8 (64, 64, 3)        Discrete(3)
``rlkit/Inventory-v0``            continuing  Box stock + pipeline (3,)       Discrete(6)
``rlkit/ArmReach-v0``             continuing  Box arm + target (12,)          Box [-1, 1]^2
================================  ==========  ==============================  ===================

Each id has a native numpy vector env (``gym.make_vec(id, n, vectorization_mode=
"vector_entry_point")``) that is step-for-step identical to ``SyncVectorEnv`` for the same seeds,
and each unwrapped env has ``reference() -> {"name", "score", "metric"}``.

``envs.classic_vector`` holds native numpy vector versions of Gymnasium's Acrobot-v1,
MountainCar-v0, MountainCarContinuous-v0 and Pendulum-v1 (``CLASSIC_VECTOR_IDS``), step-for-step
identical to ``SyncVectorEnv``; ``rlkit.environments.make_vec_env`` uses them for those ids.

Importing this package is cheap: the env modules (and pygame, only when rendering) are loaded
lazily through the entry-point strings.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["CLASSIC_VECTOR_IDS", "ENV_IDS", "reference", "register_envs"]

# id -> (entry point, vector entry point, max_episode_steps)
_SPECS = {
    "rlkit/GridWorld-v0": ("envs.gridworld:GridWorldEnv", "envs.gridworld:GridWorldVectorEnv", 100),
    "rlkit/Catch-v0": ("envs.catch:CatchEnv", "envs.catch:CatchVectorEnv", None),
    "rlkit/Inventory-v0": ("envs.inventory:InventoryEnv", "envs.inventory:InventoryVectorEnv", 1000),
    "rlkit/ArmReach-v0": ("envs.arm_reach:ArmReachEnv", "envs.arm_reach:ArmReachVectorEnv", 500),
}

ENV_IDS: tuple[str, ...] = tuple(_SPECS)

# Gymnasium's classic-control ids with a native vector env in envs.classic_vector (loaded on use)
CLASSIC_VECTOR_IDS: tuple[str, ...] = ("Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1")


def register_envs() -> None:
    """Register the rlkit/* ids (idempotent; Ray workers call it themselves)."""
    for env_id, (entry, vector_entry, max_steps) in _SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, vector_entry_point=vector_entry,
                         max_episode_steps=max_steps)


def reference(env_id: str, **kwargs) -> dict | None:
    """Make ``env_id`` with ``kwargs`` and return its unwrapped ``reference()`` (or None).

    ``max_episode_steps`` may be passed too: it sets the TimeLimit the reference assumes
    (GridWorld's finite horizon, ArmReach's episode length).
    """
    max_steps = kwargs.pop("max_episode_steps", None)
    env = gym.make(env_id, **kwargs)
    try:
        ref = getattr(env.unwrapped, "reference", None)
        if not callable(ref):
            return None
        if max_steps is not None and env_id in ("rlkit/GridWorld-v0", "rlkit/ArmReach-v0"):
            return ref(horizon=max_steps)
        return ref()
    finally:
        env.close()


register_envs()
