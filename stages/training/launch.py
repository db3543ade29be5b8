"""`train.processes`: a training stage (base, sft, grpo) started as `python -m stages.<stage>`, as dvc.yaml
runs it, hands itself over to `accelerate launch` when more than one process is asked for. So `dvc repro`,
`dvc exp run` and the study train on several GPUs with the same command as on one.

    dvc exp run -S train.processes=4                     # DDP on 4 GPUs (configs/accelerate/ddp.yaml)
    dvc exp run -S train.processes=8 -S train.accelerate_config=configs/accelerate/zero2.yaml
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from omegaconf import OmegaConf

from stages.core.params import ParamError, get, integer


def launch_processes(stage: str, params) -> None:
    """Replace this process by `accelerate launch --num_processes N -m stages.<stage>` when train.processes
    is N > 1 and no launcher started it (WORLD_SIZE unset); return otherwise. A stage started by the user's
    own `accelerate launch` keeps the processes it was given."""
    processes = integer(params, "train.processes", minimum=1)
    key = "train.accelerate_config"
    config = Path(str(get(params, key)))  # validated only where it is used: one process needs no config
    if processes == 1 or "WORLD_SIZE" in os.environ:
        return
    if not config.is_file():
        raise ParamError(
            f"{key}={str(config)!r} is not a file; use configs/accelerate/ddp.yaml or zero2.yaml"
        )
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--num_processes", str(processes)]
    if OmegaConf.load(config).get("main_process_port") is None:  # two studies' stages may run side by side
        command += ["--main_process_port", str(free_port())]
    command += ["-m", f"stages.{stage}"]
    print(f"{stage}: train.processes={processes}: {' '.join(command[1:])}", flush=True)
    os.execv(sys.executable, command)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
