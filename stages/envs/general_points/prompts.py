"""GeneralPoints prompts: a drawn hand (`Hand`), its prompt and its oracle answer, in either style.

`json` is the paper's task description and answer; `compact` is word-level, every token separated
by a space, for the embedded model. For GP-VL the cards are in the image, not the prompt, and the
answer starts by naming them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction

from stages.envs.general_points.solver import Expr, fmt


@dataclass
class Hand:
    """A drawn problem: the cards, their values, the target and the oracle's steps and formula."""

    ranks: list[str]
    suits: list[str]
    values: list[int]
    target: int
    steps: list[tuple[Fraction, str, Fraction, Fraction]]
    expr: Expr


def _rule_words(face_values) -> str:
    j, q, k = face_values
    if j == q == k:
        return f"'J', 'Q', and 'K' count as '{j}'"
    return f"'J', 'Q', and 'K' count as '{j}', '{q}', and '{k}' respectively"


def prompt_text(hand: Hand, face_values, style: str, visual: bool) -> str:
    n, t = len(hand.ranks), hand.target
    if style == "compact":
        shown = "" if visual else f"Cards : {' '.join(hand.ranks)} . "
        return f"Rule : J Q K = {' '.join(map(str, face_values))} . {shown}Target : {t}"
    where = " in the image" if visual else ""
    letters = "xyzwuv"[:n]
    lines = [
        "[Task Description]",
        f"You are an expert {t} points card game player. You are observing these {n} cards{where}. "
        f"Note that {_rule_words(face_values)}, and each card must be used once. Your goal is to "
        f"output a formula that evaluates to {t}, using numbers from the cards and operators such as "
        "'+', '-', '*', '/', '(', ')', and '='.",
    ]
    if not visual:
        lines += ["", "[Input]", "Cards: [" + ", ".join(f"'{r}'" for r in hand.ranks) + "]"]
    lines += [
        "",
        "[Output]",
        "Your output should be in the following json format:",
        "{",
        f'  "cards": [{", ".join(letters)}], the cards you observe,',
        f'  "number": [{", ".join("abcdef"[:n])}], the numbers of the cards,',
        f'  "formula": "an equation that equals {t}",',
        "}",
    ]
    return "\n".join(lines)


def answer_text(hand: Hand, style: str, visual: bool) -> str:
    if style == "json":
        obj = {"cards": hand.ranks, "number": hand.values, "formula": hand.expr.text}
        return json.dumps(obj)
    steps = " , ".join(f"{fmt(a)} {op} {fmt(b)} = {fmt(c)}" for a, op, b, c in hand.steps)
    cards = f"Cards : {' '.join(hand.ranks)} . " if visual else ""
    return f"{cards}Numbers : {' '.join(map(str, hand.values))} . Steps : {steps}"
