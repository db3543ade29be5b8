"""The reasoning benchmarks: read from local copies in their public release layouts, prompted and scored as
their own evaluations do (docs/benchmarks.md holds each layout, prompt and scoring rule).

Text: GSM8K (openai/gsm8k, test) and MATH-500 (HuggingFaceH4/MATH-500). Vision-language: MathVista
(AI4Math/MathVista, testmini), MathVerse (AI4Math/MathVerse, testmini), MathVision (MathLLMs/MathVision,
test) and MMMU (MMMU/MMMU, validation). Nothing is downloaded: a reader takes the folder of a copy.
Scoring is stages/benchmarks/scoring.py.
"""

from __future__ import annotations

import ast
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import pyarrow.parquet as pq

from stages.core.params import ParamError

LETTERS = "ABCDEFGHIJ"
BOXED_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


class BenchmarkError(ParamError):
    """A benchmark copy that cannot be read: one line naming the benchmark and the fix."""


@dataclass
class Item:
    """One benchmark question: its prompt, images (PIL, in order) and gold answer.

    `choices` holds the option texts of a multiple-choice item (letters A, B, ... by position; empty when
    the options live only in the question text, as in MathVerse); `answer` is the gold letter for a
    multiple-choice item, else the gold value(s) as the release writes them.
    """

    benchmark: str
    id: str
    prompt: str
    answer: str | list[str]
    multiple_choice: bool
    choices: list[str] = field(default_factory=list)
    images: list = field(default_factory=list)
    precision: int | None = None  # MathVista floats: decimal places the answer is compared at


@dataclass(frozen=True)
class Benchmark:
    name: str
    release: str  # the public release whose layout the reader takes
    visual: bool
    patterns: tuple[str, ...]  # files of the copy, tried in order: the first pattern that matches
    columns: tuple[str, ...]  # required columns


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark(
            "gsm8k",
            "openai/gsm8k (main, test)",
            False,
            ("main/test-*.parquet", "test.jsonl"),
            ("question", "answer"),
        ),
        Benchmark(
            "math500",
            "HuggingFaceH4/MATH-500 (test)",
            False,
            ("test.jsonl", "test-*.parquet"),
            ("problem", "answer", "unique_id"),
        ),
        Benchmark(
            "mathvista",
            "AI4Math/MathVista (testmini)",
            True,
            ("data/testmini-*.parquet",),
            (
                "pid",
                "query",
                "question_type",
                "answer_type",
                "choices",
                "precision",
                "answer",
                "decoded_image",
            ),
        ),
        Benchmark(
            "mathverse",
            "AI4Math/MathVerse (testmini)",
            True,
            ("testmini.parquet", "testmini.json"),
            ("sample_index", "question", "image", "answer", "question_type", "query_cot"),
        ),
        Benchmark(
            "mathvision",
            "MathLLMs/MathVision (test)",
            True,
            ("data/test-*.parquet", "data/test.jsonl"),
            ("id", "question", "options", "image", "answer"),
        ),
        Benchmark(
            "mmmu",
            "MMMU/MMMU (validation)",
            True,
            ("*/validation-*.parquet",),
            ("id", "question", "options", "answer", "question_type", "image_1"),
        ),
    )
}


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ParamError(f"benchmark.names: {name!r} is not a benchmark; use any of: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


# ---------------------------------------------------------------------------------------------- reading


def copy_files(spec: Benchmark, root: Path) -> list[Path]:
    """The files of the copy at `root` in the release's layout, or BenchmarkError naming the layout."""
    if not root.is_dir():
        raise BenchmarkError(
            f"benchmark {spec.name}: no local copy at {root}; bring one in with `dvc add {root}` or "
            f"`dvc import-url /path/to/copy {root}` (docs/benchmarks.md), or set benchmark.paths.{spec.name}"
        )
    for pattern in spec.patterns:
        files = sorted(root.glob(pattern))
        if files:
            return files
    raise BenchmarkError(
        f"benchmark {spec.name}: {root} is not in the layout of {spec.release}: none of "
        f"{', '.join(spec.patterns)} found (docs/benchmarks.md)"
    )


def read_rows(path: Path) -> list[dict]:
    """Rows of a parquet, jsonl or json (a list of objects) file; parquet images stay {bytes, path}."""
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        text = path.read_text()
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except (OSError, ValueError) as error:  # pyarrow's errors derive from these
        raise BenchmarkError(f"{path} cannot be read ({type(error).__name__}); replace the copy") from None
    return rows if isinstance(rows, list) else list(rows.values())  # MathVista's json: {pid: row}


def open_image(value, root: Path, where: str) -> PIL.Image.Image:
    """An image given as parquet's {bytes, path} struct or as a path inside the copy, in RGB."""
    data = value.get("bytes") if isinstance(value, dict) else None
    path = value.get("path") if isinstance(value, dict) else value
    try:
        if data is None:
            if not isinstance(path, str) or not path:
                raise ValueError("no image bytes or path")
            file = (root / path).resolve()
            if not file.is_relative_to(root.resolve()):  # a path in the data never leaves the copy
                raise ValueError(f"{path} is outside the copy")
            data = file.read_bytes()
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError) as error:
        raise BenchmarkError(f"{where}: the image cannot be read ({error}); replace the copy") from None
    return image.convert("RGB")


def read_benchmark(name: str, root: str | Path, limit: int | None = None) -> list[Item]:
    """The first `limit` (default: all) items of the copy of benchmark `name` at `root`."""
    spec, root = benchmark(name), Path(root)
    rows, where = [], []
    for path in copy_files(spec, root):
        file_rows = read_rows(path)
        missing = [c for c in spec.columns if file_rows and c not in file_rows[0]]
        if missing:
            raise BenchmarkError(
                f"benchmark {name}: {path} has no column {', '.join(missing)}; it is not the layout of "
                f"{spec.release} (docs/benchmarks.md)"
            )
        rows += file_rows
        where += [f"{path}, row {i}" for i in range(len(file_rows))]
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise BenchmarkError(f"benchmark {name}: the copy at {root} holds no items; replace it")
    if limit is not None and limit > len(rows):
        raise BenchmarkError(
            f"benchmark.limit={limit} is larger than the {len(rows)} items of benchmark {name} at {root}; "
            f"lower benchmark.limit or set it to null"
        )
    rows, where = rows[:limit], where[:limit]
    reader = READERS[name]
    items = []
    for i, (row, at) in enumerate(zip(rows, where, strict=True)):
        try:
            items.append(reader(row, i, root, at))
        except (KeyError, TypeError, ValueError, SyntaxError) as error:
            raise BenchmarkError(
                f"benchmark {name}: {at} is not in the layout of {spec.release} ({type(error).__name__}: "
                f"{str(error)[:80]}); see docs/benchmarks.md"
            ) from None
    return items


def options_prompt(choices: list[str], style: str) -> str:
    if style == "mmmu":  # lmms-eval's mmmu_val
        return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def read_gsm8k(row: dict, index: int, root: Path, where: str) -> Item:
    if "####" not in row["answer"]:
        raise ValueError("the answer does not end in '#### <number>'")
    gold = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    return Item("gsm8k", f"test-{index}", f"{row['question']}\n{BOXED_SUFFIX}", gold, False)


def read_math500(row: dict, index: int, root: Path, where: str) -> Item:
    return Item("math500", row["unique_id"], f"{row['problem']}\n{BOXED_SUFFIX}", str(row["answer"]), False)


def read_mathvista(row: dict, index: int, root: Path, where: str) -> Item:
    image = open_image(row["decoded_image"] or row.get("image"), root, where)
    choices = list(row["choices"] or [])
    multiple = row["question_type"] == "multi_choice"
    # a multiple-choice gold answer is the option's text
    answer = LETTERS[choices.index(row["answer"])] if multiple else str(row["answer"])
    precision = int(row["precision"]) if row["answer_type"] == "float" and row["precision"] else None
    return Item("mathvista", str(row["pid"]), row["query"], answer, multiple, choices, [image], precision)


# MathVerse lists its options in the question: "Choices:\nA:...\nB:..."
CHOICE_LINE = re.compile(r"^\s*\(?([A-J])[:.)]\s*(.+?)\s*$", re.MULTILINE)


def read_mathverse(row: dict, index: int, root: Path, where: str) -> Item:
    image = open_image(row["image"], root, where)
    multiple = row["question_type"] == "multi-choice"
    choices = []
    if multiple and "Choices" in row["question"]:
        listed = CHOICE_LINE.findall(row["question"].split("Choices", 1)[1])
        if [letter for letter, _ in listed] == list(LETTERS[: len(listed)]):
            choices = [text for _, text in listed]
    answer = str(row["answer"]).strip()
    if multiple:
        answer = answer.strip("()").strip()[:1].upper()
    return Item("mathverse", str(row["sample_index"]), row["query_cot"], answer, multiple, choices, [image])


MATHVISION_SUFFIX = (
    "Please solve the problem step by step and put your final answer in \\boxed{}. "
    "If it is a multiple choice question, put only the option's letter in \\boxed{}."
)


def read_mathvision(row: dict, index: int, root: Path, where: str) -> Item:
    image = open_image(row.get("decoded_image") or row["image"], root, where)
    choices = list(row["options"] or [])
    prompt = row["question"]
    if choices:
        prompt += "\nOptions: " + options_prompt(choices, "paren").replace("\n", " ")
    prompt += "\n" + MATHVISION_SUFFIX
    return Item("mathvision", str(row["id"]), prompt, str(row["answer"]), bool(choices), choices, [image])


def literal_list(text) -> list[str]:
    """A list stored as a string of a Python list (MMMU's options), read as a literal, never evaluated."""
    if isinstance(text, list):
        return [str(t) for t in text]
    value = ast.literal_eval(text)
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ValueError("not a list of strings")
    return [str(v) for v in value]


def read_mmmu(row: dict, index: int, root: Path, where: str) -> Item:
    images = [
        open_image(row[key], root, f"{where}, {key}")
        for key in (f"image_{i}" for i in range(1, 8))
        if row.get(key)
    ]
    choices = literal_list(row["options"])
    multiple = row["question_type"] == "multiple-choice"
    if multiple:
        prompt = f"{row['question']}\n{options_prompt(choices, 'mmmu')}\n"
        prompt += "Answer with the option's letter from the given choices directly."
        answer = str(row["answer"]).strip()
    else:
        prompt = f"{row['question']}\nAnswer the question using a single word or phrase."
        raw = str(row["answer"]).strip()
        answer = literal_list(raw) if raw.startswith("[") else raw  # open answers may list accepted values
    return Item("mmmu", str(row["id"]), prompt, answer, multiple, choices if multiple else [], images)


READERS = {
    "gsm8k": read_gsm8k,
    "math500": read_math500,
    "mathvista": read_mathvista,
    "mathverse": read_mathverse,
    "mathvision": read_mathvision,
    "mmmu": read_mmmu,
}


def conversation(item: Item) -> list[dict]:
    """The user turn of an item: its images, in order, then its prompt (as the rollout engine takes them)."""
    if not item.images:
        return [{"role": "user", "content": item.prompt}]
    parts = [{"type": "image", "image": image} for image in item.images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": item.prompt}]}]
