"""Stage `generate`: byte-identical outputs for the same params, and one-line errors on bad input."""

from __future__ import annotations

import hashlib

import datasets
import pyarrow.parquet as pq
import pytest
from conftest import assert_one_line_error, make_repo, run, set_params, stage
from PIL import Image

from stages.core.storage import TEXT_FEATURES, read_split, write_split
from stages.envs import ENV_NAMES, get_env


def digests(repo) -> dict[str, str]:
    folder = repo / "data" / "generated"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("generate") / "repo")


@pytest.mark.parametrize("env", ENV_NAMES)
def test_every_env_writes_its_splits_deterministically(repo, env):
    set_params(repo, {"env": env})
    stage("generate", repo)
    first = digests(repo)
    assert set(first) == {f"{split}.parquet" for split in get_env(env).splits}
    stage("generate", repo)
    assert digests(repo) == first


def test_dvc_repro_forced_twice_gives_the_same_lock(repo):
    set_params(repo, {"env": "gp_l"})
    run(["dvc", "repro", "generate"], repo)
    lock = (repo / "dvc.lock").read_text()
    run(["dvc", "repro", "-f", "generate"], repo)
    assert (repo / "dvc.lock").read_text() == lock


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"env": "chess"}, "env="),
        ({"generate.gp.sizes.train": -1}, "generate.gp.sizes.train"),
        ({"generate.gp.num_cards": 9}, "generate.gp.num_cards"),
        ({"data_seed": "abc"}, "data_seed"),
    ],
)
def test_bad_params_stop_with_one_line_and_write_nothing(tmp_path, overrides, named):
    repo = make_repo(tmp_path / "repo", overrides)
    result = stage("generate", repo, check=False)
    assert_one_line_error(result, named)
    assert not (repo / "data" / "generated").exists()  # data/benchmarks is copied in, empty


def test_splits_are_written_a_row_group_at_a_time_and_read_back_as_written(tmp_path):
    env = get_env("gp_vl")
    sizes = {"train": 7, "eval_id": 0, "eval_ood_rule": 0, "eval_ood_visual": 0, "corpus": 0}
    records = env.generate(sizes, {}, 0)["train"]
    lazy = tmp_path / "lazy.parquet"
    assert write_split(env.iter_records(sizes, {}, 0)["train"], lazy, rows_per_group=3) == 7
    listed, whole = tmp_path / "listed.parquet", tmp_path / "whole.parquet"
    write_split(records, listed, rows_per_group=3)
    write_split(records, whole)
    assert lazy.read_bytes() == listed.read_bytes()  # an iterator or a list: the same file
    assert [pq.ParquetFile(path).metadata.num_row_groups for path in (lazy, whole)] == [3, 1]
    for path in (lazy, whole):
        data = read_split(path)
        assert data.features == datasets.Features({**TEXT_FEATURES, "image": datasets.Image()})
        for row, record in zip(data, records, strict=True):
            assert {key: row[key] for key in TEXT_FEATURES} == {key: record[key] for key in TEXT_FEATURES}
            assert isinstance(row["image"], Image.Image)
            assert row["image"].tobytes() == record["image"].tobytes()
    empty = tmp_path / "empty.parquet"
    assert write_split(iter([]), empty) == 0
    table = pq.read_table(empty)  # (datasets cannot load a parquet file without rows, as before)
    assert table.num_rows == 0 and table.column_names == list(TEXT_FEATURES)
