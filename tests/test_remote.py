"""The default DVC remote (`.dvc/config`): push after `dvc repro`, pull into an empty cache and a clone."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import copy_repo, make_repo, run

pytestmark = pytest.mark.slow

OUTPUTS = ("data/generated", "models/base", "data/scores.csv", "data/splits")  # generate, base, score, split
# Only the stages up to split have run (sft, grpo, ... have no outputs to pull), so pull those; on a
# branch where `dvc repro` ran the whole pipeline, a plain `dvc pull` does the same.
PULL = ["dvc", "pull", "--with-deps", "split"]


def checksums(repo: Path) -> dict[str, str]:
    """sha256 of every file of the DVC-tracked outputs, by path relative to `repo`."""
    paths = [repo / name for name in OUTPUTS]
    files = sorted(p for path in paths for p in [path, *path.rglob("*")] if p.is_file())
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def ran(log: str) -> list[str]:
    """The stages a `dvc repro` log says it ran, but model_source, which runs on every repro (it hashes
    model.path) and lets the others skip when its output is unchanged."""
    return [stage for stage in re.findall(r"Running stage '([^']+)'", log) if stage != "model_source"]


def status(repo: Path) -> dict:
    """`dvc status` of the stages that ran (split and everything upstream of it); {} means up to date.
    model_source hashes model.path on every repro (`always_changed`), so DVC always lists it as such."""
    stages = json.loads(run(["dvc", "status", "--json", "--with-deps", "split"], repo).stdout)
    assert stages.pop("model_source", ["always changed"]) == ["always changed"]
    return stages


def test_default_remote_is_a_sibling_directory_of_the_clone(tmp_path):
    repo = make_repo(tmp_path / "repo")
    url = run(["dvc", "config", "remote.storage.url"], repo).stdout.strip()  # relative to .dvc/
    assert (repo / ".dvc" / url).resolve() == (tmp_path / "dvc-storage").resolve(), url
    assert run(["dvc", "remote", "default"], repo).stdout.strip() == "storage"


def test_push_then_pull_restores_outputs_without_recomputing(micro_split, tmp_path):
    repo = copy_repo(micro_split, tmp_path / "repo")
    before = checksums(repo)
    assert any(name.endswith(".safetensors") for name in before)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "dvc repro split"], repo)

    run(["dvc", "push"], repo)
    storage = tmp_path / "dvc-storage"  # `../../dvc-storage` from repo/.dvc: next to the clone, not in it
    assert any((storage / "files" / "md5").rglob("*")), "dvc push wrote nothing to the default remote"

    shutil.rmtree(repo / ".dvc" / "cache")
    for name in OUTPUTS:
        path = repo / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert status(repo) != {}
    run(PULL, repo)
    assert status(repo) == {}
    assert checksums(repo) == before

    # Nothing reruns: every stage up to split is found unchanged.
    repro = run(["dvc", "repro", "split"], repo)
    assert ran(repro.stdout) == [], repro.stdout
    assert checksums(repo) == before

    from stages.inference.models import load_model

    tokenizer, model = load_model(repo / "models" / "base")
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Rule : J Q K = 10 10 10 . Cards : 9 4 . Target : 13"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    # A fresh clone next to it shares the same remote; the pull-request workflow's commands restore
    # every output and rerun nothing (`--allow-missing`: sft, grpo, ... have no outputs yet).
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models" / "base").exists()
    run(["dvc", "pull", "--allow-missing"], clone)
    assert status(clone) == {}
    assert checksums(clone) == before
    repro = run(["dvc", "repro", "--pull", "split"], clone)
    assert ran(repro.stdout) == [], repro.stdout

    # A clone elsewhere finds an empty remote: `dvc pull` fails and says which outputs are missing.
    lonely = tmp_path / "elsewhere" / "clone"
    run(["git", "clone", "-q", str(repo), str(lonely)], tmp_path)
    failed = run(PULL, lonely, check=False)
    assert failed.returncode != 0
    message = failed.stderr
    assert "failed to pull data from the cloud" in message and "models/base" in message, message
