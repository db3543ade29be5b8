"""The README and docs/results.md quote only numbers the committed files give.

docs/tables.py writes docs/results.md whole and the README's generated blocks; these tests fail when either
is stale against metrics/, study/ or docs/reproducibility/, or when a measured number is typed into the
README's hand-written text.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("tables", ROOT / "docs" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)

# What a measured figure looks like in this repository's prose: a success or effect to three decimals, a
# ratio, a duration, a memory size, FLOPs.
MEASURED = re.compile(
    r"(?<![\w.:])[+-]?\d+\.\d{3,}(?![\d.])"  # a success or an effect
    r"|\b\d+(?:\.\d+)?x\b|\b\d+ min\b|\b\d+(?:\.\d+)? GB\b|\b\d\.\d+e[+-]?\d+\b"
)


def hand_written(text: str) -> str:
    """The README without its generated blocks and code fences."""
    text = re.sub(r"<!-- table:\w+ -->.*?<!-- /table -->", "", text, flags=re.S)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_results_and_readme_blocks_match_the_committed_files():
    assert tables.readme(tables.README.read_text()) == tables.README.read_text(), "run python docs/tables.py"
    assert tables.results() == tables.RESULTS.read_text(), "run python docs/tables.py"


def test_the_readme_types_no_measured_number():
    typed = MEASURED.findall(hand_written(tables.README.read_text()))
    assert typed == [], f"measured numbers outside the generated blocks of README.md: {typed}"


def test_the_number_pattern_catches_what_it_should(tmp_path):
    text = "SFT gains +0.046 in 50 min 47 s, 1.37x faster, 1.32 GB, 6.22e12 FLOPs; torch 2.13.0, ±0.02, 95%"
    assert MEASURED.findall(text) == ["+0.046", "50 min", "1.37x", "1.32 GB", "6.22e12"]


def test_a_run_timed_in_parts_adds_its_parts(tmp_path):
    record = "\tElapsed (wall clock) time (h:mm:ss or m:ss): {}\n\tMaximum resident set size (kbytes): {}\n"
    path = tmp_path / "study_x_time.txt"
    path.write_text(
        "# the study, in two parts\n" + record.format("1:20:02", 2398400) + record.format("26:30.5", 1000)
    )
    run = tables.timed(path)
    assert run == {"what": "the study, in two parts", "seconds": 4802 + 1590.5, "rss_gb": 2.3984}


def test_a_study_summary_counts_its_verdicts():
    row = {"claim": "SFT raises ID", "paper": "both papers", "effect": 0.05, "ratio": False}
    study = {
        "claims": [
            row | {"verdict": "holds", "verdict_holm": "holds"},
            row | {"verdict": "holds", "verdict_holm": "inconclusive"},
            row | {"verdict": "no effect", "verdict_holm": "no effect"},
            {"claim": "RL raises visual-OOD success", "verdict": "not run"},
        ]
    }
    summary = tables.study_summary(study)
    assert summary.startswith("3 rows tested (1 not run); raw verdicts: 2 holds, 1 no effect; after Holm's "
                              "correction: 1 holds, 1 no effect, 1 inconclusive.")  # fmt: skip
    assert "- SFT raises ID: **holds**, +0.050 (both papers)" in summary


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if target.startswith("http"):
                continue
            file = (page.parent / target) if target else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == []


POINTER = re.compile(r"\b((?:docs/[\w./-]+|README)\.md)(?:#([\w-]+))?")
CODE = ["stages", "tests", ".ci/run", "pyproject.toml", "dvc.yaml", "params.yaml", "constraints.txt"]


def test_every_pointer_in_code_and_errors_to_a_page_or_section_resolves():
    """Comments, docstrings and error messages point users at docs/<page>.md or README.md, with or without a
    #section: each page and section must exist (a renamed heading or a folded page leaves no dead pointer)."""
    files = [
        p
        for entry in CODE
        for p in ([ROOT / entry] if (ROOT / entry).is_file() else (ROOT / entry).rglob("*.py"))
    ]
    broken = []
    for file in files:
        for page, anchor in POINTER.findall(file.read_text()):
            target = ROOT / page
            if not target.is_file():
                broken.append(f"{file.relative_to(ROOT)}: {page}")
            elif anchor and anchor not in {
                slug(h) for h in re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
            }:
                broken.append(f"{file.relative_to(ROOT)}: {page}#{anchor}")
    assert files and broken == []


def test_every_code_path_the_docs_name_exists():
    """A moved or renamed module leaves no stale path in the README or docs/."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {path for page in pages for path in re.findall(r"\bstages/[\w/]*\w(?:\.py)?", page.read_text())}
    assert named and sorted(path for path in named if not (ROOT / path).exists()) == []
