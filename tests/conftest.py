"""Shared fixtures: a temporary git + DVC copy of the repository on micro params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]

# pytest-xdist (pyproject.toml's addopts: two workers) shares the cores between the workers: each runs torch,
# and the stages and dvc it starts, on one thread, so they do not oversubscribe the cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

# Small enough that `dvc repro` on the whole pipeline takes about a minute on 2 CPU cores.
MICRO = {
    "generate.gp.sizes": dict(train=48, eval_id=16, eval_ood_rule=16, eval_ood_visual=8, corpus=1500),
    "generate.virl.sizes": dict(train=6, eval_id=3, eval_ood_rule=3, eval_ood_visual=2, corpus=60),
    "model.hidden_size": 32,
    "model.layers": 2,
    "model.heads": 2,
    "base.steps": 30,
    "base.batch_size": 32,
    "score.k": 4,
    "rollout.engine": "hf",
    "rollout.max_new_tokens": 32,
    "curves.prompts": 8,
}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(cwd)}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        command = " ".join(args)
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stage(name: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run one stage module directly, as dvc.yaml's cmd does."""
    return run([sys.executable, "-m", f"stages.{name}"], cwd, check=check)


def assert_one_line_error(result: subprocess.CompletedProcess, *named: str) -> None:
    """A failed stage: non-zero exit and a single 'error: ...' line on stderr that names each of `named`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(name in lines[0] for name in named), result.stderr


def set_params(repo: Path, overrides: dict) -> None:
    params = OmegaConf.load(repo / "params.yaml")
    for key, value in overrides.items():
        OmegaConf.update(params, key, value, merge=False)
    OmegaConf.save(params, repo / "params.yaml")


def make_repo(path: Path, overrides: dict | None = None) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, with params overridden."""
    path.mkdir(parents=True, exist_ok=True)
    # configs: the recipes and accelerate configs; data/benchmarks: the local benchmark copies (a dependency)
    files = ("stages", "configs", "dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore")
    for name in (*files, "data/benchmarks"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, path / name)
    set_params(path, {**MICRO, **(overrides or {})})
    run(["git", "init", "-q"], path)
    run(["git", "config", "user.email", "test@example.com"], path)
    run(["git", "config", "user.name", "test"], path)
    run(["dvc", "init", "-q"], path)
    # The project's default remote, `../../dvc-storage` from .dvc/: a sibling of `path`, inside the temp dir.
    shutil.copy(REPO / ".dvc" / "config", path / ".dvc" / "config")
    run(["dvc", "config", "core.autostage", "true"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "init"], path)
    return path


@pytest.fixture(scope="session")
def micro_split(tmp_path_factory) -> Path:
    """A micro repository on gp_l after `dvc repro split`; copy it before changing anything."""
    repo = make_repo(tmp_path_factory.mktemp("micro") / "repo")
    run(["dvc", "repro", "split"], repo)
    return repo


def require(module: str, flag: str, name: str, install: str) -> None:
    """Skip the calling test module where `module` is not installed ("<name> not installed"), or fail it
    where the environment variable `flag` is 1 (.ci/run: there it must run)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        if os.environ.get(flag) == "1":
            raise RuntimeError(f"{flag}=1 but {name} is not installed: {install}")
        pytest.skip(f"{name} not installed", allow_module_level=True)


def copy_repo(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination


# The modules that take minutes, longest first (pytest --durations in CI): collected first, so that under
# `--dist loadfile` the two workers start on them and finish on the short ones, instead of one worker
# running test_study.py alone at the end.
LONG_MODULES = ("test_study", "test_pipeline", "test_recipe", "test_benchmark", "test_vl", "test_resume")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = Path(str(item.fspath)).stem
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the order within a module stays
