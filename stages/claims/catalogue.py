"""The claims table: which findings of the two papers hold on a study's experiments.

Pure functions over results already collected (stages/study.py reads them from DVC's experiments). A
`SeedResults` holds one seed: per-prompt success of every model on every eval set (with the independent
unit of each prompt: a hand for GeneralPoints, a route for V-IRL), the training metrics and the scaling
curves (with per-prompt success at every point). Models are named by the arm that trained them: base, grpo
(grpo.viter 1), grpo_viter3, sft_<subset> (sft_all, sft_easy, ...), and sft_all_budget, grpo_budget (the
budget arm: the same training at a multiple of the default steps).

Each claim is an effect with a claimed sign: a difference of success rates against 0, or a ratio against 1
(tested on the log scale). Every row gets one 95% interval from a hierarchical resampling of the two
sources of noise (docs/statistics.md):

- eval units: one bootstrap index vector over the units, shared by every seed and every model in a draw,
  since all seeds are evaluated on the same eval set (it depends on `data_seed`, not `seed`);
- seeds: a random seed effect, whose variance is the spread of the per-seed effects net of the unit-level
  noise already in the draws, drawn from Student's t with seeds - 1 degrees of freedom.

The verdict reads the interval against the null and an equivalence margin (params.yaml claims.margin,
claims.ratio_margin): holds, fails, no effect, inconclusive; "matches or beats" is a non-inferiority test.
The bootstrap p-values behind the verdicts are adjusted with Holm's method across the rows of one table, and
both verdicts are shown. Each row reports its minimum detectable effect and roughly how many seeds would
decide it at the observed spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from stages.params import ParamError

SUBSETS = ("all", "easy", "medium", "hard", "easy_medium")
POWER = 0.8  # the minimum detectable effect is the one found with this probability
CURVE_GRID = 257  # FLOPs points at which the mean gap between two curves is averaged


# The pseudo eval set of the reasoning benchmarks' items (metrics/benchmarks/per_item/<model>.csv), one unit
# per item, read by stages/study.py when the study's experiments ran benchmarks.
BENCHMARKS = "benchmarks"


class Missing(Exception):
    """A claim cannot be measured on these experiments; the message says what to run."""


@dataclass(frozen=True)
class Settings:
    """How rows are decided: params.yaml's `claims` section."""

    margin: float = 0.02  # equivalence margin of a difference of success rates
    ratio_margin: float = 1.1  # equivalence margin of a ratio, as a factor: within [1/1.1, 1.1]
    level: float = 0.95
    draws: int = 2000

    @classmethod
    def from_params(cls, section: dict) -> Settings:
        allowed = {"margin", "ratio_margin", "level", "draws"}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ParamError(f"claims.{unknown[0]} is not a param; use some of: {', '.join(sorted(allowed))}")
        settings = cls(**section)
        if not 0 < settings.margin < 1:
            raise ParamError(f"claims.margin={settings.margin}: use a difference of success in (0, 1)")
        if not settings.ratio_margin > 1:
            raise ParamError(f"claims.ratio_margin={settings.ratio_margin}: use a factor above 1 (e.g. 1.1)")
        if not 0.5 <= settings.level < 1:
            raise ParamError(f"claims.level={settings.level}: use a level in [0.5, 1) (e.g. 0.95)")
        if not (isinstance(settings.draws, int) and settings.draws >= 200):
            raise ParamError(f"claims.draws={settings.draws}: use an integer of at least 200 (e.g. 2000)")
        return settings


@dataclass
class SeedResults:
    seed: int
    prompts: dict[str, dict[str, np.ndarray]]  # model -> eval set -> success per prompt, same order per set
    evals: dict[str, dict] = field(default_factory=dict)  # model -> metrics/eval/<model>.json
    training: dict[str, dict] = field(default_factory=dict)  # model (or "score") -> metrics/<stage>.json
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> [{step, flops, id, ood_rule}]
    # model -> {"flops": (points,), "units": (prompts,), "<set>": (points, prompts)}: per-prompt curves
    curve_prompts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    units: dict[str, np.ndarray] = field(default_factory=dict)  # eval set -> independent unit of each prompt


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: dict[str, str]  # env family (gp_l, virl_l, gp_vl, virl_vl) or "*" -> the papers' figures
    direction: int  # +1: the effect is claimed above `null`; -1: below
    eval_set: str | None = None  # per-prompt claims: the eval set whose units are resampled
    on_prompts: Callable[[dict], object] | None = None  # {series: success} -> effect (arrays broadcast)
    # per-prompt series other than the eval sets' (the curves'): seed -> ({series: per prompt}, units)
    series: Callable[[SeedResults], tuple[dict[str, np.ndarray], np.ndarray]] | None = None
    on_seed: Callable[[SeedResults], float] | None = None  # the other claims: one value per seed
    ratio: bool = False  # a ratio, tested on the log scale against 1
    noninferiority: bool = False  # "matches or beats": holds unless worse by more than the margin
    visual: bool = False  # needs a vision-language env


def diff(a: str, b: str) -> Callable[[dict], object]:
    return lambda success: success[a] - success[b]


def hard_minus_lowest_other(success: dict):
    others = [success[f"sft_{s}"] for s in SUBSETS if s != "hard"]
    return success["sft_hard"] - np.minimum.reduce(others)


def hard_grad_norm_ratio(seed: SeedResults) -> float:
    """SFT-hard's mean gradient norm over the largest of the other subsets'."""
    require([f"sft_{s}" for s in SUBSETS], seed.training)
    norms = {s: training_value(seed, f"sft_{s}", "grad_norm_mean") for s in SUBSETS}
    return norms["hard"] / max(v for s, v in norms.items() if s != "hard")


def require(models: list[str], available) -> None:
    missing = sorted({arm_of(model) for model in models if model not in available})
    if missing:
        raise Missing(f"needs the {', '.join(missing)} arm{'s' if len(missing) > 1 else ''}")


def training_value(seed: SeedResults, model: str, key: str) -> float:
    require([model], seed.training)
    value = seed.training[model].get(key)
    if value is None:
        raise Missing(f"metrics of {model} have no {key}")
    return float(value)


def recognition(seed: SeedResults, model: str) -> float:
    """Share of visual-OOD answers that read the image right (metrics/eval/<model>.json of a VL env)."""
    value = seed.evals.get(model, {}).get("ood_visual", {}).get("recognition")
    if value is None:
        raise Missing(f"metrics/eval of {model} has no ood_visual recognition")
    return float(value)


def curve_weights(flops: np.ndarray, end: float, over_range: bool) -> np.ndarray:
    """Weights over a curve's points that give its linear interpolation at `end` FLOPs, or (over_range) its
    mean over [0, end]: success at those FLOPs is weights @ success per point, prompt by prompt."""
    grid = np.linspace(0.0, end, CURVE_GRID) if over_range else np.array([end])
    # np.interp is linear in the values: interpolating each unit vector gives the weights of its point
    columns = [np.interp(grid, flops, np.eye(len(flops))[j]) for j in range(len(flops))]
    weights = np.stack(columns, axis=1)  # grid x points
    if over_range:  # trapezoid rule over the uniform grid
        rule = np.full(CURVE_GRID, 1.0)
        rule[[0, -1]] = 0.5
        return rule @ weights / rule.sum()
    return weights[0]


def shared_flops(seed: SeedResults, models: tuple[str, str]) -> float:
    require(list(models), seed.curves)
    for model in models:
        if len(seed.curves[model]) < 2:
            raise Missing("needs scaling curves: curves.eval_every > 0")
    return min(seed.curves[model][-1]["flops"] for model in models)


def matched_flops_series(
    better: str, worse: str, over_range: bool, key: str = "ood_rule"
) -> Callable[[SeedResults], tuple[dict[str, np.ndarray], np.ndarray]]:
    """Per-prompt success of two curves at matched FLOPs: at the end of the cheaper run, or averaged over the
    FLOPs range both runs cover; the prompt dimension comes from the curves' per-prompt success."""

    def series(seed: SeedResults) -> tuple[dict[str, np.ndarray], np.ndarray]:
        end = shared_flops(seed, (better, worse))
        if not all(model in seed.curve_prompts for model in (better, worse)):
            raise Missing("needs per-prompt curves (metrics/<stage>_live/curve_per_prompt.csv)")
        curves = {model: seed.curve_prompts[model] for model in (better, worse)}
        if not np.array_equal(curves[better]["units"], curves[worse]["units"]):
            raise Missing(f"curves of {better} and {worse} were drawn on different prompts")
        values = {
            model: curve_weights(curve["flops"], end, over_range) @ curve[key]
            for model, curve in curves.items()
        }
        return values, curves[better]["units"]

    return series


def at_matched_flops(
    seed: SeedResults, better: str, worse: str, over_range: bool = False, key: str = "ood_rule"
) -> float:
    """Mean success of `better` minus `worse` at matched FLOPs, from the curves' mean success per point (for
    curves made before per-prompt curves: no prompt dimension)."""
    end = shared_flops(seed, (better, worse))

    def success(model: str) -> float:
        points = seed.curves[model]
        weights = curve_weights(np.array([p["flops"] for p in points], dtype=float), end, over_range)
        return float(weights @ np.array([p[key] for p in points]))

    return success(better) - success(worse)


def dcsft_speedup(seed: SeedResults) -> float:
    """GRPO's wall time over difficulty-curated SFT's: scoring the prompts plus SFT on easy + medium. Each
    stage's whole time (docs/compute.md), without the scaling-curve evaluations, which measure and do not
    train: score's wall_s, the training stages' cost_s."""
    curated = training_value(seed, "score", "wall_s") + training_value(seed, "sft_easy_medium", "cost_s")
    return training_value(seed, "grpo", "cost_s") / curated


OOD_RULE_SFT = {
    "gp_l": "GP-L 11.5 → 3.4",
    "virl_l": "V-IRL-L 80.8 → 1.3 per step",
    "gp_vl": "GP-VL 11.2 → 5.6",
    "virl_vl": "V-IRL-VL 35.7 → 2.5",
}
OOD_RULE_RL = {
    "gp_l": "GP-L 11.5 → 15.0",
    "virl_l": "V-IRL-L 80.8 → 91.8 per step",
    "gp_vl": "GP-VL 11.2 → 14.2",
    "virl_vl": "V-IRL-VL 35.7 → 45.0",
}
MATCHED = "SFTvsRL: OOD success along training, against GFLOPs"

CLAIMS = (
    Claim(
        key="sft_raises_id",
        text="SFT raises ID success over the starting model",
        paper={"*": "both papers"},
        direction=+1,
        eval_set="id",
        on_prompts=diff("sft_all", "base"),
    ),
    Claim(
        key="rl_raises_id",
        text="RL raises ID success over the starting model",
        paper={"*": "both papers"},
        direction=+1,
        eval_set="id",
        on_prompts=diff("grpo", "base"),
    ),
    Claim(
        key="sft_lowers_ood",
        text="SFT lowers OOD-rule success below the starting model",
        paper=OOD_RULE_SFT,
        direction=-1,
        eval_set="ood_rule",
        on_prompts=diff("sft_all", "base"),
    ),
    Claim(
        key="rl_raises_ood",
        text="RL raises OOD-rule success above the starting model",
        paper=OOD_RULE_RL,
        direction=+1,
        eval_set="ood_rule",
        on_prompts=diff("grpo", "base"),
    ),
    Claim(
        key="rl_beats_sft_at_matched_compute",
        text="RL beats SFT on OOD-rule success at matched post-training FLOPs (mean gap over the FLOPs range "
        "both scaling curves cover)",
        paper={"*": MATCHED},
        direction=+1,
        on_prompts=diff("grpo", "sft_all"),
        series=matched_flops_series("grpo", "sft_all", over_range=True),
        on_seed=lambda seed: at_matched_flops(seed, "grpo", "sft_all", over_range=True),
    ),
    Claim(
        key="rl_beats_sft_at_matched_compute_end",
        text="RL beats SFT on OOD-rule success at matched post-training FLOPs (at the end of the cheaper "
        "run)",
        paper={"*": MATCHED},
        direction=+1,
        on_prompts=diff("grpo", "sft_all"),
        series=matched_flops_series("grpo", "sft_all", over_range=False),
        on_seed=lambda seed: at_matched_flops(seed, "grpo", "sft_all"),
    ),
    Claim(
        key="sft_ood_loss_grows_with_compute",
        text="SFT's OOD-rule loss grows with compute (SFT at the budget multiple minus SFT at the default "
        "steps)",
        paper={"*": "SFTvsRL: OOD success falls along SFT training"},
        direction=-1,
        eval_set="ood_rule",
        on_prompts=diff("sft_all_budget", "sft_all"),
    ),
    Claim(
        key="rl_ood_gain_grows_with_compute",
        text="RL's OOD-rule gain grows with compute (GRPO at the budget multiple minus GRPO at the default "
        "steps)",
        paper={"*": "SFTvsRL: OOD success rises along RL training"},
        direction=+1,
        eval_set="ood_rule",
        on_prompts=diff("grpo_budget", "grpo"),
    ),
    Claim(
        key="rl_raises_visual_ood",
        text="RL raises visual-OOD success",
        paper={"*": "GP-VL 23.6 → 41.2"},
        direction=+1,
        eval_set="ood_visual",
        on_prompts=diff("grpo", "base"),
        visual=True,
    ),
    Claim(
        key="sft_lowers_visual_ood",
        text="SFT lowers visual-OOD success",
        paper={"*": "GP-VL 23.6 → 13.7"},
        direction=-1,
        eval_set="ood_visual",
        on_prompts=diff("sft_all", "base"),
        visual=True,
    ),
    Claim(
        key="rl_raises_recognition",
        text="RL raises visual recognition",
        paper={"*": "SFTvsRL: recognition rises with RL"},
        direction=+1,
        on_seed=lambda seed: recognition(seed, "grpo") - recognition(seed, "base"),
        visual=True,
    ),
    Claim(
        key="viter_helps_rl",
        text="More verification iterations (grpo.viter 3 vs 1) raise RL's OOD-rule success at matched FLOPs "
        "(mean gap along the scaling curves, each run on its full schedule)",
        paper={"*": "SFTvsRL: more iterations, better OOD"},
        direction=+1,
        on_prompts=diff("grpo_viter3", "grpo"),
        series=matched_flops_series("grpo_viter3", "grpo", over_range=True),
        on_seed=lambda seed: at_matched_flops(seed, "grpo_viter3", "grpo", over_range=True),
    ),
    Claim(
        key="hard_largest_grad_norm",
        text="SFT on the hard bucket alone has the largest gradient norms of the subsets (ratio to the "
        "largest other)",
        paper={"*": "DC-SFT"},
        direction=+1,
        on_seed=hard_grad_norm_ratio,
        ratio=True,
    ),
    Claim(
        key="hard_lowest_ood",
        text="SFT on the hard bucket alone gives the lowest OOD-rule success of the subsets",
        paper={"*": "DC-SFT"},
        direction=-1,
        eval_set="ood_rule",
        on_prompts=hard_minus_lowest_other,
    ),
    Claim(
        key="medium_beats_all",
        text="SFT on medium beats SFT on all prompts on OOD-rule success",
        paper={"*": "DC-SFT OOD average: 60.41 vs 57.62"},
        direction=+1,
        eval_set="ood_rule",
        on_prompts=diff("sft_medium", "sft_all"),
    ),
    Claim(
        key="easy_medium_beats_all",
        text="SFT on easy + medium beats SFT on all prompts on OOD-rule success",
        paper={"*": "DC-SFT OOD average: 62.10 vs 57.62"},
        direction=+1,
        eval_set="ood_rule",
        on_prompts=diff("sft_easy_medium", "sft_all"),
    ),
    Claim(
        key="easy_medium_vs_rl",
        text="SFT on easy + medium matches or beats GRPO on OOD-rule success (non-inferiority)",
        paper={"*": "DC-SFT OOD average: 62.10 vs 59.48"},
        direction=+1,
        eval_set="ood_rule",
        on_prompts=diff("sft_easy_medium", "grpo"),
        noninferiority=True,
    ),
    Claim(
        key="medium_keeps_benchmarks",
        text="SFT on medium keeps or raises reasoning-benchmark accuracy over SFT on all prompts "
        "(non-inferiority, over the benchmark items)",
        paper={"*": "DC-SFT reasoning average: SFT-M 55.32 vs SFT 53.88"},
        direction=+1,
        eval_set=BENCHMARKS,
        on_prompts=diff("sft_medium", "sft_all"),
        noninferiority=True,
    ),
    Claim(
        key="easy_medium_vs_rl_benchmarks",
        text="SFT on easy + medium matches or beats GRPO on reasoning-benchmark accuracy (non-inferiority, "
        "over the benchmark items)",
        paper={"*": "DC-SFT reasoning average: GRPO 55.44, SFT-M 55.32"},
        direction=+1,
        eval_set=BENCHMARKS,
        on_prompts=diff("sft_easy_medium", "grpo"),
        noninferiority=True,
    ),
    Claim(
        key="dcsft_cheaper_than_rl",
        text="Difficulty-curated SFT (score + SFT on easy + medium) takes less wall time than GRPO (ratio)",
        paper={"*": "DC-SFT: 4.9x less"},
        direction=+1,
        on_seed=dcsft_speedup,
        ratio=True,
    ),
)


def arm_of(model: str) -> str:
    """The study arm whose experiments hold `model` (base and grpo are in every sft arm)."""
    if model in ("base", "grpo", "score"):
        return "sft_all"
    return "budget" if model.endswith("_budget") else model


# --- the interval -------------------------------------------------------------------------------------


def seed_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student's t over the per-seed values: a diagnostic beside the hierarchical interval (it leaves out
    that every seed saw the same prompts). None without a spread to estimate it from."""
    if len(values) < 2 or np.ptp(values) == 0:
        return None
    mean, sem = np.mean(values), stats.sem(values)
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def unit_counts(units: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Codes of each prompt's unit, and how often each unit is drawn in each bootstrap draw (draws x units):
    one resample of the units, used for every seed and every model of the draw."""
    _, codes = np.unique(units, return_inverse=True)
    n_units = codes.max() + 1
    picks = rng.integers(0, n_units, size=(draws, n_units)) + n_units * np.arange(draws)[:, None]
    return codes, np.bincount(picks.ravel(), minlength=draws * n_units).reshape(draws, n_units)


@dataclass(frozen=True)
class Resampled:
    effect: float  # the mean over seeds of the per-seed effects
    per_seed: list[float]
    draws: np.ndarray  # the effect in every draw: unit resample plus the random seed effect
    unit_variance: float  # of the seed-mean effect under unit resampling
    interaction_variance: float  # of one seed's effect from unit-level noise not shared by the seeds
    seed_variance: float  # of one seed's effect from training (net of unit-level noise)


def resample(
    per_seed: list[dict[str, np.ndarray]] | list[float],
    effect: Callable[[dict], object] | None,
    units: np.ndarray | None,
    transform: Callable[[np.ndarray], np.ndarray],
    draws: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> Resampled:
    """The hierarchical resampling of one row (docs/statistics.md).

    `per_seed` holds, for every seed, either {series: success per prompt} (same prompts, in the same order,
    for every seed and series; `units` names each prompt's unit) or one value (a per-run metric, which has
    no prompt dimension). A unit's prompts enter a draw together, and a mean over prompts is the ratio of
    the drawn units' totals to their sizes, so routes of different lengths weigh by their steps.
    """
    n_seeds = len(per_seed)
    if isinstance(per_seed[0], dict):
        codes, counts = unit_counts(units, draws, rng)
        sizes = counts @ np.bincount(codes).astype(float)
        point, drawn = [], []
        for success in per_seed:
            point.append(transform(np.asarray(effect({k: v.mean() for k, v in success.items()}), float)))
            totals = {k: counts @ np.bincount(codes, weights=v) / sizes for k, v in success.items()}
            drawn.append(transform(np.asarray(effect(totals), float)))
        point, drawn = np.array(point), np.stack(drawn)  # seeds, seeds x draws
    else:
        point = transform(np.asarray(per_seed, float))
        drawn = np.repeat(point[:, None], draws, axis=1)
    seed_mean = drawn.mean(axis=0)
    unit_variance = float(seed_mean.var())
    if n_seeds < 2:
        return Resampled(float(point.mean()), point.tolist(), seed_mean, unit_variance, 0.0, math.nan)
    # Unit-level noise that differs between seeds (each seed's own eval samples) also spreads the per-seed
    # effects; measured as the draws' spread of each seed around the seed mean (the shared part cancels),
    # it is taken out of the seeds' spread so that it is not counted twice.
    interaction = float((drawn - seed_mean).var(axis=1).mean() * n_seeds / (n_seeds - 1))
    spread = float(point.var(ddof=1))
    seed_variance = max(0.0, spread - interaction)
    seed_effect = math.sqrt(seed_variance / n_seeds) * rng.standard_normal(draws)
    centered = seed_mean - seed_mean.mean() + seed_effect
    # The variance is estimated from n_seeds seeds: Welch-Satterthwaite degrees of freedom of the sum (the
    # seeds' spread has n_seeds - 1, the unit part n_units - 1), and the draws stretched about the estimate
    # so that their quantiles at the level are Student's t's, not the normal's.
    n_units = len(np.unique(units)) if units is not None else 1
    total = unit_variance + seed_variance / n_seeds
    noise = (spread / n_seeds) ** 2 / (n_seeds - 1) + (unit_variance**2 / (n_units - 1) if n_units > 1 else 0)
    quantile = 1 - (1 - level) / 2
    stretch = stats.t.ppf(quantile, total**2 / noise) / stats.norm.ppf(quantile) if noise > 0 else 1.0
    draws_ = point.mean() + stretch * centered
    return Resampled(float(point.mean()), point.tolist(), draws_, unit_variance, interaction, seed_variance)


# --- verdicts -----------------------------------------------------------------------------------------


def tail_p(draws: np.ndarray, below: float, above: float | None = None) -> float:
    """Share of draws at or below `below` (or, given `above`, at or above it), as a bootstrap p-value."""
    hits = np.count_nonzero(draws <= below) if above is None else np.count_nonzero(draws >= above)
    return (hits + 1) / (len(draws) + 1)


def pvalues(oriented: np.ndarray, margin: float, noninferiority: bool, level: float) -> dict:
    """Two-sided p-values, on draws oriented so that the claimed direction is positive and the null is 0:
    `direction` tests the effect against the null (the non-inferiority bound -margin for "matches or
    beats"), `equivalence` the interval inside ±margin (two one-sided tests at (1 - level) / 2 each, so it
    agrees with the printed interval). A p-value below 1 - level decides."""
    shift = margin if noninferiority else 0.0
    low, high = tail_p(oriented + shift, 0.0), tail_p(oriented + shift, 0.0, above=0.0)
    result = {"direction": min(1.0, 2 * min(low, high)), "side": 1 if low < high else -1}
    if not noninferiority:
        outside = max(tail_p(oriented, -margin), tail_p(oriented, 0.0, above=margin))
        result["equivalence"] = min(1.0, 2 * outside)
    return result


def decide(p_direction: float, side: int, p_equivalence: float | None, level: float) -> str:
    """An interval inside ±margin reads "no effect" even where it excludes 0: the effect is then known to be
    smaller than the table's idea of a meaningful one (its sign is in the row's note)."""
    alpha = 1 - level
    if p_equivalence is not None and p_equivalence < alpha:
        return "no effect"
    if p_direction < alpha:
        return "holds" if side > 0 else "fails"
    return "inconclusive"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error stays at the level across the list."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def detectable(resampled: Resampled, level: float) -> float:
    """The minimum detectable effect: found with probability POWER by a two-sided test at `level`."""
    return float((stats.norm.ppf(1 - (1 - level) / 2) + stats.norm.ppf(POWER)) * resampled.draws.std())


def seeds_to_decide(resampled: Resampled, distance: float, level: float) -> int | None:
    """Roughly how many seeds would decide a row whose estimate lies `distance` from its nearest decision
    bound, at the observed spread: the unit part stays (same prompts), the seed part shrinks as 1/seeds.
    None when more seeds alone cannot decide it (the prompts' noise is too large, or distance is 0)."""
    n_seeds = len(resampled.per_seed)
    if n_seeds < 2 or distance <= 0:
        return None
    target = (distance / (stats.norm.ppf(1 - (1 - level) / 2) + stats.norm.ppf(POWER))) ** 2
    shared = max(0.0, resampled.unit_variance - resampled.interaction_variance / n_seeds)
    per_seed = resampled.seed_variance + resampled.interaction_variance
    if target <= shared:
        return None
    return max(2, math.ceil(per_seed / (target - shared)))


# --- rows ---------------------------------------------------------------------------------------------


def prompt_success(seed: SeedResults, claim: Claim) -> tuple[dict[str, np.ndarray], np.ndarray]:
    success = {model: sets[claim.eval_set] for model, sets in seed.prompts.items() if claim.eval_set in sets}
    if not success:
        if claim.eval_set == BENCHMARKS:
            raise Missing("needs benchmark results: set benchmark.names (docs/benchmarks.md)")
        raise Missing(f"no model was evaluated on {claim.eval_set}")
    n = len(next(iter(success.values())))
    units = seed.units.get(claim.eval_set, np.arange(n))
    return success, units


def measure_inputs(claim: Claim, seeds: list[SeedResults]):
    """Per seed, the row's per-prompt series (and their units) or its per-run value; the note says when a
    curve claim falls back on the curves' mean success."""
    if claim.eval_set or claim.series:
        read = claim.series or (lambda seed: prompt_success(seed, claim))
        try:
            inputs = [read(seed) for seed in seeds]
        except Missing as missing:
            if claim.on_seed is None:
                raise
            return [claim.on_seed(seed) for seed in seeds], None, f"{missing}: interval over seeds only"
        units = inputs[0][1]
        if any(not np.array_equal(units, other) for _, other in inputs[1:]):
            raise Missing("seeds were evaluated on different prompts")
        per_seed = []
        for success, _ in inputs:
            recorder = MissingRecorder({model: float(v.mean()) for model, v in success.items()})
            claim.on_prompts(recorder)
            require(recorder.missing, success)
            per_seed.append(success)
        return per_seed, units, ""
    return [claim.on_seed(seed) for seed in seeds], None, ""


def measure(
    claim: Claim, seeds: list[SeedResults], visual: bool, rng: np.random.Generator, settings: Settings
) -> dict:
    """One row of the table: the effect per seed and its mean, the hierarchical interval, the raw p-values
    and verdict (Holm's adjustment comes in claims_table), the seed-only t interval as a diagnostic, the
    minimum detectable effect and the seeds that would decide the row."""
    row = {"key": claim.key, "claim": claim.text, "direction": claim.direction, "ratio": claim.ratio}
    row |= {"null": 1.0 if claim.ratio else 0.0, "noninferiority": claim.noninferiority}
    if claim.visual and not visual:
        return row | {"verdict": "not run", "note": "needs a vision-language env (gp_vl, virl_vl)"}
    try:
        per_seed, units, note = measure_inputs(claim, seeds)
    except Missing as missing:
        return row | {"verdict": "not run", "note": str(missing)}
    if claim.ratio and not all(v > 0 for v in per_seed):
        return row | {"verdict": "not run", "note": "a ratio needs positive values in every seed"}
    transform = np.log if claim.ratio else (lambda x: x)
    back = np.exp if claim.ratio else (lambda x: x)
    resampled = resample(per_seed, claim.on_prompts, units, transform, settings.draws, rng, settings.level)
    margin = math.log(settings.ratio_margin) if claim.ratio else settings.margin
    alpha = 1 - settings.level
    low, high = np.quantile(resampled.draws, [alpha / 2, 1 - alpha / 2])
    row |= {
        "effect": float(back(resampled.effect)),
        "per_seed": [float(back(v)) for v in resampled.per_seed],
        "margin": margin,
        "interval": (float(back(low)), float(back(high))),
        "interval_seeds": seed_interval(resampled.per_seed, settings.level),
        "se": float(resampled.draws.std()),
        "mde": detectable(resampled, settings.level),
        "unit_variance": resampled.unit_variance,
        "seed_variance": None if math.isnan(resampled.seed_variance) else resampled.seed_variance,
        "prompt_level": units is not None,
    }
    if claim.ratio:
        row["interval_seeds"] = row["interval_seeds"] and tuple(
            float(np.exp(v)) for v in row["interval_seeds"]
        )
    notes = [note] if note else []
    # float noise aside, every seed and every draw gave the same value
    flat = np.ptp(resampled.draws) <= 1e-12 * max(1.0, abs(resampled.effect))
    if len(seeds) < 2:
        notes.append("one seed: training noise is not measured, no verdict (run 2 or more seeds)")
    elif flat:
        notes.append("no spread over seeds or prompts: no interval to decide on")
    if notes:
        row["note"] = "; ".join(notes)
    if len(seeds) < 2 or flat:
        return row | {"verdict": "inconclusive", "p": None}
    oriented = claim.direction * resampled.draws
    p = pvalues(oriented, margin, claim.noninferiority, settings.level)
    row["p"] = p
    row["verdict"] = decide(p["direction"], p["side"], p.get("equivalence"), settings.level)
    if row["verdict"] == "no effect" and p["direction"] < alpha:
        sign = "claimed" if p["side"] > 0 else "opposite"
        row["note"] = "; ".join([*notes, f"excludes 0 on the {sign} side, but lies inside the margin"])
    estimate = claim.direction * resampled.effect + (margin if claim.noninferiority else 0.0)
    distances = [abs(estimate)] + ([margin - abs(estimate)] if not claim.noninferiority else [])
    # claims_table sets seeds_to_decide from these once it knows how many rows share the correction
    row["_to_decide"] = (resampled, distances)
    return row


class MissingRecorder(dict):
    """A {model: success} mapping that notes the models it lacks (and reads them as 0), to name them all."""

    def __init__(self, success: dict):
        super().__init__(success)
        self.missing: list[str] = []

    def __missing__(self, model: str) -> float:
        self.missing.append(model)
        return 0.0


def claims_table(
    seeds: list[SeedResults], env: str, visual: bool, settings: Settings | None = None
) -> list[dict]:
    """Every claim measured on `seeds`, with Holm's adjustment across the rows that were decided; the
    bootstrap's draws are seeded, so the table is reproducible."""
    settings = settings or Settings()
    rng = np.random.default_rng(0)
    rows = []
    for claim in CLAIMS:
        row = measure(claim, seeds, visual, rng, settings)
        rows.append(row | {"paper": claim.paper.get(env, claim.paper.get("*", ""))})
    tested = [row for row in rows if row.get("p")]
    direction = holm([row["p"]["direction"] for row in tested])
    equivalence = [row for row in tested if "equivalence" in row["p"]]
    adjusted_equivalence = {
        row["key"]: p
        for row, p in zip(equivalence, holm([r["p"]["equivalence"] for r in equivalence]), strict=True)
    }
    for row, p_direction in zip(tested, direction, strict=True):
        row["p_holm"] = {"direction": p_direction, "equivalence": adjusted_equivalence.get(row["key"])}
        row["verdict_holm"] = decide(
            p_direction, row["p"]["side"], adjusted_equivalence.get(row["key"]), settings.level
        )
    # at the Bonferroni level alpha / rows, which Holm's first step uses and its later steps relax
    level = 1 - (1 - settings.level) / max(1, len(tested))
    for row in rows:
        row.setdefault("verdict_holm", row["verdict"])
        resampled, distances = row.pop("_to_decide", (None, []))
        if resampled is not None:
            needed = [n for n in (seeds_to_decide(resampled, d, level) for d in distances) if n is not None]
            row["seeds_to_decide"] = min(needed) if needed else None
    return rows


# --- the table ----------------------------------------------------------------------------------------


def markdown(rows: list[dict], header: str, settings: Settings | None = None) -> str:
    settings = settings or Settings()
    percent = f"{settings.level:.0%}"
    lines = [
        header,
        "",
        f"Verdicts at {percent}: **no effect** (the interval lies inside the equivalence margin "
        f"±{settings.margin:g} success, or within a factor {settings.ratio_margin:g} for ratios), else "
        "**holds** (it lies on the claimed side of the null), **fails** (on the other side), "
        '**inconclusive** (it covers the null and reaches past the margin). "Matches '
        f'or beats" holds unless the effect is below -{settings.margin:g} (non-inferiority). The interval is '
        f"a hierarchical bootstrap ({settings.draws} draws) over seeds and eval units (hands; routes on "
        "V-IRL) shared by every seed and model; the Holm verdict adjusts the p-values across this table's "
        "rows. MDE: the effect found with 80% power at these seeds and prompts; seeds: roughly how many "
        "would decide an undecided row after Holm at the observed spread (docs/statistics.md).",
        "",
        f"| finding | papers | here (mean over seeds) | {percent} interval | {percent} over seeds only "
        "(diagnostic) | MDE | seeds to decide | p (raw / Holm) | verdict | Holm verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "effect" not in row:
            blank = " - |" * 6
            lines.append(f"| {row['claim']} | {row['paper']} |{blank} {row['verdict']}: {row['note']} | - |")
            continue
        ratio = row["ratio"]
        p, p_holm = row.get("p"), row.get("p_holm")
        cells = [
            fmt(row["effect"], ratio),
            fmt_interval(row["interval"], ratio),
            fmt_interval(row["interval_seeds"], ratio),
            f"×{math.exp(row['mde']):.2f}" if ratio else f"{row['mde']:.3f}",
            seeds_cell(row),
            "-" if p is None else f"{p['direction']:.3f} / {p_holm['direction']:.3f}",
        ]
        note = f" ({row['note']})" if row.get("note") else ""
        cells += [f"**{row['verdict']}**{note}", f"**{row['verdict_holm']}**"]
        lines.append(f"| {row['claim']} | {row['paper']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def seeds_cell(row: dict) -> str:
    if row.get("p") is None:
        return "-"
    if row["verdict_holm"] not in ("inconclusive", "not run"):
        return "decided"
    seeds = row.get("seeds_to_decide")
    return str(seeds) if seeds else "more prompts"


def fmt(value: float, ratio: bool) -> str:
    return f"{value:.2f}x" if ratio else f"{value:+.3f}"


def fmt_interval(interval: tuple[float, float] | None, ratio: bool) -> str:
    return "-" if interval is None else f"[{fmt(interval[0], ratio)}, {fmt(interval[1], ratio)}]"
