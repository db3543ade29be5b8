"""The private TRL and vLLM APIs the code touches (stages/core/private.py) are still there, as the code uses
them, in the installed TRL: an upgrade that changes one fails here, by name. vLLM's CPU gemm dispatch is
checked where vLLM is installed (tests/test_vllm.py, the colocated weight sync)."""

from __future__ import annotations

import inspect

import pytest
import trl.trainer.grpo_trainer
import trl.trainer.sft_trainer
from trl import GRPOTrainer

from stages.core.private import FUSED_LM_HEAD, TRL_METHODS, check_methods, check_trl


def test_the_installed_trl_has_every_private_method_with_its_parameters():
    check_trl()
    assert set(TRL_METHODS) <= set(dir(GRPOTrainer))


@pytest.mark.parametrize("name", list(TRL_METHODS))
def test_a_trl_without_a_private_method_or_with_other_parameters_fails_by_name(name):
    gone = type("Gone", (GRPOTrainer,), {name: None})
    with pytest.raises(SystemExit, match=f"GRPOTrainer has no {name}; install the pinned trl"):
        check_methods(gone)
    renamed = type("Renamed", (GRPOTrainer,), {name: lambda self, something_else: None})
    with pytest.raises(SystemExit, match=rf"GRPOTrainer.{name} takes \(something_else\), not"):
        check_methods(renamed)


def test_trl_trainers_still_call_the_model_with_the_fused_lm_head_keyword():
    """The FLOPs meter charges TRL's fused LM head from this keyword (tests/test_compute.py checks the
    count against FlopCounterMode)."""
    for module in (trl.trainer.grpo_trainer, trl.trainer.sft_trainer):
        assert f"{FUSED_LM_HEAD}=True" in inspect.getsource(module), module.__name__
