"""Tiny pygame helper shared by the envs' ``render()``; pygame is imported only when drawing."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner when pygame is first imported


class Canvas:
    """Draws a frame with ``draw(surface, pygame)`` and shows it (human) or returns it (rgb_array)."""

    def __init__(self, render_mode: str, width: int, height: int, fps: int, caption: str):
        self.render_mode = render_mode
        self.size = (int(width), int(height))
        self.fps = fps
        self.caption = caption
        self.window = None
        self.clock = None
        self._fonts: dict[int, object] = {}

    def font(self, size: int):
        import pygame

        if size not in self._fonts:
            if not pygame.font.get_init():
                pygame.font.init()
            self._fonts[size] = pygame.font.Font(None, size)
        return self._fonts[size]

    def text(self, surface, msg: str, pos: tuple[int, int], size: int = 22,
             color=(20, 20, 20)) -> None:
        surface.blit(self.font(size).render(msg, True, color), pos)

    def frame(self, draw: Callable) -> np.ndarray | None:
        import pygame  # only the display (human) and font modules are initialised: no audio

        surface = pygame.Surface(self.size)
        draw(surface, pygame)
        if self.render_mode == "human":
            # pygame has one display: another env's close() may have shut our window
            if self.window is None or not pygame.display.get_init() or \
                    pygame.display.get_surface() is not self.window:
                pygame.display.init()
                pygame.display.set_caption(self.caption)
                self.window = pygame.display.set_mode(self.size)
                self.clock = pygame.time.Clock()
            self.window.blit(surface, (0, 0))
            pygame.event.pump()
            pygame.display.flip()
            self.clock.tick(self.fps)
            return None
        return np.transpose(np.array(pygame.surfarray.pixels3d(surface)), axes=(1, 0, 2)).copy()

    def close(self) -> None:
        if self.window is not None:
            import pygame

            if pygame.display.get_init() and pygame.display.get_surface() is self.window:
                pygame.display.quit()
            self.window = None
            self.clock = None
