"""The claims table: intervals, verdicts and missing arms, on results built by hand."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from stages.claims.catalogue import (
    BENCHMARKS,
    CLAIMS,
    SUBSETS,
    Claim,
    SeedResults,
    at_matched_flops,
    curve_weights,
    diff,
)
from stages.claims.statistics import (
    Resampled,
    decide,
    holm,
    pvalues,
    resample,
    seed_interval,
    seeds_to_decide,
    unit_counts,
)
from stages.claims.table import Settings, claims_table, markdown, measure
from stages.core.params import ParamError
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
    assert seed_interval([0.2, 0.2]) is None  # no spread: no zero-width interval


@pytest.mark.parametrize(
    ("center", "sd", "noninferiority", "expected"),
    [
        (0.10, 0.004, False, "holds"),  # past the margin on the claimed side
        (0.02, 0.004, False, "holds"),  # excludes 0 and reaches past the margin
        (-0.10, 0.004, False, "fails"),
        (0.0, 0.004, False, "no effect"),  # inside ±0.02
        (0.012, 0.002, False, "no effect"),  # excludes 0, but inside the margin
        (0.01, 0.01, False, "inconclusive"),  # covers 0 and the margin
        (-0.01, 0.004, True, "holds"),  # matches: worse by less than the margin
        (-0.10, 0.004, True, "fails"),  # worse by more than the margin
        (-0.02, 0.004, True, "inconclusive"),
    ],
)
def test_verdicts_read_the_interval_against_the_null_and_the_margin(center, sd, noninferiority, expected):
    draws = center + np.random.default_rng(0).normal(0, sd, 4000)
    p = pvalues(draws, 0.02, noninferiority, 0.95)
    assert decide(p["direction"], p["side"], p.get("equivalence"), 0.95) == expected


@pytest.mark.parametrize(
    ("p_values", "adjusted"),
    [
        ([0.01, 0.04, 0.03, 0.5], [0.04, 0.09, 0.09, 0.5]),  # 2 x 0.04 stays at 3 x 0.03: monotone
        ([0.7, 0.01, 0.9], [1.0, 0.03, 1.0]),  # 2 x 0.7 is capped at 1, and 0.9 stays at the cap above it
        ([0.5, 0.6], [1.0, 1.0]),  # the smallest reaches exactly 1
        ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5]),  # ties: equal p-values, equal adjusted ones
        ([0.4, 0.4, 0.4], [1.0, 1.0, 1.0]),  # ties at the cap
        ([0.05], [0.05]),  # one test: nothing to adjust
    ],
)
def test_holm_multiplies_the_smallest_p_by_the_number_of_tests_and_stays_monotone(p_values, adjusted):
    assert holm(p_values) == pytest.approx(adjusted)


def holm_rejects(p_values: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure as defined: the j-th smallest p-value (from 0) is rejected at
    alpha / (m - j) while every smaller one was; the first that is not stops it."""
    rejected = set()
    for j, index in enumerate(sorted(range(len(p_values)), key=p_values.__getitem__)):
        if p_values[index] > alpha / (len(p_values) - j):
            break
        rejected.add(index)
    return rejected


def test_holms_adjusted_p_values_reject_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(0)
    for _ in range(200):  # on a coarse grid, so that ties and values past the cap are common
        p_values = (rng.integers(1, 40, rng.integers(1, 7)) / 80).tolist()
        adjusted = holm(p_values)
        assert all(p <= a <= 1 for p, a in zip(p_values, adjusted, strict=True))
        for alpha in (0.01, 0.05, 0.1, 0.25, 0.5):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == holm_rejects(p_values, alpha)


def test_one_draw_of_the_units_counts_each_unit_for_all_its_prompts():
    units = np.array(["r2", "r2", "r0", "r1", "r1", "r1", "r0"])
    codes, counts = unit_counts(units, 500, np.random.default_rng(0))
    assert codes.tolist() == [2, 2, 0, 1, 1, 1, 0]  # each prompt's unit, by code
    assert counts.shape == (500, 3) and (counts.sum(axis=1) == 3).all()  # units drawn with replacement
    assert counts.mean() == pytest.approx(1.0, abs=0.05) and counts.max() >= 2 and (counts == 0).any()


def test_one_draw_of_the_units_is_shared_by_every_seed_and_every_model():
    """resample's draws are the ones that unit_counts' draw gives each model's and each seed's prompts."""
    rng = np.random.default_rng(3)
    units = np.repeat(np.arange(30), 4)
    success = {model: rng.random(120) for model in ("sft_all", "base")}
    effect, identity = diff("sft_all", "base"), (lambda x: x)
    # one seed: the draws are the effect of each model's totals over the same drawn units
    codes, counts = unit_counts(units, 400, np.random.default_rng(9))
    sizes = counts @ np.bincount(codes)
    means = {model: counts @ np.bincount(codes, weights=v) / sizes for model, v in success.items()}
    one = resample([success], effect, units, identity, 400, np.random.default_rng(9))
    assert np.allclose(one.draws, means["sft_all"] - means["base"])
    # two models with the same success: the same units in both, so no draw has an effect
    twins = {"sft_all": success["base"], "base": success["base"].copy()}
    assert resample([twins, twins], effect, units, identity, 400, rng).unit_variance == 0.0
    # three seeds with the same success: the same units in each, so no seed strays from the others in a draw
    seeds = resample([success] * 3, effect, units, identity, 400, rng)
    assert seeds.interaction_variance == 0.0 and seeds.unit_variance > 0


def test_curve_weights_interpolate_and_average_linearly():
    flops = np.array([0.0, 50.0, 200.0])
    success = np.array([0.4, 0.5, 0.6])
    assert curve_weights(flops, 100.0, over_range=False) @ success == pytest.approx(0.5 + 0.1 / 3)
    # mean over [0, 100] of the piecewise-linear curve: (0.45 * 50 + (0.5 + 0.5333) / 2 * 50) / 100
    expected = (0.45 * 50 + (0.5 + 0.5 + 0.1 / 3) / 2 * 50) / 100
    assert curve_weights(flops, 100.0, over_range=True) @ success == pytest.approx(expected, abs=1e-4)


def test_clear_effects_hold_or_fail_and_null_effects_stay_open():
    rows = claims_table(results(), "gp_l", visual=False)
    assert [r["key"] for r in rows] == [c.key for c in CLAIMS]
    assert row(rows, "sft_raises_id")["verdict"] == "holds"
    assert row(rows, "sft_lowers_ood")["verdict"] == "holds"
    assert row(rows, "sft_lowers_ood")["effect"] == pytest.approx(-0.3, abs=0.05)
    assert row(rows, "medium_beats_all")["verdict"] == "holds"  # medium 0.4 against all's 0.1
    assert row(rows, "hard_lowest_ood")["verdict"] == "holds"
    # grpo equals base on every prompt of every seed: no spread to build an interval from
    assert row(rows, "rl_raises_ood")["interval"] == (0.0, 0.0)
    assert row(rows, "rl_raises_ood")["verdict"] == "inconclusive"
    assert "no spread" in row(rows, "rl_raises_ood")["note"]
    # curves without per-prompt success: the curves' means; matched FLOPs 100, where SFT is at 0.3 and
    # GRPO at 0.5 + 50/150 x 0.1
    end = row(rows, "rl_beats_sft_at_matched_compute_end")
    assert end["effect"] == pytest.approx(0.5 + 0.1 / 3 - 0.3) and "seeds only" in end["note"]
    assert row(rows, "dcsft_cheaper_than_rl")["effect"] == pytest.approx((300 * 301 * 302) ** (1 / 3) / 90)
    assert row(rows, "dcsft_cheaper_than_rl")["verdict"] == "holds"
    assert row(rows, "dcsft_cheaper_than_rl")["interval"][0] > 1  # a ratio's interval stays positive
    for key in ("rl_raises_visual_ood", "sft_lowers_visual_ood", "rl_raises_recognition"):
        assert row(rows, key)["verdict"] == "not run" and "vision-language" in row(rows, key)["note"]
    assert row(rows, "sft_ood_loss_grows_with_compute")["note"] == "needs the budget arm"
    assert claims_table(results(), "gp_l", visual=False) == rows  # the bootstrap is seeded
    decided = [r for r in rows if r.get("p")]
    assert all(r["p_holm"]["direction"] >= r["p"]["direction"] for r in decided)


def test_matched_flops_interpolates_the_curve_that_ran_longer():
    seed = results(seeds=(0,))[0]
    # viter 3 runs to 400 FLOPs, viter 1 to 200: at 200, viter 3 is at 0.4 + 0.05 / 2
    assert at_matched_flops(seed, "grpo_viter3", "grpo") == pytest.approx(0.425 - 0.6)


def with_curve_prompts(seeds: list[SeedResults], gap: float) -> list[SeedResults]:
    """Per-prompt curves on 100 prompts: SFT flat at its per-prompt success, GRPO above it by `gap` (give or
    take a per-prompt spread of 0.05) from its second point on, so the mean gap over the range is known."""
    for seed in seeds:
        rng = np.random.default_rng(100 + seed.seed)
        flat = np.tile(rng.random(100), (3, 1))
        prompt_gap = gap + rng.normal(0, 0.05, 100)
        seed.curve_prompts = {
            "sft_all": {"flops": np.array([0.0, 50.0, 100.0]), "units": np.arange(100), "ood_rule": flat},
            "grpo": {
                "flops": np.array([0.0, 100.0, 200.0]),
                "units": np.arange(100),
                "ood_rule": flat + np.array([[0.0], [1.0], [1.0]]) * prompt_gap,
            },
        }
    return seeds


def test_matched_compute_rows_get_the_prompt_dimension_from_per_prompt_curves():
    rows = claims_table(with_curve_prompts(results(), gap=0.2), "gp_l", visual=False)
    over_range, end = (
        row(rows, "rl_beats_sft_at_matched_compute"),
        row(rows, "rl_beats_sft_at_matched_compute_end"),
    )
    # up to 100 FLOPs the GRPO curve rises linearly from 0 to the gap: its mean gap is half of it
    assert over_range["prompt_level"] and "note" not in over_range
    assert over_range["effect"] == pytest.approx(0.1, abs=0.01) and over_range["verdict"] == "holds"
    assert end["effect"] == pytest.approx(2 * over_range["effect"], abs=1e-3)
    assert over_range["interval"][0] < 0.1 < over_range["interval"][1]


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


def test_one_seed_gives_no_verdict():
    claim = Claim("k", "text", {}, -1, "ood_rule", diff("sft_all", "base"))
    measured = measure(claim, results(seeds=(0,)), False, np.random.default_rng(0), Settings())
    assert measured["interval_seeds"] is None and measured["verdict"] == "inconclusive"
    assert measured["note"].startswith("one seed")


def test_routes_are_resampled_whole():
    """Steps of one route move together: resampling steps as if independent narrows the interval."""
    rng = np.random.default_rng(5)
    route = np.repeat(np.arange(40), 6)
    route_effect = rng.normal(0, 0.25, 40)[route]
    seeds = []
    for seed in range(3):
        base = rng.binomial(8, 0.5, 240) / 8
        sft = rng.binomial(8, np.clip(0.5 + route_effect, 0, 1)) / 8
        seeds.append(SeedResults(seed, {"base": {"ood_rule": base}, "sft_all": {"ood_rule": sft}}))
    claim = Claim("k", "text", {}, -1, "ood_rule", diff("sft_all", "base"))
    as_steps = measure(claim, seeds, False, np.random.default_rng(0), Settings())
    for seed in seeds:
        seed.units = {"ood_rule": route}
    as_routes = measure(claim, seeds, False, np.random.default_rng(0), Settings())
    width = {
        name: r["interval"][1] - r["interval"][0] for name, r in (("steps", as_steps), ("routes", as_routes))
    }
    assert width["routes"] > 1.3 * width["steps"], width


def test_markdown_has_one_row_per_claim():
    rows = claims_table(results(), "gp_l", visual=False)
    text = markdown(rows, "# header")
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(CLAIMS)
    assert all(line.count(" | ") == table[0].count(" | ") for line in table)
    assert "GP-L 11.5 → 3.4" in text and "**holds**" in text and "±0.02" in text


def test_seeds_to_decide_asks_for_holms_level_and_decided_rows_say_so():
    spread = Resampled(0.02, [0.01, 0.02, 0.03], np.zeros(1), 1e-5, 1e-5, 1e-4)
    raw, table = seeds_to_decide(spread, 0.02, 0.95), seeds_to_decide(spread, 0.02, 1 - 0.05 / 12)
    assert 2 <= raw < table  # the table's correction asks for more seeds than one test
    rows = claims_table(results(), "gp_l", visual=False)
    text = markdown(rows, "# header")
    sft = row(rows, "sft_lowers_ood")
    assert sft["verdict_holm"] == "holds"
    assert "| decided |" in next(line for line in text.splitlines() if line.startswith(f"| {sft['claim']} |"))
    assert not any("_to_decide" in r for r in rows)


def claims_params(**section) -> DictConfig:
    """params.yaml's claims section, the defaults with `section` over them."""
    return OmegaConf.create({"claims": {**Settings().__dict__, **section}})


def test_settings_name_the_param_and_its_allowed_values():
    assert Settings.from_params(claims_params(margin=0.05)).margin == 0.05
    with pytest.raises(ParamError, match="claims.margin=0: use a difference of success in"):
        Settings.from_params(claims_params(margin=0))
    with pytest.raises(ParamError, match="claims.ratio_margin=0.9: use a factor above 1"):
        Settings.from_params(claims_params(ratio_margin=0.9))
    with pytest.raises(ParamError, match="claims.alpha is not a param; use some of: draws, level"):
        Settings.from_params(claims_params(alpha=0.05))
    with pytest.raises(ParamError, match=r"claims.draws=100 is out of range; it must be >= 200"):
        Settings.from_params(claims_params(draws=100))


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


def test_benchmark_rows_read_the_items_or_say_what_to_run():
    """The reasoning-benchmark rows (DC-SFT's table) compare models over the benchmark items; without
    benchmark results they name the param that runs them."""
    seeds = results()
    rows = claims_table(seeds, "gp_l", visual=False)
    assert row(rows, "medium_keeps_benchmarks")["verdict"] == "not run"
    assert "benchmark.names" in row(rows, "medium_keeps_benchmarks")["note"]
    for seed in seeds:
        rng = np.random.default_rng(seed.seed)
        items = rng.random(300)
        for model, rate in {"sft_all": 0.3, "sft_medium": 0.6, "sft_easy_medium": 0.3, "grpo": 0.6}.items():
            seed.prompts[model][BENCHMARKS] = (items < rate).astype(float)
    rows = claims_table(seeds, "gp_l", visual=False)
    assert row(rows, "medium_keeps_benchmarks")["verdict"] == "holds"  # +0.3, far past the margin
    assert row(rows, "easy_medium_vs_rl_benchmarks")["verdict"] == "fails"  # -0.3: inferior
