"""Scoring a benchmark answer as the benchmark's own evaluation does (docs/benchmarks.md).

Multiple choice is scored by letter (the option's text counts as its letter, as MMMU's parser and MathVista's
quick extraction allow), free-form math with math-verify (lm-evaluation-harness, lmms-eval and TRL use it).
Model output is untrusted: it is cut to its tail before parsing and never evaluated.
"""

from __future__ import annotations

import re
import threading

from stages.benchmarks.catalogue import LETTERS, Item

# Answers come last; a longer response is cut to its tail before any parsing (bounded work per item).
MAX_RESPONSE_CHARS = 4000
MAX_GOLD_CHARS = 1000


def _timeouts() -> dict:
    """math-verify's timeouts use signal.alarm, which works in the main thread only; elsewhere they are
    off, and the bounded input (MAX_RESPONSE_CHARS) is the limit."""
    main = threading.current_thread() is threading.main_thread()
    return {"parse": 5 if main else None, "verify": 5 if main else None}


def math_parse(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=_timeouts()["parse"])


def math_equal(gold: str, response: str, float_rounding: int = 6) -> bool:
    """Whether math-verify finds `response`'s final answer equal to `gold` (a value or LaTeX, without $)."""
    from math_verify import verify

    gold = gold[:MAX_GOLD_CHARS]
    gold_parsed = math_parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$") or math_parse(gold)
    target = math_parse(response[-MAX_RESPONSE_CHARS:])
    if not gold_parsed or not target:
        return False
    return bool(
        verify(gold_parsed, target, float_rounding=float_rounding, timeout_seconds=_timeouts()["verify"])
    )


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def normalize(text: str) -> str:
    return re.sub(r"[\s$.]+", "", text).lower().replace("\\text{", "").replace("}", "").replace("{", "")


def extract_choice(response: str, choices: list[str], letters: int = 5) -> str | None:
    """The option letter a response gives, or None: MMMU's parser order, most specific first.

    A \\boxed{} letter, then "(B)", then "answer is B" / "Answer: B", then a standalone capital letter; at
    each step the last occurrence wins. A response without a letter that states an option's text (or,
    by math-verify, its value: 0.5 for \\frac{1}{2}) gets that option's letter. `letters` bounds the
    letters when the options are not listed (MathVerse).
    """
    response = response[-MAX_RESPONSE_CHARS:]
    allowed = LETTERS[: len(choices) or letters]
    boxed = last_boxed(response)
    if boxed is not None:
        inner = normalize(boxed).strip("()").upper()
        if len(inner) == 1 and inner in allowed:
            return inner
    patterns = (
        rf"\(([{allowed}])\)",
        rf"answer(?: is|:)\s*\(?([{allowed}])\b",
        rf"(?<![A-Za-z0-9])([{allowed}])(?![A-Za-z0-9])",
    )
    for pattern in patterns:
        found = re.findall(pattern, response, flags=re.IGNORECASE if "answer" in pattern else 0)
        if found:
            return found[-1].upper()
    if not choices:
        return None
    said = boxed if boxed is not None else response
    for i, choice in enumerate(choices):
        if normalize(choice) and normalize(choice) == normalize(said):
            return LETTERS[i]
    # the option's text inside a longer answer (MMMU: the option whose text occurs last)
    lowered = response.lower()
    spots = [(lowered.rfind(c.lower()), i) for i, c in enumerate(choices) if len(c.strip()) > 1]
    spots = [spot for spot in spots if spot[0] >= 0]
    if spots:
        return LETTERS[max(spots)[1]]
    for i, choice in enumerate(choices):
        if math_equal(choice, said):
            return LETTERS[i]
    return None


def free_form_correct(gold: str | list[str], response: str, precision: int | None = None) -> bool:
    """math-verify on the final answer; a gold that is no math (a word, MMMU open) compares as text."""
    golds = gold if isinstance(gold, list) else [gold]
    response = response[-MAX_RESPONSE_CHARS:]
    for value in golds:
        value = str(value)
        if math_equal(value, response, float_rounding=6 if precision is None else precision):
            return True
        if not math_parse(f"${value[:MAX_GOLD_CHARS]}$"):  # text answer: MMMU's normalized match
            said = last_boxed(response) or response
            if normalize(value) and normalize(value) == normalize(said):
                return True
    return False


def score(item: Item, response: str) -> tuple[bool, str]:
    """(correct, the extracted answer) of one response."""
    response = response[-MAX_RESPONSE_CHARS:]
    if item.multiple_choice:
        letter = extract_choice(response, item.choices)
        return letter == item.answer, letter or ""
    extracted = math_parse(response)
    shown = str(extracted[-1]) if extracted else (last_boxed(response) or "")
    return free_form_correct(item.answer, response, item.precision), shown[:200]


def benchmark_average(metrics: dict[str, dict | None]) -> dict[str, float]:
    """{model: mean accuracy over its benchmarks} from metrics/benchmarks/<model>.json contents, for models
    that ran every benchmark the others ran (an average over different benchmarks would not compare)."""
    ran = {model: m["benchmarks"] for model, m in metrics.items() if m and m.get("benchmarks")}
    if not ran:
        return {}
    names = set.intersection(*(set(b) for b in ran.values()))
    return {
        model: round(sum(b[name]["accuracy"] for name in names) / len(names), 4)
        for model, b in ran.items()
        if set(b) == names and names
    }
