"""Stage `evaluate`: success of a model on the ID and OOD eval sets, on micro params."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from conftest import assert_one_line_error, copy_repo, make_repo, run, set_params

from stages.evaluate import pass_at_k, per_prompt_rows, route_success, score_section
from stages.inference.rollout import Rollout

MICRO_EVAL = {"evaluate.k": 2, "evaluate.samples": 4}


def evaluate(model: str, repo, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "stages.evaluate", model], repo, check=check)


def read_eval(repo, model: str = "base") -> dict:
    return json.loads((repo / "metrics" / "eval" / f"{model}.json").read_text())


@pytest.mark.parametrize(("n", "k"), [(1, 1), (4, 1), (4, 2), (5, 3), (6, 6)])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_success(n, k):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(outcomes, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert math.isclose(pass_at_k(n, c, k), expected)


def test_route_success_needs_every_step_of_a_route():
    routes = ["a", "a", "a", "b", "b", "c"]
    records = [{"task": json.dumps({"route": r, "step": i})} for i, r in enumerate(routes)]
    assert route_success(records, [True, True, True, True, False, True]) == pytest.approx(2 / 3)
    assert route_success(records, [False] * 6) == 0.0


def episodes(*flags) -> list[Rollout]:
    """Hand-built episodes of one prompt: (success, recognized) per answer."""
    return [Rollout(attempts=["answer"], success=s, recognized=r) for s, r in flags]


# Three prompts of a VL env: one greedy answer and four sampled answers each. None: the answer stated
# nothing the verifier could parse (V-IRL-VL), which counts as not recognised.
RECORDS = [{"id": f"p{i}", "task": json.dumps({"route": "r0" if i < 2 else "r1"})} for i in range(3)]
GREEDY = [episodes((True, True)), episodes((False, True)), episodes((False, None))]
SAMPLED = [
    episodes((True, True), (True, True), (False, False), (False, None)),
    episodes((True, True), (False, True), (False, True), (False, True)),
    episodes((False, False), (False, False), (False, None), (False, None)),
]


def test_score_section_counts_recognition_of_greedy_and_sampled_answers():
    section = score_section(RECORDS, GREEDY, SAMPLED, k=2, virl=False, visual=True)
    assert section["greedy_success"] == round(1 / 3, 4)  # every number is rounded to 4 places
    assert section["mean_success"] == 0.25
    assert section["recognition"] == round(2 / 3, 4)  # the None answer is not recognised
    assert section["recognition_sampled"] == 0.5
    assert all(0.0 <= value <= 1.0 for value in section.values()), section


def test_score_section_of_a_text_env_has_no_recognition():
    text = [[Rollout(success=e.success) for e in eps] for eps in SAMPLED]
    section = score_section(RECORDS, [[Rollout(success=True)]] * 3, text, k=2, virl=False)
    assert set(section) == {"greedy_success", "mean_success", "pass_at_k"}
    assert section["greedy_success"] == 1.0 and section["mean_success"] == pytest.approx(0.25)
    # pass@2 over 4 answers: prompt 0 has 2 successes (5/6), prompt 1 one (1/2), prompt 2 none.
    assert section["pass_at_k"] == pytest.approx(round((5 / 6 + 1 / 2) / 3, 4))


def test_score_section_of_virl_vl_has_routes_and_recognition():
    section = score_section(RECORDS, GREEDY, SAMPLED, k=1, virl=True, visual=True)
    assert section["step_accuracy"] == section["greedy_success"]
    assert section["route_success"] == 0.0  # route r0 fails its second step, r1 its only step
    # Sampled walk 0 gets both steps of route r0 right (r1 never): 1 of 2 routes in 1 of 4 walks.
    assert section["route_success_sampled"] == pytest.approx(0.125)
    assert {"recognition", "recognition_sampled"} <= section.keys()


def test_per_prompt_rows_add_recognized_for_vl_envs_only():
    rows = per_prompt_rows("ood_visual", RECORDS, GREEDY, SAMPLED, visual=True)
    assert [row["recognized"] for row in rows] == [1, 1, 0]
    assert [row["greedy_success"] for row in rows] == [1, 0, 0]
    assert rows[0] == {
        "set": "ood_visual",
        "id": "p0",
        "unit": "r0",
        "greedy_success": 1,
        "mean_success": 0.5,
        "recognized": 1,
    }
    text = per_prompt_rows("id", RECORDS, GREEDY, SAMPLED)
    assert all(set(row) == {"set", "id", "unit", "greedy_success", "mean_success"} for row in text)
    assert [row["unit"] for row in text] == ["r0", "r0", "r1"]  # V-IRL: the step's route
    hands = [{"id": f"h{i}", "task": json.dumps({"cards": [1, 2]})} for i in range(3)]
    assert [row["unit"] for row in per_prompt_rows("id", hands, GREEDY, SAMPLED)] == ["h0", "h1", "h2"]


@pytest.fixture(scope="module")
def evaluated(micro_split, tmp_path_factory):
    """A copy of the micro repository after `python -m stages.evaluate base`."""
    repo = copy_repo(micro_split, tmp_path_factory.mktemp("evaluate") / "repo")
    set_params(repo, MICRO_EVAL)
    evaluate("base", repo)
    return repo


@pytest.mark.slow
def test_evaluate_writes_every_section_with_numbers_in_unit_range(evaluated):
    metrics = read_eval(evaluated)
    assert metrics["model"] == "base" and metrics["env"] == "gp_l"
    assert {"id", "ood_rule"} <= metrics.keys() and "ood_visual" not in metrics
    for name in ("id", "ood_rule"):
        section = metrics[name]
        assert set(section) == {"greedy_success", "mean_success", "pass_at_k"}
        assert all(0.0 <= value <= 1.0 for value in section.values()), section
        assert section["pass_at_k"] >= section["mean_success"] - 1e-4  # pass@2 >= pass@1
    sizes = {
        name: len(pd.read_parquet(evaluated / "data" / "generated" / f"eval_{name}.parquet"))
        for name in ("id", "ood_rule")
    }
    assert metrics["prompts"] == sizes and metrics["k"] == 2 and metrics["samples"] == 4


@pytest.mark.slow
def test_evaluation_is_deterministic(evaluated, tmp_path):
    repo = copy_repo(evaluated, tmp_path / "repo")
    evaluate("base", repo)
    first, second = read_eval(evaluated), read_eval(repo)
    for name in ("id", "ood_rule"):
        assert first[name] == second[name]


@pytest.mark.slow
def test_missing_model_stops_with_one_line(evaluated):
    result = evaluate("sft", evaluated, check=False)
    assert_one_line_error(result, "models/sft", "dvc repro sft")
    assert not (evaluated / "metrics" / "eval" / "sft.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("delete eval_ood_rule", "eval_ood_rule.parquet"),
        ("evaluate.k=0", "evaluate.k"),
        ("evaluate.samples=1", "evaluate.samples"),
        ("evaluate.temperature=-1", "evaluate.temperature"),
    ],
)
def test_bad_input_stops_with_one_line(evaluated, tmp_path, change, named):
    repo = copy_repo(evaluated, tmp_path / "repo")
    (repo / "metrics" / "eval" / "base.json").unlink()
    if change.startswith("delete"):
        (repo / "data" / "generated" / "eval_ood_rule.parquet").unlink()
    else:
        key, value = change.split("=")
        set_params(repo, {key: int(value)})
    result = evaluate("base", repo, check=False)
    assert_one_line_error(result, named)
    assert not (repo / "metrics" / "eval" / "base.json").exists()


@pytest.mark.slow
def test_virl_route_success_is_bounded_by_step_accuracy(tmp_path):
    # Short answers (one action) and few samples keep this test quick; the base still gets steps right.
    quick = {"evaluate.k": 1, "evaluate.samples": 2, "rollout.max_new_tokens": 16}
    repo = make_repo(tmp_path / "repo", {"env": "virl_l", **quick})
    run(["dvc", "repro", "base"], repo)
    evaluate("base", repo)
    metrics = read_eval(repo)
    for name in ("id", "ood_rule"):
        section = metrics[name]
        assert section["step_accuracy"] == section["greedy_success"]
        assert all(0.0 <= value <= 1.0 for value in section.values()), section
        # Every step counts once: route success can exceed step accuracy only through unequal lengths.
        tasks = pd.read_parquet(repo / "data" / "generated" / f"eval_{name}.parquet")["task"].map(json.loads)
        lengths = tasks.map(lambda t: t["num_steps"])
        steps = tasks.map(lambda t: t["route"]).value_counts()
        assert all(steps[t["route"]] == t["num_steps"] for t in tasks)  # whole routes in every eval set
        bound = section["step_accuracy"] * lengths.max() / lengths.min()
        assert section["route_success"] <= bound + 1e-3
        assert (
            section["route_success_sampled"] <= section["mean_success"] * lengths.max() / lengths.min() + 1e-3
        )
