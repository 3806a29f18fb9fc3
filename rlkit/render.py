"""Render a run's agent: rgb_array frames to a GIF/MP4, or a pygame window.

``render_run`` reports every episode's return and length as it ends; ``--window`` checks first that
there is a display to show it on (``check_display``), so a headless machine gets exit 2 and one
line instead of episodes played into nowhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from rlkit.errors import UsageError

FORMATS = (".gif", ".mp4")


def check_display() -> None:
    """Refuse ``--window`` (UsageError, exit 2) where pygame could open no window: SDL's video driver
    set to one that draws nowhere, or, on X11/Wayland systems, no display to connect to."""
    hint = "write the episodes to a file instead: rlkit render RUN_DIR --out FILE.gif"
    driver = os.environ.get("SDL_VIDEODRIVER", "").strip().lower()
    if driver in ("dummy", "offscreen"):
        raise UsageError(f"--window needs a display, but SDL_VIDEODRIVER={driver} draws nowhere; {hint}")
    if sys.platform == "darwin" or sys.platform.startswith(("win", "cygwin")):
        return  # native window systems, no display variable
    x11, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if driver == "x11" and not x11:
        raise UsageError(f"--window needs a display: SDL_VIDEODRIVER=x11 but DISPLAY is not set; {hint}")
    if driver == "wayland" and not wayland:
        raise UsageError(f"--window needs a display: SDL_VIDEODRIVER=wayland but WAYLAND_DISPLAY is not set; {hint}")
    if not driver and not x11 and not wayland:
        raise UsageError(f"--window needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set "
                         f"(no X11 or Wayland session); {hint}")


def record_episodes(agent, env_id: str, env_kwargs: dict, episodes: int, seed: int,
                    render_mode: str = "rgb_array", max_frames: int = 5000,
                    on_episode=None) -> tuple[list[np.ndarray], list[float]]:
    """Play ``episodes`` deterministic episodes (episode i seeded ``seed + i``); frames and returns.
    ``on_episode(index, seed, episode_return, length)`` is called as each episode ends."""
    from rlkit.environments import make_env
    from rlkit.framestack import FrameStack, agent_frame_stack
    from rlkit.spaces import batch_of_one

    env = make_env(env_id, env_kwargs, render_mode=render_mode)
    k = agent_frame_stack(agent)
    if k > 1:
        env = FrameStack(env, k)
    frames, returns = [], []
    recurrent = getattr(agent, "recurrent", False)
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done, total, first, length = False, 0.0, True, 0
            while not done:
                if render_mode == "rgb_array" and len(frames) < max_frames:
                    frames.append(np.asarray(env.render()))
                batch = batch_of_one(obs)  # a dict of arrays for a Dict env, as a vector env batches it
                if recurrent:
                    action = agent.predict(batch, deterministic=True, episode_start=np.array([first]))[0]
                else:
                    action = agent.predict(batch, deterministic=True)[0]
                first = False
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
            if render_mode == "rgb_array" and len(frames) < max_frames:
                frames.append(np.asarray(env.render()))
            returns.append(total)
            if on_episode is not None:
                on_episode(ep, seed + ep, total, length)
    finally:
        env.close()
    return frames, returns


def write_video(frames: list[np.ndarray], out: Path, fps: int = 30) -> Path:
    import imageio.v2 as imageio

    from rlkit.checkpoint import atomic_write_bytes

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"--out {out}: unsupported format '{out.suffix}', accepted: {', '.join(FORMATS)}")
    # Encoded in memory, then written to a temp file in the folder and renamed. imageio never opens
    # the output itself: a writer that failed on its file (unwritable, a full disk) would try again
    # from its destructor and print a traceback after rlkit's one error line.
    if out.suffix.lower() == ".gif":
        data = imageio.mimwrite("<bytes>", frames, format=".gif", duration=1000.0 / fps, loop=0)
    else:
        data = imageio.mimwrite("<bytes>", frames, format=".mp4", fps=fps, macro_block_size=1)
    atomic_write_bytes(out, data, shared=True)  # an OSError names ``out``
    return out


GIF_MAX_SIDE = 256  # larger frames go to MP4: GIF encoding of 600x400 CartPole frames is ~20 ms a frame


def check_rgb_array(env_id: str, env_kwargs: dict, flag: str = "--video-every") -> None:
    """Refuse (UsageError, exit 2) an env that cannot render rgb_array frames, before a run starts."""
    from rlkit.environments import make_env

    env = make_env(env_id, env_kwargs)
    try:
        modes = list(env.metadata.get("render_modes") or [])
    finally:
        env.close()
    if "rgb_array" not in modes:
        raise UsageError(f"{flag}: env {env_id} does not render rgb_array frames (its render modes: "
                         f"{', '.join(map(str, modes)) or 'none'}), so there is nothing to record; leave {flag} out")


def record_training_video(agent, env_id: str, env_kwargs: dict, folder: Path, step: int, seed: int,
                          logger=None) -> Path:
    """``train --video-every``: one deterministic evaluation episode (seed ``seed``) of ``agent`` to
    ``folder/step_<step>.gif``, or ``.mp4`` where the env's frames are larger than GIF_MAX_SIDE pixels
    on a side; through ``record_episodes`` and ``write_video`` as ``rlkit render``. ``logger`` gets four
    of its frames side by side as a TensorBoard image (``eval/video_frames``): torch's ``add_video``
    does not work with moviepy 2 (docs/architecture.md §11), so the clip itself is a file only."""
    frames, _ = record_episodes(agent, env_id, env_kwargs, 1, seed)
    if not frames:
        raise RuntimeError(f"env {env_id} rendered no frames")
    suffix = ".gif" if max(np.shape(frames[0])[:2]) <= GIF_MAX_SIDE else ".mp4"
    out = write_video(frames, Path(folder) / f"step_{int(step)}{suffix}", fps=_render_fps(env_id, env_kwargs))
    if logger is not None:
        picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int)]
        stride = max(1, -(-max(np.shape(picks[0])[:2]) // GIF_MAX_SIDE))  # thumbnails, at most 256 px a side
        logger.image("eval/video_frames", np.concatenate([np.asarray(f)[::stride, ::stride, :3] for f in picks],
                                                         axis=1), int(step))
    return out


def render_run(run_dir: Path, episodes: int = 1, seed: int = 10_000, out: Path | None = None,
               window: bool = False, checkpoint: str = "latest", on_episode=None) -> Path | None:
    """Render episodes of a run's ``checkpoint`` (latest, best, step_<n>) to ``out`` or a window."""
    from rlkit.runs import load_run

    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise UsageError(f"--out {out}: unsupported format '{Path(out).suffix}', accepted: {', '.join(FORMATS)}")
    if window:
        check_display()
    agent, settings = load_run(run_dir, checkpoint=checkpoint)
    env_id, env_kwargs = settings["env"], settings.get("env_kwargs") or {}
    if window:
        try:
            record_episodes(agent, env_id, env_kwargs, episodes, seed, render_mode="human", on_episode=on_episode)
        except Exception as exc:  # noqa: BLE001  a display that was named but cannot be opened
            if type(exc).__module__.split(".")[0] != "pygame":
                raise
            from rlkit.errors import first_line

            raise UsageError(f"--window: no window could be opened ({first_line(exc)})") from None
        return None
    frames, _ = record_episodes(agent, env_id, env_kwargs, episodes, seed, on_episode=on_episode)
    fps = _render_fps(env_id, env_kwargs)
    return write_video(frames, out or Path(run_dir) / "videos" / "episode.gif", fps=fps)


def _render_fps(env_id: str, env_kwargs: dict) -> int:
    from rlkit.environments import make_env

    env = make_env(env_id, env_kwargs)
    try:
        return int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
