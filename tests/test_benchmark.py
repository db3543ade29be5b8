"""Stage `benchmark`: reasoning benchmarks from local copies in their public release layouts.

A few items of each benchmark are written here in its release's schema (parquet with {bytes, path} image
structs, or jsonl with image files), images drawn with Pillow. Checked: the readers, the prompts, the answer
extraction and scoring (reference answers score 100%, wrong answers 0%, math-verify's equivalences, an
option's text for its letter), strict accuracy (hedges, malformed boxes; fuzzed with hypothesis), random
responses, bad copies and params, and runs on real models: a micro `dvc repro benchmark` on the embedded
models (a changed copy reruns it), and direct stage calls on the tiny Qwen2 and Qwen2-VL checkpoints of
tests/test_real_checkpoint.py and tests/test_vl.py.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_one_line_error, copy_repo, run, set_params
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from stages import benchmark as benchmark_stage
from stages import report
from stages.benchmarks.catalogue import BENCHMARKS, BOXED_SUFFIX, Item, read_benchmark
from stages.benchmarks.scoring import (
    LETTERS,
    benchmark_average,
    boxed_all,
    committed_choices,
    extract_choice,
    free_form_correct,
    grade,
    one_boxed_answer,
    score,
    strict_choice,
)
from stages.core.params import ParamError

REPO = Path(__file__).resolve().parents[1]
MODELS = ("base", "sft", "grpo")


def drawn_image(text: str, size=(64, 48)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([4, 4, size[0] - 5, size[1] - 5], outline="black", width=2)
    draw.text((10, 16), text, fill="blue")
    return image


def image_struct(text: str, name: str) -> dict:
    """An image as a parquet file of the Hugging Face release holds it: {bytes, path}."""
    buffer = io.BytesIO()
    drawn_image(text).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": name}


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# Per benchmark: (writer of a copy, [(reference response, wrong response)] per item, in order).
def gsm8k_copy(root: Path) -> None:
    rows = [
        {
            "question": "Tom has 3 bags of 24 apples. How many apples?",
            "answer": "3*24=<<3*24=72>>72\n#### 72",
        },
        {"question": "A car costs 1,200 dollars twice. Total?", "answer": "2*1200=2400\n#### 2,400"},
        {"question": "Half of 9 is?", "answer": "9/2=4.5\n#### 4.5"},
    ]
    write_parquet(root / "main" / "test-00000-of-00001.parquet", rows)


GSM8K_ANSWERS = [
    ("3 bags of 24 make \\boxed{72}.", "\\boxed{73}"),
    ("The total is \\boxed{2400} dollars.", "\\boxed{1200}"),
    ("So half is \\boxed{\\frac{9}{2}}.", "\\boxed{4}"),  # 9/2 = 4.5 by math-verify
]


def math500_copy(root: Path) -> None:
    rows = [
        {
            "problem": "What is $1/2$ as a fraction?",
            "solution": "It is $\\boxed{\\frac{1}{2}}$.",
            "answer": "\\frac{1}{2}",
            "subject": "Prealgebra",
            "level": 1,
            "unique_id": "test/prealgebra/1.json",
        },
        {
            "problem": "Convert $(0,3)$ to polar coordinates.",
            "solution": "...",
            "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
            "subject": "Precalculus",
            "level": 2,
            "unique_id": "test/precalculus/807.json",
        },
        {
            "problem": "Simplify $\\sqrt{12}$.",
            "solution": "...",
            "answer": "2\\sqrt{3}",
            "subject": "Algebra",
            "level": 2,
            "unique_id": "test/algebra/2.json",
        },
    ]
    write_jsonl(root / "test.jsonl", rows)


MATH500_ANSWERS = [
    ("The answer is $\\boxed{0.5}$.", "$\\boxed{2}$"),  # \frac{1}{2} = 0.5
    ("$\\boxed{(3, \\frac{\\pi}{2})}$", "$\\boxed{(3, \\pi)}$"),
    ("$\\boxed{\\sqrt{12}}$", "$\\boxed{3\\sqrt{2}}$"),  # sqrt(12) = 2 sqrt(3)
]


def mathvista_copy(root: Path) -> None:
    base = {"unit": None, "metadata": {"source": "test"}}
    rows = [
        {
            **base,
            "pid": "1",
            "question": "Which angle is marked?",
            "image": "images/1.jpg",
            "decoded_image": image_struct("145", "images/1.jpg"),
            "choices": ["145°", "165°", "155°", "135°"],
            "precision": None,
            "answer": "145°",
            "question_type": "multi_choice",
            "answer_type": "text",
            "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, "
            "D, at the end.\nQuestion: Which angle is marked?\nChoices:\n"
            "(A) 145°\n(B) 165°\n(C) 155°\n(D) 135°",
        },
        {
            **base,
            "pid": "2",
            "question": "How many circles?",
            "image": "images/2.jpg",
            "decoded_image": image_struct("3", "images/2.jpg"),
            "choices": None,
            "precision": None,
            "answer": "3",
            "question_type": "free_form",
            "answer_type": "integer",
            "query": "Hint: Please answer the question requiring an integer answer and provide the final "
            "value, "
            "e.g., 1, 2, 3, at the end.\nQuestion: How many circles?",
        },
        {
            **base,
            "pid": "3",
            "question": "What is the length?",
            "image": "images/3.jpg",
            "decoded_image": image_struct("1.2", "images/3.jpg"),
            "choices": None,
            "precision": 1.0,
            "answer": "1.2",
            "question_type": "free_form",
            "answer_type": "float",
            "query": "Hint: Please answer the question requiring a floating-point number with one decimal "
            "place "
            "and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.\nQuestion: What is the length?",
        },
    ]
    write_parquet(root / "data" / "testmini-00000-of-00001-725687bf7a18d64b.parquet", rows)


MATHVISTA_ANSWERS = [
    ("The marked angle is 145°, so the answer is (A).", "Answer: B"),
    ("I count \\boxed{3} circles.", "I count \\boxed{4}."),
    ("The length is about 1.23.", "The length is 1.5."),  # compared at the item's one decimal place
]


def mathverse_copy(root: Path) -> None:
    question = "As shown in the figure, find the angle.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°"
    cot = "Please first conduct reasoning, and then answer the question and provide the correct option letter"
    rows = [
        {
            "sample_index": "1",
            "problem_index": "1",
            "problem_version": "Text Dominant",
            "question": question,
            "image": image_struct("angle", "images/images_version_1-4/image_1.png"),
            "answer": "B",
            "question_type": "multi-choice",
            "metadata": {"split": "testmini"},
            "query_wo": question,
            "query_cot": f"{cot}, e.g., A, B, C, D, at the end.\nQuestion: {question}",
            "question_for_eval": question,
        },
        {
            "sample_index": "2",
            "problem_index": "2",
            "problem_version": "Vision Only",
            "question": "",
            "image": image_struct("x=7", "images/images_version_5/image_2.png"),
            "answer": "7",
            "question_type": "free-form",
            "metadata": {"split": "testmini"},
            "query_wo": "Find x.",
            "query_cot": "According to the question shown in the image, please first conduct reasoning, "
            "and then "
            "answer the question.",
            "question_for_eval": "",
        },
    ]
    write_parquet(root / "testmini.parquet", rows)


MATHVERSE_ANSWERS = [
    ("The angle is 45°.", "\\boxed{C}"),  # the option's text gives its letter
    ("x is \\boxed{7}", "x is \\boxed{8}"),
]


def mathvision_copy(root: Path) -> None:
    """The jsonl variant: image paths into images/ (as the GitHub release ships), no decoded_image."""
    (root / "images").mkdir(parents=True)
    for name in ("1", "2"):
        drawn_image(name).save(root / "images" / f"{name}.jpg")
    rows = [
        {
            "id": "1",
            "question": "<image1>\nWhich shape comes next?",
            "options": ["A", "B", "C", "D", "E"],
            "image": "images/1.jpg",
            "answer": "B",
            "solution": None,
            "level": 1,
            "subject": "logic",
        },
        {
            "id": "2",
            "question": "<image1>\nWhat fraction is shaded?",
            "options": [],
            "image": "images/2.jpg",
            "answer": "\\frac{1}{2}",
            "solution": None,
            "level": 2,
            "subject": "arithmetic",
        },
    ]
    write_jsonl(root / "data" / "test.jsonl", rows)


MATHVISION_ANSWERS = [
    ("The next shape is \\boxed{B}.", "\\boxed{D}"),
    ("Half of it: \\boxed{0.5}", "\\boxed{0.25}"),  # 0.5 = \frac{1}{2}
]


def mmmu_copy(root: Path) -> None:
    empty = {f"image_{i}": None for i in range(2, 8)}
    base = {"explanation": "", "img_type": "['Tables']", "topic_difficulty": "Easy", "subfield": "Test"}
    accounting = [
        {
            **base,
            **empty,
            "id": "validation_Accounting_1",
            "question": "<image 1> What is the cost?",
            "options": "['$6', '$7', '$8', '$9']",
            "image_1": image_struct("$7", "image_1.png"),
            "answer": "B",
            "question_type": "multiple-choice",
        },
    ]
    math = [
        {
            **base,
            **empty,
            "id": "validation_Math_1",
            "question": "<image 1> Which value is $\\frac{1}{2}$?",
            "options": "['0.25', '0.5', '0.75']",
            "image_1": image_struct("1/2", "image_1.png"),
            "answer": "B",
            "question_type": "multiple-choice",
        },
        {
            **base,
            **empty,
            "id": "validation_Math_2",
            "question": "<image 1> <image 2> Sum of the two numbers?",
            "options": "[]",
            "image_1": image_struct("1.5", "image_1.png"),
            "answer": "3.5",
            "question_type": "open",
            "image_2": image_struct("2", "image_2.png"),
        },
    ]
    write_parquet(root / "Accounting" / "validation-00000-of-00001.parquet", accounting)
    write_parquet(root / "Math" / "validation-00000-of-00001.parquet", math)


MMMU_ANSWERS = [
    ("(B)", "(C)"),
    ("0.5", "0.75"),  # an option's value for its letter
    ("3.5", "4"),
]

COPIES = {
    "gsm8k": (gsm8k_copy, GSM8K_ANSWERS),
    "math500": (math500_copy, MATH500_ANSWERS),
    "mathvista": (mathvista_copy, MATHVISTA_ANSWERS),
    "mathverse": (mathverse_copy, MATHVERSE_ANSWERS),
    "mathvision": (mathvision_copy, MATHVISION_ANSWERS),
    "mmmu": (mmmu_copy, MMMU_ANSWERS),
}


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """A data/benchmarks folder with a copy of every benchmark."""
    root = tmp_path_factory.mktemp("copies") / "data" / "benchmarks"
    for name, (write, _) in COPIES.items():
        write(root / name)
    return root


def test_every_benchmark_has_a_test_copy():
    assert set(COPIES) == set(BENCHMARKS)


@pytest.mark.parametrize("name", list(COPIES))
def test_reader_reads_every_item_with_its_images(copies, name):
    items = read_benchmark(name, copies / name)
    assert len(items) == len(COPIES[name][1])
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.benchmark == name and item.prompt
        assert bool(item.images) == BENCHMARKS[name].visual
        assert all(image.mode == "RGB" and image.size == (64, 48) for image in item.images)
    assert [item.id for item in read_benchmark(name, copies / name, limit=1)] == [items[0].id]


@pytest.mark.parametrize("name", list(COPIES))
def test_reference_answers_score_all_and_wrong_answers_none(copies, name):
    items = read_benchmark(name, copies / name)
    answers = COPIES[name][1]
    assert [score(item, right)[0] for item, (right, _) in zip(items, answers, strict=True)] == [True] * len(
        items
    )
    assert [score(item, wrong)[0] for item, (_, wrong) in zip(items, answers, strict=True)] == [False] * len(
        items
    )
    # each reference answer commits to one answer: strictly right too; a wrong one is strictly wrong
    assert all(grade(item, right).strict for item, (right, _) in zip(items, answers, strict=True))
    assert not any(grade(item, wrong).strict for item, (_, wrong) in zip(items, answers, strict=True))


def test_prompts_follow_each_benchmark(copies):
    gsm8k = read_benchmark("gsm8k", copies / "gsm8k")
    assert gsm8k[0].prompt.endswith(BOXED_SUFFIX) and [i.answer for i in gsm8k] == ["72", "2400", "4.5"]
    mathvista = read_benchmark("mathvista", copies / "mathvista")
    assert mathvista[0].prompt.startswith("Hint: Please answer the question and provide the correct option")
    assert mathvista[0].answer == "A" and mathvista[0].choices[0] == "145°"  # the gold option's letter
    assert mathvista[2].precision == 1
    mathverse = read_benchmark("mathverse", copies / "mathverse")
    assert mathverse[0].prompt.startswith("Please first conduct reasoning")  # query_cot
    assert mathverse[0].choices == ["30°", "45°", "60°", "90°"]
    mmmu = read_benchmark("mmmu", copies / "mmmu")
    assert mmmu[0].choices == ["$6", "$7", "$8", "$9"]  # a Python list stored as a string
    assert "\nA. $6\nB. $7\nC. $8\nD. $9\nAnswer with the option's letter" in mmmu[0].prompt
    assert mmmu[2].prompt.endswith("Answer the question using a single word or phrase.")
    assert len(mmmu[2].images) == 2  # image_1 and image_2, in order
    mathvision = read_benchmark("mathvision", copies / "mathvision")
    assert "Options: (A) A (B) B (C) C (D) D (E) E" in mathvision[0].prompt


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("\\frac{1}{2}", "so \\boxed{0.5}"),
        ("0.5", "\\boxed{\\frac{1}{2}}"),
        ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\dfrac{\\sqrt3}{2}}"),
        ("2400", "The answer is 2400."),
        ("x^2+2x+1", "$\\boxed{(x+1)^2}$"),
    ],
)
def test_math_verify_equivalences(gold, response):
    assert free_form_correct(gold, response)
    assert not free_form_correct(gold, "\\boxed{7}")


def test_a_choice_letter_and_its_option_text():
    choices = ["\\frac{1}{2}", "2", "3"]
    assert extract_choice("The answer is (A).", choices) == "A"
    assert extract_choice("Answer: c", choices) == "C"
    assert extract_choice("0.5", choices) == "A"  # the value of option A, by math-verify
    assert extract_choice("\\boxed{3}", choices) == "C"  # option C's text
    assert extract_choice("I do not know.", choices) is None  # no guess (MMMU's parser would pick at random)


@settings(max_examples=150, deadline=2000)
@given(st.text(max_size=300) | st.from_regex(r"[\\{}()$0-9a-eA-E^_ .,=+-/*]{0,200}", fullmatch=True))
def test_random_responses_never_crash_the_extractors(response):
    for item in (
        Item("mmmu", "1", "q", "B", True, ["0.25", "0.5", "0.75"]),
        Item("math500", "1", "q", "\\frac{1}{2}", False),
        Item("mathvista", "1", "q", "1.2", False, precision=1),
    ):
        correct, extracted = score(item, response)
        assert isinstance(correct, bool) and len(extracted) <= 200


# ------------------------------------------------------------------------------------------ strict accuracy

LENGTHS = ["3 cm", "4 cm", "5 cm", "6 cm"]  # option texts, none inside another
VALUES = ["\\frac{1}{2}", "\\frac{3}{4}", "2"]  # options a response may give by value (math-verify)


@pytest.mark.parametrize(
    ("response", "choices", "official", "strict"),
    [
        # one answer: both parses agree
        ("The answer is (B).", LENGTHS, "B", "B"),
        ("Options: (A) 3 cm (B) 4 cm (C) 5 cm (D) 6 cm. The answer is (C).", LENGTHS, "C", "C"),
        ("The correct option is D.", LENGTHS, "D", "D"),
        ("5 cm", LENGTHS, "C", "C"),
        ("0.5", VALUES, "A", "A"),
        ("x = 0.5, since half of it is shaded", VALUES, "A", "A"),
        # hedges: the official parse takes the last, strict none
        ("(A) (B) (C) (D)", LENGTHS, "D", None),
        ("A or C", LENGTHS, "C", None),
        ("\\boxed{A}, \\boxed{C}", LENGTHS, "C", None),
        ("The answer is A or C.", LENGTHS, "A", None),
        ("the answer is a or c", LENGTHS, "A", None),
        ("Answer: B, D", LENGTHS, "B", None),
        ("Answer: A B C D", LENGTHS, "A", None),
        ("(A) B C D", LENGTHS, "A", None),
        ("The answer is A. Wait, no: the answer is B.", LENGTHS, "B", None),
        ("\\boxed{B \\text{ or } D}", LENGTHS, "D", None),
        ("3 cm or 5 cm", LENGTHS, "C", None),
        ("\\boxed{3 cm}, \\boxed{4 cm}", LENGTHS, "B", None),
        ("0.5 or 0.75", VALUES, "B", None),
        ("\\boxed{0.5} or \\boxed{0.75}", VALUES, "B", None),
        # an unbalanced \boxed{: no box, the text around it counts
        ("\\boxed{B", LENGTHS, "B", "B"),
        ("\\boxed{A} then \\boxed{C", LENGTHS, "C", None),  # boxed A, mentions C: no single answer
        # an empty \boxed{} states nothing
        ("\\boxed{}", LENGTHS, None, None),
        ("\\boxed{} (B)", LENGTHS, "B", "B"),
        ("\\boxed{B} \\boxed{}", LENGTHS, "B", "B"),
        # nested braces
        ("\\boxed{\\boxed{B}}", LENGTHS, "B", "B"),
        ("\\boxed{\\text{\\textbf{C}}}", LENGTHS, "C", "C"),
        ("\\boxed{\\text{(b)}}", LENGTHS, "B", "B"),
        ("\\boxed{\\frac{3}{4}}", VALUES, "B", "B"),
    ],
)
def test_strict_credits_one_answer_and_no_hedge(response, choices, official, strict):
    assert extract_choice(response, choices) == official
    assert strict_choice(response, choices) == strict
    for gold in LETTERS[: len(choices)]:
        verdict = grade(Item("mmmu", "1", "q", gold, True, choices), response)
        assert (verdict.correct, verdict.strict) == (gold == official, gold == strict)


@pytest.mark.parametrize(
    ("gold", "response", "official", "strict"),
    [
        ("72", "\\boxed{72}", True, True),
        ("72", "The total is 72.", True, True),  # no box: the response's answer
        # several boxes: one answer when they state the same value, else a hedge
        ("72", "\\boxed{72}, so \\boxed{72.0}", True, True),
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{2}} = \\boxed{0.5}", True, True),
        ("72", "\\boxed{71} or \\boxed{72}", False, False),  # math-verify reads the boxes as a set
        ("72", "\\boxed{72}\n\nWait: \\boxed{73}", False, False),
        ("1, 2", "\\boxed{1} and \\boxed{2}", True, True),  # a gold of several values, boxed one by one
        # unbalanced
        ("72", "\\boxed{72", False, False),
        ("72", "\\boxed{72} \\boxed{7", True, True),  # the unclosed box states nothing
        ("72", "\\boxed{7 \\boxed{72}", True, True),
        ("72", "\\boxed{72}}}}", True, True),
        # empty
        ("72", "\\boxed{}", False, False),
        ("72", "\\boxed{72} \\boxed{}", False, False),  # math-verify reads "72,"
        # nested braces
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}", True, True),
        ("3", "\\boxed{\\boxed{3}}", True, True),
        ("(3, \\frac{\\pi}{2})", "\\boxed{(3, \\frac{\\pi}{2})}", True, True),
    ],
)
def test_strict_free_form_counts_one_boxed_answer(gold, response, official, strict):
    verdict = grade(Item("math500", "1", "q", gold, False), response)
    assert (verdict.correct, verdict.strict) == (official, strict)


def test_boxes_and_their_answers():
    assert boxed_all("\\boxed{\\frac{1}{2}} and \\boxed{3}") == ["\\frac{1}{2}", "3"]
    assert boxed_all("\\boxed{a \\boxed{b}}") == ["a \\boxed{b}", "b"]  # in the order they open
    assert boxed_all("\\boxed{3") == [] and boxed_all("}}\\boxed{}{") == [""]
    assert not one_boxed_answer("\\boxed{72} \\boxed{73}")
    assert not one_boxed_answer("\\boxed{72} \\boxed{\\boxed{73}}")  # the inner box is the answer
    assert one_boxed_answer("\\boxed{1.23} \\boxed{1.2}", precision=1)  # MathVista compares at its precision
    assert not one_boxed_answer("\\boxed{1.23} \\boxed{1.2}")
    assert not one_boxed_answer("".join(f"\\boxed{{{n}}}" for n in range(1, 30)))
    assert one_boxed_answer("\\boxed{} \\boxed{ } \\boxed{72}") and one_boxed_answer("no box")


# Hedges built from every option: each in a form that states it as an answer, or each merely mentioned.
STATED = (
    lambda x: f"\\boxed{{{x}}}",
    lambda x: f"The answer is {x}.",
    lambda x: f"Answer: ({x})",
    lambda x: f"the correct option is {x}",
    lambda x: f"\\boxed{{\\text{{{x}}}}}",
)
MENTIONED = (lambda x: x, lambda x: f"({x})", lambda x: f"{x}.")
SEPARATORS = st.sampled_from([" ", ", ", " or ", "\n", " / ", "; ", " and ", "\n\n", " hmm, "])
# Noise opens braces and boxes and closes none: a box closed in noise could state one option alone
NOISE = st.sampled_from(["", "so", "I think", "maybe", "it could be", "either", "42", "$x$", "{", "\\boxed{"])


def hedge(draw, parts: list[str]) -> str:
    pieces = [draw(NOISE)]
    for part in draw(st.permutations(parts)):
        pieces += [part, draw(SEPARATORS), draw(NOISE)]
    return " ".join(pieces)


@st.composite
def every_option(draw) -> tuple[str, list[str], int]:
    """(a response naming every option, the options, the number of letters when none are listed)."""
    choices, letters = draw(st.sampled_from([(LENGTHS, 5), (LENGTHS[:2], 5), ([], 5), ([], 4)]))
    allowed = LETTERS[: len(choices) or letters]
    kind = draw(st.sampled_from(["stated", "mentioned", "texts"] if choices else ["stated", "mentioned"]))
    if kind == "texts":
        return hedge(draw, list(choices)), choices, letters
    forms = STATED if kind == "stated" else MENTIONED
    return hedge(draw, [draw(st.sampled_from(forms))(x) for x in allowed]), choices, letters


@settings(max_examples=300, deadline=2000)
@given(every_option())
def test_a_response_naming_every_option_is_never_strictly_correct(case):
    response, choices, letters = case
    allowed = LETTERS[: len(choices) or letters]
    assert extract_choice(response, choices, letters) in allowed  # the official parse credits one of them
    assert committed_choices(response, choices, letters) == set(allowed)
    assert strict_choice(response, choices, letters) is None


# Responses from the pieces the parsers look for, in any order: letters, boxes (closed, unclosed, empty,
# nested), answer statements, option texts and values, braces, connectors.
PIECES = [
    "A", "B", "C", "D", "E", "(A)", "(c)", "b", "\\boxed{", "}", "{", "\\boxed{B}", "\\boxed{}", "\\text{",
    "The answer is", "Answer:", "the correct option is", " or ", ", ", " and ", "\n", "3 cm", "5 cm", "0.5",
    "\\frac{1}{2}", "72", "73", "$", "(", ")", "maybe", "x", " ",
]  # fmt: skip
RESPONSES = (
    st.text(max_size=300)
    | st.from_regex(r"[\\{}()$0-9a-eA-E^_ .,=+-/*]{0,200}", fullmatch=True)
    | st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
)
MC_ITEMS = [
    Item("mmmu", "1", "q", "B", True, LENGTHS),
    Item("mathvista", "1", "q", "A", True, VALUES),
    Item("mathverse", "1", "q", "C", True, []),  # options only in the question: letters A-E
]


@settings(max_examples=200, deadline=3000)
@given(RESPONSES, st.sampled_from(MC_ITEMS), st.sampled_from("ABCD"))
def test_fuzz_choice_strict_never_above_official(response, item, letter):
    official = extract_choice(response, item.choices)
    strict = strict_choice(response, item.choices)
    assert official is None or official in LETTERS[: len(item.choices) or 5]
    assert strict in (official, None)  # strict never credits what the official parse does not
    assert strict is None or committed_choices(response, item.choices) == {strict}
    verdict = grade(item, response)
    assert verdict.correct == (official == item.answer) and verdict.strict <= verdict.correct
    # Once a response states an option as its answer, strict credits no other option
    if letter in LETTERS[: len(item.choices) or 5]:
        for said in (f"{response} The answer is {letter}.", f"{response} \\boxed{{{letter}}}"):
            assert strict_choice(said, item.choices) in (letter, None)


@settings(max_examples=100, deadline=3000)
@given(
    RESPONSES,
    st.sampled_from(["72", "\\frac{1}{2}", "1, 2"]),
    st.lists(st.integers(-99, 99), min_size=2, max_size=4, unique=True),
    SEPARATORS,
)
def test_fuzz_free_form_strict_never_above_official(response, gold, numbers, separator):
    item = Item("math500", "1", "q", gold, False)
    verdict = grade(item, response)
    assert verdict.strict <= verdict.correct
    # several different boxed numbers are no single answer, for any gold among them
    hedged = response + " " + separator.join(f"\\boxed{{{n}}}" for n in numbers)
    assert not one_boxed_answer(hedged)
    for n in numbers:
        assert not grade(Item("gsm8k", "1", "q", str(n), False), hedged).strict


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{" * 570,
        "\\boxed{A}" * 440,
        "\\boxed{" * 300 + "B" + "}" * 300,
        "{" * 4000,
        "(" * 4000,
        "the answer is A or " * 210,
        "Answer: A" + " ," * 1900 + "!",  # a long run of connectors: a nested quantifier would backtrack
        "A B C D " * 500,
        "3 cm 4 cm " * 400,
        "0.5, " * 800,
        "1 or " * 800,
        "a" * 4000,
        "9^" * 200_000 + " \\boxed{B}",
    ],
)
def test_strict_work_is_bounded_on_adversarial_responses(response):
    start = time.perf_counter()
    for item in (*MC_ITEMS, Item("mmmu", "1", "q", "A", True, ["a", "aa", "aaa", "aaaa"])):
        verdict = grade(item, response)
        assert verdict.strict <= verdict.correct
        committed_choices(response, item.choices)
    assert grade(Item("gsm8k", "1", "q", "72", False), response).strict in (True, False)
    assert time.perf_counter() - start < 10


def test_scoring_works_outside_the_main_thread():
    """math-verify's signal-based timeouts refuse other threads (ValueError); scoring turns them off there."""
    import threading

    results = []
    thread = threading.Thread(
        target=lambda: results.append(free_form_correct("\\frac{1}{2}", "\\boxed{0.5}"))
    )
    thread.start()
    thread.join()
    assert results == [True]


def test_a_huge_response_is_cut_before_parsing():
    start = time.perf_counter()
    assert score(Item("gsm8k", "1", "q", "72", False), "9^" * 200_000 + " \\boxed{72}")[0]
    assert time.perf_counter() - start < 10


def test_the_stage_reports_strict_accuracy_beside_the_official_one():
    items = {"gsm8k": [Item("gsm8k", "1", "q", "72", False), Item("gsm8k", "2", "q", "3", False)]}
    items["mmmu"] = [Item("mmmu", str(i), "q", "D", True, LENGTHS) for i in range(4)]
    responses = {
        "gsm8k": ["\\boxed{72}", "\\boxed{3}"],
        "mmmu": ["(A) (B) (C) (D)", "The answer is (D).", "A or D", "\\boxed{D}"],  # two hedges
    }
    verdicts = {
        name: [grade(i, r) for i, r in zip(items[name], responses[name], strict=True)] for name in items
    }
    sections = benchmark_stage.summarize(items, verdicts)
    assert sections["gsm8k"] == {
        "accuracy": 1.0,
        "correct": 2,
        "items": 2,
        "strict_accuracy": 1.0,
        "strict_correct": 2,
    }
    assert sections["mmmu"] == {
        "accuracy": 1.0,
        "correct": 4,
        "items": 4,
        "strict_accuracy": 0.5,
        "strict_correct": 2,
    }
    assert benchmark_stage.average(sections, "accuracy") == 1.0
    assert benchmark_stage.average(sections, "strict_accuracy") == 0.75


def test_benchmark_average_compares_models_on_the_same_benchmarks():
    def metrics(**accuracies):
        return {"benchmarks": {name: {"accuracy": value} for name, value in accuracies.items()}}

    averages = benchmark_average(
        {"base": metrics(gsm8k=0.2, math500=0.4), "sft": metrics(gsm8k=0.5, math500=0.1), "grpo": None}
    )
    assert averages == {"base": 0.3, "sft": 0.3}
    assert benchmark_average({"base": {"benchmarks": {}}}) == {}


# ------------------------------------------------------------------------------------------ the stage


def stage_dir(tmp_path: Path, copies: Path, overrides: dict) -> Path:
    """A directory holding params.yaml and data/benchmarks, where the stage runs (callers add models/)."""
    import shutil

    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(copies, tmp_path / "data" / "benchmarks")
    set_params(tmp_path, overrides)
    return tmp_path


def run_stage(directory: Path, model: str, monkeypatch) -> dict:
    monkeypatch.chdir(directory)
    benchmark_stage.main([model])
    return json.loads((directory / "metrics" / "benchmarks" / f"{model}.json").read_text())


def read_items(per_item: Path) -> list[dict]:
    assert per_item.read_text().splitlines()[0] == "benchmark,id,correct,strict,extracted"
    with per_item.open(newline="") as f:
        return list(csv.DictReader(f))


def check_metrics(metrics: dict, names: list[str], limit: int, per_item: Path) -> None:
    assert list(metrics["benchmarks"]) == names
    for section in metrics["benchmarks"].values():
        assert section["items"] == limit and 0 <= section["strict_correct"] <= section["correct"] <= limit
        assert section["accuracy"] == round(section["correct"] / limit, 4)
        assert section["strict_accuracy"] == round(section["strict_correct"] / limit, 4)
    for key, accuracy in (("average", "accuracy"), ("strict_average", "strict_accuracy")):
        assert metrics[key] == round(sum(s[accuracy] for s in metrics["benchmarks"].values()) / len(names), 4)
    rows = read_items(per_item)
    assert len(rows) == limit * len(names) and all(int(row["strict"]) <= int(row["correct"]) for row in rows)
    for name, section in metrics["benchmarks"].items():
        assert sum(int(row["correct"]) for row in rows if row["benchmark"] == name) == section["correct"]
        assert (
            sum(int(row["strict"]) for row in rows if row["benchmark"] == name) == section["strict_correct"]
        )


@pytest.mark.slow
def test_stage_on_tiny_qwen2_and_qwen2_vl_checkpoints(copies, tmp_path, monkeypatch):
    """Direct stage calls (no DVC) on the real-format checkpoints: a text model takes the text benchmarks,
    a VL model every benchmark; the processor turns each item's images into image tokens."""
    from test_real_checkpoint import build_qwen_checkpoint
    from test_vl import build_qwen_vl_checkpoint

    texts = [item.prompt for name in COPIES for item in read_benchmark(name, copies / name)]
    common = {"benchmark.limit": 2, "benchmark.max_new_tokens": 6, "rollout.engine": "hf"}
    text_dir = stage_dir(tmp_path / "text", copies, {**common, "benchmark.names": ["gsm8k", "math500"]})
    build_qwen_checkpoint(text_dir / "models" / "base", texts)
    metrics = run_stage(text_dir, "base", monkeypatch)
    check_metrics(metrics, ["gsm8k", "math500"], 2, text_dir / "metrics/benchmarks/per_item/base.csv")
    assert 0 < metrics["generated_tokens"] <= 4 * 6

    names = ["mathvista", "mathverse", "mathvision", "mmmu", "gsm8k"]
    vl_dir = stage_dir(tmp_path / "vl", copies, {**common, "benchmark.names": names})
    build_qwen_vl_checkpoint(vl_dir / "models" / "base", texts)
    metrics = run_stage(vl_dir, "base", monkeypatch)
    check_metrics(metrics, names, 2, vl_dir / "metrics/benchmarks/per_item/base.csv")


@pytest.fixture(scope="module")
def benchmarked(micro_split, copies, tmp_path_factory) -> Path:
    """The micro repository after `dvc exp run -S benchmark.names=[gsm8k,math500] benchmark` (sft and grpo
    train for two steps first), the copies brought in with `dvc add`."""
    import shutil

    repo = copy_repo(micro_split, tmp_path_factory.mktemp("benchmark") / "repo")
    short = {"sft.steps": 2, "sft.batch_size": 8, "grpo.steps": 2, "grpo.prompts_per_step": 2}
    short |= {"grpo.num_generations": 2, "curves.eval_every": 0, "benchmark.limit": 2}
    set_params(repo, short | {"benchmark.max_new_tokens": 8})
    for name in ("gsm8k", "math500"):
        shutil.copytree(copies / name, repo / "data" / "benchmarks" / name)
    run(["dvc", "add", "data/benchmarks/gsm8k", "data/benchmarks/math500"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "benchmark copies"], repo)
    # The benchmark stages and what they need; not evaluate and report (the report's table is tested apart)
    run(["dvc", "exp", "run", "-S", "benchmark.names=[gsm8k,math500]", "benchmark"], repo)
    return repo


@pytest.mark.slow
def test_dvc_exp_run_benchmarks_every_model(benchmarked):
    for model in MODELS:
        metrics = json.loads((benchmarked / "metrics" / "benchmarks" / f"{model}.json").read_text())
        per_item = benchmarked / "metrics" / "benchmarks" / "per_item" / f"{model}.csv"
        check_metrics(metrics, ["gsm8k", "math500"], 2, per_item)
        assert metrics["engine"] == "hf" and metrics["items_per_s"] > 0
    status = run(["dvc", "status", "benchmark"], benchmarked).stdout
    assert "changed" not in status, status  # the copies are dependencies, recorded in dvc.lock
    results = {m: json.loads((benchmarked / f"metrics/benchmarks/{m}.json").read_text()) for m in MODELS}
    table = report.benchmark_markdown(report.benchmark_rows(results), results)
    assert "| model | gsm8k | math500 | average | Δ average |" in table
    assert all(f"| {model} | " in table and f"| {model} strict | " in table for model in MODELS)
    assert " - " not in table.split("|---|")[-1]


@pytest.mark.slow
def test_a_changed_copy_reruns_the_stage(benchmarked, tmp_path):
    """A changed copy reruns the stage, which then scores the changed copy: the first MATH-500 item gets a new
    unique_id, which its row in the per-item file then names; only that copy's rows change."""
    repo = copy_repo(benchmarked, tmp_path / "repo")
    per_item = repo / "metrics" / "benchmarks" / "per_item" / "base.csv"
    before = read_items(per_item)
    assert [row["id"] for row in before if row["benchmark"] == "math500"] == [
        "test/prealgebra/1.json",
        "test/precalculus/807.json",
    ]
    run(["dvc", "unprotect", "data/benchmarks/math500"], repo)
    copy = repo / "data" / "benchmarks" / "math500" / "test.jsonl"
    rows = [json.loads(line) for line in copy.read_text().splitlines()]
    rows[0]["unique_id"] = "test/prealgebra/changed.json"
    write_jsonl(copy, rows)
    status = run(["dvc", "status", "benchmark@base"], repo).stdout
    assert "data/benchmarks" in status and "modified" in status, status
    run(["dvc", "add", "data/benchmarks/math500"], repo)  # the copy's new version, as a user records it
    output = run(["dvc", "repro", "benchmark@base"], repo).stdout
    after = read_items(per_item)
    assert [row["id"] for row in after if row["benchmark"] == "math500"] == [
        "test/prealgebra/changed.json",
        "test/precalculus/807.json",
    ]
    assert [row for row in after if row["benchmark"] == "gsm8k"] == [
        row for row in before if row["benchmark"] == "gsm8k"
    ]  # greedy answers to the unchanged copy: the same rows
    metrics = json.loads((repo / "metrics" / "benchmarks" / "base.json").read_text())
    check_metrics(metrics, ["gsm8k", "math500"], 2, per_item)
    assert "up to date" in run(["dvc", "status", "benchmark@base"], repo).stdout
    assert "Running stage 'benchmark@base'" in output and "benchmark@sft" not in output, output


def stage_error(directory: Path, monkeypatch, model: str = "base") -> str:
    monkeypatch.chdir(directory)
    with pytest.raises(ParamError) as caught:
        benchmark_stage.main([model])
    message = str(caught.value)
    assert message.startswith("error: ") and "\n" not in message
    assert not (directory / "metrics").exists()  # nothing written
    return message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {"benchmark.paths.gsm8k": "data/benchmarks/nowhere"},
            ["gsm8k", "dvc add", "data/benchmarks/nowhere"],
        ),
        ({"benchmark.paths.gsm8k": "data/benchmarks/math500"}, ["gsm8k", "layout", "openai/gsm8k"]),
        ({"benchmark.names": ["gsm8k", "mathvista"]}, ["mathvista", "vision-language", "text model"]),
        ({"benchmark.limit": 4}, ["benchmark.limit=4", "gsm8k", "3 items"]),
        ({"benchmark.names": ["gsm9k"]}, ["benchmark.names", "gsm8k, math500"]),
        ({"benchmark.paths.gsm8k": "/tmp/gsm8k"}, ["benchmark.paths.gsm8k", "dvc import-url"]),
    ],
)
def test_bad_input_stops_with_one_line(benchmarked, tmp_path, monkeypatch, overrides, named):
    directory = stage_dir(tmp_path, benchmarked / "data" / "benchmarks", {"benchmark.names": ["gsm8k"]})
    (directory / "models").symlink_to(benchmarked / "models")
    set_params(directory, {"benchmark.limit": None, **overrides})
    message = stage_error(directory, monkeypatch)
    assert all(name in message for name in named), message


@pytest.mark.slow
def test_a_wrong_layout_exits_non_zero_with_one_line(benchmarked, tmp_path):
    import shutil
    import sys

    overrides = {"benchmark.names": ["gsm8k"], "benchmark.paths.gsm8k": "data/benchmarks/math500"}
    directory = stage_dir(tmp_path, benchmarked / "data" / "benchmarks", overrides)
    (directory / "models").symlink_to(benchmarked / "models")
    shutil.copytree(REPO / "stages", directory / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    result = run([sys.executable, "-m", "stages.benchmark", "base"], directory, check=False)
    assert_one_line_error(result, "benchmark gsm8k", "openai/gsm8k")
    assert not (directory / "metrics").exists()


def test_empty_benchmark_list_runs_nothing(tmp_path, monkeypatch):
    directory = tmp_path
    OmegaConf.save(OmegaConf.load(REPO / "params.yaml"), directory / "params.yaml")
    assert OmegaConf.load(directory / "params.yaml").benchmark.names == []  # off by default
    metrics = run_stage(directory, "sft", monkeypatch)  # no models/sft needed: nothing loads
    assert metrics == {"model": "sft", "benchmarks": {}}
    assert (
        directory / "metrics/benchmarks/per_item/sft.csv"
    ).read_text() == "benchmark,id,correct,strict,extracted\n"


def test_report_adds_a_benchmark_table_only_where_benchmarks_ran(tmp_path, monkeypatch):
    from test_report import make_metrics

    repo = make_metrics(tmp_path / "repo")
    monkeypatch.chdir(repo)
    report.main()
    outputs = ("metrics/summary.json", "metrics/summary.md")
    before = {name: (repo / name).read_bytes() for name in outputs}
    for model in ("base", "sft", "grpo"):  # what the stage writes with benchmark.names: []
        run_stage(repo, model, monkeypatch)
    report.main()
    assert {name: (repo / name).read_bytes() for name in outputs} == before  # the default is unchanged
    assert not (repo / "metrics" / "report" / "benchmarks").exists()

    def ran(gsm8k, math500, strict=None):
        sections = {"gsm8k": {"accuracy": gsm8k}, "math500": {"accuracy": math500}}
        metrics = {"benchmarks": sections, "average": (gsm8k + math500) / 2, "limit": 2, "max_new_tokens": 8}
        if strict is not None:  # as the stage writes them; files made before strict accuracy have none
            for section, value in zip(sections.values(), strict, strict=True):
                section["strict_accuracy"] = value
            metrics["strict_average"] = sum(strict) / 2
        return metrics

    def report_on(accuracies: dict) -> tuple[dict, str]:
        for model, numbers in accuracies.items():
            (repo / "metrics" / "benchmarks" / f"{model}.json").write_text(json.dumps(ran(*numbers)))
        report.main()
        summary = json.loads((repo / "metrics" / "summary.json").read_text())
        return summary, (repo / "metrics" / "summary.md").read_text().split("Reasoning benchmarks")[1]

    summary, table = report_on({"base": (0.5, 0.25), "grpo": (1.0, 0.5)})
    assert summary["benchmarks"]["grpo"] == {
        "gsm8k": 1.0,
        "math500": 0.5,
        "average": 0.75,
        "delta_average": 0.375,
    }
    assert "| grpo | 1.000 | 0.500 | 0.750 | +0.375 |" in table and "| sft | - | - | - | - |" in table
    assert "strict" not in table
    plot = (repo / "metrics" / "report" / "benchmarks" / "grpo.csv").read_text()
    assert plot == "benchmark,accuracy\ngsm8k,1.0\nmath500,0.5\n"
    assert not (repo / "metrics" / "report" / "benchmarks" / "sft.csv").exists()

    # With strict accuracy: a row under each model's, Δ against base's strict average; the plot stays official
    summary, table = report_on({"base": (0.5, 0.25, (0.25, 0.25)), "grpo": (1.0, 0.5, (0.5, 0.25))})
    assert summary["benchmarks"]["grpo"]["strict"] == {
        "gsm8k": 0.5,
        "math500": 0.25,
        "average": 0.375,
        "delta_average": 0.125,
    }
    assert summary["benchmarks"]["grpo"]["delta_average"] == 0.375
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| model | gsm8k | math500 | average | Δ average |"
    assert rows[1:] == [
        "| base | 0.500 | 0.250 | 0.375 |  |",
        "| base strict | 0.250 | 0.250 | 0.250 |  |",
        "| sft | - | - | - | - |",
        "| sft strict | - | - | - | - |",
        "| grpo | 1.000 | 0.500 | 0.750 | +0.375 |",
        "| grpo strict | 0.500 | 0.250 | 0.375 | +0.125 |",
    ]
    plot = (repo / "metrics" / "report" / "benchmarks" / "grpo.csv").read_text()
    assert plot == "benchmark,accuracy\ngsm8k,1.0\nmath500,0.5\n"
    headline = json.loads((repo / "metrics" / "headline.json").read_text())
    assert headline["benchmarks"] == {"base": 0.375, "grpo": 0.75}  # the official average
