"""Deterministic evaluation on a separate vector env with fixed seeds, the same for every agent."""

from __future__ import annotations

import numpy as np

from rlkit.environments import env_reference, fraction_of_reference, make_vec_env
from rlkit.framestack import agent_frame_stack

# Seeds of the episodes that score a finished run (run.json ``final_eval``) and the default of
# ``rlkit eval``. The stop check uses 10_000 + i (rlkit/training.py EVAL_SEED), so a run is never
# scored on the episodes that decided when it stopped.
CONFIRM_SEED = 20_000


def evaluate(agent, env_id: str, episodes: int = 10, seed: int = 10_000, env_kwargs: dict | None = None,
             deterministic: bool = True, reference: bool = False, max_parallel: int = 16) -> dict:
    """Run ``episodes`` episodes, copy i seeded with ``seed + i``; one episode per copy.

    Episodes run in parallel batches through ``agent.predict`` so evaluating costs little
    wall time; a recurrent agent (``agent.recurrent``) gets ``episode_start`` flags.
    """
    returns, lengths = [], []
    done_so_far = 0
    while done_so_far < episodes:
        n = min(max_parallel, episodes - done_so_far)
        batch_returns, batch_lengths = _run_batch(agent, env_id, n, seed + done_so_far, env_kwargs, deterministic)
        returns.extend(batch_returns)
        lengths.extend(batch_lengths)
        done_so_far += n
    returns_a, lengths_a = np.asarray(returns, dtype=float), np.asarray(lengths, dtype=int)
    out = {
        "mean_return": float(returns_a.mean()),
        "std_return": float(returns_a.std()),
        "episodes": int(episodes),
        "mean_ep_length": float(lengths_a.mean()),
        "reward_per_step": float(returns_a.sum() / max(1, lengths_a.sum())),
        "returns": [float(x) for x in returns_a],
    }
    if reference:
        ref = env_reference(env_id, env_kwargs)
        if ref is not None:
            out["reference"] = ref
            value = out["reward_per_step"] if ref["metric"] == "reward_per_step" else out["mean_return"]
            out["fraction_of_reference"] = fraction_of_reference(value, ref["score"])
    return out


def _run_batch(agent, env_id, n, seed, env_kwargs, deterministic):
    venv = make_vec_env(env_id, n, seed=None, env_kwargs=env_kwargs, record_stats=False,
                        frame_stack=agent_frame_stack(agent))
    try:
        obs, _ = venv.reset(seed=seed)
        ep_ret = np.zeros(n)
        ep_len = np.zeros(n, dtype=int)
        active = np.ones(n, dtype=bool)
        recurrent = getattr(agent, "recurrent", False)
        first = np.ones(n, dtype=bool)
        while active.any():
            if recurrent:
                actions = agent.predict(obs, deterministic=deterministic, episode_start=first)
            else:
                actions = agent.predict(obs, deterministic=deterministic)
            first[:] = False
            obs, rew, term, trunc, _ = venv.step(actions)
            ep_ret[active] += rew[active]
            ep_len[active] += 1
            active &= ~(term | trunc)  # each copy counts its first episode only
        return ep_ret.tolist(), ep_len.tolist()
    finally:
        venv.close()
