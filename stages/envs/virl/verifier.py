"""Verification of a V-IRL answer: the action (and, for virl_vl, the observation read from the image) against
the expert's, with the paper's rewards. Model output is untrusted: bounded, parsed by regular expressions."""

from __future__ import annotations

import json
import re

from stages.envs import Verdict
from stages.envs.virl.images import STYLES
from stages.envs.virl.world import HEADINGS, RELATIVE, SIDE_PHRASES

MAX_RESPONSE_CHARS = 2000


_ACTION = re.compile(
    r"\b(forward|stop)\s*\(\s*\)|\bturn_direction\s*\(\s*['\"]?\s*([a-z]{1,12}(?:\s{1,3}[a-z]{1,12})?)\s*['\"]?\s*\)"
)


_JSON_OBSERVATION = re.compile(r'"current observation"\s*:\s*"([^"]{0,1000})"')


_COMPACT_OBSERVATION = re.compile(r"\bobservation\s*:(.{0,1000}?)(?:\baction\s*:|$)", re.DOTALL)


_SENTENCE_VIEW = re.compile(r"\b([a-z]{1,20}) is (on your right|on your left|in front of you|behind you)")


_COMPACT_VIEW = re.compile(r"\b(front|right|back|left)\s*:?\s*([a-z]{1,20})\b")


_PHRASE_SIDES = {phrase: side for side, phrase in SIDE_PHRASES.items()}


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
