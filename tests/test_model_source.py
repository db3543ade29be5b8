"""Stage `model_source`: the checkpoint under `model.path` hashed file by file, with a (path, size, mtime)
memo, in this process (main() in a temporary folder holding a params.yaml)."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from stages import model_source
from stages.core.params import ParamError
from stages.model_source import MEMO, hash_tree


def checkpoint(path):
    """A folder laid out like a small Hugging Face checkpoint, with a subfolder."""
    (path / "tokenizer").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (path / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return path


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """Runs the stage on a folder from `tmp_path/work`; returns data/model_source.json."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def run(folder) -> dict:
        path = None if folder is None else str(folder)
        OmegaConf.save(OmegaConf.create({"model": {"path": path}}), "params.yaml")
        model_source.main()
        return json.loads((work / "data" / "model_source.json").read_text())

    return run


@pytest.fixture
def reads(monkeypatch) -> list:
    """Every file the stage reads to hash, in order."""
    seen = []
    original = model_source.sha256

    def counting(path):
        seen.append(path.name)
        return original(path)

    monkeypatch.setattr(model_source, "sha256", counting)
    return seen


def test_hash_tree_is_pure_and_names_every_file_with_its_digest(tmp_path):
    import hashlib

    root = checkpoint(tmp_path / "model")
    memo = {}
    files = hash_tree(root, memo, used := {})
    assert memo == {}  # the memo given is read, not written: the entries go to `used`
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]
    weights = (root / "model.safetensors").read_bytes()
    assert files["model.safetensors"] == {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    assert hash_tree(root, {}, {}) == files and len(used) == 3


def test_an_unchanged_checkpoint_is_not_read_again(stage, reads, tmp_path):
    root = checkpoint(tmp_path / "model")
    first = stage(root)
    assert sorted(reads) == ["config.json", "model.safetensors", "vocab.txt"]
    assert len(json.loads(MEMO.read_text())) == 3
    reads.clear()
    assert stage(root) == first and reads == []  # a stat per file, no read
    # a file rewritten with the same size but a new mtime is read again, and only that one
    (root / "config.json").write_text('{"model_type": "qwen2"}')
    os.utime(root / "config.json", ns=(1, 1))
    changed = stage(root)
    assert reads == ["config.json"] and changed["sha256"] != first["sha256"]


def test_added_and_removed_files_change_the_hash(stage, tmp_path):
    root = checkpoint(tmp_path / "model")
    first = stage(root)["sha256"]
    (root / "generation_config.json").write_text("{}")
    added = stage(root)
    assert added["sha256"] != first and "generation_config.json" in added["files"]
    (root / "generation_config.json").unlink()
    assert stage(root)["sha256"] == first
    (root / "tokenizer" / "vocab.txt").unlink()
    assert stage(root)["sha256"] != first


def test_symlinks_are_followed_as_the_hugging_face_cache_links_its_blobs(stage, tmp_path):
    root = checkpoint(tmp_path / "model")
    plain = stage(root)
    # the same files as a snapshot folder of links into a blob store
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    (snapshot / "tokenizer").mkdir(parents=True)
    blobs.mkdir()
    for name in plain["files"]:
        blob = blobs / name.replace("/", "_")
        blob.write_bytes((root / name).read_bytes())
        (snapshot / name).symlink_to(blob)
    linked = stage(snapshot)
    assert linked["files"] == plain["files"] and linked["sha256"] == plain["sha256"]
    # a changed blob changes the snapshot's hash
    (blobs / "model.safetensors").write_bytes(b"other weights")
    assert stage(snapshot)["sha256"] != plain["sha256"]


def test_the_embedded_model_is_not_hashed(stage, reads):
    assert stage(None) == {"model.path": None} and reads == []


@pytest.mark.parametrize(("folder", "message"), [("missing", "does not exist"), ("empty", "empty directory")])
def test_a_missing_or_empty_folder_stops_with_one_line_naming_the_param(stage, tmp_path, folder, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParamError, match=f"model.path=.*{folder}.*{message}") as error:
        stage(tmp_path / folder)
    assert len(str(error.value).splitlines()) == 1
    assert not (tmp_path / "work" / "data").exists() and not MEMO.exists()  # nothing written
