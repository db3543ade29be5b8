"""The vision-language envs: the embedded Qwen2-VL through `dvc repro`, and local Qwen2-VL and Qwen2.5-VL
checkpoints.

Each checkpoint is laid out as Qwen2-VL-Instruct's (or Qwen2.5-VL-Instruct's) is: a Qwen2 BPE tokenizer with
the vision tokens, the ChatML template with image parts (chat_template.json), the image processor's
preprocessor_config.json and a tiny model of the family in bfloat16. No torchvision: images go through the
PIL image processor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, copy_repo, make_repo, run, set_params, stage
from test_real_checkpoint import ENDOFTEXT, IM_END, build_qwen_checkpoint, run_on_checkpoint, tsv_column
from test_score_split import contents

pytestmark = pytest.mark.slow

VISION = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")
# Qwen2-VL-Instruct's template without video: a default system turn, then image parts and text.
QWEN_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Each family's tiny tower: Qwen2.5-VL's has Qwen2's text model, but a gated-MLP, RMSNorm vision tower with
# window attention (full attention in the blocks listed) and a merger to the text width.
VISION_CONFIGS = {
    "qwen2_vl": dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2),
    "qwen2_5_vl": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        window_size=56,
        fullatt_block_indexes=[1],
    ),
}


def build_qwen_vl_checkpoint(path: Path, texts: list[str], family: str = "qwen2_vl") -> Path:
    """A tiny chat checkpoint laid out as Qwen2-VL-Instruct's or Qwen2.5-VL-Instruct's (`family`), its
    tokenizer trained on texts."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, GenerationConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    build_qwen_checkpoint(path, texts)  # the text checkpoint's tokenizer; its model is replaced below
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(list(VISION), special_tokens=True)
    tokenizer.chat_template = None  # the template lives in chat_template.json, as in Qwen2-VL's repository
    tokenizer.save_pretrained(path)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (ENDOFTEXT, IM_END, *VISION)}
    config = AutoConfig.for_model(
        family,
        text_config=dict(
            vocab_size=(len(tokenizer) + 63) // 64 * 64,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids[ENDOFTEXT],
            eos_token_id=ids[IM_END],
            tie_word_embeddings=True,
        ),
        vision_config=VISION_CONFIGS[family],
        image_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=[ids[IM_END], ids[ENDOFTEXT]],
        pad_token_id=ids[ENDOFTEXT],
        do_sample=True,
        top_k=1,
        top_p=0.001,  # Qwen2-VL-Instruct's near-greedy defaults, which the rollout engine must override
    )
    for stale in path.glob("*.safetensors"):
        stale.unlink()
    model.save_pretrained(path, safe_serialization=True)
    images = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=256 * 128)
    images.save_pretrained(path)  # preprocessor_config.json
    (path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_VL_TEMPLATE}))
    return path


REAL_VL = {
    "env": "gp_vl",
    "generate.gp.sizes": dict(train=12, eval_id=4, eval_ood_rule=4, eval_ood_visual=4, corpus=40),
    "generate.gp.num_cards": [2],
    "base.coldstart_steps": 3,
    "base.batch_size": 4,
    "score.k": 2,
    "split.easy_min": None,  # the default for gp_vl assumes score.k=8
    "rollout.max_new_tokens": 12,
    "sft.steps": 2,
    "sft.batch_size": 4,
    "grpo.steps": 2,
    "grpo.prompts_per_step": 2,
    "grpo.num_generations": 2,
    "grpo.viter": 2,  # the image stays in every retry's context
    "curves.eval_every": 1,
    "curves.prompts": 2,
    "evaluate.k": 1,
    "evaluate.samples": 2,
}


@pytest.mark.parametrize(
    ("family", "architecture", "processor_class"),
    [
        ("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
        ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    ],
)
def test_pipeline_on_a_qwen_vl_checkpoint(tmp_path, monkeypatch, family, architecture, processor_class):
    from stages.inference.models import load_model

    def build(path, texts):
        return build_qwen_vl_checkpoint(path, texts, family)

    repo, _ = run_on_checkpoint(tmp_path, monkeypatch, REAL_VL, build)
    for name in ("base", "sft", "grpo"):
        model_dir = repo / "models" / name
        config = json.loads((model_dir / "config.json").read_text())
        assert config["architectures"] == [architecture]
        processor, _ = load_model(model_dir)
        assert type(processor).__name__ == processor_class and processor.chat_template == QWEN_VL_TEMPLATE
        metrics = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
        assert metrics["prompts"] == {"id": 4, "ood_rule": 4, "ood_visual": 4}
        for section in ("id", "ood_rule", "ood_visual"):
            assert 0.0 <= metrics[section]["recognition"] <= 1.0
    score_metrics = json.loads((repo / "metrics" / "score.json").read_text())
    assert score_metrics["prompts"] == 12 and score_metrics["generated_tokens"] > 0
    for name in ("sft", "grpo"):
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert metrics["steps"] == 2 and metrics["flops"] > 0
        points = (
            repo / "metrics" / f"{name}_live" / "plots" / "custom" / "success_vs_flops.json"
        ).read_text()
        assert len(json.loads(points)) == 3  # steps 0, 1 and 2
    # grpo.viter=2: some completion holds two model attempts, generated with the prompt's image
    lengths = tsv_column(repo / "metrics/grpo_live/plots/metrics/completions/max_length.tsv", "max_length")
    assert max(lengths) > REAL_VL["rollout.max_new_tokens"]


# The embedded Qwen2-VL through DVC: small images, a tiny model and a few steps of every stage.
MICRO_VL = {
    "env": "gp_vl",
    "generate.gp.image_width": 112,
    "generate.gp.image_height": 56,
    "model.vision_hidden_size": 32,
    "model.vision_layers": 1,
    "base.steps": 4,
    "base.batch_size": 16,
    "score.temperature": 0.0,
    "split.easy_min": None,  # the default for gp_vl assumes score.k=8
    "rollout.max_new_tokens": 12,
    "evaluate.k": 1,
    "evaluate.samples": 1,
    "sft.steps": 2,
    "sft.batch_size": 8,
    "grpo.steps": 2,
    "grpo.prompts_per_step": 2,
    "grpo.num_generations": 2,
    "curves.eval_every": 0,
    "generate.gp.sizes": dict(train=16, eval_id=4, eval_ood_rule=4, eval_ood_visual=4, corpus=64),
}


@pytest.fixture(scope="module")
def micro_vl(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("vl") / "repo", MICRO_VL)
    run(["dvc", "repro"], repo)
    return repo


def test_dvc_repro_on_the_embedded_vl_model(micro_vl):
    repo = micro_vl
    config = json.loads((repo / "models" / "base" / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    for name in ("base", "sft", "grpo"):
        metrics = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
        assert {"id", "ood_rule", "ood_visual"} <= metrics.keys()
        assert all("recognition" in metrics[s] for s in ("id", "ood_rule", "ood_visual"))
    summary = (repo / "metrics" / "summary.md").read_text()
    assert "OOD visual" in summary and "recognition" in summary
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert (
        sum(split[f"{b}_count"] for b in ("easy", "medium", "hard")) == MICRO_VL["generate.gp.sizes"]["train"]
    )


@pytest.mark.parametrize(
    ("module", "overrides", "named"),
    [
        ("base", {"env": "gp_l", "model.path": "models/base"}, "model.path"),  # a VL checkpoint, a text env
        ("base", {"model.path": "text checkpoint"}, "model.path"),  # and the reverse
    ],
)
def test_vl_bad_params_stop_with_one_line(micro_vl, tmp_path, module, overrides, named):
    repo = copy_repo(micro_vl, tmp_path / "repo")
    if overrides.get("model.path") == "text checkpoint":
        overrides = {"model.path": str(build_qwen_checkpoint(tmp_path / "qwen", ["Cards : 5 J ."]))}
    set_params(repo, overrides)
    before = contents(repo)
    assert_one_line_error(stage(module, repo, check=False), named)
    assert contents(repo) == before  # nothing half-written: every output and metrics file byte for byte


def test_an_image_that_cannot_be_decoded_stops_with_one_line(micro_vl, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = copy_repo(micro_vl, tmp_path / "repo")
    path = repo / "data" / "generated" / "eval_id.parquet"
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    images[1] = {"bytes": b"not a png", "path": None}
    column = pa.array(images, type=table.schema.field("image").type)
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", column), path)
    result = run([sys.executable, "-m", "stages.evaluate", "base"], repo, check=False)
    assert_one_line_error(result, "eval_id.parquet", "record 1")


def test_grpo_retries_are_generated_with_the_image(micro_vl, tmp_path):
    # grpo.viter on a VL env: every attempt, the retries included, is generated with its prompt's image, its
    # pixels and a token-type row that covers the whole context (image tokens 1, text 0)
    import datasets
    from trl import GRPOConfig, GRPOTrainer
    from trl.data_utils import prepare_multimodal_messages

    from stages.core.storage import read_records
    from stages.envs import get_env
    from stages.inference.models import IMAGE_PAD, load_model
    from stages.training.checkpoints import Checkpoints
    from stages.training.rewards import env_reward
    from stages.training.settings import trainer_defaults
    from stages.training.viter import RECORD, FeedbackRollout

    env = get_env("gp_vl")
    processor, model = load_model(micro_vl / "models" / "base")
    records = read_records(micro_vl / "data" / "generated" / "train.parquet", 4)
    turns = [[{"role": "user", "content": r["prompt"], RECORD: r["id"]}] for r in records]
    train = datasets.Dataset.from_dict({"prompt": turns})
    args = GRPOConfig(
        **trainer_defaults(Checkpoints(tmp_path / "out", every=0), steps=1, batch_size=8, lr=1e-4, seed=0),
        num_generations=2,
        max_completion_length=8,
    )
    trainer = GRPOTrainer(
        model=model, args=args, train_dataset=train, processing_class=processor, reward_funcs=env_reward(env)
    )
    calls = []
    generate = trainer._generate_single_turn

    def recorded(inputs, images, fields, n):
        calls.append((inputs, images, fields))
        return generate(inputs, images, fields, n)

    trainer._generate_single_turn = recorded
    prompts = [  # as TRL hands them to a rollout_func: image parts, each prompt once per generation
        prepare_multimodal_messages(turn, images=[record["image"]])
        for turn, record in zip(turns, records, strict=True)
        for _ in range(2)
    ]
    tasks = {r["id"]: r["task"] for r in records}
    out = FeedbackRollout(env, tasks, viter=3)(prompts, trainer)
    assert len(calls) >= 2 and len(out["completion_ids"]) == len(prompts)  # the micro model fails, so retries
    image_pad = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    tokens_per_image = sum(ids.count(image_pad) for ids in calls[0][0]) // len(calls[0][0])
    for inputs, images, fields in calls:
        assert len(images) == len(inputs) and all(len(i) == 1 for i in images)
        assert len(fields["pixel_values"]) == len(inputs) * tokens_per_image * 4  # 2x2 patches per token
        assert [len(row) for row in fields["mm_token_type_ids"]] == [len(ids) for ids in inputs]
        assert [sum(row) for row in fields["mm_token_type_ids"]] == [ids.count(image_pad) for ids in inputs]
    assert max(map(len, calls[-1][0])) > max(map(len, calls[0][0]))  # the retries carry their history


def test_the_vision_tower_learns_at_its_share_of_the_rate(micro_vl, tmp_path):
    # model.vision_lr_scale: the vision tower's groups get that share of the lr, all along the schedule;
    # at 0 the tower stays as it was while the language model trains
    import torch
    from trl import SFTConfig, SFTTrainer

    from stages.core.storage import read_split
    from stages.inference.models import load_model
    from stages.training.checkpoints import Checkpoints
    from stages.training.data import conversational
    from stages.training.run import train
    from stages.training.settings import trainer_defaults

    data = conversational(read_split(micro_vl / "data" / "generated" / "train.parquet"))
    for scale in (0.1, 0.0):
        processor, model = load_model(micro_vl / "models" / "base")
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        saves = Checkpoints(tmp_path / f"out{scale}", every=0)
        args = SFTConfig(**trainer_defaults(saves, steps=3, batch_size=4, lr=1e-3, seed=0), max_length=256)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=processor)
        train(trainer, saves, vision_lr_scale=scale)
        groups = trainer.optimizer.param_groups
        trained = [id(p) for g in groups for p in g["params"]]
        assert sorted(trained) == sorted(id(p) for p in model.parameters() if p.requires_grad)
        vision = {id(p) for name, p in model.named_parameters() if ".visual." in name}
        # every group is all vision or all language; initial_lr is the schedule's base rate
        rates = {(id(p) in vision, g["initial_lr"]) for g in groups for p in g["params"]}
        assert rates == {(False, 1e-3), (True, 1e-3 * scale)}
        moved = {name: not torch.equal(p, before[name]) for name, p in model.named_parameters()}
        assert any(moved[n] for n in moved if ".visual." not in n)
        assert any(moved[n] for n in moved if ".visual." in n) == (scale > 0)


def test_lora_adapts_the_language_model_and_leaves_the_vision_tower(micro_vl, tmp_path):
    # sft.lora on a VL env: adapters on the language model only, merged into models/sft; the tower stays
    from safetensors.torch import load_file

    repo = copy_repo(micro_vl, tmp_path / "repo")
    set_params(repo, {"sft.lora.enabled": True, "sft.lora.rank": 4, "sft.lora.alpha": 8, "sft.lr": 1e-2})
    stage("sft", repo)
    base = load_file(repo / "models" / "base" / "model.safetensors")
    sft = load_file(repo / "models" / "sft" / "model.safetensors")
    assert sft.keys() == base.keys()  # merged: no lora_ weights left
    changed = {name for name in base if not (base[name] == sft[name]).all()}
    tower = {name for name in base if f".{name}".startswith((".visual.", ".model.visual."))}
    assert tower and changed and not changed & tower
    assert any(name.endswith("q_proj.weight") for name in changed)
    assert json.loads((repo / "metrics" / "sft.json").read_text())["lora_rank"] == 4
