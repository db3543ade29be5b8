"""A micro study: real queued `dvc exp` runs over two seeds and two arms, and the claims table they give."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import assert_one_line_error, make_repo, run
from dvc.api import DVCFileSystem

from stages.core import commands
from stages.core.params import ParamError
from stages.envs.general_points import DEFAULTS as GP_DEFAULTS
from stages.envs.virl import DEFAULTS as VIRL_DEFAULTS
from stages.experiments.arms import ARMS, DEFAULT_ARMS, arm_params, study_params
from stages.experiments.local import experiments
from stages.experiments.results import (
    StudyFiles,
    curve_arrays,
    experiments_setup,
    kept_experiments,
    merge,
    read_results,
    units_from_ids,
    write_results,
)
from stages.study import parse_arms

# Two optimizer steps per stage, curves at every step: the study's plumbing, not its findings.
MICRO_STUDY = {
    "sft.steps": 2,
    "sft.batch_size": 8,
    "grpo.steps": 2,
    "grpo.prompts_per_step": 2,
    "grpo.num_generations": 4,
    "rollout.max_new_tokens": 16,
    "curves.eval_every": 1,
    "evaluate.k": 2,
    "checkpoint.every": 0,
}
STUDY = [sys.executable, "-m", "stages.study"]


def exp_names(repo) -> dict[str, str]:
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    revs = [rev for commit in shown for exp in commit.get("experiments") or [] for rev in exp["revs"]]
    return {rev["name"]: rev["rev"] for rev in revs}


def read_at(repo, rev: str, path: str) -> str:
    return DVCFileSystem(str(repo), rev=rev).read_text(path)


@pytest.mark.slow
def test_a_micro_study_runs_queued_experiments_and_writes_the_claims(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo", MICRO_STUDY)
    # The commit's dvc.lock names a starting point made on another machine (other CPU kernels give another
    # base model), whose outputs this clone does not have: the study must not remake it in every experiment.
    run(["dvc", "repro", "split"], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"]["base"]["outs"][0]["md5"] = "0" * 32 + ".dir"
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    run(["git", "add", "dvc.lock"], repo)
    run(["git", "commit", "-qm", "a baseline made elsewhere"], repo)
    for made_here in (".dvc/cache", "models", "data/generated", "data/scores.csv", "data/splits"):
        run(["rm", "-rf", made_here], repo)
    committed_lock = (repo / "dvc.lock").read_bytes()

    arms = ["--arms", "sft_all,grpo_viter3", "--name", "micro", "--jobs", "2"]
    first = run([*STUDY, "run", "--seeds", "2", *arms], repo)
    assert (repo / "dvc.lock").read_bytes() == committed_lock  # the workspace is left as it was
    made = {f"micro-s{seed}-{arm}" for seed in (0, 1) for arm in ("sft_all", "grpo_viter3")}
    revs = exp_names(repo)
    assert set(revs) == made

    # Seed 1 started from seed 0's data and model; the viter-3 arm reused its seed's upstream stages too,
    # and ran its whole schedule (the claims compare it with viter 1 along the curves).
    # (Restored from the run cache, or from the outputs the first experiment's dvc.lock names.)
    log = run(["dvc", "queue", "logs", "micro-s1-sft_all"], repo).stdout
    for stage in ("generate", "base", "score", "split"):
        assert f"Running stage '{stage}':" not in log and f"'{stage}'" in log, log
    log = run(["dvc", "queue", "logs", "micro-s0-grpo_viter3"], repo).stdout
    assert "Running stage 'grpo':" in log
    for stage in ("generate", "base", "score", "split", "sft", "evaluate@base", "evaluate@sft"):
        assert f"Running stage '{stage}':" not in log and f"'{stage}'" in log, log
    params = yaml.safe_load(read_at(repo, revs["micro-s0-grpo_viter3"], "params.yaml"))
    assert params["grpo"]["max_flops"] is None and params["grpo"]["viter"] == 3
    # grpo.steps 2 over gp_l's study.viter3_step_divisor 3.75, rounded: 1
    assert params["grpo"]["steps"] == 1
    assert json.loads(read_at(repo, revs["micro-s0-grpo_viter3"], "metrics/grpo.json"))["steps"] == 1

    claims = json.loads((repo / "study" / "micro" / "claims.json").read_text())
    assert claims["env"] == "gp_l" and claims["seeds"] == [0, 1] and claims["experiments"] == sorted(made)
    rows = {row["key"]: row for row in claims["claims"]}
    for key in ("sft_raises_id", "rl_raises_ood", "viter_helps_rl", "rl_beats_sft_at_matched_compute"):
        assert rows[key]["verdict"] in ("holds", "fails", "no effect", "inconclusive"), rows[key]
        assert len(rows[key]["per_seed"]) == 2 and rows[key]["interval"] is not None
        assert rows[key]["prompt_level"], rows[key]  # curve rows too: per-prompt curves
    assert (
        claims["settings"]["margin"] == 0.02
        and "±0.02" in (repo / "study" / "micro" / "claims.md").read_text()
    )
    assert rows["hard_lowest_ood"]["note"] == "needs the sft_easy, sft_easy_medium, sft_hard, sft_medium arms"
    assert rows["rl_raises_visual_ood"]["verdict"] == "not run"
    table = (repo / "study" / "micro" / "claims.md").read_text()
    assert table in first.stdout and "| SFT raises ID success over the starting model |" in table

    # The same command again: every experiment is kept, nothing runs, the table is the same.
    again = run([*STUDY, "run", "--seeds", "2", *arms], repo)
    assert again.stdout.count("already made; kept") == 4 and "0 experiments queued and run" in again.stdout
    assert json.loads((repo / "study" / "micro" / "claims.json").read_text()) == claims

    # study/micro/results keeps the files the claims read: committed, a clone without the experiments
    # rewrites the same table and resumes with nothing to make, unless its params differ.
    manifest = json.loads((repo / "study" / "micro" / "results" / "manifest.json").read_text())
    assert manifest["experiments"] == dict(sorted(revs.items())) and sorted(manifest["made_by"]) == ["0", "1"]
    assert set(manifest["made_by"]["0"]) == {"base", "sft_all", "grpo", "grpo_viter3"}
    run(["git", "add", "study"], repo)
    run(["git", "commit", "-qm", "the micro study"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    resumed = run([*STUDY, "run", "--seeds", "2", *arms], clone)
    assert resumed.stdout.count("kept in study/micro/results") == 4, resumed.stdout
    assert "0 experiments queued and run" in resumed.stdout
    assert json.loads((clone / "study" / "micro" / "claims.json").read_text())["claims"] == claims["claims"]
    monkeypatch.chdir(clone)
    assert len(kept_experiments("micro", {})) == 4 and kept_experiments("micro", {"sft.lr": "1e-3"}) == {}
    monkeypatch.chdir(tmp_path)

    # An experiment of another env under the study's name: the claims refuse to mix them.
    run(["dvc", "exp", "run", "--name", "micro-s2-sft_all", "-S", "env=virl_l", "generate"], repo)
    assert_one_line_error(
        run([*STUDY, "claims", "--name", "micro"], repo, check=False),
        "mixes envs",
        "study/micro/results",
        "virl_l",
    )


def test_a_study_needs_a_seed_and_known_arms(tmp_path):
    repo = make_repo(tmp_path / "repo")
    assert_one_line_error(run([*STUDY, "run", "--seeds", "0"], repo, check=False), "--seeds=0")
    unknown = run([*STUDY, "run", "--arms", "sft_all,rl"], repo, check=False)
    assert_one_line_error(unknown, "unknown arm rl", "sft_easy_medium")
    assert_one_line_error(run([*STUDY, "claims", "--name", "none"], repo, check=False), "none-s<seed>-<arm>")
    assert not (repo / "study").exists()


def test_the_budget_arm_multiplies_the_steps_the_study_would_train():
    assert "budget" not in DEFAULT_ARMS and "budget" in ARMS
    assert parse_arms("budget,sft_all,grpo_viter3") == ["sft_all", "grpo_viter3", "budget"]
    assert arm_params("sft_hard", {}) == {"subset": "hard", "grpo.viter": 1}
    budget = arm_params("budget", {"env": "virl_l"})
    assert budget["sft.steps.virl_l"] == 150 * 4 and budget["grpo.steps.virl_l"] == 150 * 4
    assert (
        arm_params("budget", {"sft.steps.gp_l": "10", "study.budget_multiple": "3"})["sft.steps.gp_l"] == 30
    )
    with pytest.raises(ParamError, match="study.budget_multiple"):
        arm_params("budget", {"study.budget_multiple": "1"})


def test_the_viter3_arm_trains_the_steps_over_its_divisor():
    assert arm_params("grpo_viter3", {}) == {"subset": "all", "grpo.viter": 3, "grpo.steps.gp_l": 40}
    assert arm_params("grpo_viter3", {"env": "virl_l"})["grpo.steps.virl_l"] == 150
    assert arm_params("grpo_viter3", {"grpo.steps": "300"})["grpo.steps"] == 80  # a --set keeps the ratio
    assert arm_params("grpo_viter3", {"grpo.steps": "2", "study.viter3_step_divisor": "3"})["grpo.steps"] == 1
    with pytest.raises(ParamError, match="study.viter3_step_divisor.gp_l"):
        arm_params("grpo_viter3", {"study.viter3_step_divisor.gp_l": "0.5"})


def test_a_kept_experiment_is_kept_only_if_its_arm_would_make_it_again(tmp_path, monkeypatch):
    """Kept results are matched on the values their arm and seed set too: a viter-3 arm made with
    another step divisor is made again, while a change to the claims' or the study's own params keeps it."""
    root = Path(__file__).resolve().parent.parent
    params = yaml.safe_load((root / "params.yaml").read_text())
    study = StudyFiles("gp_l", {}, {})
    for arm, steps in (("sft_all", 150), ("grpo_viter3", 40)):
        experiment = f"gp_l-s0-{arm}"
        made = {
            **params,
            "seed": 0,
            "subset": "all",
            "grpo": {**params["grpo"], "viter": 1 + 2 * (arm != "sft_all")},
        }
        made["grpo"]["steps"] = {**params["grpo"]["steps"], "gp_l": steps}
        made["claims"] = {**params["claims"], "margin": 0.05}
        study.experiments[experiment], study.params[experiment] = "ab" * 20, made
    study.files[0] = {model: {"eval.json": "{}\n"} for model in ("base", "grpo_viter3", "score")}
    study.made_by[0] = {"base": "gp_l-s0-sft_all", "grpo_viter3": "gp_l-s0-grpo_viter3"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_results(tmp_path / "study" / "gp_l" / "results", study)
    monkeypatch.chdir(tmp_path)
    assert sorted(kept_experiments("gp_l", {})) == ["gp_l-s0-grpo_viter3", "gp_l-s0-sft_all"]
    assert list(kept_experiments("gp_l", {"study.viter3_step_divisor.gp_l": "1"})) == ["gp_l-s0-sft_all"]
    assert kept_experiments("gp_l", {"sft.lr": "1e-3"}) == {}


def test_listing_experiments_waits_out_an_info_file_a_finishing_run_removes(tmp_path, monkeypatch):
    """`dvc exp show` fails when a running experiment's info file goes while it reads the queue (a run that
    finishes meanwhile removes it): the study tries again, and stops with DVC's message if the file stays."""
    repo = make_repo(tmp_path / "repo", {})
    monkeypatch.chdir(repo)
    monkeypatch.setattr(commands, "DVC_RETRY_S", 1)
    monkeypatch.setattr(commands, "DVC_TRIES", 3)
    running = repo / ".dvc" / "tmp" / "exps" / "standalone" / "run" / "ab12"  # listed, without ab12.run
    running.mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"exp show.*\n.*ab12\.run"):
        experiments()
    finishing = threading.Timer(1.5, shutil.rmtree, [running])
    finishing.start()
    assert experiments() == {}
    finishing.join()


def test_units_of_old_per_prompt_files_come_from_the_ids():
    ids = pd.Series(["eval_ood_rule-r00003-s00", "eval_ood_rule-r00003-s01", "eval_ood_rule-r00004-s00"])
    assert units_from_ids(ids, "virl_l").tolist() == ["eval_ood_rule-r00003"] * 2 + ["eval_ood_rule-r00004"]
    assert units_from_ids(ids, "gp_l").tolist() == ids.tolist()


def test_per_prompt_curves_become_points_by_prompts_arrays():
    rows = [
        {"step": step, "flops": 10 * step, "set": name, "id": f"p{i}", "unit": f"u{i // 2}", "success": value}
        for step in (0, 5)
        for name in ("id", "ood_rule")
        for i, value in enumerate([0.25, 0.5, 1.0])
    ]
    arrays = curve_arrays(pd.DataFrame(rows))
    assert arrays["flops"].tolist() == [0.0, 50.0]
    assert arrays["ood_rule"].shape == (2, 3) and arrays["ood_rule"][1].tolist() == [0.25, 0.5, 1.0]
    assert arrays["units"].tolist() == ["u0", "u0", "u1"]
    assert curve_arrays(pd.DataFrame(columns=["step", "flops", "set", "id", "unit", "success"])) == {}


def test_kept_results_round_trip_and_yield_to_new_experiments_with_other_params(tmp_path, capsys):
    def files(seed: int, lr: float, made_by: str, model: str = "sft_all") -> StudyFiles:
        params = {"env": "gp_l", "seed": seed, "subset": "all", "sft": {"lr": lr, "steps": {"gp_l": 150}}}
        study = StudyFiles("gp_l", {made_by: "ab" * 20}, {made_by: params})
        study.files[seed] = {model: {"eval.json": '{"id": 1}\n'}, "score": {"score.json": "{}\n"}}
        study.made_by[seed] = {model: made_by}
        return study

    kept = files(0, 1e-3, "gp_l-s0-sft_all")
    write_results(tmp_path / "results", kept)
    assert read_results(tmp_path / "results") == kept
    # another seed with the same params joins the kept ones; other params replace them
    joined = merge("gp_l", kept, files(1, 1e-3, "gp_l-s1-sft_all"))
    assert sorted(joined.files) == [0, 1] and list(joined.experiments) == [
        "gp_l-s0-sft_all",
        "gp_l-s1-sft_all",
    ]
    assert merge("gp_l", kept, files(1, 3e-4, "gp_l-s1-sft_all")).experiments == {
        "gp_l-s1-sft_all": "ab" * 20
    }
    assert "made with other params; replaced" in capsys.readouterr().err
    # a base trained elsewhere (other kernels): the kept arms do not share the new ones' starting point
    kept.files[0]["base"] = {"per_prompt.csv": "set,id,unit,mean_success\nid,a,a,0.5\n"}
    other = files(0, 1e-3, "gp_l-s0-budget", "sft_all_budget")
    other.files[0]["base"] = {"per_prompt.csv": "set,id,unit,mean_success\nid,a,a,0.25\n"}
    assert list(merge("gp_l", kept, other).experiments) == ["gp_l-s0-budget"]
    assert "starts from another base model" in capsys.readouterr().err
    other.files[0]["base"] = dict(kept.files[0]["base"])
    assert len(merge("gp_l", kept, other).experiments) == 2
    assert study_params(kept.params["gp_l-s0-sft_all"]) == {
        "env": "gp_l",
        "sft": {"lr": 1e-3},
        "generate": {"gp": {k: v for k, v in GP_DEFAULTS.items() if not k.startswith("image_")}},
    }


def test_a_study_compares_only_the_params_that_bear_on_its_env():
    # a per-env param is read for the study's env: another env's value may change
    per_env = {"env": "virl_l", "seed": 0, "base": {"steps": {"gp_l": 600, "virl_l": 150}, "lr": 0.003}}
    assert study_params(per_env)["base"] == {"steps": 150, "lr": 0.003}
    # a key written at its code default is no change; the other env's section and, for a text env, what
    # only images and a vision tower read, may change
    virl = {"sizes": {"train": 300, "eval_ood_visual": 40}, "history": 1}
    text = {"env": "virl_l", "generate": {"virl": virl, "gp": {"target": 24}}, "model": {"layers": 4}}
    changed = {
        "env": "virl_l",
        "generate": {"virl": virl | {"corpus_reading_frac": 0.0, "ood_visual": "scene", "image_width": 9}},
        "model": {"layers": 4, "vision_layers": 2},
    }
    changed["generate"]["virl"]["sizes"] = {"train": 300, "eval_ood_visual": 10}
    assert study_params(changed) == study_params(text)
    bearing = study_params(text)["generate"]["virl"]
    assert bearing["grid_size"] == VIRL_DEFAULTS["grid_size"] and "corpus_reading_frac" not in bearing
    at_default = {"generate": {"virl": virl | {"grid_size": VIRL_DEFAULTS["grid_size"]}}}
    assert study_params(text | at_default) == study_params(text)
    for key, value in (("history", 2), ("sizes", {"train": 200, "eval_ood_visual": 40})):
        assert study_params(text | {"generate": {"virl": virl | {key: value}}}) != study_params(text)
    # a VL env reads them all
    vl = {**text, "env": "virl_vl"}
    assert study_params({**changed, "env": "virl_vl"}) != study_params(vl)
    assert study_params(vl | {"model": {"layers": 4, "vision_layers": 2}}) != study_params(vl)


def test_a_seeds_score_and_grpo_come_with_its_sft_easy_medium_whichever_experiment_is_new():
    # the wall-time row divides GRPO's time by score's plus sft_easy_medium's: one machine's, never a mix
    def files(experiment: str, models: list[str], machine: str) -> StudyFiles:
        params = {"env": "gp_l", "seed": 0, "subset": "all"}
        study = StudyFiles("gp_l", {experiment: "ab" * 20}, {experiment: params})
        study.files[0] = {m: {"training.json": machine, "per_prompt.csv": "same base"} for m in models}
        study.files[0]["score"] = {"score.json": machine}
        study.made_by[0] = {model: experiment for model in models}
        return study

    kept = files("gp_l-s0-sft_easy_medium", ["base", "grpo", "sft_easy_medium"], "A")
    budget = files("gp_l-s0-budget", ["base", "grpo", "sft_all_budget"], "B")
    merged = merge("gp_l", kept, budget)
    assert {m: f.get("training.json", f.get("score.json")) for m, f in merged.files[0].items()} == {
        "base": "B",
        "grpo": "A",
        "sft_easy_medium": "A",
        "score": "A",
        "sft_all_budget": "B",
    }
    assert merged.made_by[0]["grpo"] == "gp_l-s0-sft_easy_medium"
    # a new sft_easy_medium brings its own score and GRPO over the kept ones
    remade = merge("gp_l", budget, kept)
    assert remade.files[0]["score"] == {"score.json": "A"} and remade.files[0]["grpo"]["training.json"] == "A"


def test_the_table_names_every_machine_its_evaluations_ran_on():
    def evaluation(cpu: str) -> dict:
        made = {"device": {"cpu": cpu, "cpu_capability": "AVX2"}, "versions": {"torch": "2.13.0+cpu"}}
        return {"eval.json": json.dumps({"id": {}, "provenance": made | {"commit": "ab" * 20}})}

    study = StudyFiles("gp_l", {}, {})
    study.files[0] = {"base": evaluation("AMD EPYC"), "sft": evaluation("AMD EPYC"), "score": {}}
    study.files[1] = {"base": evaluation("Intel Xeon")}
    setups = experiments_setup(study)
    found = [(made["device"]["cpu"], made["evaluations"]) for made in setups]
    assert found == [("AMD EPYC", 2), ("Intel Xeon", 1)]
    assert setups[0]["versions"] == {"torch": "2.13.0+cpu"}


def test_the_committed_studies_are_kept_by_the_current_params(monkeypatch):
    """A param added or changed for one env must not silently drop another env's committed study: resuming
    keeps every kept experiment whose params, less the arms' and seeds', equal params.yaml's."""
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    for manifest in sorted(root.glob("study/*/results/manifest.json")):
        kept_files = json.loads(manifest.read_text())
        name, made = manifest.parent.parent.name, kept_files["experiments"]
        kept = kept_experiments(name, {"env": kept_files["env"]})
        assert sorted(kept) == sorted(made), (
            f"params.yaml no longer makes study/{name}'s experiments ({len(kept)} of {len(made)} kept): "
            "rerun the study, or see which params study_params compares"
        )
