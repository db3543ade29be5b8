"""V-IRL (synthetic, offline): follow numbered route instructions through a generated city.

The original task walks Google Street View panoramas; here every route gets its own small city:
a grid of intersections with landmarks standing on the four sides ("arms") of some of them.
A route starts at an intersection facing any of the 8 compass headings, follows streets for a
few legs, each ending at an intersection recognised by a landmark on the left or right, and
stops there. Every step of the expert trajectory is one record:

    instructions + last `history` steps + current observation  ->  next action

Actions: `forward()`, `turn_direction(x)`, `stop()`. In the absolute space (ID) x is a compass
heading; in the relative space (OOD rule) x is left / right / slightly left / slightly right.
Wrong actions are not executed, so each state follows from the expert actions alone.

Geometry: x grows east, y grows north, headings are degrees clockwise from north (north=0,
east=90). Streets run north-south and east-west, so legs face the 4 cardinal headings and the
only turns are 45 degrees (first turn, from a diagonal start heading) and 90 degrees.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from stages.envs import Verdict
from stages.envs.city_images import STYLES, Palette, random_scene, render_views
from stages.params import ParamError, check_int

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
_RELATIVE_DEGREES = {"slightly right": 45, "right": 90, "left": -90, "slightly left": -45}
SIDES = ("front", "right", "back", "left")  # views, clockwise from the heading
_SIDE_PHRASES = {
    "front": "in front of you",
    "right": "on your right",
    "back": "behind you",
    "left": "on your left",
}
_STEP = {0: (0, 1), 90: (1, 0), 180: (0, -1), 270: (-1, 0)}  # forward moves along a street

DEFAULTS = {
    "grid_size": 5,  # intersections per side of the square city
    "landmarks": 30,  # landmarks placed per city, on the 4 * grid_size**2 intersection sides
    "min_legs": 2,  # straight legs per route; each starts with a turn
    "max_legs": 2,
    "max_leg_blocks": 2,  # a leg is 1..max_leg_blocks blocks long
    "block_steps": 1,  # forward() steps per block; > 1 adds mid-block positions
    "history": 1,  # previous steps (observation, action) shown in the prompt
    "prompt_style": "compact",  # compact: word-level, for the embedded model | json: like the paper
    "corpus_relative_frac": 0.5,  # share of corpus routes in the relative action space
    "corpus_reading_frac": 0.3,  # VL: share of corpus steps that only read the image (no route, no history)
    "scene_variety": 0.0,  # VL: share of train and corpus cities drawn in a random scene (never dusk's)
    "ood_visual": "icons",  # eval_ood_visual city: icons | shift | scene | palette | landmarks (OOD_VISUAL)
    "image_width": 256,
    "image_height": 64,
}
# What only virl_vl's records read (sizes too: the visual-OOD split); virl_l ignores them.
IMAGE_KEYS = (
    "sizes.eval_ood_visual",
    "corpus_reading_frac",
    "scene_variety",
    "ood_visual",
    "image_width",
    "image_height",
)
PROMPT_STYLES = ("compact", "json")
# The eval_ood_visual city style per option: the ID landmarks with their icons smaller and thick-rimmed in
# the training scene (icons), in another scene and layout (shift), in another scene only (scene), with
# other icon colours too (palette), or landmarks the model never saw named (landmarks).
OOD_VISUAL = {
    "icons": "ood_icons",
    "shift": "ood_shift",
    "scene": "ood_scene",
    "palette": "ood_palette",
    "landmarks": "ood",
}
MAX_RESPONSE_CHARS = 2000
# A route's instruction text hashes into one of 5 buckets; eval splits draw only from bucket 0 and
# train / corpus never do, so no eval route's instructions (hence no eval prompt) appear in training.
HELDOUT_BUCKETS = 5


# --- headings -------------------------------------------------------------------------------


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
    return (heading + _RELATIVE_DEGREES[relative]) % 360


# --- cities and routes ----------------------------------------------------------------------


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
                f"{leg.landmark} is {_SIDE_PHRASES[leg.side]}.",
                f"{n + 1} forward to {leg.landmark} on {leg.side}",
            )
        )
        heading = leg.heading
    n = 2 * len(route.legs) + 1
    lines.append((f"{n}. Stop at the destination.", f"{n} stop"))
    return lines


# --- actions and observations as text ---------------------------------------------------------


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
        f"{name} is {_SIDE_PHRASES[side]}." for side, name in zip(SIDES, seen.views, strict=True) if name
    ]
    return " ".join(parts)


def _action_space_text(space: str) -> str:
    choices = list(HEADINGS) if space == "absolute" else list(RELATIVE)
    return f"{space}: forward(), turn_direction(x) with x one of {', '.join(choices)}, stop()"


# --- prompts ----------------------------------------------------------------------------------


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


# --- generation -------------------------------------------------------------------------------


def validate(cfg: Mapping) -> dict:
    """`cfg` merged over DEFAULTS and checked; ParamError names the first bad generate.virl key."""
    unknown = sorted(str(key) for key in cfg if key not in DEFAULTS)
    if unknown:
        raise ParamError(f"generate.virl.{unknown[0]} is not a known key; use: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **cfg}

    def integer(key: str, low: int, high: int) -> None:
        check_int(f"generate.virl.{key}", cfg[key], low, high)

    integer("grid_size", 3, 50)
    integer("landmarks", 1, 4 * cfg["grid_size"] ** 2)
    integer("min_legs", 1, 8)
    integer("max_legs", cfg["min_legs"], 8)
    integer("max_leg_blocks", 1, cfg["grid_size"] - 1)
    integer("block_steps", 1, 4)
    integer("history", 0, 20)
    integer("image_width", 32, 2048)
    integer("image_height", 16, 1024)
    for key, allowed in (("prompt_style", PROMPT_STYLES), ("ood_visual", tuple(OOD_VISUAL))):
        if cfg[key] not in allowed:
            raise ParamError(
                f"generate.virl.{key}={cfg[key]!r} is not allowed; use one of: {', '.join(allowed)}"
            )
    for key in ("corpus_relative_frac", "corpus_reading_frac", "scene_variety"):
        frac = cfg[key]
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac <= 1:
            raise ParamError(f"generate.virl.{key}={frac!r} must be a number in [0, 1]")
    return cfg


# split -> (city style, action space or "mixed", held out)
_SPLITS = {
    "train": ("id", "absolute", False),
    "eval_id": ("id", "absolute", True),
    "eval_ood_rule": ("id", "relative", True),
    "eval_ood_visual": ("ood", "absolute", True),
    "corpus": ("id", "mixed", False),
}
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


def generate(sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool) -> dict[str, list[dict]]:
    """{split: records}; `sizes` counts routes, and every route gives one record per step."""
    return {split: list(records) for split, records in iter_records(sizes, cfg, seed, visual).items()}


def iter_records(
    sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool
) -> dict[str, Iterator[dict]]:
    """`generate`'s records, one iterator per split that makes (and renders) a record when it is read.

    The config and sizes are checked at once; every route has its own seed, so the splits can be read
    in any order with the same result.
    """
    cfg = validate(cfg)
    splits = ("train", "eval_id", "eval_ood_rule", *(("eval_ood_visual",) if visual else ()), "corpus")
    counts = {split: check_int(f"generate.virl.sizes.{split}", sizes.get(split, 0), 0) for split in splits}

    def records(split: str) -> Iterator[dict]:
        style, space, held_out = _SPLITS[split]
        if split == "eval_ood_visual":
            style = OOD_VISUAL[cfg["ood_visual"]]
        for r in range(counts[split]):
            # One string seed per route: a route does not change when other sizes do.
            rng = random.Random(f"{seed}-virl-{split}-{r}")
            route = sample_route(rng, cfg, style, held_out)
            route_space = space
            if space == "mixed":
                route_space = "relative" if rng.random() < cfg["corpus_relative_frac"] else "absolute"
            steps = expert_steps(route)
            scene = None
            if visual and split in ("train", "corpus"):
                # the city's own draw, so the share leaves every other record as it was
                scene_rng = random.Random(f"{seed}-virl-scene-{split}-{r}")
                if scene_rng.random() < cfg["scene_variety"]:
                    scene = random_scene(scene_rng)
            for i in range(len(steps)):
                # its own draw per step, so the share leaves every other record as it was
                reading = (
                    visual
                    and split == "corpus"
                    and random.Random(f"{seed}-virl-reading-{r}-{i}").random() < cfg["corpus_reading_frac"]
                )
                record = build_record(route, steps, i, route_space, cfg, visual, reading, scene)
                route_id = f"{split}-r{r:05d}"
                record["task"] = json.dumps({**record["task"], "route": route_id}, sort_keys=True)
                yield {"id": f"{route_id}-s{i:02d}", **record}

    return {split: records(split) for split in splits}


# --- verification -----------------------------------------------------------------------------

_ACTION = re.compile(
    r"\b(forward|stop)\s*\(\s*\)|\bturn_direction\s*\(\s*['\"]?\s*([a-z]{1,12}(?:\s{1,3}[a-z]{1,12})?)\s*['\"]?\s*\)"
)
_JSON_OBSERVATION = re.compile(r'"current observation"\s*:\s*"([^"]{0,1000})"')
_COMPACT_OBSERVATION = re.compile(r"\bobservation\s*:(.{0,1000}?)(?:\baction\s*:|$)", re.DOTALL)
_SENTENCE_VIEW = re.compile(r"\b([a-z]{1,20}) is (on your right|on your left|in front of you|behind you)")
_COMPACT_VIEW = re.compile(r"\b(front|right|back|left)\s*:?\s*([a-z]{1,20})\b")
_PHRASE_SIDES = {phrase: side for side, phrase in _SIDE_PHRASES.items()}


def parse_actions(text: str) -> list[str]:
    """Every action named in the text, canonical and in order (lower-case input)."""
    found = []
    for match in _ACTION.finditer(text):
        if match.group(1):
            found.append(f"{match.group(1)}()")
        else:
            found.append(f"turn_direction({' '.join(match.group(2).split())})")
    return found


def parse_observation(text: str, names: tuple[str, ...]) -> tuple[bool | None, dict[str, str]]:
    """(at an intersection?, {side: landmark}) from a stated observation, sentence or compact."""
    text = text.lower()
    if re.search(r"between intersections|not at an intersection|intersection\s*:?\s*no\b", text):
        intersection = False
    elif re.search(r"at an intersection|intersection\s*:?\s*yes\b", text):
        intersection = True
    else:
        intersection = None
    known = {name.lower(): name for name in names}
    views = {}
    for name, phrase in _SENTENCE_VIEW.findall(text):
        if name in known:
            views[_PHRASE_SIDES[phrase]] = known[name]
    if not views:  # compact form ("right Bank , left Cafe") only when there are no sentences
        for side, name in _COMPACT_VIEW.findall(text):
            if name in known:
                views[side] = known[name]
    return intersection, views


def _response_parts(response: str) -> tuple[list[str], str | None]:
    """(actions found, stated observation or None): the JSON "action" field if there is one."""
    start, end = response.find("{"), response.rfind("}")
    if 0 <= start < end:
        try:
            answer = json.loads(response[start : end + 1])
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("action"), str):
            seen = answer.get("current observation")
            return parse_actions(answer["action"].lower()), seen if isinstance(seen, str) else None
    text = response.lower()
    match = _JSON_OBSERVATION.search(text) or _COMPACT_OBSERVATION.search(text)
    return parse_actions(text), match.group(1) if match else None


def verify_record(record: dict, response: str) -> Verdict:
    """+1 for the expert's action, -1 otherwise, -1.5 when a stated observation is wrong."""
    task = record["task"] if isinstance(record["task"], dict) else json.loads(record["task"])
    if not isinstance(response, str):
        return Verdict(False, -1.0, "the response is not text.")
    if len(response) > MAX_RESPONSE_CHARS:
        return Verdict(False, -1.0, f"the response is longer than {MAX_RESPONSE_CHARS} characters.")
    actions, stated = _response_parts(response)

    recognized = None
    if stated is not None:
        truth = task["observation"]
        intersection, views = parse_observation(stated, STYLES[task["style"]].landmarks)
        true_views = {side: name for side, name in truth["views"].items() if name}
        recognized = intersection == truth["intersection"] and views == true_views
    # A wrongly read view costs more than a wrong action, as in the paper (-1.5 against -1).
    penalty = -1.5 if recognized is False else -1.0

    distinct = sorted(set(actions))
    if not distinct:
        feedback = "no action was found; answer with forward(), turn_direction(x) or stop()."
        return Verdict(False, penalty, feedback, recognized)
    if len(distinct) > 1:
        # Naming several actions would otherwise let a hedging answer collect the reward.
        feedback = f"the response names more than one action ({', '.join(distinct)})."
        return Verdict(False, penalty, feedback, recognized)
    action = distinct[0]
    if action == task["expected"]:
        return Verdict(True, 1.0 if recognized is not False else -1.5, "", recognized)
    allowed = HEADINGS if task["action_space"] == "absolute" else RELATIVE
    argument = action[len("turn_direction(") : -1] if action.startswith("turn_direction(") else None
    if argument is not None and argument not in allowed:
        feedback = f"{action} is not in the {task['action_space']} action space."
    else:
        feedback = f"{action} is not the right action at this step."
    if recognized is False:
        feedback = f"the stated observation does not match the current view, and {feedback}"
    return Verdict(False, penalty, feedback, recognized)
