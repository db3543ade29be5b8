"""The path a researcher takes with a real checkpoint: `model.path` set to a Qwen2-style model directory.

The checkpoint is built offline: a byte-level BPE tokenizer (Qwen2's normalizer, pre-tokenizer regex and
decoder) with Qwen's special tokens and ChatML template, a tiny Qwen2ForCausalLM saved in bfloat16 with
safetensors, and a generation_config.json with Qwen2.5-Instruct's sampling defaults. The pipeline then runs
on it end to end: base (cold start), score, split, sft, grpo with verification iterations, evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_repo, stage

from stages.envs import FEEDBACK_PREFIX, get_env

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# Qwen2.5-Instruct's template, shortened: a default system turn, then <|im_start|>role\n...<|im_end|>\n per
# message. Unlike the embedded template, the newline after <|im_end|> follows the answer's eos token.
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def build_qwen_checkpoint(
    path: Path, texts: list[str], vocab_size: int = 512, hidden_size: int = 48, heads: int = 4
) -> Path:
    """A tiny Qwen2 chat checkpoint laid out like Qwen2.5-Instruct's, its BPE tokenizer trained on texts."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    for token in (ENDOFTEXT, IM_START, IM_END):  # after the BPE vocabulary, as in Qwen's
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]],
        unk_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=QWEN_TEMPLATE,
        model_max_length=4096,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (ENDOFTEXT, IM_START, IM_END)}
    config = Qwen2Config(
        vocab_size=(len(tokenizer) + 63) // 64 * 64,  # padded past the tokenizer, as Qwen's embeddings are
        hidden_size=hidden_size,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,  # grouped-query attention
        max_position_embeddings=1024,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)  # Qwen ships bfloat16 weights
    # Qwen2.5-Instruct's generation defaults: stop on either end token, sample with top-k and a penalty.
    model.generation_config = GenerationConfig(
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=[ids[IM_END], ids[ENDOFTEXT]],
        pad_token_id=ids[ENDOFTEXT],
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_rollout_stops_at_every_end_token_the_checkpoint_declares(tmp_path):
    """Qwen's generation_config.json lists <|endoftext|> next to the tokenizer's eos <|im_end|>. A model that
    ends its answer with <|endoftext|> (as Qwen base models do) stops there, as it would under TRL or vLLM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.inference.rollout import make_engine, rollout

    env = get_env("gp_l")
    records = env.generate({"train": 4, "eval_id": 0, "eval_ood_rule": 0, "corpus": 0}, {}, 0)["train"]
    path = build_qwen_checkpoint(tmp_path / "qwen", [r["prompt"] + " " + r["answer"] for r in records])
    end = AutoTokenizer.from_pretrained(path).convert_tokens_to_ids(ENDOFTEXT)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():  # a model whose every next token is <|endoftext|>
        for layer in model.model.layers:  # no attention or MLP output: the last hidden state is the embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.get_input_embeddings().weight  # tied to the output layer
        embeddings.zero_()
        embeddings[:, 0] = 1.0
        embeddings[end, 0] = 10.0
    model.save_pretrained(path)

    engine = make_engine("hf", path, batch_size=4, seed=0)
    for temperature in (0.0, 1.0):
        episodes = rollout(engine, env, records, 2, temperature, 1.0, max_new_tokens=16)
        assert all(e.attempts == [""] and e.generated_tokens == 1 for group in episodes for e in group)


# Micro sizes: two-card hands keep the answers short ("Numbers : 9 4 . Steps : 4 + 9 = 13" is 18 BPE tokens,
# every digit its own token as in Qwen's pre-tokenizer).
MAX_NEW_TOKENS = 24
REAL = {
    "generate.gp.sizes": dict(train=16, eval_id=4, eval_ood_rule=4, eval_ood_visual=2, corpus=200),
    "generate.gp.num_cards": [2],
    "base.coldstart_steps": 40,
    "base.batch_size": 16,
    "base.coldstart_lr": 1e-2,
    "score.k": 2,
    "rollout.max_new_tokens": MAX_NEW_TOKENS,
    "sft.steps": 2,
    "sft.batch_size": 8,
    "grpo.steps": 2,
    "grpo.prompts_per_step": 2,
    "grpo.num_generations": 4,
    "grpo.viter": 2,
    "evaluate.k": 1,
    "evaluate.samples": 2,
}


def tsv_column(path: Path, column: str) -> list[float]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [float(row[header.index(column)]) for row in rows]


def run_on_checkpoint(tmp_path: Path, monkeypatch, overrides: dict, build) -> tuple[Path, Path]:
    """(repository, checkpoint): data generated, a checkpoint built by `build(path, texts)` on the corpus's
    words, then the stages dvc.yaml runs, without DVC's overhead: the training stages in their own processes,
    the sampling-only ones (score, evaluate) in this one, which saves four interpreter start-ups."""
    from stages import evaluate, score
    from stages.core.storage import read_split

    checkpoint = tmp_path / "checkpoint"
    repo = make_repo(tmp_path / "repo", overrides | {"model.path": str(checkpoint)})
    stage("generate", repo)
    corpus = read_split(repo / "data" / "generated" / "corpus.parquet")
    build(checkpoint, [*corpus["prompt"], *corpus["answer"], FEEDBACK_PREFIX])
    monkeypatch.chdir(repo)
    stage("base", repo)
    score.main()
    stage("split", repo)
    stage("sft", repo)
    stage("grpo", repo)
    for name in ("base", "sft", "grpo"):
        evaluate.main([name])
    return repo, checkpoint


@pytest.mark.slow
def test_pipeline_on_a_qwen_style_checkpoint(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from stages.core.storage import read_split
    from stages.training.viter import feedback_turn

    repo, checkpoint = run_on_checkpoint(tmp_path, monkeypatch, REAL, build_qwen_checkpoint)

    # Every model is a Qwen2 checkpoint with the original BPE tokenizer, special tokens and chat template.
    source = AutoTokenizer.from_pretrained(checkpoint)
    train = read_split(repo / "data" / "generated" / "train.parquet").to_list()
    for name in ("base", "sft", "grpo"):
        model_dir = repo / "models" / name
        config = json.loads((model_dir / "config.json").read_text())
        assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        assert type(tokenizer).__name__ == "Qwen2Tokenizer" and tokenizer.chat_template == QWEN_TEMPLATE
        assert (tokenizer.eos_token, tokenizer.pad_token) == (IM_END, ENDOFTEXT)
        assert tokenizer(train[0]["prompt"]).input_ids == source(train[0]["prompt"]).input_ids
    info = json.loads((repo / "models" / "base" / "base_info.json").read_text())
    assert info["steps"] == REAL["base.coldstart_steps"] and info["last_loss"] < info["first_loss"]

    # score: pass counts for every training prompt; the cold-started model ends answers with <|im_end|>, so
    # the samples stop before the length limit (eos handling through the Qwen template and generation config).
    k = REAL["score.k"]
    rows = (repo / "data" / "scores.csv").read_text().splitlines()
    assert rows[0] == "id,passes,k" and [row.split(",")[0] for row in rows[1:]] == [r["id"] for r in train]
    assert all(0 <= int(row.split(",")[1]) <= k for row in rows[1:])
    score = json.loads((repo / "metrics" / "score.json").read_text())
    assert 0 < score["generated_tokens"] < len(train) * k * MAX_NEW_TOKENS

    # sft and grpo trained for the steps set, and count their compute.
    for name, steps in (("sft", REAL["sft.steps"]), ("grpo", REAL["grpo.steps"])):
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert metrics["steps"] == steps and metrics["flops"] > 0 and metrics["train_tokens"] > 0

    # grpo.viter=2: some completion holds two model attempts (TRL counts model tokens only, each attempt at
    # most max_new_tokens), with the verifier's reason as a ChatML user turn between them.
    lengths = tsv_column(repo / "metrics/grpo_live/plots/metrics/completions/max_length.tsv", "max_length")
    assert max(lengths) > MAX_NEW_TOKENS
    tokenizer = AutoTokenizer.from_pretrained(repo / "models" / "base")
    turn = feedback_turn(tokenizer, "the result is 12, not 13")
    assert tokenizer.decode(turn) == (
        f"\n{IM_START}user\n{FEEDBACK_PREFIX}the result is 12, not 13{IM_END}\n{IM_START}assistant\n"
    )
    # the answer (closed by <|im_end|>) plus the feedback turn is exactly what the chat template renders, so
    # the second attempt is trained on the context it is sampled in
    prompt = [{"role": "user", "content": train[0]["prompt"]}]
    answer = tokenizer(train[0]["answer"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    retry = prompt + [
        {"role": "assistant", "content": train[0]["answer"]},
        {"role": "user", "content": FEEDBACK_PREFIX + "the result is 12, not 13"},
    ]
    rendered = tokenizer.apply_chat_template(retry, add_generation_prompt=True, return_dict=False)
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
    assert prompt_ids + answer + turn == rendered

    # evaluate: ID and OOD-rule sections for each model
    for name in ("base", "sft", "grpo"):
        metrics = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
        assert metrics["prompts"] == {"id": 4, "ood_rule": 4}
        for section in ("id", "ood_rule"):
            assert set(metrics[section]) == {"greedy_success", "mean_success", "pass_at_k"}
            assert all(0.0 <= value <= 1.0 for value in metrics[section].values())


@pytest.mark.slow
def test_a_changed_checkpoint_reruns_base(tmp_path):
    """model.path lies outside the repository: the model_source stage hashes its files, so `dvc repro`
    reruns base when a file under it changes, and only then."""
    from conftest import run

    checkpoint = build_qwen_checkpoint(tmp_path / "checkpoint", ["Cards : 5 J . Numbers : 5 10 ."])
    overrides = {"model.path": str(checkpoint), "base.coldstart_steps": 0} | {
        "generate.gp.sizes": dict(train=4, eval_id=2, eval_ood_rule=2, eval_ood_visual=2, corpus=4)
    }
    repo = make_repo(tmp_path / "repo", overrides)
    assert "Running stage 'base'" in run(["dvc", "repro", "base"], repo).stdout
    again = run(["dvc", "repro", "base"], repo).stdout
    assert "Running stage 'model_source'" in again and "Running stage 'base'" not in again
    config = json.loads((checkpoint / "generation_config.json").read_text())
    (checkpoint / "generation_config.json").write_text(json.dumps(config | {"temperature": 0.5}))
    assert "Running stage 'base'" in run(["dvc", "repro", "base"], repo).stdout
    source = json.loads((repo / "data" / "model_source.json").read_text())
    assert source["model.path"] == str(checkpoint) and "generation_config.json" in source["files"]
    assert json.loads((repo / "models" / "base" / "generation_config.json").read_text())["temperature"] == 0.5
