"""A micro study: real queued `dvc exp` runs over two seeds and two arms, and the claims table they give."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from conftest import assert_one_line_error, make_repo, run
from dvc.api import DVCFileSystem

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


def experiments(repo) -> dict[str, str]:
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    revs = [rev for commit in shown for exp in commit.get("experiments") or [] for rev in exp["revs"]]
    return {rev["name"]: rev["rev"] for rev in revs}


def read_at(repo, rev: str, path: str) -> str:
    return DVCFileSystem(str(repo), rev=rev).read_text(path)


@pytest.mark.slow
def test_a_micro_study_runs_queued_experiments_and_writes_the_claims(tmp_path):
    repo = make_repo(tmp_path / "repo", MICRO_STUDY)
    arms = ["--arms", "sft_all,grpo_viter3", "--name", "micro", "--jobs", "2"]
    first = run([*STUDY, "run", "--seeds", "2", *arms], repo)
    made = {f"micro-s{seed}-{arm}" for seed in (0, 1) for arm in ("sft_all", "grpo_viter3")}
    revs = experiments(repo)
    assert set(revs) == made

    # Seed 1 started from seed 0's data and model; the viter-3 arm reused its seed's upstream stages too,
    # and trained up to the FLOPs of the seed's viter-1 GRPO.
    log = run(["dvc", "queue", "logs", "micro-s1-sft_all"], repo).stdout
    for stage in ("generate", "base", "score", "split"):
        assert f"Stage '{stage}' is cached - skipping run" in log, log
    log = run(["dvc", "queue", "logs", "micro-s0-grpo_viter3"], repo).stdout
    assert "Running stage 'grpo':" in log
    for stage in ("generate", "base", "score", "split", "sft", "evaluate@base", "evaluate@sft"):
        assert f"Stage '{stage}' is cached - skipping run" in log, log
    viter1 = json.loads(read_at(repo, revs["micro-s0-sft_all"], "metrics/grpo.json"))
    params = yaml.safe_load(read_at(repo, revs["micro-s0-grpo_viter3"], "params.yaml"))
    assert params["grpo"]["max_flops"] == viter1["flops"] and params["grpo"]["viter"] == 3

    claims = json.loads((repo / "study" / "micro" / "claims.json").read_text())
    assert claims["env"] == "gp_l" and claims["seeds"] == [0, 1] and claims["experiments"] == sorted(made)
    rows = {row["key"]: row for row in claims["claims"]}
    for key in ("sft_raises_id", "rl_raises_ood", "viter_helps_rl", "rl_beats_sft_at_matched_compute"):
        assert rows[key]["verdict"] in ("holds", "fails", "inconclusive"), rows[key]
        assert len(rows[key]["per_seed"]) == 2 and rows[key]["interval_seeds"] is not None
    assert rows["sft_raises_id"]["interval_prompts"] is not None
    assert rows["hard_lowest_ood"]["note"] == "needs the sft_easy, sft_easy_medium, sft_hard, sft_medium arms"
    assert rows["rl_raises_visual_ood"]["verdict"] == "not run"
    table = (repo / "study" / "micro" / "claims.md").read_text()
    assert table in first.stdout and "| SFT raises ID success over the starting model |" in table

    # The same command again: every experiment is kept, nothing runs, the table is the same.
    again = run([*STUDY, "run", "--seeds", "2", *arms], repo)
    assert again.stdout.count("already made; kept") == 4 and "0 experiments queued and run" in again.stdout
    assert json.loads((repo / "study" / "micro" / "claims.json").read_text()) == claims

    # An experiment of another env under the study's name: the claims refuse to mix them.
    run(["dvc", "exp", "run", "--name", "micro-s2-sft_all", "-S", "env=virl_l", "generate"], repo)
    assert_one_line_error(
        run([*STUDY, "claims", "--name", "micro"], repo, check=False), "mixes envs", "virl_l"
    )


def test_a_study_needs_a_seed_and_known_arms(tmp_path):
    repo = make_repo(tmp_path / "repo")
    assert_one_line_error(run([*STUDY, "run", "--seeds", "0"], repo, check=False), "--seeds=0")
    unknown = run([*STUDY, "run", "--arms", "sft_all,rl"], repo, check=False)
    assert_one_line_error(unknown, "unknown arm rl", "sft_easy_medium")
    assert_one_line_error(run([*STUDY, "claims", "--name", "none"], repo, check=False), "none-s<seed>-<arm>")
    alone = run([*STUDY, "run", "--arms", "grpo_viter3"], repo, check=False)
    assert_one_line_error(alone, "grpo_viter3 trains up to the FLOPs", "--arms sft_all,grpo_viter3")
    assert not (repo / "study").exists()
