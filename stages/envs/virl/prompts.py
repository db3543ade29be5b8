"""The text of V-IRL: actions and observations in either prompt style, and one step's record (prompt, oracle
answer, task, and for virl_vl its image)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from stages.envs.virl.images import Palette, render_views
from stages.envs.virl.routes import Route, Step, route_instructions
from stages.envs.virl.world import (
    HEADING_NAMES,
    HEADINGS,
    RELATIVE,
    SIDE_PHRASES,
    SIDES,
    Observation,
    State,
    observe,
    relative_turn,
)


def action_text(action: tuple[str, int | None], state: State, space: str) -> str:
    """The canonical action string, e.g. turn_direction(east) or turn_direction(slightly left)."""
    kind, heading = action
    if kind != "turn":
        return f"{kind}()"
    x = HEADING_NAMES[heading] if space == "absolute" else relative_turn(state.heading, heading)
    return f"turn_direction({x})"


def compact_action(action: str) -> str:
    """forward() -> forward ( ), turn_direction(slightly left) -> turn_direction ( slightly left )."""
    name, _, rest = action.partition("(")
    argument = rest[:-1]
    return f"{name} ( {argument} )" if argument else f"{name} ( )"


def compact_observation(seen: Observation, heading: bool = True, intersection: bool = True) -> str:
    """facing east intersection yes front Museum right Gym: the side words delimit, no commas needed."""
    parts = [f"facing {HEADING_NAMES[seen.heading]}"] if heading else []
    if intersection:
        parts.append(f"intersection {'yes' if seen.intersection else 'no'}")
    parts += [f"{side} {name}" for side, name in zip(SIDES, seen.views, strict=True) if name]
    return " ".join(parts)


def sentence_observation(seen: Observation) -> str:
    where = "at an intersection" if seen.intersection else "between intersections"
    parts = [f"You are facing {HEADING_NAMES[seen.heading]}, {where}."]
    parts += [
        f"{name} is {SIDE_PHRASES[side]}." for side, name in zip(SIDES, seen.views, strict=True) if name
    ]
    return " ".join(parts)


def _action_space_text(space: str) -> str:
    choices = list(HEADINGS) if space == "absolute" else list(RELATIVE)
    return f"{space}: forward(), turn_direction(x) with x one of {', '.join(choices)}, stop()"


def build_record(
    route: Route,
    steps: list[Step],
    index: int,
    space: str,
    cfg: Mapping,
    visual: bool,
    reading: bool = False,
    scene: Palette | None = None,
) -> dict:
    """The prompt, oracle answer and verification data of one step of a route. `reading` (VL corpus only):
    the prompt gives neither route nor history and the answer is the observation alone, so the image is the
    only way to it (the history's observation otherwise tells most of the current one). `scene`: the
    image's background colours, where not the city style's."""
    step = steps[index]
    seen = observe(route.city, step.state)
    instructions = route_instructions(route)
    action = action_text(step.action, step.state, space)
    past = [
        (observe(route.city, s.state), action_text(s.action, s.state, space))
        for s in steps[max(0, index - cfg["history"]) : index]
    ]
    if cfg["prompt_style"] == "compact":
        # Short prompts keep every stage fast: the action space is named, not listed, the numbers and
        # side words delimit instructions and views, and with block_steps 1 every position is an
        # intersection, so the observations leave that out.
        between = cfg["block_steps"] > 1
        history = [f"{compact_observation(o, intersection=between)} -> {compact_action(a)}" for o, a in past]
        if visual:
            now = f"facing {HEADING_NAMES[seen.heading]} in image"
        else:
            now = compact_observation(seen, intersection=between)
        prompt = (
            f"Actions : {space} . "
            f"Route : {' '.join(c for _, c in instructions)} . "
            f"History : {' ; '.join(history) or 'none'} . Observation : {now} ."
        )
        answer = compact_action(action)
        if visual:  # the VL answer first reads the image, as GP-VL first lists the cards
            answer = f"Observation : {compact_observation(seen, heading=False)} . Action : {answer}"
        if reading:
            prompt = f"Observation : {now} ."
            answer = f"Observation : {compact_observation(seen, heading=False)} ."
    else:
        history = (
            "\n".join(f"- observation: {sentence_observation(o)} action: {a}" for o, a in past) or "none"
        )
        if visual:
            now = (
                f"You are facing {HEADING_NAMES[seen.heading]}. The image shows your front, right, "
                "back and left views, from left to right."
            )
        else:
            now = sentence_observation(seen)
        prompt = (
            "You are following route instructions through a city. Give the next action.\n"
            f"Action space, {_action_space_text(space)}.\n"
            "Route instructions:\n" + "\n".join(full for full, _ in instructions) + "\n"
            f"Action history:\n{history}\n"
            f"Current observation: {now}\n"
            'Answer in JSON: {"current observation": ..., "current instruction": ..., "action": ...}'
        )
        answer = json.dumps(
            {
                "current observation": sentence_observation(seen),
                "current instruction": instructions[step.instruction][0],
                "action": action,
            }
        )
        if reading:
            prompt = f'Current observation: {now}\nAnswer in JSON: {{"current observation": ...}}'
            answer = json.dumps({"current observation": sentence_observation(seen)})
    task = {
        "env": "virl",
        "action_space": space,
        "expected": action,
        "kind": step.action[0],
        "step": index,
        "num_steps": len(steps),
        "instruction": step.instruction,
        "style": route.city.style,
        "observation": {
            "heading": HEADING_NAMES[seen.heading],
            "intersection": seen.intersection,
            "views": dict(zip(SIDES, seen.views, strict=True)),
        },
    }
    record = {"prompt": prompt, "answer": answer, "task": task}
    if visual:
        record["image"] = render_views(
            seen.views, seen.roads, route.city.style, cfg["image_width"], cfg["image_height"], scene
        )
    return record
