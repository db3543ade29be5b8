"""A study's experiments in rounds, through an `Engine`: `LocalQueue` (stages/experiments/local.py) or
`RayEngine` (stages/experiments/cluster.py)."""

from __future__ import annotations

import sys
from typing import Protocol

from stages.experiments.arms import arm_params
from stages.experiments.local import LocalQueue, experiment_lock, experiments
from stages.experiments.results import kept_experiments


class Engine(Protocol):
    """What runs a round's experiments."""

    def start(self, study: str) -> None:
        """Before the first round."""

    def run(self, todo: dict[str, dict], lock: str | None = None) -> dict[str, str]:
        """Run {experiment: params}; {experiment: why} of those that failed for good."""

    def sync(self) -> None:
        """After a round: the experiments made so far, here."""

    def stop(self) -> None:
        """After the last round, also after a failure."""


def run_study(
    name: str,
    seeds: list[int],
    arms: list[str],
    overrides: dict[str, str],
    jobs: int,
    engine: Engine | None = None,
) -> None:
    """Run the experiments not made yet, in three rounds, each round through the engine (default: the local
    queue with `jobs` workers).

    Experiments depend on each other through DVC's run cache: the first one makes the starting point
    (generate, base, score, split) that every seed shares, each seed's first sft arm trains the seed's
    viter-1 GRPO that its other sft arms restore. Rounds keep the queue's workers from making the same stage
    twice. An engine that goes on past a failed experiment (Ray) still runs the later rounds; the failures
    are reported at the end.
    """
    engine = engine or LocalQueue(jobs)
    engine.start(name)
    try:
        ran, failed = run_rounds(name, seeds, arms, overrides, engine)
    finally:
        engine.stop()
    if failed:
        for experiment, why in failed.items():
            print(f"study {name}: {experiment} {why}", file=sys.stderr)
        raise SystemExit(
            f"error: {len(failed)} experiments failed: {', '.join(failed)} (logs above); fix the cause and "
            "run the same command again (the experiments made are kept)"
        )
    print(f"study {name}: {ran} experiments queued and run")


def run_rounds(
    name: str, seeds: list[int], arms: list[str], overrides: dict[str, str], engine: Engine
) -> tuple[int, dict[str, str]]:
    """The rounds of run_study; returns how many experiments ran and {name: why} of those that failed."""
    engine.sync()
    made = experiments()
    kept = kept_experiments(name, overrides)
    sft_arms = [arm for arm in arms if arm != "grpo_viter3"]
    first = sft_arms[:1]
    rounds = [
        [(seeds[0], arm) for arm in first],
        [(seed, arm) for seed in seeds[1:] for arm in first],
        [(seed, arm) for seed in seeds for arm in sft_arms[1:] + ["grpo_viter3"] * ("grpo_viter3" in arms)],
    ]
    ran, failed = 0, {}
    starting_point = f"{name}-s{seeds[0]}-{first[0]}" if first else None
    for round_ in rounds:
        # after the first round, each experiment starts from the dvc.lock of the first (workspace_lock)
        lock = experiment_lock(made[starting_point]) if starting_point in made else None
        todo = {}
        for seed, arm in round_:
            experiment = f"{name}-s{seed}-{arm}"
            if experiment in made:
                print(f"study: {experiment} already made; kept")
                continue
            if experiment in kept:
                print(f"study: {experiment} kept in study/{name}/results (made at {kept[experiment][:7]})")
                continue
            todo[experiment] = {**overrides, "seed": seed, **arm_params(arm, overrides)}
        ran += len(todo)
        if todo:
            failed |= engine.run(todo, lock)
            engine.sync()
            made = experiments()
    return ran, failed
