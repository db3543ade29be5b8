"""The claims table: every claim of the catalogue measured on a study's seeds, decided, and written out.

`claims_table` measures each row (stages/claims/statistics.py), adjusts the rows' p-values with Holm's method
and gives both verdicts; `markdown` writes the table study/<name>/claims.md shows. `Settings` is params.yaml's
`claims` section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stages.claims.catalogue import BENCHMARKS, CLAIMS, Claim, Missing, SeedResults, require
from stages.claims.statistics import (
    decide,
    detectable,
    holm,
    pvalues,
    resample,
    seed_interval,
    seeds_to_decide,
)
from stages.core.params import ParamError, get, integer, number


@dataclass(frozen=True)
class Settings:
    """How rows are decided: params.yaml's `claims` section."""

    margin: float = 0.02  # equivalence margin of a difference of success rates
    ratio_margin: float = 1.1  # equivalence margin of a ratio, as a factor: within [1/1.1, 1.1]
    level: float = 0.95
    draws: int = 2000

    @classmethod
    def from_params(cls, params) -> Settings:
        """params.yaml's `claims` section, read and checked as every section is (stages/core/params.py)."""
        allowed = sorted(cls.__dataclass_fields__)
        unknown = sorted(set(get(params, "claims")) - set(allowed))
        if unknown:
            raise ParamError(f"claims.{unknown[0]} is not a param; use some of: {', '.join(allowed)}")
        margin = number(params, "claims.margin")
        if not 0 < margin < 1:
            raise ParamError(f"claims.margin={margin:g}: use a difference of success in (0, 1)")
        ratio_margin = number(params, "claims.ratio_margin")
        if not ratio_margin > 1:
            raise ParamError(f"claims.ratio_margin={ratio_margin:g}: use a factor above 1 (e.g. 1.1)")
        level = number(params, "claims.level")
        if not 0.5 <= level < 1:
            raise ParamError(f"claims.level={level:g}: use a level in [0.5, 1) (e.g. 0.95)")
        draws = integer(params, "claims.draws", minimum=200)
        return cls(margin, ratio_margin, level, draws)


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
