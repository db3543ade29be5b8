"""The Ray engine's one-line refusals, checked before any cluster starts (no Ray cluster needed)."""

from __future__ import annotations

import importlib.util

from conftest import assert_one_line_error, make_repo, run
from test_study import STUDY


def test_the_ray_engine_refuses_bad_input_in_one_line(tmp_path):
    repo = make_repo(tmp_path / "repo")
    unknown = run([*STUDY, "run", "--engine", "slurm"], repo, check=False)
    assert_one_line_error(unknown, "--engine='slurm'", "local, ray")
    negative = run([*STUDY, "run", "--engine", "ray", "--gpus-per-experiment", "-1"], repo, check=False)
    assert_one_line_error(negative, "--gpus-per-experiment=-1")
    ray = run([*STUDY, "run", "--engine", "ray"], repo, check=False)
    if importlib.util.find_spec("ray") is None:
        assert_one_line_error(ray, "--engine ray needs Ray", "-e '.[cluster]'")
    else:  # the tasks clone the study's commit from the git remote: there must be one, holding it
        assert_one_line_error(ray, "--git-remote='origin' is not a git remote here", "git remote add")
        run(["git", "init", "-q", "--bare", str(tmp_path / "remote.git")], tmp_path)
        run(["git", "remote", "add", "origin", str(tmp_path / "remote.git")], repo)
        unpushed = run([*STUDY, "run", "--engine", "ray"], repo, check=False)
        assert_one_line_error(unpushed, "is not on git remote origin", "git push origin HEAD")
    assert not (repo / "study").exists()
