"""The statistics of a claims row: one interval from a hierarchical resampling, p-values, Holm, power.

Every row gets one interval from a hierarchical resampling of the two sources of noise (docs/statistics.md):

- eval units: one bootstrap index vector over the units, shared by every seed and every model in a draw,
  since all seeds are evaluated on the same eval set (it depends on `data_seed`, not `seed`);
- seeds: a random seed effect, whose variance is the spread of the per-seed effects net of the unit-level
  noise already in the draws, drawn from Student's t with seeds - 1 degrees of freedom.

The verdict reads the interval against the null and an equivalence margin: holds, fails, no effect,
inconclusive; "matches or beats" is a non-inferiority test. Holm's method adjusts the bootstrap p-values
across the rows of one table. Each row reports its minimum detectable effect and roughly how many seeds would
decide it at the observed spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

POWER = 0.8  # the minimum detectable effect is the one found with this probability


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
