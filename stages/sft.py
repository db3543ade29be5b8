"""Stage `sft`: supervised fine-tuning of models/base on the oracle answers of a difficulty subset.

    dvc repro sft                                   # or: python -m stages.sft
    dvc exp run -S subset=easy_medium               # SFT-EM (DC-SFT); medium is SFT-M, all is plain SFT
    accelerate launch --config_file configs/accelerate/ddp.yaml -m stages.sft      # multi-GPU, same params

TRL's SFTTrainer on the ID training prompts selected by `subset` (all, easy, medium, hard, easy_medium; the
buckets come from the `split` stage), with the environment's oracle answers as targets and the loss on the
completion only. `sft.balance` cuts every bucket to the size of the smallest first. Full fine-tuning, or LoRA
(`sft.lora.*`) merged into the weights, so models/sft is a plain checkpoint like models/base.

Writes models/sft, metrics/sft.json (wall time, tokens, FLOPs by part, gradient norms, provenance) and
curves in metrics/sft_live. The model is written all-or-nothing: a run killed midway leaves no models/sft
behind (or the previous one untouched); running the stage again resumes from its last checkpoint
(stages/training/checkpoints.py).
"""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from stages.core.params import choice, flag, integer, load_params, number, per_env
from stages.core.paths import BASE
from stages.envs import ENV_NAMES, get_env
from stages.inference.models import count_parameters, load_model
from stages.inference.rollout import engine_params
from stages.training.data import SUBSETS, conversational, select_prompts
from stages.training.launch import launch_processes
from stages.training.run import TrainingRun, series
from stages.training.settings import check_lora_targets, execution, lora_config, per_process


def main() -> None:
    params = load_params()
    launch_processes("sft", params)
    env = get_env(choice(params, "env", ENV_NAMES))
    run = TrainingRun("sft", params, env, integer(params, "seed", minimum=0))
    subset = choice(params, "subset", SUBSETS)
    balance = flag(params, "sft.balance")
    steps = integer(params, per_env(params, "sft.steps", env.name), minimum=1)
    batch_size = per_process(integer(params, "sft.batch_size", minimum=1), "sft.batch_size")
    hardware = execution(params, batch_size, "sft.batch_size")
    lr = number(params, "sft.lr", minimum=0.0)
    max_length = integer(params, "model.max_length", minimum=16)
    _, _, max_new_tokens = engine_params(params)
    peft_config = lora_config(params, "sft", env.visual)
    data, sizes = select_prompts(subset, balance, "subset", "sft.balance")
    processor, model = load_model(BASE, param="models/base")  # a tokenizer, or a VLM's processor
    check_lora_targets(peft_config, model, "sft.lora.target_modules")
    parameters = count_parameters(model)  # N of the paper's formula, counted before LoRA adds its own
    print(
        f"sft: subset={subset} balance={balance}: {len(data)} prompts {sizes}, {steps} steps, "
        f"{'LoRA r=' + str(peft_config.r) if peft_config else 'full fine-tuning'}"
    )

    # Non-padding tokens seen, kept in the trainer state, so a resumed run counts the steps before it too.
    args = SFTConfig(
        **run.trainer_defaults(steps=steps, batch_size=batch_size, lr=lr, **hardware),
        max_length=max_length,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=conversational(data),
        processing_class=processor,
        peft_config=peft_config,
    )
    run.train(trainer, processor, max_new_tokens)

    def extra() -> dict:
        accuracy = series(trainer, "mean_token_accuracy")
        return {
            "subset": subset,
            "balance": balance,
            "train_prompts": len(data),
            **{f"train_prompts_{name}": n for name, n in sizes.items() if name != "all"},
            "epochs": round(steps * batch_size * trainer.args.world_size / len(data), 2),
            "lora_rank": peft_config.r if peft_config else 0,
            "token_accuracy_last": round(accuracy[-1], 4) if accuracy else None,
        }

    run.finish(
        trainer,
        processor,
        parameters=parameters,
        train_tokens=trainer.state.num_input_tokens_seen,
        extra=extra,
    )


if __name__ == "__main__":
    main()
