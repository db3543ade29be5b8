"""GeneralPoints: solver, verifier (incl. adversarial input), generation, images, config errors."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.core.params import ParamError
from stages.envs import FEEDBACK_PREFIX, Verdict, get_env
from stages.envs import general_points as gp
from stages.envs.general_points import solvable, solve, verify, verify_record
from stages.envs.general_points.images import render_cards

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------ solver


def brute_force(numbers: list[Fraction], target: Fraction) -> bool:
    """The textbook search: combine any two numbers until one is left."""
    if len(numbers) == 1:
        return numbers[0] == target
    for i in range(len(numbers)):
        for j in range(len(numbers)):
            if i == j:
                continue
            rest = [x for k, x in enumerate(numbers) if k not in (i, j)]
            a, b = numbers[i], numbers[j]
            results = [a + b, a - b, a * b] + ([a / b] if b else [])
            if any(brute_force([*rest, r], target) for r in results):
                return True
    return False


def test_solver_finds_the_fraction_solution():
    assert "8 / (3 - 8 / 3)" in solve([3, 3, 8, 8])
    assert solve([3, 3, 8, 8], 24) == ["8 / (3 - 8 / 3)"]
    assert "5 * (5 - 1 / 5)" in solve([1, 5, 5, 5])


def test_solver_unsolvable_and_small_hands():
    assert solve([1, 1, 1, 1]) == []
    assert not solvable([1, 1, 1, 1])
    assert solve([1, 1, 1, 1], 4) == ["1 + 1 + 1 + 1", "(1 + 1) * (1 + 1)"]
    assert solve([24]) == ["24"]
    assert solve([5]) == []
    assert solve([1] * 6, 6)[0] == "1 + 1 + 1 + 1 + 1 + 1"


def test_solver_dedupes_commutative_and_associative_forms():
    found = solve([1, 2, 3, 4])
    assert len(found) == len(set(found))
    # (1 + 2 + 3) * 4 appears once, however it was built.
    assert sum(f.replace(" ", "") in ("(3+2+1)*4", "4*(1+2+3)") for f in found) == 1


@pytest.mark.parametrize("numbers", [[], [1] * 7])
def test_solver_rejects_bad_hand_sizes(numbers):
    with pytest.raises(ValueError):
        solve(numbers)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 13), min_size=1, max_size=4), st.integers(1, 30))
def test_solver_agrees_with_brute_force_and_verifier(numbers, target):
    found = solve(numbers, target)
    assert bool(found) == brute_force([Fraction(n) for n in numbers], Fraction(target))
    assert bool(found) == solvable(numbers, target)
    for formula in found:
        verdict = verify(formula, numbers, target)
        assert verdict.success and verdict.reward == 5.0, (formula, verdict)


def test_solver_is_fast_for_four_cards():
    rng = random.Random(1)
    times = []
    for _ in range(100):
        hand = [rng.randint(1, 13) for _ in range(4)]
        start = time.perf_counter()
        solve(hand)
        times.append(time.perf_counter() - start)
    assert sum(times) / len(times) < 0.05
    assert max(times) < 2.0  # loose: the CI machine may be busy; the mean above is the real check


# ------------------------------------------------------------------------------------ verifier

HAND = [3, 3, 8, 8]


@pytest.mark.parametrize(
    "response",
    [
        "__import__('os').system('x')",
        "9**9**9**9",
        "2^1000000",
        "8 / (3 - 3) * 8",
        "(" * 10_000 + "3" + ")" * 10_000,
        "(" * 900 + "3" + ")" * 900,  # within the length bound, beyond the depth bound
        "((3 + 3) * 8",
        "x" * 1_000_000,
        "9999999 * 9999999 * 9999999 * 9999999",
        "99999999999 + 1",
        "3 + 3 + 8 + 8 = 22 = 22",
        "٣ + 3 + 8 + 8",  # Arabic-Indic digit
        "３ * 8 / (3 - 8 / 3)",  # full-width digit
        "8 / (3 - 8 / 3) = ٢٤",
        "",
        "-3 + 3 + 8 * 8",
        "eval('24')",
        '{"formula": ' + "[" * 900 + "]" * 900 + "}",
        "Steps : " + "3 + 3 = 6 , " * 200,
        "Numbers : 3 3 8 8 . Steps : 8 / 0 = 0",
        "Numbers : 3 3 8 8 . Steps : 8 ** 3 = 512",
        "Numbers : ٣ 3 8 8 . Steps : 3 + 3 = 6",
        "Numbers : 3 3 8 8 . Steps : 8 / 3 = 8/0",
    ],
)
def test_adversarial_answers_are_illegal_and_fast(response):
    start = time.perf_counter()
    verdict = verify(response, HAND)
    assert time.perf_counter() - start < 0.5
    assert verdict.reward == -3.0 and not verdict.success
    assert verdict.feedback and "\n" not in verdict.feedback


def test_long_legal_formula_is_bounded():
    response = "+".join(["1"] * 999)  # 1997 characters, parses, uses 999 foreign numbers
    start = time.perf_counter()
    verdict = verify(response, HAND)
    assert time.perf_counter() - start < 0.5
    assert verdict.reward == -2.0


@pytest.mark.parametrize(
    "response",
    [
        "8/(3-8/3)",
        " 8 /  ( 3 - 8 / 3 ) ",
        "8\t/(3 -8/ 3)\n",
        "8 / (3 - 8 / 3) = 24",
        "((8)) / ((3) - (8 / 3))",
    ],
)
def test_spaces_and_parentheses_are_accepted(response):
    assert verify(response, HAND) == Verdict(True, 5.0, "", None)


@pytest.mark.parametrize(
    ("response", "reward", "feedback"),
    [
        ("8 * 3 - 8 + 3", -1.0, "your formula evaluates to 19, not 24."),
        ("8 / (3 - 8 / 3) = 20", -1.0, "your formula evaluates to 24, not the 20 you wrote."),
        ("8 * 3", -2.0, "your formula does not use the card value 3."),  # unused cards
        ("8 * 3 * 1 * 1", -2.0, "your formula uses 1, which is not a card value."),  # foreign
        ("8 * 3 * 3 / 3 + 8", -2.0, "your formula uses 3 more often than the cards allow."),
        ("8 * 3 * 3 * 8 * 8", -2.0, "your formula uses 8 more often than the cards allow."),
        ("8 * 3 ^ 3 * 8", -3.0, "your formula contains the illegal character '^'."),
        ("8 / (3 - 3) + 8", -3.0, "your formula divides by zero."),
    ],
)
def test_reward_schedule_for_formulas(response, reward, feedback):
    verdict = verify(response, HAND)
    assert (verdict.success, verdict.reward, verdict.feedback) == (False, reward, feedback)
    assert not verdict.feedback.startswith(FEEDBACK_PREFIX)


def test_json_style_single_quotes_trailing_commas_and_chatter():
    paper = "{'cards': ['3', '3', '8', '8'], 'number': [3, 3, 8, 8], 'formula': '8 / (3 - 8 / 3) = 24',}"
    assert verify(paper, HAND).success
    strict = json.dumps({"cards": ["3", "3", "8", "8"], "number": [3, 3, 8, 8], "formula": "8/(3-8/3)"})
    assert verify(f"Sure! Here it is:\n{strict}\nGood luck.", HAND).success
    assert verify('{"formula": 8 / (3 - 8 / 3)}', HAND).success  # unquoted formula, regex fallback
    assert verify("{'number': [3, 3, 8, 9], 'formula': '8 / (3 - 8 / 3)'}", HAND).reward == -2.0
    assert verify('{"cards": ["3", "3", "8", "8"]}', HAND).reward == -3.0  # no formula
    assert verify('{"formula": 24}', HAND).reward == -3.0


def test_json_style_card_recognition():
    cards = ["3", "3", "8", "8"]
    right = "{'cards': ['3', '3', '8', '8'], 'number': [3, 3, 8, 8], 'formula': '8 / (3 - 8 / 3)'}"
    assert verify(right, HAND, cards=cards) == Verdict(True, 5.0, "", True)
    wrong = right.replace("'8', '8'", "'8', '9'")
    assert verify(wrong, HAND, cards=cards) == Verdict(
        False, -1.5, "you did not state the cards correctly.", False
    )
    assert verify("8 / (3 - 8 / 3)", HAND, cards=cards).reward == -1.5  # cards not stated
    assert verify(right, HAND).recognized is None
    # Ranks compare case-blind and ignore suit symbols.
    assert verify(right.replace("'3', '3'", "'3♠', ' 3'"), HAND, cards=cards).recognized


def test_compact_style():
    hand, target = [10, 6, 8], 24
    good = "Numbers : 10 6 8 . Steps : 10 + 8 = 18 , 18 + 6 = 24"
    assert verify(good, hand, target).success
    assert verify(good.replace(" ", "  ") + " .", hand, target).success
    assert verify("Numbers:10 6 8 . Steps:10 + 8=18,18 + 6=24", hand, target).success
    assert verify("Steps : 6 + 10 = 16 , 8 + 16 = 24", hand, target).success  # Numbers is optional
    cases = {
        "Numbers : 10 6 8 . Steps : 10 + 8 = 19 , 19 + 6 = 25": (-1.0, "10 + 8 is 18, not 19."),
        "Numbers : 10 6 8 . Steps : 10 + 8 = 18 , 18 + 6 = 24 , 24 - 4 = 20": (-2.0, None),
        "Numbers : 10 6 8 . Steps : 10 + 8 = 18": (-2.0, "your steps leave 6 unused."),
        "Numbers : 10 6 8 . Steps : 10 + 8 = 18 , 18 + 8 = 26": (-2.0, None),  # 8 used twice
        "Numbers : 10 6 9 . Steps : 10 + 8 = 18 , 18 + 6 = 24": (-2.0, None),  # listed wrong
        "Numbers : 10 6 8 . Steps : 10 + 8 = 18 , 18 - 6 = 12": (-1.0, "your steps reach 12, not 24."),
        "Numbers : 10 6 8 . Steps : 10 plus 8 = 18": (-3.0, None),
        "Numbers : 10 6 8 . Steps : 10 + 8 = 18.0 , 18 + 6 = 24": (-3.0, None),
        "Numbers : 10 6 8 Steps 10 + 8": (-3.0, None),
        "Hello : 1 . Steps : 10 + 8 = 18 , 18 + 6 = 24": (-3.0, None),
    }
    for response, (reward, feedback) in cases.items():
        verdict = verify(response, hand, target)
        assert verdict.reward == reward, (response, verdict)
        if feedback:
            assert verdict.feedback == feedback


def test_compact_fractions_and_negatives():
    steps = "Numbers : 3 3 8 8 . Steps : 8 / 3 = 8/3 , 3 - 8/3 = 1/3 , 8 / 1/3 = 24"
    assert verify(steps, HAND).success
    assert verify("Steps : 1 - 5 = -4 , 1 - 7 = -6 , -4 * -6 = 24", [1, 1, 5, 7]).success


def test_compact_visual_recognition_and_precedence():
    hand, cards = [10, 10, 8], ["10", "J", "8"]
    good = "Cards : 10 J 8 . Numbers : 10 10 8 . Steps : 10 + 8 = 18 , 18 + 10 = 28"
    assert verify(good, hand, 28, cards) == Verdict(True, 5.0, "", True)
    misread = good.replace("Cards : 10 J", "Cards : 10 Q")
    assert verify(misread, hand, 28, cards) == Verdict(
        False, -1.5, "you did not state the cards correctly.", False
    )
    assert verify(good.replace("Cards : 10 J 8 . ", ""), hand, 28, cards).reward == -1.5
    # The reward is the lowest fault's and the feedback the first of: illegal, misread, wrong numbers, value.
    assert verify(misread.replace("18 + 10", "18 ^ 10"), hand, 28, cards) == Verdict(
        False, -3.0, "step 2 is not of the form 'a op b = c'.", False
    )
    wrong_numbers = "18 + 10 = 28", "18 + 9 = 27"
    assert verify(misread.replace(*wrong_numbers), hand, 28, cards) == Verdict(
        False, -2.0, "you did not state the cards correctly.", False
    )
    assert verify(good.replace(*wrong_numbers), hand, 28, cards).reward == -2.0  # misreading gains nothing
    wrong_both = good.replace("18 + 10 = 28", "18 + 9 = 28")
    assert verify(wrong_both, hand, 28, cards).reward == -2.0


@st.composite
def formulas(draw):
    """(numbers, formula text, exact value): a random expression tree over random numbers."""
    numbers = draw(st.lists(st.integers(0, 13), min_size=1, max_size=5))
    items = [(str(n), Fraction(n)) for n in numbers]
    while len(items) > 1:
        a = items.pop(draw(st.integers(0, len(items) - 1)))
        b = items.pop(draw(st.integers(0, len(items) - 1)))
        op = draw(st.sampled_from("+-*/"))
        if op == "/" and b[1] == 0:
            op = "*"
        value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1]}.get(op) if op != "/" else a[1] / b[1]
        items.append((f"({a[0]} {op} {b[0]})", value))
    text, value = items[0]
    if draw(st.booleans()):
        text = text.replace(" ", "")
    return numbers, text, value


@settings(max_examples=200, deadline=None)
@given(formulas())
def test_every_correct_random_formula_is_accepted(case):
    numbers, text, value = case
    verdict = verify(text, numbers, value)
    assert verdict == Verdict(True, 5.0, "", None), (text, verdict)
    json_answer = json.dumps({"cards": [], "number": numbers, "formula": text})
    assert verify(json_answer, numbers, value).success


@settings(max_examples=300, deadline=None)
@given(formulas(), st.lists(st.integers(0, 13), max_size=5), st.integers(-5, 30), st.booleans())
def test_every_accepted_formula_is_right(case, other_hand, other_target, same_hand):
    numbers, text, value = case
    hand = numbers if same_hand else other_hand
    target = value if same_hand else other_target
    if not hand:
        return
    verdict = verify(text, hand, target)
    if verdict.success:
        assert value == target
        used = [int(t) for t in "".join(c if c.isdigit() else " " for c in text).split()]
        assert Counter(used) == Counter(hand)
    else:
        assert verdict.reward in (-1.0, -2.0, -3.0) and verdict.feedback


JUNK_TOKENS = [
    "Steps",
    ":",
    "Numbers",
    "Cards",
    ".",
    ",",
    "=",
    "+",
    "-",
    "*",
    "/",
    "(",
    ")",
    "3",
    "8",
    "8/3",
    "-1",
    "0",
    "1/0",
    "J",
    "{",
    "}",
    "'formula'",
    '"formula"',
    "[",
    "]",
    "٣",
    "9" * 9,
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789+-*/()= \t"),
        st.lists(st.sampled_from(JUNK_TOKENS), max_size=40).map(" ".join),
        st.lists(st.sampled_from(JUNK_TOKENS), max_size=40).map("".join),
    ),
    st.booleans(),
)
def test_verify_never_raises(text, visual):
    verdict = verify(text, HAND, 24, ["3", "3", "8", "8"] if visual else None)
    assert verdict.reward in (5.0, -1.0, -1.5, -2.0, -3.0)
    assert "\n" not in verdict.feedback
    assert (verdict.recognized is None) == (not visual)
    assert verdict.feedback != "your answer cannot be read."  # the catch-all never fires


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["3", "8", "9", "+", "-", "*", "/", "=", ",", "24", "11"]), max_size=20))
def test_misreading_the_cards_never_pays(tokens):
    steps = "Numbers : 3 3 8 8 . Steps : " + " ".join(tokens)
    read, misread = (
        verify(f"Cards : {c} . {steps}", HAND, 24, ["3", "3", "8", "8"]) for c in ("3 3 8 8", "3 3 8 9")
    )
    assert misread.reward <= min(read.reward, -1.5) and not misread.success


@pytest.mark.parametrize("response", [None, 24, b"8/(3-8/3)", ["8/(3-8/3)"]])
def test_verify_non_text_is_illegal(response):
    assert verify(response, HAND).reward == -3.0


# ------------------------------------------------------------------------------------ generation

SIZES = {"train": 300, "eval_id": 60, "eval_ood_rule": 60, "eval_ood_visual": 40, "corpus": 200}


def hands(records):
    return {(tuple(sorted(json.loads(r["task"])["cards"])), json.loads(r["task"])["target"]) for r in records}


@pytest.mark.parametrize("visual", [False, True])
@pytest.mark.parametrize(("style", "target"), [("compact", "chain"), ("json", "chain"), ("compact", 24)])
def test_generated_records(visual, style, target):
    cfg = {"prompt_style": style, "target": target, "num_cards": [2, 3, 4]}
    out = gp.generate(SIZES, cfg, seed=3, visual=visual)
    splits = ["train", "eval_id", "eval_ood_rule", *(["eval_ood_visual"] if visual else []), "corpus"]
    assert list(out) == splits
    assert tuple(splits) == get_env("gp_vl" if visual else "gp_l").splits
    for split, records in out.items():
        assert len(records) == SIZES[split]
        for record in records:
            task = json.loads(record["task"])
            verdict = verify_record(record, record["answer"])
            assert verdict.success and verdict.reward == 5.0, (record, verdict)
            assert verdict.recognized is (True if visual else None)
            assert ("image" in record) == visual
            assert f"{task['target']}" in record["prompt"]
            assert all(ch in record["prompt"] for ch in map(str, task["face_values"]))
            if visual:
                assert record["image"].size == (224, 56)
            if target == "chain":
                assert 1 <= task["target"] <= 99
    ids = [r["id"] for records in out.values() for r in records]
    assert len(ids) == len(set(ids))

    # Eval problems are held out of train and corpus.
    for split in splits:
        if split.startswith("eval"):
            assert len(hands(out[split])) == len(out[split])  # distinct problems within an eval split
    held_out = set().union(*(hands(out[s]) for s in splits if s.startswith("eval")))
    assert not held_out & hands(out["train"])
    assert not held_out & hands(out["corpus"])

    tasks = {split: [json.loads(r["task"]) for r in out[split]] for split in splits}
    face = {"J", "Q", "K"}
    for split in splits:
        for task in tasks[split]:
            rule = {"train": "id", "eval_id": "id", "eval_ood_rule": "ood", "eval_ood_visual": "id"}.get(
                split
            )
            if rule:
                assert task["rule"] == rule
            if split.startswith("eval") or task["rule"] != "id":
                assert face & set(task["cards"]), task  # eval hands and rule-variant hands hold a face card
            red = split == "eval_ood_visual"
            allowed = {"hearts", "diamonds"} if red else {"spades", "clubs"} if visual else None
            if allowed:
                assert set(task["suits"]) <= allowed
    assert Counter(t["rule"] for t in tasks["corpus"]) == {"id": 80, "ood": 80, "random": 40}
    assert {len(t["cards"]) for t in tasks["train"]} == {2, 3, 4}


def test_compact_prompt_and_answer_examples():
    out = gp.generate({"eval_id": 1}, {}, seed=0, visual=False)
    record = out["eval_id"][0]
    task = json.loads(record["task"])
    assert record["prompt"] == (
        f"Rule : J Q K = 10 10 10 . Cards : {' '.join(task['cards'])} . Target : {task['target']}"
    )
    assert record["answer"].startswith(f"Numbers : {' '.join(map(str, task['numbers']))} . Steps : ")
    visual = gp.generate({"eval_id": 1}, {}, seed=0, visual=True)["eval_id"][0]
    assert "Cards" not in visual["prompt"]
    assert visual["answer"].startswith("Cards : ")


def test_json_prompt_states_the_rule():
    out = gp.generate({"eval_id": 2, "eval_ood_rule": 2}, {"prompt_style": "json"}, seed=0, visual=False)
    assert "count as '10'" in out["eval_id"][0]["prompt"]
    assert "count as '11', '12', and '13' respectively" in out["eval_ood_rule"][0]["prompt"]
    assert '"formula"' in out["eval_id"][0]["prompt"]
    assert set(json.loads(out["eval_id"][0]["answer"])) == {"cards", "number", "formula"}


def fingerprint(out: dict) -> str:
    digest = hashlib.sha256()
    for split, records in out.items():
        for record in records:
            digest.update(
                json.dumps([split, record["id"], record["prompt"], record["answer"], record["task"]]).encode()
            )
            if "image" in record:
                digest.update(record["image"].tobytes())
    return digest.hexdigest()


def test_generation_is_deterministic_across_processes():
    sizes = {"train": 40, "eval_id": 10, "eval_ood_rule": 10, "eval_ood_visual": 10, "corpus": 40}
    here = fingerprint(gp.generate(sizes, {}, seed=7, visual=True))
    assert here == fingerprint(gp.generate(sizes, {}, seed=7, visual=True))
    assert here != fingerprint(gp.generate(sizes, {}, seed=8, visual=True))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.test_general_points import fingerprint; from stages.envs import general_points as gp;"
        f"print(fingerprint(gp.generate({sizes!r}, {{}}, seed=7, visual=True)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.strip() == here


def test_iter_records_match_generate_in_any_reading_order():
    sizes = {"train": 20, "eval_id": 5, "eval_ood_rule": 5, "eval_ood_visual": 5, "corpus": 30}
    lists = gp.generate(sizes, {}, seed=2, visual=True)
    lazy = gp.iter_records(sizes, {}, seed=2, visual=True)
    assert list(lazy) == list(lists)
    read = {split: list(lazy[split]) for split in reversed(list(lazy))}  # corpus first, train last
    assert fingerprint({split: read[split] for split in lists}) == fingerprint(lists)
    with pytest.raises(ParamError, match="generate.gp.num_cards"):
        gp.iter_records({"train": 1}, {"num_cards": 7}, seed=0, visual=False)  # checked before any is read


# ------------------------------------------------------------------------------------ images


def colours(image):
    raw = image.tobytes()
    pixels = list(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
    black = sum(r < 60 and g < 60 and b < 60 for r, g, b in pixels)
    red = sum(r > 150 and g < 80 and b < 80 for r, g, b in pixels)
    return black, red


@pytest.mark.parametrize("size", [(256, 96), (200, 64), (97, 51)])
def test_card_images_size_and_suit_colours(size):
    black_image = render_cards([("5", "spades"), ("J", "clubs"), ("10", "spades")], *size)
    red_image = render_cards(["5", "J", "10"], *size, red=True)
    for image in (black_image, red_image):
        assert image.size == size and image.mode == "RGB"
    black, red = colours(black_image)
    assert black > 50 and red == 0
    black, red = colours(red_image)
    assert red > 50 and black == 0
    with pytest.raises(ValueError):
        render_cards([("5", "hearts")], *size)  # a red card in a black image


def test_generated_image_size_follows_config():
    cfg = {"image_width": 128, "image_height": 48}
    out = gp.generate({"eval_ood_visual": 2, "eval_id": 2}, cfg, seed=0, visual=True)
    assert out["eval_ood_visual"][0]["image"].size == (128, 48)
    assert colours(out["eval_ood_visual"][0]["image"])[1] > 0
    assert colours(out["eval_id"][0]["image"])[1] == 0


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"num_cards": 7}, "generate.gp.num_cards"),
        ({"num_cards": [3, 1]}, "generate.gp.num_cards"),
        ({"num_cards": []}, "generate.gp.num_cards"),
        ({"target": "twentyfour"}, "generate.gp.target"),
        ({"target": 0}, "generate.gp.target"),
        ({"max_target": 0}, "generate.gp.max_target"),
        ({"ops": "+^"}, "generate.gp.ops"),
        ({"ops": ""}, "generate.gp.ops"),
        ({"prompt_style": "xml"}, "generate.gp.prompt_style"),
        ({"eval_face_card": "yes"}, "generate.gp.eval_face_card"),
        ({"image_width": 8}, "generate.gp.image_width"),
        ({"corpus_mix": {"id": 0.5, "ood": 0.5}}, "generate.gp.corpus_mix"),
        ({"corpus_mix": {"id": 0.5, "ood": 0.5, "random": 0.5}}, "generate.gp.corpus_mix"),
        ({"corpus_mix": {"id": 1.5, "ood": -0.5, "random": 0}}, "generate.gp.corpus_mix.ood"),
        ({"num_card": 3}, "generate.gp.num_card"),
    ],
)
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(ParamError) as err:
        gp.generate({"train": 1}, cfg, seed=0, visual=False)
    message = str(err.value)
    assert key in message and "\n" not in message


def test_defaults_are_valid_and_unreachable_targets_fail_cleanly():
    assert gp.check_config({}) == {**gp.DEFAULTS, "corpus_mix": dict(gp.DEFAULTS["corpus_mix"])}
    with pytest.raises(ParamError, match="generate.gp"):
        gp.generate({"train": 1}, {"num_cards": 2, "target": 9999}, seed=0, visual=False)


def test_cards_keep_their_place_whatever_the_hand_size():
    # slots: the first card is drawn in the same pixels for a hand of 1, 2 or 4 cards; empty places are felt
    hands = [["5"], ["5", "J"], ["5", "J", "10", "A"]]
    images = [render_cards(hand, 256, 96, slots=4) for hand in hands]
    first = [image.crop((0, 0, 64, 96)).tobytes() for image in images]
    assert first[0] == first[1] == first[2]
    assert len(set(images[0].crop((64, 0, 256, 96)).getdata())) == 1  # felt only
    assert images[1].crop((64, 0, 128, 96)).tobytes() == images[2].crop((64, 0, 128, 96)).tobytes()
    with pytest.raises(ValueError, match="do not fit"):
        render_cards(["5", "J"], 256, 96, slots=1)
