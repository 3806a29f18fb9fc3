"""Render a run's agent: rgb_array frames to a GIF/MP4, or a pygame window."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rlkit.errors import UsageError

FORMATS = (".gif", ".mp4")


def record_episodes(agent, env_id: str, env_kwargs: dict, episodes: int, seed: int,
                    render_mode: str = "rgb_array", max_frames: int = 5000) -> tuple[list[np.ndarray], list[float]]:
    from rlkit.environments import make_env
    from rlkit.framestack import FrameStack, agent_frame_stack

    env = make_env(env_id, env_kwargs, render_mode=render_mode)
    k = agent_frame_stack(agent)
    if k > 1:
        env = FrameStack(env, k)
    frames, returns = [], []
    recurrent = getattr(agent, "recurrent", False)
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done, total, first = False, 0.0, True
            while not done:
                if render_mode == "rgb_array" and len(frames) < max_frames:
                    frames.append(np.asarray(env.render()))
                batch = np.asarray(obs)[None]
                if recurrent:
                    action = agent.predict(batch, deterministic=True, episode_start=np.array([first]))[0]
                else:
                    action = agent.predict(batch, deterministic=True)[0]
                first = False
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            if render_mode == "rgb_array" and len(frames) < max_frames:
                frames.append(np.asarray(env.render()))
            returns.append(total)
    finally:
        env.close()
    return frames, returns


def write_video(frames: list[np.ndarray], out: Path, fps: int = 30) -> Path:
    import imageio.v2 as imageio

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"--out {out}: unsupported format '{out.suffix}', accepted: {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        if out.suffix.lower() == ".gif":
            imageio.mimsave(tmp, frames, duration=1000.0 / fps, loop=0)
        else:
            imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def render_run(run_dir: Path, episodes: int = 1, seed: int = 10_000, out: Path | None = None,
               window: bool = False) -> Path | None:
    from rlkit.runs import load_run

    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise UsageError(f"--out {out}: unsupported format '{Path(out).suffix}', accepted: {', '.join(FORMATS)}")
    agent, settings = load_run(run_dir)
    env_id, env_kwargs = settings["env"], settings.get("env_kwargs") or {}
    if window:
        record_episodes(agent, env_id, env_kwargs, episodes, seed, render_mode="human")
        return None
    frames, _ = record_episodes(agent, env_id, env_kwargs, episodes, seed)
    fps = _render_fps(env_id, env_kwargs)
    return write_video(frames, out or Path(run_dir) / "videos" / "episode.gif", fps=fps)


def _render_fps(env_id: str, env_kwargs: dict) -> int:
    from rlkit.environments import make_env

    env = make_env(env_id, env_kwargs)
    try:
        return int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
