"""A study's results: the files its claims read, from its experiments (through DVC) and from
study/<name>/results/ (in git), merged, written, and turned into the claims' per-seed input."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from dvc.api import DVCFileSystem
from omegaconf import OmegaConf

from stages.claims.catalogue import BENCHMARKS, SeedResults
from stages.core.params import get
from stages.core.paths import (
    STUDIES,
    benchmark_per_item,
    eval_metrics,
    eval_per_prompt,
    live_dir,
    stage_metrics,
)
from stages.core.storage import atomic_dir, write_json
from stages.experiments.arms import (
    ARM_MODELS,
    ARMS,
    arm_params,
    arm_values,
    experiment_pattern,
    read_params,
    study_config,
    study_params,
)
from stages.experiments.local import experiments

# The files the claims read of one model, by their name under study/<name>/results/s<seed>/<model>/ ->
# their path in the experiment that made the model; the first two are required.
MODEL_FILES = {
    "per_prompt.csv": eval_per_prompt,
    "eval.json": eval_metrics,
    "training.json": stage_metrics,
    "curve.json": lambda stage: live_dir(stage) / "plots" / "custom" / "success_vs_flops.json",
    "curve_per_prompt.csv": lambda stage: live_dir(stage) / "curve_per_prompt.csv",
    "benchmark_items.csv": benchmark_per_item,
}


@dataclass
class StudyFiles:
    """What a study's claims read: per seed, per model (and "score"), {file name: text}; where each came
    from; and each experiment's params. study/<name>/results/ holds it in git, so a clone can rewrite the
    table, and resume the study, without the experiments."""

    env: str
    experiments: dict[str, str]  # experiment -> its commit
    params: dict[str, dict]  # experiment -> its params.yaml
    files: dict[int, dict[str, dict[str, str]]] = field(default_factory=dict)
    made_by: dict[int, dict[str, str]] = field(default_factory=dict)  # seed -> model -> experiment


def read_experiments(name: str, kept_env: str | None = None) -> StudyFiles | None:
    """The study's files at each of its experiments on the current commit (None if there are none); their
    env is checked against the kept results' (`kept_env`) before any file is read."""
    pattern = experiment_pattern(name)
    found = {m: rev for m, rev in experiments().items() if pattern.fullmatch(m)}
    if not found:
        return None
    systems = {experiment: DVCFileSystem(".", rev=rev) for experiment, rev in sorted(found.items())}
    params = {experiment: read_params(fs.read_text("params.yaml")) for experiment, fs in systems.items()}
    envs = {experiment: p["env"] for experiment, p in params.items()}
    kept = {f"study/{name}/results": kept_env} if kept_env else {}
    study = StudyFiles(one_env(name, kept | envs), found, params)
    # a seed's sft_easy_medium experiment first: base, GRPO and score come from it (see merge)
    for experiment, fs in sorted(systems.items(), key=lambda item: not item[0].endswith("-sft_easy_medium")):
        seed_text, arm = pattern.fullmatch(experiment).groups()
        seed = int(seed_text)
        files, made_by = study.files.setdefault(seed, {}), study.made_by.setdefault(seed, {})
        for model, stage in ARM_MODELS[arm].items():
            # base and grpo come with every sft arm of the seed: one copy is enough
            if model in files:
                continue
            paths = {file: str(path(stage)) for file, path in MODEL_FILES.items()}
            if stage == "base":
                del paths["training.json"], paths["curve.json"], paths["curve_per_prompt.csv"]
            if not fs.exists(paths["per_prompt.csv"]):
                raise SystemExit(
                    f"error: {experiment} has no {paths['per_prompt.csv']}; it predates per-prompt results: "
                    f"remove it with `dvc exp remove {experiment}` and run the study again"
                )
            files[model] = {file: fs.read_text(path) for file, path in paths.items() if fs.exists(path)}
            made_by[model] = experiment
        files.setdefault("score", {"score.json": fs.read_text(str(stage_metrics("score")))})
    return study


def kept_experiments(name: str, overrides: dict[str, str]) -> dict[str, str]:
    """{experiment: commit} of those kept in study/<name>/results that this run would make with the same
    params; none where the model comes from model.path, whose weights the params do not pin."""
    kept = read_results(STUDIES / name / "results")
    if kept is None:
        return {}
    config = study_config(overrides)
    if get(config, "model.path") is not None:
        return {}
    ours = study_params(OmegaConf.to_container(config))
    pattern = experiment_pattern(name)
    made_by_arm = {arm: arm_params(arm, overrides) for arm in ARMS}  # each reads params.yaml once
    same = {}
    for experiment, rev in kept.experiments.items():
        match = pattern.fullmatch(experiment)
        if match is None or study_params(kept.params[experiment]) != ours:
            continue
        seed, arm = int(match.group(1)), match.group(2)
        would = config.copy()
        for key, value in {"seed": seed, **made_by_arm[arm]}.items():
            OmegaConf.update(would, key, value, force_add=True)
        if arm_values(kept.params[experiment]) == arm_values(OmegaConf.to_container(would)):
            same[experiment] = rev
    return same


def one_env(name: str, envs: dict[str, str]) -> str:
    if len(set(envs.values())) > 1:
        mixed = ", ".join(f"{source} ({env})" for source, env in envs.items())
        raise SystemExit(f"error: study {name} mixes envs: {mixed}; give each env its own --name")
    return next(iter(envs.values()))


def read_results(folder: Path) -> StudyFiles | None:
    """study/<name>/results/ as StudyFiles (None where the study kept none)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    study = StudyFiles(manifest["env"], manifest["experiments"], manifest["params"])
    for seed_text, models in manifest["made_by"].items():
        seed = int(seed_text)
        study.made_by[seed] = dict(models)
        study.files[seed] = {
            model: {path.name: path.read_text() for path in sorted((folder / f"s{seed}" / model).iterdir())}
            for model in [*models, "score"]
        }
    return study


# The models whose timings the wall-time claim compares with sft_easy_medium's (stages/claims/)
TIMED_WITH_SFT_EASY_MEDIUM = ("score", "grpo")


def merge(name: str, kept: StudyFiles | None, made: StudyFiles | None) -> StudyFiles:
    """The experiments made on this commit, over those kept in study/<name>/results: a model made by both
    comes from the new experiment, except a seed's score and GRPO, which come with its sft_easy_medium. Kept
    results made with other params than the new ones are dropped. (Their envs were checked by
    read_experiments.)"""
    if kept is None or made is None:
        if kept is None and made is None:
            raise SystemExit(
                f"error: no experiments named {name}-s<seed>-<arm> on this commit and no "
                f"study/{name}/results; run `python -m stages.study run` (or pass the study's --name)"
            )
        return kept or made
    ours = study_params(next(iter(made.params.values())))
    if any(study_params(p) != ours for p in kept.params.values()):
        print(f"study {name}: study/{name}/results was made with other params; replaced", file=sys.stderr)
        return made
    # Another machine's kernels train another base from the same params: arms compared with it must share it
    bases = [
        (kept.files[s].get("base"), made.files[s].get("base")) for s in set(kept.files) & set(made.files)
    ]
    if any(k and m and k["per_prompt.csv"] != m["per_prompt.csv"] for k, m in bases):
        print(
            f"study {name}: study/{name}/results starts from another base model (its per-prompt results "
            "differ: made on another CPU?); replaced: run the study again to remake its other arms here",
            file=sys.stderr,
        )
        return made
    merged = StudyFiles(kept.env, kept.experiments | made.experiments, kept.params | made.params)
    for seed in sorted(set(kept.files) | set(made.files)):
        merged.files[seed] = kept.files.get(seed, {}) | made.files.get(seed, {})
        merged.made_by[seed] = kept.made_by.get(seed, {}) | made.made_by.get(seed, {})
        # The wall-time row sets score and GRPO against sft_easy_medium: all three from one source, so a
        # seed's ratio is one machine's (a budget run elsewhere must not bring its score to kept arms)
        if "sft_easy_medium" not in made.files.get(seed, {}):  # else the new experiment's already won
            for model in TIMED_WITH_SFT_EASY_MEDIUM:
                if model in kept.files.get(seed, {}):
                    merged.files[seed][model] = kept.files[seed][model]
                    if model in kept.made_by[seed]:
                        merged.made_by[seed][model] = kept.made_by[seed][model]
    used = {experiment for models in merged.made_by.values() for experiment in models.values()}
    merged.experiments = {e: rev for e, rev in sorted(merged.experiments.items()) if e in used}
    merged.params = {e: p for e, p in merged.params.items() if e in used}
    return merged


def write_results(folder: Path, study: StudyFiles) -> None:
    """StudyFiles as study/<name>/results/: manifest.json and s<seed>/<model>/<file>, replaced whole."""
    with atomic_dir(folder) as scratch:
        for seed, models in study.files.items():
            for model, files in models.items():
                for file, text in files.items():
                    (scratch / f"s{seed}" / model).mkdir(parents=True, exist_ok=True)
                    (scratch / f"s{seed}" / model / file).write_text(text)
        made_by = {str(seed): models for seed, models in sorted(study.made_by.items())}
        manifest = {"env": study.env, "experiments": study.experiments, "made_by": made_by}
        write_json(scratch / "manifest.json", manifest | {"params": study.params})


def seed_results(study: StudyFiles, name: str, metric: str) -> list[SeedResults]:
    """The claims' input, per seed, from the study's files."""
    seeds = []
    for seed, models in sorted(study.files.items()):
        results = SeedResults(seed, prompts={})
        for model, files in sorted(models.items()):  # one order, whichever source the files came from
            if model == "score":
                results.training["score"] = json.loads(files["score.json"])
                continue
            results.prompts[model] = per_prompt_sets(files["per_prompt.csv"], metric, study.env)
            results.prompts[model] |= benchmark_items(files.get("benchmark_items.csv", ""))
            results.evals[model] = json.loads(files["eval.json"])
            if "training.json" in files:
                results.training[model] = json.loads(files["training.json"])
                results.curves[model] = json.loads(files.get("curve.json", "[]"))
                # experiments made before per-prompt curves have none
                if arrays := curve_arrays(read_csv(files.get("curve_per_prompt.csv", ""))):
                    results.curve_prompts[model] = arrays
        results.prompts, results.units = paired(results, name)
        seeds.append(results)
    return seeds


def read_csv(text: str) -> pd.DataFrame:
    if not text.strip():
        return pd.DataFrame()
    return pd.read_csv(io.StringIO(text), dtype={"id": str, "unit": str, "benchmark": str})


def per_prompt_sets(text: str, metric: str, env: str) -> dict[str, pd.DataFrame]:
    """{eval set: the metric and the independent unit of each prompt, indexed by prompt id}."""
    table = read_csv(text)
    if "unit" not in table:
        table["unit"] = units_from_ids(table["id"], env)
    return {name: rows.set_index("id")[[metric, "unit"]] for name, rows in table.groupby("set", sort=False)}


def benchmark_items(text: str) -> dict[str, pd.DataFrame]:
    """{"benchmarks": each benchmark item's verdict (0/1), an item its own unit}, or {} where the
    experiment ran no benchmark (benchmark.names empty, or made before the benchmark stage)."""
    if not text.strip():
        return {}
    items = read_csv(text)
    if items.empty:
        return {}
    ids = (items["benchmark"] + "/" + items["id"]).to_numpy(dtype=str)
    frame = pd.DataFrame({"correct": items["correct"].astype(float).to_numpy(), "unit": ids}, index=ids)
    return {BENCHMARKS: frame}


def units_from_ids(ids: pd.Series, env: str) -> pd.Series:
    """The unit of per-prompt files made before they had a unit column: a V-IRL step's id is
    <route>-s<step> (stages/envs/virl/), a GeneralPoints hand is its own unit."""
    return ids.str.rsplit("-s", n=1).str[0] if env.startswith("virl") else ids


def curve_arrays(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """A curve_per_prompt.csv as arrays: FLOPs per point, the prompts' units, and success per point and
    prompt for every eval set ({} when the curves were off)."""
    if table.empty:
        return {}
    steps = sorted(table["step"].unique())
    arrays = {"flops": table.groupby("step")["flops"].first().loc[steps].to_numpy(dtype=float)}
    for eval_set, rows in table.groupby("set", sort=False):
        ids = list(dict.fromkeys(rows["id"]))
        grid = rows.pivot(index="step", columns="id", values="success").loc[steps, ids]
        arrays[eval_set] = grid.to_numpy(dtype=float)
        if eval_set == "ood_rule":  # the matched-compute claims read ood_rule
            arrays["units"] = rows.drop_duplicates("id").set_index("id").loc[ids, "unit"].to_numpy(dtype=str)
    return arrays


def paired(results: SeedResults, name: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per-prompt success as arrays, once every model of the seed is known to have seen the same prompts,
    and the unit of each prompt per eval set."""
    units = {}
    for eval_set in {s for sets in results.prompts.values() for s in sets}:
        frames = {model: sets[eval_set] for model, sets in results.prompts.items() if eval_set in sets}
        ids = {model: tuple(frame.index) for model, frame in frames.items()}
        if len(set(ids.values())) > 1:
            raise SystemExit(
                f"error: study {name}, seed {results.seed}: models {', '.join(ids)} were evaluated on "
                f"different {eval_set} prompts; rerun the study's experiments on one commit"
            )
        units[eval_set] = next(iter(frames.values()))["unit"].to_numpy(dtype=str)
    prompts = {
        model: {eval_set: frame.iloc[:, 0].to_numpy(dtype=float) for eval_set, frame in sets.items()}
        for model, sets in results.prompts.items()
    }
    return prompts, units


def experiments_setup(study: StudyFiles) -> list[dict]:
    """Each distinct device and set of versions the study's evaluations ran on, with how many of its models'
    eval files each made (a study resumed on another machine has more than one)."""
    setups: dict[str, dict] = {}
    for models in study.files.values():
        for files in models.values():
            if "eval.json" in files:
                made = json.loads(files["eval.json"])["provenance"]
                setup = {"device": made["device"], "versions": made["versions"]}
                key = json.dumps(setup, sort_keys=True)
                setups.setdefault(key, setup | {"evaluations": 0})["evaluations"] += 1
    return list(setups.values())
