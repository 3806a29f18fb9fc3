"""Catch: falling balls with horizontal drift and a paddle; pixel (numpy-drawn) or vector obs."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from envs._vector import NativeVectorEnv, check_bool, check_choice, check_int, check_render_mode

BALL_COLOR = np.array([255, 255, 255], dtype=np.uint8)
PADDLE_COLOR = np.array([0, 170, 255], dtype=np.uint8)
_POOL_SIZE = 3  # recycled frame buffers per vector env


def _calibrate_free_refs() -> int:
    """sys.getrefcount of an array referenced only by a pooled view's ``.base``."""
    pool = [np.zeros(4).reshape(2, 2)]
    for view in pool:
        return sys.getrefcount(view.base)
    return -1  # pragma: no cover


def landing_column(ball_x, ball_y, ball_vx, rows: int, cols: int):
    """Column where the ball reaches the bottom row, bounces off the side walls included.

    Works on ints or integer arrays.
    """
    remaining = (rows - 1) - np.asarray(ball_y)
    if cols == 1:
        return np.zeros_like(np.asarray(ball_x))
    period = 2 * (cols - 1)
    x = np.mod(np.asarray(ball_x) + np.asarray(ball_vx) * remaining, period)
    return np.where(x > cols - 1, period - x, x)


def tracker_action(obs, rows: int = 16, cols: int = 16):
    """Scripted optimal tracker from the *vector* observation (one obs or a batch).

    Predicts where the ball lands (bounces included) and moves the paddle towards it:
    0 left, 1 stay, 2 right. Catches every ball (every ball is catchable by design).
    For pixel observations use ``env.unwrapped.tracker_action()`` (it reads the state).
    """
    obs = np.asarray(obs, dtype=np.float64)
    bx = np.rint(obs[..., 0] * (cols - 1)).astype(np.int64)
    by = np.rint(obs[..., 1] * (rows - 1)).astype(np.int64)
    vx = np.rint(obs[..., 2]).astype(np.int64)
    px = np.rint(obs[..., 3] * (cols - 1)).astype(np.int64)
    return _tracker(bx, by, vx, px, rows, cols)


def _tracker(bx, by, vx, px, rows, cols):
    target = landing_column(bx, by, vx, rows, cols)
    return (1 + np.sign(target - px)).astype(np.int64)


class _CatchParams:
    def _setup(self, rows, cols, cell_px, n_balls, paddle_width, drift, obs_type, render_mode):
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.rows = check_int("rows", rows, 2, 1024)
        self.cols = check_int("cols", cols, 2, 1024)
        self.cell_px = check_int("cell_px", cell_px, 1, 64)
        if self.rows * self.cell_px > 1024 or self.cols * self.cell_px > 1024:
            raise ValueError(f"frames of rows*cell_px x cols*cell_px = {self.rows * self.cell_px} x "
                             f"{self.cols * self.cell_px} pixels are too large: at most 1024 x 1024")
        self.n_balls = check_int("n_balls", n_balls, 1)
        self.paddle_width = check_int("paddle_width", paddle_width, 1, self.cols)
        if self.paddle_width % 2 == 0:
            raise ValueError(f"paddle_width must be odd (the paddle is centred on a cell), "
                             f"got {paddle_width}")
        self.drift = check_bool("drift", drift)
        self.obs_type = check_choice("obs_type", obs_type, ("pixels", "vector"))
        self.half = self.paddle_width // 2
        if self.cols - 1 - 2 * self.half > self.rows - 1:
            raise ValueError(
                f"cols={self.cols} too wide for rows={self.rows} and paddle_width={self.paddle_width}: "
                f"every ball must be catchable, which needs cols <= rows + paddle_width - 1 "
                f"(= {self.rows + self.paddle_width - 1})")
        self.pmin, self.pmax = self.half, self.cols - 1 - self.half
        self.height, self.width = self.rows * self.cell_px, self.cols * self.cell_px
        if self.obs_type == "pixels":
            self._obs_space = spaces.Box(0, 255, shape=(self.height, self.width, 3), dtype=np.uint8)
        else:
            low = np.array([0.0, 0.0, -1.0, 0.0], dtype=np.float32)
            self._obs_space = spaces.Box(low, np.ones(4, dtype=np.float32), dtype=np.float32)
        self._xs = 1.0 / max(self.cols - 1, 1)
        self._ys = 1.0 / (self.rows - 1)
        self._nvx = 3 if self.drift else 1

    def _kwargs(self):
        return {"rows": self.rows, "cols": self.cols, "cell_px": self.cell_px, "n_balls": self.n_balls,
                    "paddle_width": self.paddle_width, "drift": self.drift, "obs_type": self.obs_type}


class CatchEnv(_CatchParams, gym.Env):
    """Catch falling balls with a paddle.

    ## Description
    One ball at a time falls from the top row of a ``rows x cols`` grid (default 16 x 16), one
    row per step, starting in a random column with a random horizontal drift of -1, 0 or +1
    columns per step (bouncing off the side walls; ``drift=False`` makes it fall straight).
    The paddle (``paddle_width`` = 3 cells) lives on the bottom row. Each step the paddle moves
    first, then the ball. When the ball reaches the bottom row it is caught if it is over the
    paddle, and the next ball appears in the top row. By construction every ball is catchable
    (``cols <= rows + paddle_width - 1`` is enforced).

    ## Action Space
    ``Discrete(3)``: 0 move left, 1 stay, 2 move right (one cell, clipped at the walls).

    ## Observation Space
    ``obs_type="pixels"`` (default): ``Box(0, 255, (rows*cell_px, cols*cell_px, 3), uint8)``,
    64 x 64 x 3 by default, drawn with numpy (no pygame): black background, white ball, blue
    paddle, each cell ``cell_px`` x ``cell_px`` pixels. ``obs_type="vector"``:
    ``Box([0, 0, -1, 0], [1, 1, 1, 1], (4,), float32)`` = ball column / (cols-1), ball row /
    (rows-1), ball drift, paddle column / (cols-1).

    ## Rewards
    +1 when a ball is caught, -1 when one is missed, 0 otherwise.

    ## Starting State
    Paddle in the middle column; first ball as described above.

    ## Episode End
    Termination after ``n_balls`` (10) balls, i.e. after exactly ``n_balls * (rows - 1)``
    steps (150 by default). No TimeLimit is registered: the length is fixed by design.

    ## Reference
    ``reference()``: the optimal return, ``n_balls`` (every ball is catchable). The scripted
    tracker that achieves it is :func:`tracker_action` (vector obs) and
    ``env.unwrapped.tracker_action()`` (any obs type; reads the state).

    ## Randomness
    Two ``self.np_random.random()`` doubles per new ball (column, drift), at reset and whenever
    a ball lands before the last one.

    ## Arguments
    ``rows=16``, ``cols=16``, ``cell_px=4``, ``n_balls=10``, ``paddle_width=3``, ``drift=True``,
    ``obs_type="pixels"``, ``render_mode=None``.

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 15, "task": "episodic",
    }

    def __init__(self, rows: int = 16, cols: int = 16, cell_px: int = 4, n_balls: int = 10,
                 paddle_width: int = 3, drift: bool = True, obs_type: str = "pixels",
                 render_mode: str | None = None):
        self._setup(rows, cols, cell_px, n_balls, paddle_width, drift, obs_type, render_mode)
        self.render_mode = render_mode
        self.observation_space = self._obs_space
        self.action_space = spaces.Discrete(3)
        self.state: tuple[int, int, int, int] | None = None  # ball x, ball y, ball vx, paddle x
        self.balls_done = 0
        self.score = 0
        self._canvas = None

    def _spawn(self) -> tuple[int, int, int]:
        u1 = self.np_random.random()
        u2 = self.np_random.random()
        return int(u1 * self.cols), 0, int(u2 * self._nvx) - (self._nvx // 2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        bx, by, vx = self._spawn()
        self.state = (bx, by, vx, self.cols // 2)
        self.balls_done = 0
        self.score = 0
        if self.render_mode == "human":
            self.render()
        return self._obs(), {}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("Cannot call step() before reset()")
        a = int(action)
        if not 0 <= a < 3:
            raise ValueError(f"action must be in {{0, 1, 2}}, got {action!r}")
        bx, by, vx, px = self.state
        px = min(max(px + a - 1, self.pmin), self.pmax)
        bx += vx
        if bx < 0:
            bx, vx = -bx, -vx
        elif bx > self.cols - 1:
            bx, vx = 2 * (self.cols - 1) - bx, -vx
        by += 1
        reward, terminated = 0.0, False
        if by == self.rows - 1:
            reward = 1.0 if abs(bx - px) <= self.half else -1.0
            self.score += int(reward)
            self.balls_done += 1
            terminated = self.balls_done == self.n_balls
            if not terminated:
                bx, by, vx = self._spawn()
        self.state = (bx, by, vx, px)
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, terminated, False, {}

    def _obs(self) -> np.ndarray:
        bx, by, vx, px = self.state
        if self.obs_type == "vector":
            return np.array([bx * self._xs, by * self._ys, vx, px * self._xs], dtype=np.float32)
        c = self.cell_px
        frame = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        top = (self.rows - 1) * c
        frame[top:top + c, (px - self.half) * c:(px + self.half + 1) * c] = PADDLE_COLOR
        frame[by * c:(by + 1) * c, bx * c:(bx + 1) * c] = BALL_COLOR
        return frame

    def tracker_action(self) -> int:
        """The scripted optimal tracker's action for the current state (any obs type)."""
        bx, by, vx, px = self.state
        return int(_tracker(bx, by, vx, px, self.rows, self.cols))

    def reference(self) -> dict:
        """Every ball is catchable, so the optimum is ``n_balls`` (the tracker achieves it)."""
        return {"name": "optimal return (every ball catchable)", "score": float(self.n_balls),
                "metric": "episode_return"}

    # -------------------------------------------------------------- rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' "
                            "or 'human' to gym.make")
            return None
        if self._canvas is None:
            from envs._render import Canvas

            self._px = max(8, 320 // max(self.rows, self.cols))
            self._canvas = Canvas(self.render_mode, self.cols * self._px,
                                  self.rows * self._px + 30, self.metadata["render_fps"], "rlkit Catch")
        return self._canvas.frame(self._draw)

    def _draw(self, surf, pygame) -> None:
        px, top = self._px, 30
        surf.fill((245, 245, 245))
        pygame.draw.rect(surf, (18, 22, 34), pygame.Rect(0, top, self.cols * px, self.rows * px))
        if self.state is not None:
            bx, by, vx, pcol = self.state
            paddle = pygame.Rect((pcol - self.half) * px, top + (self.rows - 1) * px + px // 4,
                                 self.paddle_width * px, px - px // 4)
            pygame.draw.rect(surf, (0, 170, 255), paddle, border_radius=px // 4)
            center = (bx * px + px // 2, top + by * px + px // 2)
            pygame.draw.circle(surf, (255, 220, 60), center, px * 0.45)
            if vx:
                end = (center[0] + vx * px, center[1] + px)
                pygame.draw.line(surf, (255, 150, 50), center, end, 2)
        self._canvas.text(surf, f"ball {min(self.balls_done + 1, self.n_balls)}/{self.n_balls}"
                          f"   score {self.score:+d}", (8, 7))

    def close(self):
        if self._canvas is not None:
            self._canvas.close()
            self._canvas = None


class CatchVectorEnv(_CatchParams, NativeVectorEnv):
    """Native numpy vector version of :class:`CatchEnv` (pixels drawn for all copies at once
    with fancy indexing), step-for-step identical to ``SyncVectorEnv`` for the same seeds."""

    # Recycled frame buffers (see _blank_frames): a cache, not state. A fresh pool works with any
    # state, so exact-resume snapshots of the env leave these out.
    _cache_attrs = ("_pool", "_pool_rows", "_evict")

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 15, "task": "episodic",
    }

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, rows: int = 16,
                 cols: int = 16, cell_px: int = 4, n_balls: int = 10, paddle_width: int = 3,
                 drift: bool = True, obs_type: str = "pixels", render_mode: str | None = None,
                 autoreset_mode="NextStep"):
        self._setup(rows, cols, cell_px, n_balls, paddle_width, drift, obs_type, render_mode)
        self._init_vector(num_envs, max_episode_steps, autoreset_mode, render_mode)
        n = self.num_envs
        self.single_observation_space = self._obs_space
        self.single_action_space = spaces.Discrete(3)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self.ball_x = np.zeros(n, dtype=np.int64)
        self.ball_y = np.zeros(n, dtype=np.int64)
        self.ball_vx = np.zeros(n, dtype=np.int64)
        self.paddle_x = np.full(n, self.cols // 2, dtype=np.int64)
        self.balls_done = np.zeros(n, dtype=np.int64)
        self.score = np.zeros(n, dtype=np.int64)
        self._build_strips()
        self._pool: list[np.ndarray] = []
        self._pool_rows: list[np.ndarray] = []
        self._evict = 0
        self._free_refs = _calibrate_free_refs()
        self._blank_strip = np.zeros(1, dtype=self._strip_dtype)[0]

    def _build_strips(self):
        """Lookup tables: next paddle column, next ball column/drift (bounces included), and pixel
        strips (cell_px rows of a frame, viewed as one opaque item each so fancy indexing copies
        them with memcpy): the ball at column x, the bottom strip with the paddle at column p."""
        c, cols, w = self.cell_px, self.cols, self.width
        p, a = np.divmod(np.arange(cols * 3), 3)
        self._paddle_next = np.clip(p + a - 1, self.pmin, self.pmax)
        x, v = p, a - 1
        nx = x + v
        lo, hi = nx < 0, nx > cols - 1
        self._ball_next_x = np.where(lo, -nx, np.where(hi, 2 * (cols - 1) - nx, nx))
        self._ball_next_v = np.where(lo | hi, -v, v)
        self._strip_dtype = np.dtype((np.void, c * w * 3))
        ball = np.zeros((cols, c, w, 3), dtype=np.uint8)
        paddle = np.zeros((cols, c, w, 3), dtype=np.uint8)
        for x in range(cols):
            ball[x, :, x * c:(x + 1) * c] = BALL_COLOR
        for p in range(self.pmin, self.pmax + 1):
            paddle[p, :, (p - self.half) * c:(p + self.half + 1) * c] = PADDLE_COLOR
        self._ball_strips = ball.reshape(cols, -1).view(self._strip_dtype).ravel()
        self._paddle_strips = paddle.reshape(cols, -1).view(self._strip_dtype).ravel()

    def _check_actions(self, actions):
        return self._check_discrete(actions, 3)

    def _spawn(self, idx):
        u = self._streams.take(idx, 2)
        self.ball_x[idx] = (u[:, 0] * self.cols).astype(np.int64)
        self.ball_y[idx] = 0
        self.ball_vx[idx] = (u[:, 1] * self._nvx).astype(np.int64) - (self._nvx // 2)

    def _reset_copies(self, idx):
        self._spawn(idx)
        self.paddle_x[idx] = self.cols // 2
        self.balls_done[idx] = 0
        self.score[idx] = 0

    def _step_copies(self, actions, active):
        self.paddle_x = px = self._paddle_next[self.paddle_x * 3 + actions]
        k = self.ball_x * 3 + self.ball_vx + 1
        self.ball_x = bx = self._ball_next_x[k]
        self.ball_vx = self._ball_next_v[k]
        self.ball_y = by = self.ball_y + 1
        landed = by == self.rows - 1
        if active is not None:
            landed &= active
        if not np.count_nonzero(landed):
            return np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.bool_)
        caught = np.abs(bx - px) <= self.half
        hit = landed & caught
        miss = landed & ~caught
        reward = hit.astype(np.float64) - miss
        self.score += hit.astype(np.int64) - miss
        self.balls_done += landed
        terminated = self.balls_done == self.n_balls
        spawn = np.flatnonzero(landed & ~terminated)
        if spawn.size:
            self._spawn(spawn)
        return reward, terminated

    def _observe(self):
        n = self.num_envs
        if self.obs_type == "vector":
            out = np.empty((n, 4), dtype=np.float32)
            out[:, 0] = self.ball_x * self._xs
            out[:, 1] = self.ball_y * self._ys
            out[:, 2] = self.ball_vx
            out[:, 3] = self.paddle_x * self._xs
            return out
        # Each frame is `rows` strips of cell_px pixel rows. Only two are not black, the ball's
        # and the bottom (paddle) one: each is copied from a lookup table with one fancy index.
        strips = self._blank_frames()
        strips[self._all, self.ball_y] = self._ball_strips[self.ball_x]
        strips[:, self.rows - 1] = self._paddle_strips[self.paddle_x]
        low = self.ball_y == self.rows - 1  # the last ball of an episode, on the paddle row
        if np.count_nonzero(low):
            idx = low.nonzero()[0]
            c = self.cell_px
            cells = strips.base.reshape(n, self.rows, c, self.cols, c, 3)
            cells[idx, self.rows - 1, :, self.ball_x[idx], :] = BALL_COLOR
        return strips.base

    def _blank_frames(self):
        """All-black frames, viewed as (num_envs, rows) strips; ``.base`` is the frames array.

        Zeroing 64x64x3 frames for every copy is most of the cost of a step, so buffers are
        recycled: a pooled buffer that nothing outside this env references any more (CPython
        reference count, calibrated at construction) only has its old ball strips blanked. A
        buffer the caller still holds is never touched again.
        """
        for k, strips in enumerate(self._pool):
            if sys.getrefcount(strips.base) == self._free_refs:
                strips[self._all, self._pool_rows[k]] = self._blank_strip
                self._pool_rows[k] = self.ball_y.copy()
                return strips
        n = self.num_envs
        frames = np.zeros((n, self.height, self.width, 3), dtype=np.uint8)
        strips = frames.reshape(n * self.rows, -1).view(self._strip_dtype).reshape(n, self.rows)
        del frames
        k = self._evict
        if len(self._pool) < _POOL_SIZE:
            self._pool.append(strips)
            self._pool_rows.append(self.ball_y.copy())
        else:
            self._pool[k], self._pool_rows[k] = strips, self.ball_y.copy()
            self._evict = (k + 1) % _POOL_SIZE
        return strips

    def tracker_actions(self) -> np.ndarray:
        """The scripted optimal tracker's actions for all copies."""
        return _tracker(self.ball_x, self.ball_y, self.ball_vx, self.paddle_x, self.rows, self.cols)

    def _make_renderer(self):
        return CatchEnv(render_mode=self.render_mode, **self._kwargs())

    def _load_renderer(self, i):
        r = self._renderer_env
        r.state = (int(self.ball_x[i]), int(self.ball_y[i]), int(self.ball_vx[i]), int(self.paddle_x[i]))
        r.balls_done, r.score = int(self.balls_done[i]), int(self.score[i])
