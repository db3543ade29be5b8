"""Does TRL's colocated vLLM engine see the policy's new weights after a sync, on a CPU?

    python tests/vllm_colocate_sync.py <model dir> [--no-workaround]

Run by tests/test_vllm.py in a process of its own (an in-process vLLM engine keeps its RAM until the process
ends). Builds a GRPOTrainer as the grpo stage does with rollout.engine vllm and grpo.vllm.mode colocate,
changes every weight of the policy, syncs the weights as TRL does after each step (`sync_weights`), and
compares the engine's greedy answers with transformers' on the changed model, before and after the sync.
Prints one line: SYNC before <agree> after <agree> of <total>, or SYNC-ERROR <exception>.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(model_dir: str, workaround: bool) -> None:
    import datasets
    import torch
    from trl import GRPOConfig, GRPOTrainer
    from vllm import SamplingParams

    from stages.core.private import keep_vllm_cpu_weights_unpacked
    from stages.envs import get_env
    from stages.inference.models import load_model
    from stages.inference.rollout import HFEngine
    from stages.training.checkpoints import Checkpoints
    from stages.training.rewards import env_reward
    from stages.training.settings import trainer_defaults

    if workaround:
        keep_vllm_cpu_weights_unpacked()
    processor, model = load_model(model_dir)
    env = get_env("gp_l")
    records = env.generate({"train": 16, "eval_id": 0, "eval_ood_rule": 0, "corpus": 0}, {}, 0)["train"]
    conversations = [[{"role": "user", "content": r["prompt"]}] for r in records]
    prompts = datasets.Dataset.from_dict({"prompt": conversations, "task": [r["task"] for r in records]})
    saves = Checkpoints(Path(tempfile.mkdtemp()), every=0)
    defaults = trainer_defaults(saves, steps=1, batch_size=8, lr=1e-4, seed=0)
    vllm = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.2)
    args = GRPOConfig(**defaults, num_generations=4, max_completion_length=16, **vllm)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=env_reward(env),
        args=args,
        train_dataset=prompts,
        processing_class=processor,
    )
    texts = [
        processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
    ]

    def agreement() -> int:
        """How many of vLLM's greedy answers are transformers' on the policy as it is now."""
        outputs = trainer.vllm_generation.llm.generate(texts, SamplingParams(temperature=0.0, max_tokens=16))
        engine = HFEngine(trainer.model, processor, batch_size=16)
        expected = [answers[0][0] for answers in engine.generate(conversations, 1, 0.0, 1.0, 16)]
        return sum(out.outputs[0].text.strip() == text for out, text in zip(outputs, expected, strict=True))

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a different model: every weight moved
        for parameter in trainer.model.parameters():
            parameter.add_(
                torch.randn(parameter.shape, generator=generator) * parameter.std().clamp(min=0.05)
            )
    stale = agreement()
    try:
        trainer.vllm_generation.sync_weights()
    except Exception as error:  # the failure this script exists to show
        print(f"SYNC-ERROR {type(error).__name__}: {error}", flush=True)
        return
    print(f"SYNC before {stale} after {agreement()} of {len(records)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], workaround="--no-workaround" not in sys.argv)
