"""Two processes under `accelerate launch` on CPU (gloo): one global batch, one writer, complete metrics;
started by hand or by `train.processes`."""

from __future__ import annotations

import json
import socket
import sys

import pytest
from conftest import REPO, copy_repo, run, set_params, stage
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow

DDP = REPO / "configs" / "accelerate" / "ddp.yaml"

MICRO_RUNS = {
    "sft.steps": 3,
    "sft.batch_size": 8,
    "grpo.steps": 2,
    "grpo.prompts_per_step": 2,
    "grpo.num_generations": 4,
    "rollout.max_new_tokens": 16,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(name: str, repo, processes: int):
    """The multi-GPU DDP config, as documented; without CUDA, torch.distributed runs it on CPU with gloo."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP)]
    command += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    return run([*command, "-m", f"stages.{name}"], repo)


@pytest.mark.parametrize("name", ["sft", "grpo"])
def test_two_processes_train_the_same_global_batch_and_write_once(micro_split, tmp_path, name):
    single = copy_repo(micro_split, tmp_path / "single")
    set_params(single, MICRO_RUNS)
    stage(name, single)
    expected = json.loads((single / "metrics" / f"{name}.json").read_text())

    double = copy_repo(micro_split, tmp_path / "double")
    set_params(double, MICRO_RUNS)
    if name == "sft":  # as dvc repro runs it: the stage hands itself over to accelerate launch
        set_params(double, {"train.processes": 2})
        result = stage(name, double)
        assert "sft: train.processes=2: -m accelerate.commands.launch" in result.stdout
    else:
        result = launch(name, double, processes=2)
    assert result.stdout.count(f"{name}: saved models/{name}") == 1  # only the main process writes
    metrics = json.loads((double / "metrics" / f"{name}.json").read_text())
    assert metrics.keys() == expected.keys() and None not in metrics.values()
    assert metrics["steps"] == expected["steps"] and metrics["train_prompts"] == expected["train_prompts"]
    if name == "sft":  # each step trains on the same sequences as one process, split in two
        assert metrics["train_tokens"] == expected["train_tokens"] and metrics["epochs"] == expected["epochs"]
    else:  # 2 prompts x 4 answers per step over both processes, not per process
        per_answer = metrics["generated_tokens"] / (2 * 2 * 4)
        assert 1 <= per_answer <= 16 and metrics["train_tokens"] > metrics["generated_tokens"]
    args = OmegaConf.load(double / "metrics" / f"{name}_live" / "params.yaml")
    assert args.per_device_train_batch_size * 2 == (8 if name == "sft" else 2 * 4)  # the global batch, halved
    loss = (double / "metrics" / f"{name}_live" / "plots" / "metrics" / "loss.tsv").read_text()
    assert len(loss.splitlines()) == 1 + metrics["steps"]
    assert (double / "models" / name / "model.safetensors").is_file()
    assert not (double / "checkpoints").exists()
