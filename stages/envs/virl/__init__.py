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

The package has one module per job:
  world.py       headings and turns, the city, observing and moving.
  routes.py      planning a route, the expert's steps, the instructions, the held-out bucket.
  prompts.py     actions and observations as text; one step's record.
  generation.py  the generate.virl params and every split's records (`iter_records`).
  verifier.py    `verify_record`: an answer against the expert's action, with the rewards.
  images.py      virl_vl's four-view images, in the city styles.
"""

from stages.envs.virl.generation import (
    DEFAULTS,
    IMAGE_KEYS,
    OOD_VISUAL,
    PROMPT_STYLES,
    generate,
    iter_records,
    validate,
)
from stages.envs.virl.prompts import action_text, build_record
from stages.envs.virl.routes import Route, expert_steps, heldout, sample_route
from stages.envs.virl.verifier import parse_actions, parse_observation, verify_record
from stages.envs.virl.world import (
    HEADING_NAMES,
    HEADINGS,
    RELATIVE,
    SIDES,
    apply_turn,
    move,
    observe,
    relative_turn,
)

__all__ = [
    "DEFAULTS",
    "HEADINGS",
    "HEADING_NAMES",
    "IMAGE_KEYS",
    "OOD_VISUAL",
    "PROMPT_STYLES",
    "RELATIVE",
    "SIDES",
    "Route",
    "action_text",
    "apply_turn",
    "build_record",
    "expert_steps",
    "generate",
    "heldout",
    "iter_records",
    "move",
    "observe",
    "parse_actions",
    "parse_observation",
    "relative_turn",
    "sample_route",
    "validate",
    "verify_record",
]
