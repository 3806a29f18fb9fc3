"""Frame skip: one decision of V, M and C per ``frames`` env frames, the action held in between.

Only the decision frames are seen, so V, M and C never need the frames in between. CarRacing
renders its 96x96 observation inside ``step`` and that rendering is ~96% of a step's cost
(about 9 ms against 0.4 ms of Box2D physics on one core: bench/world_models.py), so
``step_held`` skips the rendering of the frames nobody looks at. The dynamics, the rewards and
the decision frames are exactly those of the unmodified env: only pixels that would be thrown
away are not drawn. Any other env is stepped normally.
"""

from __future__ import annotations


def _skips_render(env) -> bool:
    from gymnasium.envs.box2d.car_racing import CarRacing

    return isinstance(env.unwrapped, CarRacing) and env.unwrapped.render_mode is None


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
