"""Pixel tasks: environments whose observation is a 64x64x3 uint8 frame (World Models).

* ``CarRacing-v3``: Gymnasium's car racing (Box2D), whose 96x96 observation is resized by area
  averaging. Its bottom 12 rows are the dashboard (speed, ABS, steering, gyro), kept because
  they show the speed that one frame cannot.
  Gymnasium redraws the whole track every step, testing each of its ~730 polygons for the
  screen in Python; the environment made here culls them with one NumPy test first and hands
  the stock drawing only those that can reach the screen (`_render_road`): the stock frames,
  pixel for pixel, 1.4-2x as many steps per second.
* ``Pendulum-v1``: the classic pendulum seen only through its rgb_array rendering, drawn at
  128x128 and averaged down to 64x64 (drawing at 500x500, Gymnasium's size, costs 2.5x the
  time for the same 64x64 frame). The state (angle and velocity) is hidden: one frame shows
  the angle, not the velocity, which a recurrent model must infer.

A PixelTask is a picklable factory (calling it makes the environment), so that it can be
handed to fastmbrl.data.collect.collect and to worker processes.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fastmbrl.errors import FastMBRLError, MissingExtraError, require
from fastmbrl.kernels.resize import resize_area

FRAME_SIZE = 64
_EXTRA = "pixels"


class PixelEnv:
    """A Gymnasium environment seen through frames: reset/step return (size, size, 3) uint8
    observations; everything else (actions, rewards, flags, info) is the environment's.
    `env` is the wrapped environment (its `unwrapped.state` is what the frames hide)."""

    def __init__(self, env: Any, size: int = FRAME_SIZE, from_render: bool = False) -> None:
        from gymnasium import spaces

        self.env = env
        self.size = size
        self.from_render = from_render
        self.action_space = env.action_space
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.spec = env.spec

    @property
    def unwrapped(self) -> Any:
        return self.env.unwrapped

    def frame(self, obs: Any) -> np.ndarray:
        """The (size, size, 3) uint8 frame of an observation (or of the render)."""
        raw = self.env.render() if self.from_render else obs
        return resize_area(np.asarray(raw), self.size, self.size)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self.frame(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.frame(obs), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


# -- CarRacing's road, culled in one test -------------------------------------------------------
#: sha1 of Gymnasium's CarRacing._render_road and _draw_colored_polygon sources that
#: `_render_road` reproduces (checked: Gymnasium 1.4.0); any other keeps its own drawing
_ROAD_SOURCES = {"95a237060d4f"}
_CULL_MARGIN = 1.0  # pixels: far beyond any rounding difference from pygame's own rotation


def _road_source_digest(cls: Any) -> str | None:
    try:
        text = inspect.getsource(cls._render_road) + inspect.getsource(cls._draw_colored_polygon)
    except (AttributeError, OSError, TypeError):
        return None
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def fast_road(env: Any, force: bool = False) -> bool:
    """Give the CarRacing environment `env` (unwrapped) the culled road drawing, if its
    Gymnasium's drawing is one this reproduces (or `force`); True if it now has it."""
    if not force and _road_source_digest(type(env)) not in _ROAD_SOURCES:
        return False
    env._render_road = types.MethodType(_render_road, env)
    return True


def _road_arrays(env: Any, module: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(grass (G, 4, 2), road (R, 4, 2)) vertices of the current track, cached on the env
    until reset makes a new track (None if a polygon is not a quadrilateral)."""
    cache = env.__dict__.get("_fastmbrl_road")
    if cache is not None and cache[0] is env.road_poly and cache[1] == len(env.road_poly):
        return cache[2]
    g = module.GRASS_DIM
    grass = np.array([[(g * x + g, g * y), (g * x, g * y), (g * x, g * y + g),
                       (g * x + g, g * y + g)] for x in range(-20, 20, 2)
                      for y in range(-20, 20, 2)], np.float64)
    polys = [poly for poly, _ in env.road_poly]
    arrays = None
    if all(len(poly) == 4 for poly in polys):
        road = np.array(polys, np.float64).reshape(len(polys), 4, 2)
        arrays = (grass, road)
    env.__dict__["_fastmbrl_road"] = (env.road_poly, len(env.road_poly), arrays)
    return arrays


def _reachable(polys: np.ndarray, zoom: float, translation: Any, angle: float,
               module: Any) -> np.ndarray:
    """Which polygons have a vertex in the stock drawing's screen box, widened by a margin:
    a superset of those it draws."""
    c, s = np.cos(angle), np.sin(angle)
    x = (c * polys[..., 0] - s * polys[..., 1]) * zoom + translation[0]
    y = (s * polys[..., 0] + c * polys[..., 1]) * zoom + translation[1]
    lo = -module.MAX_SHAPE_DIM - _CULL_MARGIN
    inside = ((x >= lo) & (x <= module.WINDOW_W - lo) & (y >= lo)
              & (y <= module.WINDOW_H - lo))
    return inside.any(axis=1)


def _render_road(self: Any, zoom: float, translation: Any, angle: float) -> None:
    """Gymnasium's CarRacing._render_road drawing the same polygons in the same order through
    its own _draw_colored_polygon, after skipping those that cannot reach the screen."""
    import gymnasium.envs.box2d.car_racing as module

    arrays = _road_arrays(self, module)
    if arrays is None:
        return type(self)._render_road(self, zoom, translation, angle)
    grass, road = arrays
    bound = module.PLAYFIELD
    field = [(bound, bound), (bound, -bound), (-bound, -bound), (-bound, bound)]
    self._draw_colored_polygon(self.surf, field, self.bg_color, zoom, translation, angle,
                               clip=False)
    for i in np.flatnonzero(_reachable(grass, zoom, translation, angle, module)):
        poly = [(float(a), float(b)) for a, b in grass[i]]
        self._draw_colored_polygon(self.surf, poly, self.grass_color, zoom, translation, angle)
    for i in np.flatnonzero(_reachable(road, zoom, translation, angle, module)):
        poly, color = self.road_poly[i]
        poly = [(p[0], p[1]) for p in poly]
        color = [int(c) for c in color]
        self._draw_colored_polygon(self.surf, poly, color, zoom, translation, angle)
    return None


@dataclasses.dataclass(frozen=True)
class PixelTask:
    """How to make a pixel environment. render_size: for an environment whose observation is
    not an image, the side of the square rgb_array rendering the frame is averaged from
    (set through the environment's `screen_dim`), None to use the observation itself.
    action_clip: the actions World Models' C clips rather than maps onto their bounds
    (fastmbrl.models.wm_controller; None: none). setup: called with each new environment,
    unwrapped (a module-level function, so that the task pickles)."""
    name: str
    env_id: str
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    render_size: int | None = None
    frame_size: int = FRAME_SIZE
    package: str = "gymnasium"  # what a missing dependency is reported as
    action_clip: tuple[bool, ...] | None = None
    setup: Callable[[Any], object] | None = None

    def make_env(self, **overrides: Any) -> PixelEnv:
        # pygame draws off-screen: no display or sound card needed (and no warnings about them)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        gym = require("gymnasium", _EXTRA, f"the pixel task {self.name!r}")
        kwargs = {**self.env_kwargs, **overrides}
        if self.render_size is not None:
            kwargs["render_mode"] = "rgb_array"
        try:
            env = gym.make(self.env_id, **kwargs)
        except (gym.error.DependencyNotInstalled, ImportError) as exc:
            raise MissingExtraError(self.package, _EXTRA,
                                    f"the pixel task {self.name!r}") from exc
        if self.render_size is not None:
            if not hasattr(env.unwrapped, "screen_dim"):
                env.close()
                raise FastMBRLError(f"pixel task {self.name!r}: {self.env_id} has no screen_dim "
                                    "to render at render_size")
            env.unwrapped.screen_dim = int(self.render_size)
        if self.setup is not None:
            self.setup(env.unwrapped)
        return PixelEnv(env, self.frame_size, from_render=self.render_size is not None)

    def __call__(self) -> PixelEnv:
        return self.make_env()

    def describe(self) -> dict[str, Any]:
        """JSON settings (what a frame store records about its source)."""
        return {"task": self.name, "env_id": self.env_id, "env_kwargs": dict(self.env_kwargs),
                "render_size": self.render_size, "frame_size": self.frame_size}


PIXEL_TASKS: dict[str, PixelTask] = {
    # C's brake is tanh clipped to [0, 1] as in World Models' code: none at zero, so that a C
    # near zero drives; mapped onto [0, 1] it brakes at 0.5 and every such C stands still
    "CarRacing-v3": PixelTask("CarRacing-v3", "CarRacing-v3", {"continuous": True},
                              package="box2d", action_clip=(False, False, True),
                              setup=fast_road),
    "Pendulum-v1": PixelTask("Pendulum-v1", "Pendulum-v1", render_size=128, package="pygame"),
}


def get_pixel_task(name: str) -> PixelTask:
    """The pixel task called `name` (see PIXEL_TASKS)."""
    task = PIXEL_TASKS.get(name)
    if task is None:
        close = difflib.get_close_matches(str(name), PIXEL_TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise FastMBRLError(f"unknown pixel task {name!r} (known: "
                            f"{', '.join(sorted(PIXEL_TASKS))}){hint}")
    return task
