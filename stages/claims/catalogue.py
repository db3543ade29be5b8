"""The findings a study tests: each a claim about an effect, with the papers' figures beside it.

Pure functions over results already collected (stages/experiments/results.py reads them from DVC's
experiments). A `SeedResults` holds one seed: per-prompt success of every model on every eval set (with the
independent unit of each prompt: a hand for GeneralPoints, a route for V-IRL), the training metrics and the
scaling curves (with per-prompt success at every point). Models are named by the arm that trained them: base,
grpo (grpo.viter 1), grpo_viter3, sft_<subset> (sft_all, sft_easy, ...), and sft_all_budget, grpo_budget (the
budget arm: the same training at a multiple of the default steps).

Each claim is an effect with a claimed sign: a difference of success rates against 0, or a ratio against 1
(tested on the log scale). stages/claims/statistics.py gives each row its interval and p-values,
stages/claims/table.py its verdicts and the table (docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SUBSETS = ("all", "easy", "medium", "hard", "easy_medium")
CURVE_GRID = 257  # FLOPs points at which the mean gap between two curves is averaged


# The pseudo eval set of the reasoning benchmarks' items (metrics/benchmarks/per_item/<model>.csv), one unit
# per item, read by stages/study.py when the study's experiments ran benchmarks.
BENCHMARKS = "benchmarks"


class Missing(Exception):
    """A claim cannot be measured on these experiments; the message says what to run."""


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
