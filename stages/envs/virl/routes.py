"""Routes through a city: legs, the expert's steps, the numbered instructions, and the held-out bucket that
keeps every eval route's instructions out of training."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

from stages.core.params import ParamError
from stages.envs.virl.world import (
    _STEP,
    HEADING_NAMES,
    SIDE_PHRASES,
    SIDES,
    City,
    State,
    make_city,
    move,
    observe,
    relative_turn,
)

# A route's instruction text hashes into one of 5 buckets; eval splits draw only from bucket 0 and
# train / corpus never do, so no eval route's instructions (hence no eval prompt) appear in training.
HELDOUT_BUCKETS = 5


@dataclass(frozen=True)
class Leg:
    heading: int
    blocks: int
    landmark: str  # identifies the intersection where the leg ends
    side: str  # "right" or "left", as seen on arrival


@dataclass(frozen=True)
class Route:
    city: City
    start: State
    legs: tuple[Leg, ...]

    @property
    def destination(self) -> tuple[int, int]:
        x, y = self.start.x, self.start.y
        for leg in self.legs:
            dx, dy = _STEP[leg.heading]
            x, y = x + dx * leg.blocks * self.city.block_steps, y + dy * leg.blocks * self.city.block_steps
        return x, y


@dataclass(frozen=True)
class Step:
    state: State
    action: tuple[str, int | None]  # ("forward", None) | ("turn", heading) | ("stop", None)
    instruction: int  # index into the route's instruction list


def expert_steps(route: Route) -> list[Step]:
    """The expert trajectory: turn onto each leg, walk it, and stop after the last one."""
    steps, state = [], route.start
    for k, leg in enumerate(route.legs):
        steps.append(Step(state, ("turn", leg.heading), 2 * k))
        state = move(route.city, state, ("turn", leg.heading))
        for _ in range(leg.blocks * route.city.block_steps):
            steps.append(Step(state, ("forward", None), 2 * k + 1))
            state = move(route.city, state, ("forward", None))
    steps.append(Step(state, ("stop", None), 2 * len(route.legs)))
    return steps


def plan_route(rng: random.Random, city: City, cfg: Mapping) -> Route | None:
    """A random route in `city`, or None when this attempt painted itself into a corner."""
    steps = city.block_steps
    start = State(
        rng.randrange(city.size) * steps, rng.randrange(city.size) * steps, rng.choice(list(HEADING_NAMES))
    )
    visited = [(start.x, start.y)]
    legs: list[Leg] = []
    heading = start.heading
    for _ in range(rng.randint(cfg["min_legs"], cfg["max_legs"])):
        # Only 45 and 90 degree turns: never straight on (each leg starts with a turn), never back.
        turns = (-45, 45) if heading % 90 else (-90, 90)
        options = [((heading + t) % 360, b) for t in turns for b in range(1, cfg["max_leg_blocks"] + 1)]
        rng.shuffle(options)
        for new_heading, blocks in options:
            dx, dy = _STEP[new_heading]
            x, y = visited[-1]
            path = [(x + dx * steps * b, y + dy * steps * b) for b in range(1, blocks + 1)]
            top = (city.size - 1) * steps
            if any(not (0 <= px <= top and 0 <= py <= top) or (px, py) in visited for px, py in path):
                continue
            arrival = observe(city, State(*path[-1], new_heading))
            marks = [(SIDES[s], arrival.views[s]) for s in (1, 3) if arrival.views[s] is not None]
            if marks:
                side, landmark = rng.choice(marks)
                legs.append(Leg(new_heading, blocks, landmark, side))
                visited.extend(path)
                heading = new_heading
                break
        else:
            return None
    route = Route(city, start, tuple(legs))
    return route if _unambiguous(route) else None


def _unambiguous(route: Route) -> bool:
    """Every state matches a leg's landmark instruction (same heading, landmark on that side) only
    where that leg ends, so the observation and the instructions alone determine the action."""
    for step in expert_steps(route):
        seen = observe(route.city, step.state)
        matches = [
            k
            for k, leg in enumerate(route.legs)
            if leg.heading == seen.heading and seen.views[SIDES.index(leg.side)] == leg.landmark
        ]
        at_leg_end = step.action[0] == "stop" or (step.action[0] == "turn" and step.instruction > 0)
        if matches != ([step.instruction // 2 - 1] if at_leg_end else []):
            return False
    return True


def route_instructions(route: Route) -> list[tuple[str, str]]:
    """The numbered instructions as (full sentence, compact words)."""
    lines, heading = [], route.start.heading
    for k, leg in enumerate(route.legs):
        turn, face = relative_turn(heading, leg.heading), HEADING_NAMES[leg.heading]
        n = 2 * k + 1
        first = "First, turn" if k == 0 else "Turn"
        lines.append((f"{n}. {first} {turn} to face {face}.", f"{n} turn {turn} to face {face}"))
        lines.append(
            (
                f"{n + 1}. Move forward until you reach the next intersection where "
                f"{leg.landmark} is {SIDE_PHRASES[leg.side]}.",
                f"{n + 1} forward to {leg.landmark} on {leg.side}",
            )
        )
        heading = leg.heading
    n = 2 * len(route.legs) + 1
    lines.append((f"{n}. Stop at the destination.", f"{n} stop"))
    return lines


_ATTEMPTS = 2000


def heldout(route: Route) -> bool:
    """Whether the route's instructions fall in the bucket reserved for evaluation."""
    text = "\n".join(full for full, _ in route_instructions(route))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % HELDOUT_BUCKETS == 0


def sample_route(rng: random.Random, cfg: Mapping, style: str, held_out: bool) -> Route:
    """A route in a fresh city, from the held-out bucket or from the others."""
    for _ in range(_ATTEMPTS):
        city = make_city(rng, cfg, style)
        route = plan_route(rng, city, cfg)
        if route is not None and heldout(route) == held_out:
            return route
    raise ParamError(
        f"generate.virl: no route found in {_ATTEMPTS} attempts with grid_size={cfg['grid_size']}, "
        f"landmarks={cfg['landmarks']}, max_legs={cfg['max_legs']}; "
        "raise landmarks or grid_size, or lower max_legs"
    )
