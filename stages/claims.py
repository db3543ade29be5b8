"""The claims table: which findings of the two papers hold on a study's experiments.

Pure functions over results already collected (stages/study.py reads them from DVC's experiments). A
`SeedResults` holds one seed: per-prompt success of every model on every eval set, the training metrics and
the scaling curves. Models are named by the arm that trained them: base, grpo (grpo.viter 1), grpo_viter3,
and sft_<subset> (sft_all, sft_easy, sft_medium, sft_hard, sft_easy_medium).

Each claim is an effect with a claimed sign (a difference of success rates against 0, a cost ratio against 1).
The effect is measured per seed and averaged over seeds, with two 95% intervals: over seeds (Student's t) and
a bootstrap over eval prompts (prompts resampled with replacement within each seed, the same draw for every
model, so the models stay paired). The verdict is decided by both: `holds` when every interval lies on the
claimed side, `fails` when every interval lies on the other side, `inconclusive` when one covers the null.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

SUBSETS = ("all", "easy", "medium", "hard", "easy_medium")
BOOTSTRAP_DRAWS = 2000
LEVEL = 0.95


class Missing(Exception):
    """A claim cannot be measured on these experiments; the message says what to run."""


@dataclass
class SeedResults:
    seed: int
    prompts: dict[str, dict[str, np.ndarray]]  # model -> eval set -> success per prompt, same order per set
    evals: dict[str, dict] = field(default_factory=dict)  # model -> metrics/eval/<model>.json
    training: dict[str, dict] = field(default_factory=dict)  # model (or "score") -> metrics/<stage>.json
    curves: dict[str, list[dict]] = field(default_factory=dict)  # model -> [{step, flops, id, ood_rule}]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: dict[str, str]  # env family (gp_l, virl_l, gp_vl, virl_vl) or "*" -> the papers' figures
    direction: int  # +1: the effect is claimed above `null`; -1: below
    eval_set: str | None = None  # per-prompt claims: the eval set whose prompts are resampled
    on_prompts: Callable[[dict], object] | None = None  # {model: success} -> effect (arrays broadcast)
    on_seed: Callable[[SeedResults], float] | None = None  # the other claims: one value per seed
    null: float = 0.0
    visual: bool = False  # needs a vision-language env


def diff(a: str, b: str) -> Callable[[dict], object]:
    return lambda success: success[a] - success[b]


def hard_minus_lowest_other(success: dict):
    others = [success[f"sft_{s}"] for s in SUBSETS if s != "hard"]
    return success["sft_hard"] - np.minimum.reduce(others)


def hard_grad_norm_margin(seed: SeedResults) -> float:
    require([f"sft_{s}" for s in SUBSETS], seed.training)
    norms = {s: training_value(seed, f"sft_{s}", "grad_norm_mean") for s in SUBSETS}
    return norms["hard"] - max(v for s, v in norms.items() if s != "hard")


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


def at_matched_flops(seed: SeedResults, better: str, worse: str, key: str = "ood_rule") -> float:
    """Success of `better` minus `worse` at the largest FLOPs both curves reach (linear interpolation)."""
    require([better, worse], seed.curves)
    for model in (better, worse):
        if len(seed.curves[model]) < 2:
            raise Missing("needs scaling curves: curves.eval_every > 0")
    flops = min(seed.curves[better][-1]["flops"], seed.curves[worse][-1]["flops"])

    def success(model: str) -> float:
        points = seed.curves[model]
        return float(np.interp(flops, [p["flops"] for p in points], [p[key] for p in points]))

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
        text="RL beats SFT on OOD-rule success at matched post-training FLOPs (scaling curves)",
        paper={"*": "SFTvsRL: OOD success along training, against GFLOPs"},
        direction=+1,
        on_seed=lambda seed: at_matched_flops(seed, "grpo", "sft_all"),
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
        text="More verification iterations (grpo.viter 3 vs 1) raise RL's OOD-rule success at equal FLOPs",
        paper={"*": "SFTvsRL: more iterations, better OOD"},
        direction=+1,
        on_seed=lambda seed: at_matched_flops(seed, "grpo_viter3", "grpo"),
    ),
    Claim(
        key="hard_largest_grad_norm",
        text="SFT on the hard bucket alone has the largest gradient norms of the subsets",
        paper={"*": "DC-SFT"},
        direction=+1,
        on_seed=hard_grad_norm_margin,
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
        text="SFT on easy + medium matches or beats GRPO on OOD-rule success",
        paper={"*": "DC-SFT OOD average: 62.10 vs 59.48"},
        direction=+1,
        eval_set="ood_rule",
        on_prompts=diff("sft_easy_medium", "grpo"),
    ),
    Claim(
        key="dcsft_cheaper_than_rl",
        text="Difficulty-curated SFT (score + SFT on easy + medium) takes less wall time than GRPO (ratio)",
        paper={"*": "DC-SFT: 4.9x less"},
        direction=+1,
        on_seed=dcsft_speedup,
        null=1.0,
    ),
)


def arm_of(model: str) -> str:
    """The study arm whose experiments hold `model` (base and grpo are in every sft arm)."""
    return "sft_all" if model in ("base", "grpo", "score") else model


def seed_interval(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    mean, sem = np.mean(values), stats.sem(values)
    if sem == 0:
        return float(mean), float(mean)
    low, high = stats.t.interval(LEVEL, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def prompt_success(seed: SeedResults, claim: Claim) -> dict[str, np.ndarray]:
    success = {}
    for model, sets in seed.prompts.items():
        if claim.eval_set in sets:
            success[model] = sets[claim.eval_set]
    return success


def bootstrap_interval(
    seeds: list[SeedResults], claim: Claim, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the mean effect over seeds, resampling each seed's eval prompts."""
    draws = np.zeros(BOOTSTRAP_DRAWS)
    for seed in seeds:
        success = prompt_success(seed, claim)
        n = len(next(iter(success.values())))
        index = rng.integers(0, n, size=(BOOTSTRAP_DRAWS, n))
        draws += claim.on_prompts({model: values[index].mean(axis=1) for model, values in success.items()})
    draws /= len(seeds)
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def verdict(claim: Claim, intervals: list[tuple[float, float]]) -> str:
    def side(
        interval: tuple[float, float],
    ) -> int:  # +1: on the claimed side of the null, -1: the other, 0: covers it
        low, high = sorted((value - claim.null) * claim.direction for value in interval)
        return 1 if low > 0 else -1 if high < 0 else 0

    sides = {side(interval) for interval in intervals}
    return "holds" if sides == {1} else "fails" if sides == {-1} else "inconclusive"


def measure(claim: Claim, seeds: list[SeedResults], visual: bool, rng: np.random.Generator) -> dict:
    """One row of the table: the effect per seed, its mean, both intervals and the verdict."""
    row = {"key": claim.key, "claim": claim.text, "direction": claim.direction, "null": claim.null}
    if claim.visual and not visual:
        return row | {"verdict": "not run", "note": "needs a vision-language env (gp_vl, virl_vl)"}
    try:
        if claim.on_prompts:
            values = []
            for seed in seeds:
                success = prompt_success(seed, claim)
                means = {model: float(v.mean()) for model, v in success.items()}
                recorder = MissingRecorder(means)
                value = claim.on_prompts(recorder)
                require(recorder.missing, means)
                values.append(float(value))
        else:
            values = [claim.on_seed(seed) for seed in seeds]
    except Missing as missing:
        return row | {"verdict": "not run", "note": str(missing)}
    intervals = {"seeds": seed_interval(values)}
    if claim.on_prompts:
        intervals["prompts"] = bootstrap_interval(seeds, claim, rng)
    decided = [interval for interval in intervals.values() if interval is not None]
    row |= {
        "effect": float(np.mean(values)),
        "per_seed": values,
        "interval_seeds": intervals["seeds"],
        "interval_prompts": intervals.get("prompts"),
        "verdict": verdict(claim, decided),
    }
    if intervals["seeds"] is None:
        row["note"] = "one seed: no interval over seeds"
    return row


class MissingRecorder(dict):
    """A {model: success} mapping that notes the models it lacks (and reads them as 0), to name them all."""

    def __init__(self, success: dict):
        super().__init__(success)
        self.missing: list[str] = []

    def __missing__(self, model: str) -> float:
        self.missing.append(model)
        return 0.0


def claims_table(seeds: list[SeedResults], env: str, visual: bool) -> list[dict]:
    """Every claim measured on `seeds`; the bootstrap's draws are seeded, so the table is reproducible."""
    rng = np.random.default_rng(0)
    rows = []
    for claim in CLAIMS:
        row = measure(claim, seeds, visual, rng)
        rows.append(row | {"paper": claim.paper.get(env, claim.paper.get("*", ""))})
    return rows


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| finding | papers | here (mean over seeds) | 95% over seeds | 95% over prompts | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "effect" not in row:
            lines.append(f"| {row['claim']} | {row['paper']} | - | - | - | {row['verdict']}: {row['note']} |")
            continue
        ratio = row["null"] != 0
        cells = [
            fmt(row["effect"], ratio),
            fmt_interval(row["interval_seeds"], ratio),
            fmt_interval(row["interval_prompts"], ratio),
        ]
        note = f" ({row['note']})" if row.get("note") else ""
        verdict = f"**{row['verdict']}**{note}"
        lines.append(f"| {row['claim']} | {row['paper']} | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines) + "\n"


def fmt(value: float, ratio: bool) -> str:
    return f"{value:.2f}x" if ratio else f"{value:+.3f}"


def fmt_interval(interval: tuple[float, float] | None, ratio: bool) -> str:
    return "-" if interval is None else f"[{fmt(interval[0], ratio)}, {fmt(interval[1], ratio)}]"
