"""GeneralPoints solver: every distinct formula over a hand that reaches a target, with exact fractions.

`solve` lists the formulas, `solvable` only asks whether one exists; `oracle_expr` (the shortest formula)
and `expr_steps` (a formula as binary steps) give generation its oracle answers for a fixed target.
`apply_op` and `fmt` are the exact arithmetic and number printing the verifier shares.

An expression is kept in a canonical form: sums and products are flattened into positive and
negative terms (a - (b - c) -> a + c - b; a / (b / c) -> a * c / b) and the terms sorted, so
formulas that differ only by commutativity or associativity print the same text, and the text
is the dedupe key. The search is target-driven: the values reachable by each sub-multiset are
computed once (cheap), and formulas are only built for the (sub-multiset, value) pairs that lead
to the target.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

MAX_CARDS = 6  # solve() handles up to this many numbers


@dataclass(frozen=True, eq=False)
class Expr:
    kind: str  # "n" a number, "+" a sum, "*" a product
    value: Fraction
    text: str
    pos: tuple[Expr, ...] = ()  # terms added / multiplied
    neg: tuple[Expr, ...] = ()  # terms subtracted / divided by


def leaf(n: int) -> Expr:
    return Expr("n", Fraction(n), str(n))


def _order(e: Expr) -> tuple:
    return (-e.value, e.text)  # larger terms first reads naturally: "10 * 2 + 4"


def combine(a: Expr, op: str, b: Expr) -> Expr:
    kind = "+" if op in "+-" else "*"
    ap, an = (a.pos, a.neg) if a.kind == kind else ((a,), ())
    bp, bn = (b.pos, b.neg) if b.kind == kind else ((b,), ())
    if op in "-/":
        bp, bn = bn, bp
    value = apply_op(a.value, op, b.value)
    pos, neg = tuple(sorted(ap + bp, key=_order)), tuple(sorted(an + bn, key=_order))
    plus, minus = (" + ", " - ") if kind == "+" else (" * ", " / ")

    def show(t: Expr) -> str:
        return f"({t.text})" if kind == "*" and t.kind == "+" else t.text

    # The leftmost leaf of any tree is a positive term, so `pos` is never empty.
    text = plus.join(show(t) for t in pos) + "".join(minus + show(t) for t in neg)
    return Expr(kind, value, text, pos, neg)


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


def _exprs(ms: tuple[int, ...], v: Fraction, memo: dict) -> dict[str, Expr]:
    """Every canonical formula over multiset `ms` with value v, keyed by its text."""
    if len(ms) <= 3:
        return _small_exprs(ms, v)
    if ("e", ms, v) not in memo:
        memo["e", ms, v] = _compute_exprs(ms, v, memo)
    return memo["e", ms, v]


@lru_cache(maxsize=1 << 16)
def _small_exprs(ms: tuple[int, ...], v: Fraction) -> dict[str, Expr]:
    return _compute_exprs(ms, v, {})


def _compute_exprs(ms: tuple[int, ...], v: Fraction, memo: dict) -> dict[str, Expr]:
    if len(ms) == 1:
        return {str(ms[0]): leaf(ms[0])} if v == ms[0] else {}
    out: dict[str, Expr] = {}
    for a, b in _splits(ms):
        vb = _values(b, memo)
        for x in _values(a, memo):
            for op, y, swapped in _partners(x, v, vb):
                for ea in _exprs(a, x, memo).values():
                    for eb in _exprs(b, y, memo).values():
                        e = combine(eb, op, ea) if swapped else combine(ea, op, eb)
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
def oracle_expr(ms: tuple[int, ...], target: int) -> Expr | None:
    found = _exprs(ms, Fraction(target), {})
    return min(found.values(), key=lambda e: (len(e.text), e.text)) if found else None


def expr_steps(e: Expr) -> list[tuple[Fraction, str, Fraction, Fraction]]:
    """The formula as binary steps (a, op, b, result), sub-terms first, for the compact style."""
    if e.kind == "n":
        return []
    steps = [step for term in e.pos + e.neg for step in expr_steps(term)]
    plus, minus = ("+", "-") if e.kind == "+" else ("*", "/")
    acc = e.pos[0].value
    for term, op in [(t, plus) for t in e.pos[1:]] + [(t, minus) for t in e.neg]:
        result = apply_op(acc, op, term.value)
        steps.append((acc, op, term.value, result))
        acc = result
    return steps


def apply_op(a: Fraction, op: str, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b  # ZeroDivisionError is the caller's to handle


def fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
