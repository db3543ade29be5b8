"""GeneralPoints: reach a target number from a hand of cards with + - * / and parentheses.

The module has four parts, in order:
  1. `solve`: every distinct formula for a hand, with exact fractions.
  2. `verify`: reads a model's answer in either prompt style and scores it with the paper's reward
     schedule. It never evaluates model output as code; it parses a whitelist grammar itself.
  3. `generate`: hands, prompts, oracle answers and (GP-VL) card images for every split.
  4. `verify_record`: `verify` for a generated record.

Prompt styles. `json` is the paper's: the answer is {"cards": [...], "number": [...], "formula": ...}.
`compact` suits a ~1M-parameter word-level model, every token separated by a space:
    prompt  Rule : J Q K = 10 10 10 . Cards : 5 J 8 . Target : 20
    answer  Numbers : 5 10 8 . Steps : 10 + 8 = 18 , 18 + 5 = 23 ...
For GP-VL the cards are in the image, not the prompt, and the answer starts with `Cards : 5 J 8 .`.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

from stages.envs import Verdict
from stages.envs.card_images import BLACK_SUITS, RED_SUITS, SUITS, render_cards
from stages.params import ParamError, check_int

# The embedded default, copied to params.yaml under generate.gp (see docs/embedded_default.md).
DEFAULTS: dict = {
    "num_cards": [2, 2, 3, 3, 4],  # each hand's size drawn uniformly from this list: 40% 2, 40% 3, 20% 4
    "target": "chain",  # an integer (e.g. 24) or "chain": the value of a random chain of steps
    "max_target": 99,  # chain mode: every intermediate result and the target lie in [1, max_target]
    "ops": "+-*",  # chain mode: operators the chain may use
    "prompt_style": "compact",  # compact | json
    "corpus_mix": {"id": 0.4, "ood": 0.4, "random": 0.2},  # rules in the pretraining corpus
    "eval_face_card": True,  # every eval hand holds a face card (ID and OOD evals stay comparable)
    "image_width": 256,
    "image_height": 96,
}

RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
FACES = ("J", "Q", "K")
RULES = {"id": (10, 10, 10), "ood": (11, 12, 13)}  # values of J, Q, K; "random" draws them

CORRECT, WRONG_VALUE, WRONG_NUMBERS, ILLEGAL, MISRECOGNIZED = 5.0, -1.0, -2.0, -3.0, -1.5

MAX_CARDS = 6  # solve() handles up to this many numbers
MAX_CHARS = 2000  # longer answers are illegal before any parsing
MAX_DEPTH = 32  # parenthesis nesting
MAX_DIGITS = 7  # per number literal
MAX_MAGNITUDE = 10**12  # numerator and denominator of every intermediate value

# ---------------------------------------------------------------------------------------------
# 1. Solver
#
# An expression is kept in a canonical form: sums and products are flattened into positive and
# negative terms (a - (b - c) -> a + c - b; a / (b / c) -> a * c / b) and the terms sorted, so
# formulas that differ only by commutativity or associativity print the same text, and the text
# is the dedupe key. The search is target-driven: the values reachable by each sub-multiset are
# computed once (cheap), and formulas are only built for the (sub-multiset, value) pairs that lead
# to the target.


@dataclass(frozen=True, eq=False)
class _Expr:
    kind: str  # "n" a number, "+" a sum, "*" a product
    value: Fraction
    text: str
    pos: tuple[_Expr, ...] = ()  # terms added / multiplied
    neg: tuple[_Expr, ...] = ()  # terms subtracted / divided by


def _leaf(n: int) -> _Expr:
    return _Expr("n", Fraction(n), str(n))


def _order(e: _Expr) -> tuple:
    return (-e.value, e.text)  # larger terms first reads naturally: "10 * 2 + 4"


def _combine(a: _Expr, op: str, b: _Expr) -> _Expr:
    kind = "+" if op in "+-" else "*"
    ap, an = (a.pos, a.neg) if a.kind == kind else ((a,), ())
    bp, bn = (b.pos, b.neg) if b.kind == kind else ((b,), ())
    if op in "-/":
        bp, bn = bn, bp
    value = _apply(a.value, op, b.value)
    pos, neg = tuple(sorted(ap + bp, key=_order)), tuple(sorted(an + bn, key=_order))
    plus, minus = (" + ", " - ") if kind == "+" else (" * ", " / ")

    def show(t: _Expr) -> str:
        return f"({t.text})" if kind == "*" and t.kind == "+" else t.text

    # The leftmost leaf of any tree is a positive term, so `pos` is never empty.
    text = plus.join(show(t) for t in pos) + "".join(minus + show(t) for t in neg)
    return _Expr(kind, value, text, pos, neg)


def _splits(ms: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Distinct unordered splits of a sorted multiset into two non-empty parts."""
    found: dict = {}
    for r in range(1, len(ms) // 2 + 1):
        for idx in itertools.combinations(range(len(ms)), r):
            a = tuple(ms[i] for i in idx)
            b = tuple(x for i, x in enumerate(ms) if i not in idx)
            found.setdefault((a, b) if a <= b else (b, a), None)
    return list(found)


def _values(ms: tuple[int, ...], memo: dict) -> dict[Fraction, None]:
    """Every value reachable from multiset `ms` (an ordered dict used as a set)."""
    if len(ms) <= 3:
        return _small_values(ms)
    if ("v", ms) not in memo:
        memo["v", ms] = _compute_values(ms, memo)
    return memo["v", ms]


@cache  # at most C(15, 3) + C(14, 2) + 13 multisets of card values
def _small_values(ms: tuple[int, ...]) -> dict[Fraction, None]:
    return _compute_values(ms, {})


def _compute_values(ms: tuple[int, ...], memo: dict) -> dict[Fraction, None]:
    if len(ms) == 1:
        return {Fraction(ms[0]): None}
    out: dict[Fraction, None] = {}
    for a, b in _splits(ms):
        vb = _values(b, memo)
        for x in _values(a, memo):
            for y in vb:
                for v in (x + y, x - y, y - x, x * y):
                    out[v] = None
                if y:
                    out[x / y] = None
                if x:
                    out[y / x] = None
    return out


def _partners(x: Fraction, v: Fraction, vb: dict) -> list[tuple[str, Fraction, bool]]:
    """(op, y, swapped) for every y in vb with x op y == v (or y op x == v when swapped)."""
    found = []

    def want(op: str, y: Fraction, swapped: bool) -> None:
        if y in vb:
            found.append((op, y, swapped))

    want("+", v - x, False)
    want("-", x - v, False)
    want("-", v + x, True)
    if x:
        want("*", v / x, False)
        want("/", v * x, True)
        if v:
            want("/", x / v, False)
    else:
        found.extend(("*", y, False) for y in vb if v == 0)
        found.extend(("/", y, False) for y in vb if v == 0 and y)
    return found


def _exprs(ms: tuple[int, ...], v: Fraction, memo: dict) -> dict[str, _Expr]:
    """Every canonical formula over multiset `ms` with value v, keyed by its text."""
    if len(ms) <= 3:
        return _small_exprs(ms, v)
    if ("e", ms, v) not in memo:
        memo["e", ms, v] = _compute_exprs(ms, v, memo)
    return memo["e", ms, v]


@lru_cache(maxsize=1 << 16)
def _small_exprs(ms: tuple[int, ...], v: Fraction) -> dict[str, _Expr]:
    return _compute_exprs(ms, v, {})


def _compute_exprs(ms: tuple[int, ...], v: Fraction, memo: dict) -> dict[str, _Expr]:
    if len(ms) == 1:
        return {str(ms[0]): _leaf(ms[0])} if v == ms[0] else {}
    out: dict[str, _Expr] = {}
    for a, b in _splits(ms):
        vb = _values(b, memo)
        for x in _values(a, memo):
            for op, y, swapped in _partners(x, v, vb):
                for ea in _exprs(a, x, memo).values():
                    for eb in _exprs(b, y, memo).values():
                        e = _combine(eb, op, ea) if swapped else _combine(ea, op, eb)
                        out.setdefault(e.text, e)
    return out


def _check_hand(numbers) -> tuple[int, ...]:
    numbers = list(numbers)
    if not 1 <= len(numbers) <= MAX_CARDS:
        raise ValueError(f"solve takes 1 to {MAX_CARDS} numbers, got {len(numbers)}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in numbers):
        raise ValueError(f"numbers must be non-negative integers, got {numbers}")
    return tuple(sorted(numbers))


def solve(numbers, target=24) -> list[str]:
    """All distinct formulas (shortest first) that use each number once and equal `target`."""
    found = _exprs(_check_hand(numbers), Fraction(target), {})
    return sorted(found, key=lambda text: (len(text), text))


def solvable(numbers, target=24) -> bool:
    """Whether any formula reaches `target` (much cheaper than `solve`)."""
    return Fraction(target) in _values(_check_hand(numbers), {})


@lru_cache(maxsize=1 << 16)
def _oracle_expr(ms: tuple[int, ...], target: int) -> _Expr | None:
    found = _exprs(ms, Fraction(target), {})
    return min(found.values(), key=lambda e: (len(e.text), e.text)) if found else None


def _expr_steps(e: _Expr) -> list[tuple[Fraction, str, Fraction, Fraction]]:
    """The formula as binary steps (a, op, b, result), sub-terms first, for the compact style."""
    if e.kind == "n":
        return []
    steps = [step for term in e.pos + e.neg for step in _expr_steps(term)]
    plus, minus = ("+", "-") if e.kind == "+" else ("*", "/")
    acc = e.pos[0].value
    for term, op in [(t, plus) for t in e.pos[1:]] + [(t, minus) for t in e.neg]:
        result = _apply(acc, op, term.value)
        steps.append((acc, op, term.value, result))
        acc = result
    return steps


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b  # ZeroDivisionError is the caller's to handle


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


# ---------------------------------------------------------------------------------------------
# 2. Verifier
#
# Precedence when several faults apply (the most basic fault wins, so the feedback names the
# first thing to fix): illegal answer (-3) > misrecognised cards, VL only (-1.5) > numbers that
# are not the cards' values or unused / over-used cards (-2) > wrong value or arithmetic (-1).
# Whatever else happens, a VL verdict reports whether the cards were recognised.


class _Illegal(Exception):
    """The answer breaks the grammar or a bound; the message is the feedback."""


class _Faults:
    """The first message for each kind of fault found while reading an answer."""

    ORDER = (ILLEGAL, MISRECOGNIZED, WRONG_NUMBERS, WRONG_VALUE)

    def __init__(self) -> None:
        self.found: dict[float, str] = {}

    def add(self, kind: float, message: str) -> None:
        self.found.setdefault(kind, message)

    def worst(self) -> tuple[float, str] | None:
        return next(((k, self.found[k]) for k in self.ORDER if k in self.found), None)


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
_MISSING = object()


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
        formula, cards, number = obj.get("formula"), obj.get("cards"), obj.get("number", _MISSING)
    else:  # not JSON at all: pull the fields out with patterns
        match = _FORMULA_RE.search(text)
        formula = next((g for g in match.groups() if g is not None), None) if match else None
        cards, number = (_regex_list(text, name) for name in ("cards", "number"))
        number = _MISSING if number is None else number

    if number is not _MISSING:
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
        faults.add(WRONG_VALUE, f"your formula evaluates to {_fmt(value)}, not the {_fmt(stated)} you wrote.")
    elif value != target:
        faults.add(WRONG_VALUE, f"your formula evaluates to {_fmt(value)}, not {_fmt(target)}.")


def _check_usage(used: list[Fraction], numbers: list[Fraction], faults: _Faults, who: str) -> None:
    have, uses = Counter(numbers), Counter(used)
    for x in used:
        if x not in have:
            faults.add(WRONG_NUMBERS, f"{who} uses {_fmt(x)}, which is not a card value.")
        elif uses[x] > have[x]:
            faults.add(WRONG_NUMBERS, f"{who} uses {_fmt(x)} more often than the cards allow.")
    for x in numbers:
        if uses[x] < have[x]:
            faults.add(WRONG_NUMBERS, f"{who} does not use the card value {_fmt(x)}.")


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
        steps.append((a, g[1], b, c, _bounded(_apply(a, g[1], b))))

    pool = Counter(numbers)
    for n, (a, op, b, c, true) in enumerate(steps, 1):
        for x in (a, b):
            if pool[x] > 0:
                pool[x] -= 1
            else:
                faults.add(WRONG_NUMBERS, f"step {n} uses {_fmt(x)}, which is not an unused card or result.")
        if true != c:
            faults.add(WRONG_VALUE, f"{_fmt(a)} {op} {_fmt(b)} is {_fmt(true)}, not {_fmt(c)}.")
        pool[c] += 1
    # What is left must be exactly one number, the answer: the last result (or the only card).
    final = steps[-1][3] if steps else None
    if steps:
        pool[final] -= 1
    left = sorted((+pool).elements())
    if steps and left or not steps and len(left) != 1:
        faults.add(WRONG_NUMBERS, f"your steps leave {_fmt(left[-1])} unused.")
    elif (final if steps else left[0]) != target:
        faults.add(WRONG_VALUE, f"your steps reach {_fmt(final if steps else left[0])}, not {_fmt(target)}.")


# ---------------------------------------------------------------------------------------------
# 3. Generation


def card_value(rank: str, face_values) -> int:
    if rank == "A":
        return 1
    if rank in FACES:
        return int(face_values[FACES.index(rank)])
    return int(rank)


def _param_error(key: str, value, allowed: str) -> ParamError:
    return ParamError(f"generate.gp.{key}={value!r} is not allowed; use {allowed}")


def check_config(cfg: Mapping) -> dict:
    """The full config (DEFAULTS for missing keys), validated; ParamError names a bad key."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ParamError(f"generate.gp.{unknown[0]} is not a known parameter; use: {', '.join(DEFAULTS)}")
    c = {**DEFAULTS, **cfg}

    sizes = c["num_cards"] if isinstance(c["num_cards"], list | tuple) else [c["num_cards"]]
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 5 for n in sizes):
        raise _param_error("num_cards", c["num_cards"], "an integer in 2..5 or a non-empty list of them")
    c["num_cards"] = [int(n) for n in sizes]

    target = c["target"]
    if target != "chain" and (
        isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= 10_000
    ):
        raise _param_error("target", target, "'chain' or an integer in [1, 10000]")
    check_int("generate.gp.max_target", c["max_target"], 1, 100_000)
    ops = c["ops"]
    if not isinstance(ops, str) or not ops or len(set(ops)) != len(ops) or set(ops) - set("+-*/"):
        raise _param_error("ops", ops, "a non-empty string of distinct operators from '+-*/'")
    if c["prompt_style"] not in ("compact", "json"):
        raise _param_error("prompt_style", c["prompt_style"], "one of: compact, json")
    if not isinstance(c["eval_face_card"], bool):
        raise _param_error("eval_face_card", c["eval_face_card"], "true or false")
    check_int("generate.gp.image_width", c["image_width"], 32, 4096)
    check_int("generate.gp.image_height", c["image_height"], 16, 4096)

    mix = c["corpus_mix"]
    if not isinstance(mix, Mapping) or sorted(mix) != ["id", "ood", "random"]:
        raise _param_error("corpus_mix", mix, "a mapping with keys id, ood, random")
    for key in ("id", "ood", "random"):
        share = mix[key]
        if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            raise _param_error(f"corpus_mix.{key}", share, "a number >= 0")
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise _param_error("corpus_mix", dict(mix), "shares that sum to 1")
    c["corpus_mix"] = {key: float(mix[key]) for key in ("id", "ood", "random")}
    return c


@dataclass
class _Hand:
    ranks: list[str]
    suits: list[str]
    values: list[int]
    target: int
    steps: list[tuple[Fraction, str, Fraction, Fraction]]
    expr: _Expr


def _random_chain(rng: random.Random, values: list[int], ops: str, max_target: int):
    """Steps combining two pool numbers at a time until one is left, all results in [1, max_target]."""
    for _ in range(20):
        pool = [_leaf(v) for v in values]
        steps = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            a, b, op = pool[i], pool[j], rng.choice(ops)
            if op == "-" and a.value < b.value or op == "/" and b.value > a.value:
                a, b = b, a  # keep results positive / exact more often instead of resampling
            if op == "/" and (b.value == 0 or a.value % b.value):
                break
            e = _combine(a, op, b)
            if not 1 <= e.value <= max_target:
                break
            steps.append((a.value, op, b.value, e.value))
            pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [e]
        else:
            return steps, pool[0]
    return None


def _draw_hand(rng: random.Random, cfg: dict, face_values, suits, need_face: bool, excluded) -> _Hand:
    """A hand whose problem is solvable and not in `excluded` (keys (sorted ranks, target))."""
    deck = [(rank, suit) for suit in suits for rank in RANKS]
    for _ in range(5000):
        cards = rng.sample(deck, rng.choice(cfg["num_cards"]))
        if need_face and not any(rank in FACES for rank, _ in cards):
            continue
        ranks, card_suits = [r for r, _ in cards], [s for _, s in cards]
        values = [card_value(r, face_values) for r in ranks]
        if cfg["target"] == "chain":
            chain = _random_chain(rng, values, cfg["ops"], cfg["max_target"])
            if chain is None:
                continue
            steps, expr = chain
        else:
            expr = _oracle_expr(tuple(sorted(values)), cfg["target"])
            if expr is None:
                continue
            steps = _expr_steps(expr)
        target = int(expr.value)
        if (tuple(sorted(ranks)), target) in excluded:
            continue
        return _Hand(ranks, card_suits, values, target, steps, expr)
    raise ParamError(
        f"generate.gp: no new solvable hand found for target={cfg['target']!r} with "
        f"num_cards={cfg['num_cards']}; ask for fewer records or allow more hands"
    )


def _rule_words(face_values) -> str:
    j, q, k = face_values
    if j == q == k:
        return f"'J', 'Q', and 'K' count as '{j}'"
    return f"'J', 'Q', and 'K' count as '{j}', '{q}', and '{k}' respectively"


def _prompt(hand: _Hand, face_values, style: str, visual: bool) -> str:
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


def _answer(hand: _Hand, style: str, visual: bool) -> str:
    if style == "json":
        obj = {"cards": hand.ranks, "number": hand.values, "formula": hand.expr.text}
        return json.dumps(obj)
    steps = " , ".join(f"{_fmt(a)} {op} {_fmt(b)} = {_fmt(c)}" for a, op, b, c in hand.steps)
    cards = f"Cards : {' '.join(hand.ranks)} . " if visual else ""
    return f"{cards}Numbers : {' '.join(map(str, hand.values))} . Steps : {steps}"


def _record(split: str, i: int, hand: _Hand, rule: str, face_values, cfg: dict, visual: bool) -> dict:
    task = {
        "cards": hand.ranks,
        "suits": hand.suits,
        "numbers": hand.values,
        "target": hand.target,
        "rule": rule,
        "face_values": list(face_values),
        "style": cfg["prompt_style"],
        "visual": visual,
    }
    record = {
        "id": f"gp-{split}-{i:06d}",
        "prompt": _prompt(hand, face_values, cfg["prompt_style"], visual),
        "answer": _answer(hand, cfg["prompt_style"], visual),
        "task": json.dumps(task, sort_keys=True),
    }
    if visual:
        cards = list(zip(hand.ranks, hand.suits, strict=True))
        red = hand.suits[0] in RED_SUITS
        record["image"] = render_cards(cards, cfg["image_width"], cfg["image_height"], red=red)
    return record


def _corpus_rules(count: int, mix: dict, rng: random.Random) -> list[str]:
    """Exactly round(share * count) records per rule (largest remainder), in shuffled order."""
    exact = {rule: share * count for rule, share in mix.items()}
    counts = {rule: int(x) for rule, x in exact.items()}
    by_remainder = sorted(mix, key=lambda rule: (-(exact[rule] - counts[rule]), rule))
    for rule in by_remainder[: count - sum(counts.values())]:
        counts[rule] += 1
    rules = [rule for rule in ("id", "ood", "random") for _ in range(counts[rule])]
    rng.shuffle(rules)
    return rules


def generate(sizes: Mapping[str, int], cfg: Mapping, seed: int, visual: bool) -> dict[str, list[dict]]:
    """Records for every split. Eval splits are drawn first and held out of train and corpus."""
    cfg = check_config(cfg)
    splits = ("train", "eval_id", "eval_ood_rule", *(("eval_ood_visual",) if visual else ()), "corpus")
    unknown = sorted(set(sizes) - set(splits) - {"eval_ood_visual"})
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}; GeneralPoints has {', '.join(splits)}")
    counts = {split: check_int(f"sizes.{split}", sizes.get(split, 0), 0) for split in splits}
    # VL draws from the black or the red half of the deck; the text game from the whole deck.
    id_suits = BLACK_SUITS if visual else SUITS

    def one(split: str, i: int, rng: random.Random, rule: str, suits, need_face: bool, excluded) -> dict:
        faces = RULES.get(rule) or tuple(rng.randint(1, 13) for _ in FACES)
        hand = _draw_hand(rng, cfg, faces, suits, need_face, excluded)
        return _record(split, i, hand, rule, faces, cfg, visual)

    out: dict[str, list[dict]] = {}
    held_out: set = set()
    face = cfg["eval_face_card"]
    evals = {"eval_id": ("id", id_suits, face), "eval_ood_rule": ("ood", id_suits, True)}
    if visual:
        evals["eval_ood_visual"] = ("id", RED_SUITS, face)
    for split, (rule, suits, need_face) in evals.items():
        rng = random.Random(f"{seed}-gp-{split}")
        seen: set = set()  # distinct problems within an eval split, so no prompt counts twice
        out[split] = []
        for i in range(counts[split]):
            out[split].append(one(split, i, rng, rule, suits, need_face, seen))
            seen.add(_key(out[split][-1]))
        held_out |= seen

    rng = random.Random(f"{seed}-gp-train")
    out["train"] = [one("train", i, rng, "id", id_suits, False, held_out) for i in range(counts["train"])]
    rng = random.Random(f"{seed}-gp-corpus")
    rules = _corpus_rules(counts["corpus"], cfg["corpus_mix"], rng)
    # A rule variant only shows in hands with a face card, so OOD and random-rule hands hold one.
    out["corpus"] = [one("corpus", i, rng, r, id_suits, r != "id", held_out) for i, r in enumerate(rules)]
    return {split: out[split] for split in splits}


def _key(record: dict) -> tuple:
    task = json.loads(record["task"])
    return (tuple(sorted(task["cards"])), task["target"])


# ---------------------------------------------------------------------------------------------
# 4. Records


def verify_record(record: Mapping, response: str) -> Verdict:
    task = json.loads(record["task"])
    cards = task["cards"] if task.get("visual") else None
    return verify(response, task["numbers"], task["target"], cards)
