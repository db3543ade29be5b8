"""Stage `generate`: byte-identical outputs for the same params, and one-line errors on bad input."""

from __future__ import annotations

import hashlib

import pytest
from conftest import assert_one_line_error, make_repo, run, set_params, stage

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
    assert not (repo / "data").exists()
