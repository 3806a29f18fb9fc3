"""Collection: the episodes of one data file, played with random actions or a given policy.

A worker (rollouts.Worker) calls ``collect_file`` once per missing file with its own cached env
and, for iterative training, the policy it rebuilt from a checkpoint (artifacts.load_policy).
Every episode is seeded from (seed, episode index) alone, so a file's content does not depend
on which worker wrote it or on how many workers there are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agents.world_models import data as wmdata
from agents.world_models.frameskip import step_held


def episode_seed(seed: int, episode: int) -> int:
    # Far from the evaluator's seeds (10_000 + i) so collected episodes never replay eval episodes.
    return 1_000_000 * (seed + 1) + episode


def collect_file(spec: dict, index: int, env, act: Callable | None = None) -> tuple[int, int]:
    """Roll out the episodes of file ``index`` and write it atomically; (episodes, steps) written.

    ``act(obs, first_step) -> action`` plays the policy; without it actions are random, each held
    for ``spec["action_repeat"]`` decisions. A decision spans ``spec["frame_skip"]`` env frames
    (frameskip.py) and only decision frames are stored; ``spec["max_steps"]`` caps env frames.
    """
    skip = spec.get("frame_skip", 1)
    first = index * spec["episodes_per_file"]
    last = min(first + spec["episodes_per_file"], spec["episodes"])
    episodes = []
    for e in range(first, last):
        s = episode_seed(spec["seed"], e)
        obs, _ = env.reset(seed=s)
        env.action_space.seed(s)
        frames, actions, rewards, dones = [wmdata.preprocess(obs[None])[0]], [], [], []
        action, played = None, 0
        for t in range(-(-spec["max_steps"] // skip)):
            if act is not None:
                action = act(obs, t == 0)
            elif t % spec["action_repeat"] == 0:  # hold random actions a while: smoother exploration
                action = env.action_space.sample()
            obs, reward, terminated, truncated, n = step_held(env, action, min(skip, spec["max_steps"] - played))
            played += n
            frames.append(wmdata.preprocess(obs[None])[0])
            actions.append(np.asarray(action))
            rewards.append(float(reward))
            dones.append(bool(terminated))
            if terminated or truncated:
                break
        episodes.append({"obs": np.stack(frames), "actions": np.stack(actions),
                         "rewards": np.asarray(rewards, np.float32), "dones": np.asarray(dones)})
    return wmdata.write_file(wmdata.file_path(spec["data_dir"], index), episodes)
