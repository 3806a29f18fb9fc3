"""TensorBoard scalars/images with the shared tags, plus a console progress bar.

Every agent (and the SB3 adapters) logs through this, so `tensorboard --logdir runs/<env>`
overlays all algorithms on one chart with x = environment steps (docs/architecture.md §5).

Each evaluation of a run is reported on the console (``evaluation``): in the progress bar's
postfix when a bar is shown (stdout is a terminal), otherwise as one line on stdout, so that a run
writing to a log file, CI or nohup says how it goes. ``echo=False`` (``--quiet``) silences it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path

import numpy as np


class Logger:
    def __init__(self, log_dir: Path | None = None, progress: bool = True, total_steps: int = 0,
                 desc: str = "train", initial_step: int = 0, echo: bool = False):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))
        self.ep_returns: deque[float] = deque(maxlen=100)
        self.ep_lengths: deque[int] = deque(maxlen=100)
        self._bar = None
        if progress and sys.stdout.isatty() and total_steps > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, desc=desc, unit="step",
                             dynamic_ncols=True, smoothing=0.1)
        self._last_step = initial_step
        self._fps_t, self._fps_step = time.perf_counter(), initial_step
        self.echo = echo
        self._eval_post: dict[str, str] = {}  # the last evaluation, kept in every postfix

    # --- scalars -------------------------------------------------------------------------
    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None and value is not None and np.isfinite(value):
            self.writer.add_scalar(tag, float(value), int(step))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def image(self, tag: str, image_hwc: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, np.asarray(image_hwc), int(step), dataformats="HWC")

    # --- episodes and progress -----------------------------------------------------------
    def episodes(self, returns, lengths) -> None:
        """Record finished episodes (from RecordEpisodeStatistics infos or our own counters)."""
        self.ep_returns.extend(float(r) for r in returns)
        self.ep_lengths.extend(int(n) for n in lengths)

    def rollout_summary(self, step: int, reward_per_step: float | None = None) -> None:
        """Write rollout/* and time/fps at ``step`` and move the progress bar there."""
        if self.ep_returns:
            self.scalar("rollout/ep_rew_mean", float(np.mean(self.ep_returns)), step)
            self.scalar("rollout/ep_len_mean", float(np.mean(self.ep_lengths)), step)
        if reward_per_step is not None:
            self.scalar("rollout/reward_per_step", reward_per_step, step)
        now = time.perf_counter()
        if now > self._fps_t and step > self._fps_step:
            self.scalar("time/fps", (step - self._fps_step) / (now - self._fps_t), step)
        self._fps_t, self._fps_step = now, step
        self.advance(step)

    def advance(self, step: int, **fields) -> None:
        if self._bar is not None:
            self._bar.update(max(0, step - self._last_step))
            post = {}
            if self.ep_returns:
                post["ret"] = f"{np.mean(self.ep_returns):.1f}"
            post.update(self._eval_post)
            post.update(fields)
            if post:
                self._bar.set_postfix(post, refresh=False)
        self._last_step = max(self._last_step, step)

    def evaluation(self, step: int, mean: float, std: float, episodes: int, best: float, elapsed: float,
                   note: str = "") -> None:
        """Report one evaluation: ``step N: eval mean ± std over k episodes, best b, elapsed s``."""
        if not self.echo:
            return
        if self._bar is not None:
            self._eval_post = {"eval": f"{mean:.1f}±{std:.1f}", "best": f"{best:.1f}"}
            self._bar.set_postfix({**({"ret": f"{np.mean(self.ep_returns):.1f}"} if self.ep_returns else {}),
                                   **self._eval_post}, refresh=True)
            return
        line = (f"step {int(step)}: eval {mean:.2f} ± {std:.2f} over {int(episodes)} episodes, best {best:.2f}, "
                f"elapsed {elapsed:.1f} s{note}")
        try:
            print(line, flush=True)
        except BrokenPipeError:  # the reader of stdout has gone: training goes on without it
            self.echo = False

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class NullLogger(Logger):
    """A logger that writes nothing: for tests and library use without a run directory."""

    def __init__(self):
        super().__init__(log_dir=None, progress=False)
