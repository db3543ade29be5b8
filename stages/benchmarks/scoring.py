"""Scoring a benchmark answer as the benchmark's own evaluation does (docs/benchmarks.md).

Multiple choice is scored by letter (the option's text counts as its letter, as MMMU's parser and MathVista's
quick extraction allow), free-form math with math-verify (lm-evaluation-harness, lmms-eval and TRL use it).
Beside that official verdict, a strict one credits only a response that commits to one answer: a response
stating several options (or several different boxed answers) is wrong under strict, whichever of them the
official parse picks (docs/benchmarks.md#strict-accuracy).
Model output is untrusted: it is cut to its tail before parsing and never evaluated.
"""

from __future__ import annotations

import re
import threading
from typing import NamedTuple

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


def gold_parse(gold: str) -> list:
    """math-verify's parse of a gold value (LaTeX without $ is read as math, else as it stands)."""
    gold = gold[:MAX_GOLD_CHARS]
    return math_parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$") or math_parse(gold)


def parsed_equal(gold_parsed: list, target: list, float_rounding: int = 6) -> bool:
    from math_verify import verify

    if not gold_parsed or not target:
        return False
    return bool(
        verify(gold_parsed, target, float_rounding=float_rounding, timeout_seconds=_timeouts()["verify"])
    )


def math_equal(gold: str, response: str, float_rounding: int = 6) -> bool:
    """Whether math-verify finds `response`'s final answer equal to `gold` (a value or LaTeX, without $)."""
    return parsed_equal(gold_parse(gold), math_parse(response[-MAX_RESPONSE_CHARS:]), float_rounding)


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


# ------------------------------------------------------------------------------------------------- strict
# The official parse picks one answer from any response: at each step MMMU's parser takes the last letter, so
# "(A) (B) (C) (D)" reads as D. Strict accuracy credits a response only where the official parse is right
# and the response commits to that one answer (docs/benchmarks.md#strict-accuracy). Every function here is
# pure, with bounded work on the cut response: regular expressions without nested quantifiers, scans, and at
# most MAX_STATEMENTS + len(LETTERS) math-verify parses.

MAX_STATEMENTS = 12  # a response stating an option only by its value: at most this many clauses are compared
MAX_BOXED_ANSWERS = 4  # distinct boxed answers compared by value; more count as several answers
# Between the options listed after an answer statement: "A or C", "(A), (C)", "A/C", "A and maybe C", "A C".
_CONNECTOR = r"(?:\s?(?:[,/&;|+]|(?i:or|and|vs\.?))\s?|\s)"
_CONNECTOR += r"(?:(?i:maybe|perhaps|possibly|probably|also|even)\s)?"
_VERB = r"(?:is|are|would be|should be|must be|will be)"
# "the answer is B", "Answer: B", "answers are A and C", "the correct option is B", "the option letter is B"
_STATEMENT_HEAD = rf"(?i:\banswers?(?:\s{_VERB})?\s?:|\banswers?\s{_VERB}"
_STATEMENT_HEAD += rf"|\b(?:option|choice)(?:\sletter)?\s{_VERB}\s?:?)"


class Verdict(NamedTuple):
    correct: bool  # the official parse (comparable with published numbers)
    strict: bool  # correct, and the response commits to that one answer
    extracted: str  # the answer the official parse read (at most 200 characters)


def collapse(text: str) -> str:
    """Every run of whitespace as one character (a newline where the run holds one): bounded regex work."""
    return re.sub(r"\s+", lambda run: "\n" if "\n" in run.group() else " ", text)


def boxed_all(text: str) -> list[str]:
    """The content of every closed \\boxed{...} (braces balanced), in the order they open, in one pass.

    An unclosed \\boxed{ has no content and is left out; a box inside a box is listed, and so is the outer.
    """
    stack: list[int | None] = []  # per open brace: where a box's content starts, or None (a plain brace)
    found = []
    for match in re.finditer(r"\\boxed\{|[{}]", text):
        if match.group() == "}":
            start = stack.pop() if stack else None
            if start is not None:
                found.append((start, text[start : match.start()]))
        else:
            stack.append(match.end() if match.group() != "{" else None)
    return [content for _, content in sorted(found)]


def boxed_answers(text: str) -> list[str]:
    """The answers a response boxes: every non-empty \\boxed{} that holds no other box, in order."""
    return [c for c in boxed_all(text) if c.strip() and "\\boxed{" not in c]


def _standalone(allowed: str) -> str:
    """An option letter standing alone, as MMMU's last fallback reads it (also inside "(B)")."""
    return rf"(?<![A-Za-z0-9])([{allowed}])(?![A-Za-z0-9])"


def own_occurrences(text: str, choices: list[str]) -> set[str]:
    """Letters of the options whose text (over one character, as MMMU's parser) occurs in `text` (lowered)
    somewhere not inside an occurrence of a longer option's text ("45°" inside "145°" does not count)."""
    texts = [collapse(c).lower() for c in choices[: len(LETTERS)]]
    spots = {}
    for i, option in enumerate(texts):
        if len(option.strip()) <= 1:
            continue
        found, at = [], text.find(option)
        while at >= 0:
            found.append(at)
            at = text.find(option, at + 1)
        spots[i] = found
    letters = set()
    for i, starts in spots.items():
        size = len(texts[i])
        longer = sorted(
            (at, at + len(texts[j])) for j, other in spots.items() if len(texts[j]) > size for at in other
        )
        reach, k = -1, 0  # the furthest end of a longer option's occurrence starting at or before `at`
        for at in starts:
            while k < len(longer) and longer[k][0] <= at:
                reach, k = max(reach, longer[k][1]), k + 1
            if reach < at + size:
                letters.add(LETTERS[i])
                break
    return letters


def named_exactly(said: str, choices: list[str]) -> set[str]:
    """Letters of the options whose text is all of `said`, normalized (as MMMU's parser compares)."""
    said = normalize(said)
    return {
        LETTERS[i] for i, c in enumerate(choices[: len(LETTERS)]) if normalize(c) and normalize(c) == said
    }


def _options_in_box(content: str, choices: list[str], allowed: str) -> set[str]:
    """The options a boxed answer states: a letter ("B", "(b)", "\\text{B}"), letters ("A, C", "A \\text{ or }
    C") or an option's text."""
    inner = normalize(content).strip("()").upper()
    if len(inner) == 1:
        return {inner} & set(allowed)
    stated = set(re.findall(_standalone(allowed), re.sub(r"\\[A-Za-z]+\s?\{|[{}]", " ", content)))
    if choices:
        stated |= named_exactly(content, choices) | own_occurrences(collapse(content).lower(), choices)
    return stated


def clauses(text: str) -> list[str]:
    """`text` cut at commas (not thousands separators), semicolons, newlines, "or" and "and", outside
    brackets: the clauses that may each state a value."""
    parts, depth, start = [], 0, 0
    cuts = r"[(\[{]|[)\]}]|[;\n]|,(?!\d{3}(?!\d))|\b(?:or|and)\b"
    for match in re.finditer(cuts, text, flags=re.IGNORECASE):
        token = match.group()
        if token in ("(", "[", "{"):
            depth += 1
        elif token in (")", "]", "}"):
            depth = max(depth - 1, 0)
        elif depth == 0:
            parts.append(text[start : match.start()])
            start = match.end()
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def committed_choices(response: str, choices: list[str], letters: int = 5) -> frozenset[str]:
    """Every option the response states as its answer, by the first of these that names any:

    1. its answer statements: every \\boxed{} (a letter, letters or an option's text) and every "the answer
       is B" / "Answer: B" / "the correct option is B", with the letters listed after it ("A or C", "A, C");
    2. every option letter it mentions at all ("(A) (B) (C) (D)", "B is wrong, so C");
    3. the option whose text is the whole answer (the last box, or the response), else every option whose
       text occurs in the response;
    4. every option whose value (math-verify) a boxed answer, or else a clause of the response, states
       (over MAX_STATEMENTS clauses: none).

    One element: the response commits to that option; several: it hedges; none: it names no option.
    """
    response = collapse(response[-MAX_RESPONSE_CHARS:])
    allowed = LETTERS[: len(choices) or letters]
    boxes = boxed_answers(response)
    stated = set()
    for content in boxes:
        stated |= _options_in_box(content, choices, allowed)
    # The first letter in either case (as MMMU's "answer is b"), the ones listed after it in the same case
    lists = [
        rf"\(?[{case}]\b\)?(?:{_CONNECTOR}(?:\([{case}]\)|[{case}](?![A-Za-z0-9])))*"
        for case in (allowed, allowed.lower())
    ]
    statement = rf"{_STATEMENT_HEAD}\s?({'|'.join(lists)})"
    for match in re.finditer(statement, response):
        said = re.findall(r"(?<![A-Za-z])([A-Ja-j])(?![A-Za-z])", match.group(1))
        stated |= {letter.upper() for letter in said} & set(allowed)
    if stated:
        return frozenset(stated)
    mentioned = set(re.findall(_standalone(allowed), response))
    if mentioned or not choices:
        return frozenset(mentioned)
    said = last_boxed(response)
    named = named_exactly(said if said is not None else response, choices)
    named = named or own_occurrences(response.lower(), choices)
    if named:
        return frozenset(named)
    statements = boxes or clauses(response)
    if len(statements) > MAX_STATEMENTS:
        return frozenset()
    values = [math_parse(statement) for statement in statements]
    return frozenset(
        LETTERS[i]
        for i, choice in enumerate(choices[: len(LETTERS)])
        if (gold := gold_parse(choice)) and any(parsed_equal(gold, value) for value in values)
    )


def strict_choice(response: str, choices: list[str], letters: int = 5) -> str | None:
    """The official parse's letter where the response commits to that option alone (committed_choices), else
    None: never a letter where extract_choice gives none or another."""
    letter = extract_choice(response, choices, letters)
    if letter is None or committed_choices(response, choices, letters) != {letter}:
        return None
    return letter


def one_boxed_answer(response: str, precision: int | None = None) -> bool:
    """Whether every boxed answer of a free-form response states the same value: \\boxed{72} twice, or
    \\boxed{0.5} and \\boxed{\\frac{1}{2}}, commit to one; \\boxed{72} and \\boxed{73} are two answers. Empty
    boxes and an unclosed \\boxed{ state nothing; a response without a box commits to what it says."""
    boxes = boxed_answers(response[-MAX_RESPONSE_CHARS:])
    answers = {normalize(a): a for a in reversed(boxes) if normalize(a)}  # "\\boxed{.}" states nothing
    if len(answers) <= 1:
        return True
    if len(answers) > MAX_BOXED_ANSWERS:
        return False
    last, *others = answers.values()  # reversed: the last box (the official parse's answer) first
    target = math_parse(f"\\boxed{{{last}}}")
    rounding = 6 if precision is None else precision
    return all(parsed_equal(gold_parse(other), target, rounding) for other in others)


def several_values(gold: str) -> bool:
    """Whether a gold answer is a set of several values ("1, 2": every solution), which a response may box one
    value at a time: math-verify then compares the set of its boxes with the gold set."""
    import sympy

    parsed = gold_parse(str(gold))
    return bool(parsed) and isinstance(parsed[0], sympy.FiniteSet) and len(parsed[0]) > 1


def grade(item: Item, response: str) -> Verdict:
    """The official and the strict verdict of one response, and the answer the official parse read."""
    response = response[-MAX_RESPONSE_CHARS:]
    if item.multiple_choice:
        letter = extract_choice(response, item.choices)
        correct = letter == item.answer
        strict = correct and committed_choices(response, item.choices) == {letter}
        return Verdict(correct, strict, letter or "")
    extracted = math_parse(response)
    shown = str(extracted[-1]) if extracted else (last_boxed(response) or "")
    correct = free_form_correct(item.answer, response, item.precision)
    golds = item.answer if isinstance(item.answer, list) else [item.answer]
    strict = correct and (one_boxed_answer(response, item.precision) or any(map(several_values, golds)))
    return Verdict(correct, strict, shown[:200])


def score(item: Item, response: str) -> tuple[bool, str]:
    """(correct, the extracted answer) of one response, by the official parse."""
    verdict = grade(item, response)
    return verdict.correct, verdict.extracted


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
