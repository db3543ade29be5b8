"""The verdicts are calibrated: simulated studies with known per-prompt effects, fed through the claims code.

Each simulated study has seeds that share one eval set (as a study's seeds do: it depends on data_seed).
Every prompt has its own effect, fixed across seeds; on V-IRL, steps of one route share the route's effect.
Each seed adds a training shift common to its prompts, and every seed draws its own eval samples (binomial).
The rates asserted are those of issue 19's deliverable 5, with the simulation's own binomial error; the
rates measured are in docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from stages.claims.catalogue import Claim, SeedResults, diff
from stages.claims.table import Settings, measure

STUDIES = 200
SETTINGS = Settings(margin=0.02, ratio_margin=1.1, level=0.95, draws=1000)  # 1000 draws keep it fast
CLAIM = Claim("sft_lowers_ood", "SFT lowers OOD", {}, -1, "ood_rule", diff("sft_all", "base"))
# the simulation's own error: the standard error of a rate of 5% measured on STUDIES studies
SE = math.sqrt(0.05 * 0.95 / STUDIES)


@dataclass(frozen=True)
class Scenario:
    seeds: int = 3
    units: int = 200  # hands (GeneralPoints) or routes (V-IRL)
    steps: int = 1  # prompts per unit: 1 for hands, the steps of a route for V-IRL
    samples: int = 8  # sampled answers per prompt
    effect: float = 0.0  # the true mean effect
    unit_sd: float = 0.1  # s.d. of the units' own effects, fixed across seeds
    prompt_sd: float = 0.0  # s.d. of each prompt's effect within its unit
    seed_sd: float = 0.0  # s.d. of each seed's training shift


def simulate(scenario: Scenario, rng: np.random.Generator) -> list[SeedResults]:
    n = scenario.units * scenario.steps
    unit = np.repeat(np.arange(scenario.units), scenario.steps)
    # base rates symmetric about 0.5 and zero-mean effects: clipping keeps a zero effect at zero
    base_rate = rng.uniform(0.35, 0.65, n)
    effect = scenario.effect + rng.normal(0, scenario.unit_sd, scenario.units)[unit]
    effect = effect + rng.normal(0, scenario.prompt_sd, n)
    seeds = []
    for seed in range(scenario.seeds):
        trained_rate = np.clip(base_rate + effect + rng.normal(0, scenario.seed_sd), 0, 1)
        success = {
            "base": rng.binomial(scenario.samples, base_rate) / scenario.samples,
            "sft_all": rng.binomial(scenario.samples, trained_rate) / scenario.samples,
        }
        prompts = {model: {"ood_rule": values} for model, values in success.items()}
        seeds.append(SeedResults(seed, prompts, units={"ood_rule": unit}))
    return seeds


def verdicts(scenario: Scenario, seed: int) -> tuple[dict[str, float], float]:
    """Share of studies per verdict, and the median minimum detectable effect reported."""
    rng = np.random.default_rng(seed)
    rows = [measure(CLAIM, simulate(scenario, rng), False, rng, SETTINGS) for _ in range(STUDIES)]
    found = [row["verdict"] for row in rows]
    shares = {v: found.count(v) / STUDIES for v in ("holds", "fails", "no effect", "inconclusive")}
    return shares, float(np.median([row["mde"] for row in rows]))


NULL_SCENARIOS = {
    "hands, 3 seeds, prompt s.d. 0.1": Scenario(),
    "hands, 10 seeds, prompt s.d. 0.2": Scenario(seeds=10, unit_sd=0.2),
    "hands, 3 seeds, training noise": Scenario(unit_sd=0.1, seed_sd=0.03),
    "routes, 3 seeds, 40 routes of 6 steps": Scenario(units=40, steps=6, unit_sd=0.1, prompt_sd=0.05),
}


def test_a_zero_effect_is_rarely_decided():
    decided = {}
    for name, scenario in NULL_SCENARIOS.items():
        shares, _ = verdicts(scenario, seed=0)
        decided[name] = shares["holds"] + shares["fails"]
    # each scenario within the simulation's own error, for the four of them at once (Bonferroni: 2.5 s.e.)
    assert all(rate <= 0.05 + 2.5 * SE for rate in decided.values()), decided
    # and all of them together within two standard errors of the pooled studies
    pooled = sum(decided.values()) / len(decided)
    assert pooled <= 0.05 + 2 * SE / math.sqrt(len(decided)), decided


def analytic_se(scenario: Scenario) -> float:
    """The standard error of a study's mean effect from the scenario's own variances: the units' and prompts'
    effects (shared by the seeds), each seed's training shift, and every prompt's binomial samples of both
    models in every seed (the base rates cancel in the difference). E[p(1 - p)] by Monte Carlo over the
    scenario's rates."""
    rng = np.random.default_rng(0)
    size, n = 200_000, scenario.units * scenario.steps
    base = rng.uniform(0.35, 0.65, size)
    spread = math.hypot(scenario.unit_sd, scenario.prompt_sd, scenario.seed_sd)
    trained = np.clip(base + scenario.effect + rng.normal(0, spread, size), 0, 1)
    binomial = (base * (1 - base) + trained * (1 - trained)).mean() / (scenario.samples * n * scenario.seeds)
    shared = scenario.unit_sd**2 / scenario.units + scenario.prompt_sd**2 / n
    return math.sqrt(shared + scenario.seed_sd**2 / scenario.seeds + binomial)


# the minimum detectable effect of a two-sided test at 95% with 80% power, in standard errors
DETECTABLE = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)


@pytest.mark.parametrize(
    "scenario", [Scenario(seed_sd=0.01), Scenario(units=40, steps=6, prompt_sd=0.05, seed_sd=0.01)]
)
def test_three_times_the_detectable_effect_holds(scenario):
    # The claim is that SFT lowers OOD success, so the true effect is negative; its size is fixed by the
    # scenario's variances, not by what the code reports.
    effect = Scenario(**{**scenario.__dict__, "effect": -3 * DETECTABLE * analytic_se(scenario)})
    shares, mde = verdicts(effect, seed=3)
    assert shares["holds"] >= 0.8, (mde, shares)
    # The MDE the table reports is the analytic one, widened a little by the t quantiles of three seeds
    # (measured: 1.03 to 1.13 times): neither inflated nor deflated.
    analytic = DETECTABLE * analytic_se(effect)
    assert 0.9 * analytic <= mde <= 1.35 * analytic, (mde, analytic)


def test_an_effect_well_inside_the_margin_reads_no_effect():
    # a fifth of the margin, measured on enough prompts and samples to tell it from ±margin
    scenario = Scenario(seeds=5, units=500, samples=16, effect=SETTINGS.margin / 5, unit_sd=0.03)
    shares, _ = verdicts(scenario, seed=4)
    assert shares["no effect"] > 0.5, shares
