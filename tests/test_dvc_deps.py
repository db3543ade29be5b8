"""Every repository file a stage's code imports must be one of that stage's deps in dvc.yaml.

DVC reruns a stage only when a declared dependency changes, and the checkpoint fingerprint in
stages/training/checkpoints.py hashes the same deps list, so a module imported by a stage but missing from
its deps lets an edit to that module go unnoticed: DVC serves stale results. The imports are read
from the code with `ast` (every `import stages...`, `from stages... import ...` and relative
import anywhere in a module, inside functions too), followed transitively from the module named
in the stage's cmd. A file is covered when it or a folder above it is listed in deps; a package
`__init__.py` holding no code (a docstring at most) needs no dep.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CMD_MODULE = re.compile(r"python -m (stages(?:\.\w+)*)")


def _load_dvc() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _module_file(name: str) -> Path | None:
    """The file of repository module `name` (a module or a package's __init__.py), if any."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _has_code(tree: ast.Module) -> bool:
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return bool(body)


@functools.cache
def _parse(name: str) -> tuple[str | None, frozenset[str]]:
    """Repository module `name`: its file (None if it needs no dep) and the modules it may import."""
    path = _module_file(name)
    if path is None:  # not a repository module (or a name imported from one)
        return None, frozenset()
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                base = ".".join(parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # maybe submodules
    # importing a.b.c also runs a/__init__.py and a/b/__init__.py
    found = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    file = path.relative_to(ROOT).as_posix() if not is_package or _has_code(tree) else None
    return file, frozenset(found)


def stage_imports(module: str) -> set[str]:
    """Repository files (relative paths) that running `python -m module` imports."""
    files: set[str] = set()
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            file, imports = _parse(name)
            files.update([file] if file else [])
            todo.extend(imports)
    return files


def missing_deps(dvc: dict) -> list[str]:
    """One message per (stage, imported file) that no dep of the stage covers."""
    problems = []
    for stage, spec in dvc["stages"].items():
        module = CMD_MODULE.search(spec["cmd"])
        assert module, f"{stage}: cmd {spec['cmd']!r} runs no stages module"
        deps = {d.rstrip("/") for d in spec.get("deps", [])}
        for file in sorted(stage_imports(module.group(1))):
            parts = file.split("/")
            if not any("/".join(parts[:i]) in deps for i in range(1, len(parts) + 1)):
                problems.append(f"{stage}: {file} is imported but not a dependency in dvc.yaml")
    return problems


def test_every_imported_file_is_a_dep():
    problems = missing_deps(_load_dvc())
    assert not problems, "\n".join(problems)


def test_checker_catches_a_removed_dep():
    dvc = _load_dvc()
    dvc["stages"]["score"]["deps"].remove("stages/inference")
    assert missing_deps(dvc) == [
        f"score: stages/inference/{module}.py is imported but not a dependency in dvc.yaml"
        for module in ("flops", "models", "rollout")
    ]


def test_source_deps_exist():
    stale = [
        f"{stage}: {dep}"
        for stage, spec in _load_dvc()["stages"].items()
        for dep in spec.get("deps", [])
        if dep.startswith("stages/") and not (ROOT / dep).exists()
    ]
    assert stale == []
