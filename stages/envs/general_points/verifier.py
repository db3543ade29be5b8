"""GeneralPoints verifier: reads a model's answer in either prompt style and scores it.

The paper's reward schedule (`CORRECT`, `WRONG_VALUE`, `WRONG_NUMBERS`, `ILLEGAL`, `MISRECOGNIZED`).
It never evaluates model output as code; it parses a whitelist grammar itself. `verify` scores an answer
for a hand, `verify_record` for a generated record.

Precedence when several faults apply (the most basic fault wins, so the feedback names the
first thing to fix): illegal answer (-3) > misrecognised cards, VL only (-1.5) > numbers that
are not the cards' values or unused / over-used cards (-2) > wrong value or arithmetic (-1).
Whatever else happens, a VL verdict reports whether the cards were recognised.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction

from stages.core.params import MISSING
from stages.envs import Verdict
from stages.envs.general_points.solver import apply_op, fmt

CORRECT, WRONG_VALUE, WRONG_NUMBERS, ILLEGAL, MISRECOGNIZED = 5.0, -1.0, -2.0, -3.0, -1.5

MAX_CHARS = 2000  # longer answers are illegal before any parsing
MAX_DEPTH = 32  # parenthesis nesting
MAX_DIGITS = 7  # per number literal
MAX_MAGNITUDE = 10**12  # numerator and denominator of every intermediate value


class _Illegal(Exception):
    """The answer breaks the grammar or a bound; the message is the feedback."""


class _Faults:
    """The first message for each kind of fault found while reading an answer.

    The reward is the lowest of the faults found, so a misread hand (-1.5) never scores above the same
    formula with the cards read right (wrong numbers, -2): ranking misreading first paid GRPO to stop
    reading. The feedback names the first fault in ORDER, the one to fix first.
    """

    ORDER = (ILLEGAL, MISRECOGNIZED, WRONG_NUMBERS, WRONG_VALUE)

    def __init__(self) -> None:
        self.found: dict[float, str] = {}

    def add(self, kind: float, message: str) -> None:
        self.found.setdefault(kind, message)

    def worst(self) -> tuple[float, str] | None:
        first = next((k for k in self.ORDER if k in self.found), None)
        return None if first is None else (min(self.found), self.found[first])


def verify(response, numbers, target=24, cards=None) -> Verdict:
    """Score a whole answer (either prompt style) for a hand with card values `numbers`.

    `cards` (the true ranks) turns on the VL recognition check. Never raises on any response.
    """
    numbers = [Fraction(n) for n in numbers]
    target = Fraction(target)
    want_cards = None if cards is None else [_norm_rank(c) for c in cards]
    faults = _Faults()
    stated_cards: list[str] | None = None
    try:
        stated_cards = _read(response, numbers, target, faults)
    except Exception:  # a reader bug must not crash a training run; count it as unreadable
        faults.add(ILLEGAL, "your answer cannot be read.")
    recognized = None
    if want_cards is not None:
        recognized = stated_cards is not None and sorted(stated_cards) == sorted(want_cards)
        if not recognized:
            faults.add(MISRECOGNIZED, "you did not state the cards correctly.")
    worst = faults.worst()
    if worst is None:
        return Verdict(True, CORRECT, "", recognized)
    return Verdict(False, worst[0], worst[1], recognized)


_STEPS_RE = re.compile(r"\bSteps\s*:")


def _read(response, numbers: list[Fraction], target: Fraction, faults: _Faults) -> list[str] | None:
    """Dispatch on the style; record faults; return the stated cards (None if not stated)."""
    if not isinstance(response, str):
        faults.add(ILLEGAL, "your answer is not text.")
        return None
    if len(response) > MAX_CHARS:
        faults.add(ILLEGAL, f"your answer is longer than {MAX_CHARS} characters.")
        return None
    text = response.strip()
    if _STEPS_RE.search(text):
        return _read_compact(text, numbers, target, faults)
    if "formula" in text:
        return _read_json(text, numbers, target, faults)
    _check_formula(text, numbers, target, faults)  # a bare formula
    return None


# -- JSON style -------------------------------------------------------------------------------

_FIELD_RE = {name: re.compile(rf"""["']?{name}["']?\s*:\s*\[([^\]]*)\]""") for name in ("cards", "number")}
_FORMULA_RE = re.compile(r"""["']?formula["']?\s*:\s*(?:"([^"\n]*)"|'([^'\n]*)'|([^,}\n]*))""")


def _read_json(text: str, numbers: list[Fraction], target: Fraction, faults: _Faults) -> list[str] | None:
    obj = None
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidate = text[start : end + 1]
        # The paper's models write single quotes and trailing commas; try strict JSON, then that.
        relaxed = re.sub(r",\s*([}\]])", r"\1", candidate.replace("'", '"'))
        for attempt in (candidate, relaxed):
            try:
                obj = json.loads(attempt)
                break
            except (ValueError, RecursionError):
                continue
    if isinstance(obj, dict):
        formula, cards, number = obj.get("formula"), obj.get("cards"), obj.get("number", MISSING)
    else:  # not JSON at all: pull the fields out with patterns
        match = _FORMULA_RE.search(text)
        formula = next((g for g in match.groups() if g is not None), None) if match else None
        cards, number = (_regex_list(text, name) for name in ("cards", "number"))
        number = MISSING if number is None else number

    if number is not MISSING:
        listed = _as_numbers(number)
        if listed is None or Counter(listed) != Counter(numbers):
            faults.add(WRONG_NUMBERS, "the numbers you listed are not the cards' values.")
    if formula is None:
        faults.add(ILLEGAL, "your answer has no formula.")
    elif not isinstance(formula, str):
        faults.add(ILLEGAL, "your formula is not a string.")
    else:
        _check_formula(formula, numbers, target, faults)
    if isinstance(cards, list):
        return [_norm_rank(c) for c in cards]
    return None


def _regex_list(text: str, name: str) -> list[str] | None:
    match = _FIELD_RE[name].search(text)
    if not match:
        return None
    return [item.strip().strip("'\"").strip() for item in match.group(1).split(",") if item.strip()]


def _as_numbers(items) -> list[Fraction] | None:
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) < MAX_MAGNITUDE:
            out.append(Fraction(item))
        elif isinstance(item, str) and re.fullmatch(r"[0-9]{1,7}", item.strip()):
            out.append(Fraction(int(item.strip())))
        else:
            return None
    return out


def _norm_rank(card) -> str:
    """'j' -> 'J', ' 10♠' -> '10': ranks compare case-blind, suits and spaces ignored."""
    rank = str(card)[:20].upper()
    for junk in "♠♣♥♦ \t'\"":
        rank = rank.replace(junk, "")
    return rank


# -- formulas ---------------------------------------------------------------------------------


def _check_formula(formula: str, numbers: list[Fraction], target: Fraction, faults: _Faults) -> None:
    try:
        value, literals, stated = _parse_formula(formula)
    except _Illegal as err:
        faults.add(ILLEGAL, str(err))
        return
    _check_usage(literals, numbers, faults, "your formula")
    if stated is not None and stated != value:
        faults.add(WRONG_VALUE, f"your formula evaluates to {fmt(value)}, not the {fmt(stated)} you wrote.")
    elif value != target:
        faults.add(WRONG_VALUE, f"your formula evaluates to {fmt(value)}, not {fmt(target)}.")


def _check_usage(used: list[Fraction], numbers: list[Fraction], faults: _Faults, who: str) -> None:
    have, uses = Counter(numbers), Counter(used)
    for x in used:
        if x not in have:
            faults.add(WRONG_NUMBERS, f"{who} uses {fmt(x)}, which is not a card value.")
        elif uses[x] > have[x]:
            faults.add(WRONG_NUMBERS, f"{who} uses {fmt(x)} more often than the cards allow.")
    for x in numbers:
        if uses[x] < have[x]:
            faults.add(WRONG_NUMBERS, f"{who} does not use the card value {fmt(x)}.")


_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() would accept '٣' and '３'
_SPACE = frozenset(" \t\r\n")
_SYMBOLS = frozenset("+-*/()=")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _DIGITS:
            j = i
            while j < len(text) and text[j] in _DIGITS:
                j += 1
            if j - i > MAX_DIGITS:
                raise _Illegal("your formula contains a number that is too large.")
            tokens.append(text[i:j])
            i = j
        elif ch in _SYMBOLS:
            tokens.append(ch)
            i += 1
        elif ch in _SPACE:
            i += 1
        else:
            raise _Illegal(f"your formula contains the illegal character {ch!r}.")
    return tokens


def _parse_formula(text: str) -> tuple[Fraction, list[Fraction], Fraction | None]:
    """(value, number literals in order, value stated after '=' or None), or _Illegal."""
    tokens = _tokenize(text)
    if tokens.count("=") > 1:
        raise _Illegal("your formula has more than one '='.")
    stated = None
    if "=" in tokens:
        k = tokens.index("=")
        rhs, tokens = tokens[k + 1 :], tokens[:k]
        if len(rhs) != 1 or not rhs[0].isdigit():
            raise _Illegal("your formula must end with '= <number>' if it has an '='.")
        stated = Fraction(int(rhs[0]))
    if not tokens:
        raise _Illegal("your formula is empty.")
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.i != len(tokens):
        raise _Illegal(f"your formula cannot be parsed near {tokens[parser.i]!r}.")
    return value, parser.literals, stated


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ; factor := int | '(' expr ')'"""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.i, self.literals = tokens, 0, []

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.i]
            self.i += 1
            value = _bounded(value + self.term(depth) if op == "+" else value - self.term(depth))
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.i]
            self.i += 1
            right = self.factor(depth)
            if op == "/" and right == 0:
                raise _Illegal("your formula divides by zero.")
            value = _bounded(value * right if op == "*" else value / right)
        return value

    def factor(self, depth: int) -> Fraction:
        tok = self.peek()
        if tok is None:
            raise _Illegal("your formula ends too early.")
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise _Illegal("your formula is nested too deeply.")
            self.i += 1
            value = self.expr(depth + 1)
            if self.peek() != ")":
                raise _Illegal("your formula has an unclosed '('.")
            self.i += 1
            return value
        if tok.isdigit():
            self.i += 1
            value = Fraction(int(tok))
            self.literals.append(value)
            return value
        raise _Illegal(f"your formula cannot be parsed near {tok!r}.")


def _bounded(x: Fraction) -> Fraction:
    if abs(x.numerator) > MAX_MAGNITUDE or x.denominator > MAX_MAGNITUDE:
        raise _Illegal("your formula produces a value that is too large.")
    return x


# -- compact style ----------------------------------------------------------------------------

_NUMBER_TOKEN = re.compile(r"-?[0-9]{1,7}(?:/[0-9]{1,7})?")  # [0-9] is ASCII-only
_INT_TOKEN = re.compile(r"[0-9]{1,7}")


def _number_token(tok: str, where: str) -> Fraction:
    if not _NUMBER_TOKEN.fullmatch(tok):
        raise _Illegal(f"{where} has {tok!r} where a number should be.")
    num, _, den = tok.partition("/")
    if den and int(den) == 0:
        raise _Illegal(f"{where} has a zero denominator.")
    return Fraction(int(num), int(den) if den else 1)


def _read_compact(text: str, numbers: list[Fraction], target: Fraction, faults: _Faults) -> list[str] | None:
    # ',' '=' ':' never belong to a number, so splitting around them forgives missing spaces.
    tokens = re.sub(r"([,=:])", r" \1 ", text).split()
    k = next((i for i in range(len(tokens) - 1) if tokens[i] == "Steps" and tokens[i + 1] == ":"), None)
    if k is None:
        faults.add(ILLEGAL, "your answer has no 'Steps :'.")
        return None
    sections: dict[str, list[str]] = {}
    head, i = tokens[:k], 0
    while i < len(head):
        label = head[i]
        if label not in ("Cards", "Numbers") or label in sections or head[i + 1 : i + 2] != [":"]:
            faults.add(ILLEGAL, "your answer cannot be parsed before 'Steps :'.")
            return None
        j = i + 2
        while j < len(head) and head[j] != ".":
            j += 1
        sections[label] = head[i + 2 : j]
        i = j + 1
    cards = [_norm_rank(c) for c in sections["Cards"]] if "Cards" in sections else None

    try:
        if "Numbers" in sections:
            listed = [_number_token(t, "your Numbers list") for t in sections["Numbers"]]
            if Counter(listed) != Counter(numbers):
                faults.add(WRONG_NUMBERS, "the numbers you listed are not the cards' values.")
        _check_steps(tokens[k + 2 :], numbers, target, faults)
    except _Illegal as err:
        faults.add(ILLEGAL, str(err))
    return cards


def _check_steps(body: list[str], numbers: list[Fraction], target: Fraction, faults: _Faults) -> None:
    """Replay `a op b = c , ...`: operands come from the unused cards and earlier results."""
    if body and body[-1] == ".":
        body = body[:-1]
    groups: list[list[str]] = [[]]
    for tok in body:
        groups[-1].append(tok) if tok != "," else groups.append([])
    if groups == [[]]:
        groups = []
    steps = []
    for n, g in enumerate(groups, 1):
        where = f"step {n}"
        if len(g) != 5 or g[1] not in ("+", "-", "*", "/") or g[3] != "=":
            raise _Illegal(f"{where} is not of the form 'a op b = c'.")
        a, b, c = (_number_token(t, where) for t in (g[0], g[2], g[4]))
        if g[1] == "/" and b == 0:
            raise _Illegal(f"{where} divides by zero.")
        steps.append((a, g[1], b, c, _bounded(apply_op(a, g[1], b))))

    pool = Counter(numbers)
    for n, (a, op, b, c, true) in enumerate(steps, 1):
        for x in (a, b):
            if pool[x] > 0:
                pool[x] -= 1
            else:
                faults.add(WRONG_NUMBERS, f"step {n} uses {fmt(x)}, which is not an unused card or result.")
        if true != c:
            faults.add(WRONG_VALUE, f"{fmt(a)} {op} {fmt(b)} is {fmt(true)}, not {fmt(c)}.")
        pool[c] += 1
    # What is left must be exactly one number, the answer: the last result (or the only card).
    final = steps[-1][3] if steps else None
    if steps:
        pool[final] -= 1
    left = sorted((+pool).elements())
    if steps and left or not steps and len(left) != 1:
        faults.add(WRONG_NUMBERS, f"your steps leave {fmt(left[-1])} unused.")
    elif (final if steps else left[0]) != target:
        faults.add(WRONG_VALUE, f"your steps reach {fmt(final if steps else left[0])}, not {fmt(target)}.")


def verify_record(record: Mapping, response: str) -> Verdict:
    task = json.loads(record["task"])
    cards = task["cards"] if task.get("visual") else None
    return verify(response, task["numbers"], task["target"], cards)
