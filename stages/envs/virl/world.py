"""The world of V-IRL: compass headings and turns, the city grid with its landmarks, what a walker sees
and how an action moves them."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from stages.envs.virl.images import STYLES

HEADINGS = {
    "north": 0,
    "northeast": 45,
    "east": 90,
    "southeast": 135,
    "south": 180,
    "southwest": 225,
    "west": 270,
    "northwest": 315,
}


HEADING_NAMES = {degrees: name for name, degrees in HEADINGS.items()}


RELATIVE = ("left", "right", "slightly left", "slightly right")


RELATIVE_DEGREES = {"slightly right": 45, "right": 90, "left": -90, "slightly left": -45}


SIDES = ("front", "right", "back", "left")  # views, clockwise from the heading


SIDE_PHRASES = {
    "front": "in front of you",
    "right": "on your right",
    "back": "behind you",
    "left": "on your left",
}


_STEP = {0: (0, 1), 90: (1, 0), 180: (0, -1), 270: (-1, 0)}  # forward moves along a street


def relative_turn(from_heading: int, to_heading: int) -> str:
    """The relative action turning `from_heading` to `to_heading` (45 degrees or less: slightly)."""
    difference = (to_heading - from_heading) % 360
    if difference in (0, 180):
        raise ValueError(f"no relative turn from {from_heading} to {to_heading}")
    if difference <= 45:
        return "slightly right"
    if difference < 180:
        return "right"
    if difference >= 315:
        return "slightly left"
    return "left"


def apply_turn(heading: int, relative: str) -> int:
    """The heading after a relative turn: slightly = 45 degrees, left / right = 90 degrees.

    The inverse of `relative_turn` for turns of 45 and 90 degrees, the only ones routes use:
    four relative actions cannot tell a 90 from a 135 degree turn."""
    return (heading + RELATIVE_DEGREES[relative]) % 360


@dataclass(frozen=True)
class City:
    size: int  # grid_size
    block_steps: int
    style: str
    landmarks: dict[tuple[int, int, int], str]  # (x, y, arm heading) of an intersection -> name


@dataclass(frozen=True)
class State:
    x: int  # in steps: intersection (i, j) is at (i * block_steps, j * block_steps)
    y: int
    heading: int


@dataclass(frozen=True)
class Observation:
    heading: int
    intersection: bool
    views: tuple[str | None, str | None, str | None, str | None]  # landmark per side (SIDES)
    roads: tuple[bool, bool, bool, bool]  # a street leads that way (drawn in images)


def make_city(rng: random.Random, cfg: Mapping, style: str) -> City:
    """A grid city with `landmarks` names (repeats allowed) on distinct sides of intersections."""
    size, steps = cfg["grid_size"], cfg["block_steps"]
    slots = [(x * steps, y * steps, arm) for x in range(size) for y in range(size) for arm in _STEP]
    names = STYLES[style].landmarks
    chosen = rng.sample(slots, cfg["landmarks"])
    return City(size, steps, style, {slot: rng.choice(names) for slot in sorted(chosen)})


def observe(city: City, state: State) -> Observation:
    """What the agent sees: landmarks on the sides of its intersection, and which ways streets go."""
    steps, top = city.block_steps, (city.size - 1) * city.block_steps
    at_intersection = state.x % steps == 0 and state.y % steps == 0
    views: list[str | None] = [None] * 4
    roads = [False] * 4
    for arm, (dx, dy) in _STEP.items():
        # The arm's side: a quarter turn centred on the heading, so a diagonal heading splits cleanly.
        side = ((arm - state.heading + 45) % 360) // 90
        on_street = at_intersection or (dx == 0) == (state.x % steps == 0)
        roads[side] = on_street and 0 <= state.x + dx <= top and 0 <= state.y + dy <= top
        if at_intersection:
            views[side] = city.landmarks.get((state.x, state.y, arm))
    return Observation(state.heading, at_intersection, tuple(views), tuple(roads))


def move(city: City, state: State, action: tuple[str, int | str | None]) -> State:
    """The environment's dynamics: the state after an action (a blocked forward stays put)."""
    kind, argument = action
    if kind == "turn":
        heading = argument if isinstance(argument, int) else apply_turn(state.heading, argument)
        return State(state.x, state.y, heading)
    if kind == "forward" and state.heading in _STEP:
        dx, dy = _STEP[state.heading]
        top = (city.size - 1) * city.block_steps
        x, y = state.x + dx, state.y + dy
        on_street = (x % city.block_steps == 0) if dx == 0 else (y % city.block_steps == 0)
        if 0 <= x <= top and 0 <= y <= top and on_street:
            return State(x, y, state.heading)
    return state
