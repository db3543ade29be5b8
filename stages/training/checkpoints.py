"""Resumable training: checkpoints that outlive a killed stage and belong to one set of inputs.

The training stages (base, sft, grpo) save a Trainer checkpoint (weights, optimizer, scheduler, RNG states,
position in the data) every `checkpoint.every` steps under checkpoints/<stage>/<fingerprint>/. That folder is
not a DVC output, so DVC does not delete it when it runs the stage again, and the rerun resumes from the last
complete checkpoint. The fingerprint hashes everything that shapes the run: the stage's params and
dependencies as dvc.yaml declares them (code and data included), the number of processes and the library
versions. Other params give another folder, so a run never resumes from a checkpoint that is not its own.
A finished run deletes its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import yaml
from omegaconf import DictConfig

from stages.core.params import ParamError, get, integer
from stages.core.provenance import TRAINING_LIBRARIES

ROOT = Path("checkpoints")
STATE = "trainer_state.json"  # written last: a checkpoint without it was cut short


@dataclass(frozen=True)
class Checkpoints:
    directory: Path
    every: int  # steps between checkpoints; 0 saves none

    def trainer_args(self) -> dict:
        """TrainingArguments that write checkpoints here (only the newest is kept)."""
        if self.every == 0:
            return {"output_dir": str(self.directory), "save_strategy": "no"}
        return {
            "output_dir": str(self.directory),
            "save_strategy": "steps",
            "save_steps": self.every,
            "save_total_limit": 1,
        }

    def last(self) -> str | None:
        """The newest complete checkpoint, for Trainer.train(resume_from_checkpoint=...), or None."""
        steps = {}
        for path in self.directory.glob("checkpoint-*"):
            step = path.name.removeprefix("checkpoint-")
            if step.isdigit() and (path / STATE).is_file():
                steps[int(step)] = path
        return str(steps[max(steps)]) if steps else None

    def remove(self) -> None:
        """Delete this run's checkpoints, and the folders above it that this leaves empty."""
        shutil.rmtree(self.directory, ignore_errors=True)
        for parent in (self.directory.parent, self.directory.parent.parent):
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def for_stage(stage: str, params: DictConfig, dvc_yaml: Path = Path("dvc.yaml")) -> Checkpoints:
    every = integer(params, "checkpoint.every", minimum=0)
    if not dvc_yaml.is_file():
        raise ParamError(f"{dvc_yaml} not found; run the stage from the repository root")
    declared = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]
    keys = []
    for entry in declared.get("params", []):  # "seed", "sft", or {params.yaml: [keys]}
        keys += [entry] if isinstance(entry, str) else [k for ks in entry.values() for k in ks]
    fingerprint = {
        "stage": stage,
        "params": {key: get(params, key) for key in sorted(keys)},
        "deps": {str(dep): _hash_path(Path(dep)) for dep in sorted(declared.get("deps", []))},
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "versions": {name: version(name) for name in TRAINING_LIBRARIES},
    }
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    return Checkpoints(ROOT / stage / digest[:16], every)


def _hash_path(path: Path) -> str | None:
    """Content hash of a file, or of every file under a folder (relative names included); None if absent."""
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if "__pycache__" in file.parts:
            continue
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
