"""The claims table: intervals, verdicts and missing arms, on results built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from stages.claims import (
    CLAIMS,
    SUBSETS,
    Claim,
    SeedResults,
    at_matched_flops,
    claims_table,
    diff,
    markdown,
    measure,
    seed_interval,
    verdict,
)
from stages.params import ParamError
from stages.study import parse_arms, parse_sets

MODELS = ("base", "grpo", "grpo_viter3", *(f"sft_{s}" for s in SUBSETS))


def seed_results(seed: int, success: dict[str, dict[str, float]], n: int = 200) -> SeedResults:
    """A seed whose models succeed on a given share of n prompts per eval set (a fixed random pattern)."""
    rng = np.random.default_rng(seed)
    draws = {eval_set: rng.random(n) for eval_set in ("id", "ood_rule")}
    prompts = {
        model: {eval_set: (draws[eval_set] < rate).astype(float) for eval_set, rate in rates.items()}
        for model, rates in success.items()
    }
    curves = {
        "sft_all": [{"flops": 0, "ood_rule": 0.4}, {"flops": 100, "ood_rule": 0.3}],
        "grpo": [
            {"flops": 0, "ood_rule": 0.4},
            {"flops": 50, "ood_rule": 0.5},
            {"flops": 200, "ood_rule": 0.6},
        ],
        "grpo_viter3": [{"flops": 0, "ood_rule": 0.4}, {"flops": 400, "ood_rule": 0.45}],
    }
    training = {f"sft_{s}": {"grad_norm_mean": 1.0 if s == "hard" else 0.5, "cost_s": 50.0} for s in SUBSETS}
    training |= {
        "grpo": {"cost_s": 300.0 + seed},
        "grpo_viter3": {"cost_s": 600.0},
        "score": {"wall_s": 40.0},
    }
    return SeedResults(seed, prompts, training=training, curves=curves)


def results(seeds=(0, 1, 2)) -> list[SeedResults]:
    rates = {model: {"id": 0.4, "ood_rule": 0.4} for model in MODELS}
    rates["sft_all"] = {"id": 0.9, "ood_rule": 0.1}  # SFT: ID up, OOD down, by far
    rates["sft_hard"] = {"id": 0.5, "ood_rule": 0.05}
    return [seed_results(seed, rates) for seed in seeds]


def row(rows: list[dict], key: str) -> dict:
    return next(r for r in rows if r["key"] == key)


def test_seed_interval_is_students_t():
    low, high = seed_interval([1.0, 2.0, 3.0])
    # mean 2, standard error 1/sqrt(3), t(0.975, 2 df) = 4.303
    assert low == pytest.approx(2 - 4.3027 / 3**0.5, abs=1e-3) and high == pytest.approx(
        2 + 4.3027 / 3**0.5, abs=1e-3
    )
    assert seed_interval([0.5]) is None
    assert seed_interval([0.2, 0.2]) == (0.2, 0.2)


@pytest.mark.parametrize(
    ("direction", "null", "interval", "expected"),
    [
        (+1, 0.0, (0.01, 0.2), "holds"),
        (+1, 0.0, (-0.2, -0.01), "fails"),
        (+1, 0.0, (-0.01, 0.2), "inconclusive"),
        (-1, 0.0, (-0.2, -0.01), "holds"),
        (-1, 0.0, (0.01, 0.2), "fails"),
        (+1, 1.0, (1.5, 4.0), "holds"),  # a ratio against 1
        (+1, 1.0, (0.5, 0.9), "fails"),
    ],
)
def test_verdict_needs_the_whole_interval_on_one_side(direction, null, interval, expected):
    claim = Claim("k", "text", {}, direction, null=null)
    assert verdict(claim, [interval]) == expected
    # Both intervals decide together: one covering the null leaves the claim open.
    assert verdict(claim, [interval, (null - 1, null + 1)]) == "inconclusive"


def test_clear_effects_hold_or_fail_and_null_effects_stay_open():
    rows = claims_table(results(), "gp_l", visual=False)
    assert [r["key"] for r in rows] == [c.key for c in CLAIMS]
    assert row(rows, "sft_raises_id")["verdict"] == "holds"
    assert row(rows, "sft_lowers_ood")["verdict"] == "holds"
    assert row(rows, "sft_lowers_ood")["effect"] == pytest.approx(-0.3, abs=0.05)
    assert row(rows, "medium_beats_all")["verdict"] == "holds"  # medium 0.4 against all's 0.1
    assert row(rows, "hard_lowest_ood")["verdict"] == "holds"
    assert row(rows, "hard_largest_grad_norm")["verdict"] == "holds"
    # grpo equals base on every prompt: both intervals are [0, 0], which covers the null
    assert row(rows, "rl_raises_ood")["interval_prompts"] == (0.0, 0.0)
    assert row(rows, "rl_raises_ood")["verdict"] == "inconclusive"
    # matched FLOPs: 100, where SFT is at 0.3 and GRPO at 0.5 + 50/150 x 0.1
    assert row(rows, "rl_beats_sft_at_matched_compute")["effect"] == pytest.approx(0.5 + 0.1 / 3 - 0.3)
    assert row(rows, "dcsft_cheaper_than_rl")["effect"] == pytest.approx(301 / 90)
    for key in ("rl_raises_visual_ood", "sft_lowers_visual_ood", "rl_raises_recognition"):
        assert row(rows, key)["verdict"] == "not run" and "vision-language" in row(rows, key)["note"]
    assert claims_table(results(), "gp_l", visual=False) == rows  # the bootstrap is seeded


def test_matched_flops_interpolates_the_curve_that_ran_longer():
    seed = results(seeds=(0,))[0]
    # viter 3 stops at 400 FLOPs, viter 1 at 200: at 200, viter 3 is at 0.4 + 0.05 / 2
    assert at_matched_flops(seed, "grpo_viter3", "grpo") == pytest.approx(0.425 - 0.6)


def test_an_arm_that_did_not_run_is_named_instead_of_a_verdict():
    seeds = results()
    for seed in seeds:
        del seed.prompts["sft_hard"], seed.training["sft_hard"]
        del seed.prompts["grpo_viter3"], seed.curves["grpo_viter3"]
    rows = claims_table(seeds, "gp_l", visual=False)
    assert row(rows, "hard_lowest_ood")["verdict"] == "not run"
    assert row(rows, "hard_lowest_ood")["note"] == "needs the sft_hard arm"
    for seed in seeds:
        del seed.prompts["sft_easy"], seed.training["sft_easy"]
    rows = claims_table(seeds, "gp_l", visual=False)
    assert row(rows, "hard_lowest_ood")["note"] == "needs the sft_easy, sft_hard arms"
    assert row(rows, "hard_largest_grad_norm")["note"] == "needs the sft_easy, sft_hard arms"
    assert row(rows, "viter_helps_rl")["note"] == "needs the grpo_viter3 arm"
    assert row(rows, "sft_lowers_ood")["verdict"] == "holds"


def test_one_seed_decides_on_the_prompts_alone():
    claim = Claim("k", "text", {}, -1, "ood_rule", diff("sft_all", "base"))
    measured = measure(claim, results(seeds=(0,)), False, np.random.default_rng(0))
    assert measured["interval_seeds"] is None and measured["verdict"] == "holds"
    assert measured["note"] == "one seed: no interval over seeds"


def test_markdown_has_one_row_per_claim():
    rows = claims_table(results(), "gp_l", visual=False)
    text = markdown(rows, "# header")
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(CLAIMS)
    assert "GP-L 11.5 → 3.4" in text and "**holds**" in text and "3.34x" in text


def test_bad_study_arguments_name_the_allowed_values():
    with pytest.raises(ParamError, match="unknown arm sft_everything; use some of: sft_all, sft_easy"):
        parse_arms("sft_all,sft_everything")
    with pytest.raises(ParamError, match="--set subset=... is set by the study"):
        parse_sets(["subset=hard"])
    with pytest.raises(ParamError, match="is not KEY=VALUE"):
        parse_sets(["sft.lr"])
    assert parse_sets(["sft.lr=1e-3", "env=virl_l"]) == {"sft.lr": "1e-3", "env": "virl_l"}


def test_recognition_claim_reads_the_eval_metrics_of_vl_runs():
    seeds = results()
    for seed in seeds:
        seed.evals = {
            "base": {"ood_visual": {"recognition": 0.5}},
            "grpo": {"ood_visual": {"recognition": 0.7 + seed.seed / 100}},
        }
    recognition = row(claims_table(seeds, "gp_vl", visual=True), "rl_raises_recognition")
    assert recognition["effect"] == pytest.approx(0.21) and recognition["verdict"] == "holds"
