"""Frame skip: one decision of V, M and C per ``frames`` env frames, the action held in between;
and a faster drawing of CarRacing's frames that yields the same pixels.

Only the decision frames are seen, so V, M and C never need the frames in between. CarRacing
renders its 96x96 observation inside ``step`` and that rendering is ~96% of a step's cost
(about 9 ms against 0.4 ms of Box2D physics on one core: bench/world_models.py), so
``step_held`` skips the rendering of the frames nobody looks at. The dynamics, the rewards and
the decision frames are exactly those of the unmodified env: only pixels that would be thrown
away are not drawn. Any other env is stepped normally.

``fast_road_drawing`` speeds up the frames that are drawn. CarRacing tests each of its ~750
grass and road polygons for visibility in Python, one point at a time, and draws ~65 of them;
the test is two thirds of a frame's cost. A vectorised test with a one-pixel margin first drops
the polygons that cannot be on screen, and the env's own test and drawing run on the rest in the
original order: the same pixels (the tests compare frames with the unmodified env). The rollout
workers install it; ``rlkit eval`` and ``rlkit render`` play the unmodified env.
"""

from __future__ import annotations

import types

import numpy as np


def _skips_render(env) -> bool:
    return _is_car_racing(env) and env.unwrapped.render_mode is None


def step_held(env, action, frames: int):
    """Step ``env`` ``frames`` times with ``action`` (stopping at the episode's end).

    -> (obs of the last frame, summed reward, terminated, truncated, frames stepped).
    """
    skip = frames > 1 and _skips_render(env)
    car_racing = env.unwrapped
    total = 0.0
    for i in range(frames):
        drawn = not skip or i == frames - 1
        if not drawn:  # an instance attribute shadows the method: the last drawn frame is returned
            car_racing._render = lambda mode: car_racing.state
        try:
            obs, reward, terminated, truncated, _ = env.step(action)
        finally:
            if not drawn:
                del car_racing._render
        total += float(reward)
        if terminated or truncated:
            if not drawn:  # ended on a frame in between: draw the frame that is returned
                obs = car_racing.state = car_racing._render("state_pixels")
            return obs, total, terminated, truncated, i + 1
    return obs, total, False, False, frames


def fast_road_drawing(env) -> None:
    """Install the culled road drawing on a CarRacing env (gymnasium 1.2.2, the pinned version);
    any other env is left as it is."""
    if not _is_car_racing(env):
        return
    env.unwrapped._render_road = types.MethodType(_culled_render_road, env.unwrapped)


def _is_car_racing(env) -> bool:
    from gymnasium.envs.box2d.car_racing import CarRacing

    return isinstance(env.unwrapped, CarRacing)


def _polygons(car_racing) -> tuple[np.ndarray, list]:
    """Grass patches then road polygons, in CarRacing's drawing order: (N, 4, 2) points and the
    polygons as point lists. Cached per track; colours are read when drawing (a visited tile
    changes colour)."""
    cache = getattr(car_racing, "_rlkit_polygons", None)
    if cache is not None and cache[0] is car_racing.road_poly:
        return cache[1], cache[2]
    from gymnasium.envs.box2d.car_racing import GRASS_DIM

    g = GRASS_DIM
    shapes = [[(g * x + g, g * y), (g * x, g * y), (g * x, g * y + g), (g * x + g, g * y + g)]
              for x in range(-20, 20, 2) for y in range(-20, 20, 2)]
    shapes += [[(p[0], p[1]) for p in poly] for poly, _ in car_racing.road_poly]
    points = np.array(shapes, dtype=np.float64)
    car_racing._rlkit_polygons = (car_racing.road_poly, points, shapes)
    return points, shapes


def _culled_render_road(self, zoom, translation, angle):
    from gymnasium.envs.box2d.car_racing import MAX_SHAPE_DIM, PLAYFIELD, WINDOW_H, WINDOW_W

    b = PLAYFIELD
    self._draw_colored_polygon(self.surf, [(b, b), (b, -b), (-b, -b), (-b, b)], self.bg_color, zoom, translation,
                               angle, clip=False)
    points, shapes = _polygons(self)
    c, s = np.cos(angle), np.sin(angle)
    x = (points[..., 0] * c - points[..., 1] * s) * zoom + translation[0]
    y = (points[..., 0] * s + points[..., 1] * c) * zoom + translation[1]
    m = MAX_SHAPE_DIM + 1.0  # one pixel wider than the env's own test: rounding never drops a polygon
    near = ((x >= -m) & (x <= WINDOW_W + m) & (y >= -m) & (y <= WINDOW_H + m)).any(axis=1)
    grass = len(shapes) - len(self.road_poly)
    for i in np.flatnonzero(near):
        colour = self.grass_color if i < grass else [int(c) for c in self.road_poly[i - grass][1]]
        self._draw_colored_polygon(self.surf, shapes[i], colour, zoom, translation, angle)
