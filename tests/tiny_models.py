"""Tiny random-weight models of real architectures, with a small BPE tokenizer that carries
each family's FIM tokens. Built from configs here, saved as safetensors, loaded for real."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    print(i)\n",
    "function f(x) {\n  return x * 2;\n}\n",
    "import os\nimport sys\n\nif __name__ == '__main__':\n    main()\n",
    "héllo wörld 你好 🙂 — unicode text\n",
]

# family -> (special tokens, eos token, architecture)
FAMILIES = {
    "qwen2.5-coder": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
         "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
        "<|endoftext|>", "qwen2",
    ),
    "deepseek-coder": (
        ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>",
         "<｜fim▁end｜>"],
        "<｜end▁of▁sentence｜>", "llama",
    ),
    "starcoder": (
        ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
         "<repo_name>", "<file_sep>"],
        "<|endoftext|>", "starcoder2",
    ),
    "codellama": (["<s>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"], "</s>", "llama"),
}


def tiny_tokenizer(special_tokens: list[str], eos: str, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=eos, additional_special_tokens=special_tokens
    )


def _config(architecture: str, vocab_size: int, eos_id: int):
    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=eos_id,
    )
    if architecture == "qwen2":
        return Qwen2ForCausalLM, Qwen2Config(**common)
    if architecture == "llama":
        return LlamaForCausalLM, LlamaConfig(**common)
    return Starcoder2ForCausalLM, Starcoder2Config(**common)


def build_tiny_model(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a tiny model of `family` (tokenizer + safetensors weights) into `directory`."""
    special, eos, architecture = FAMILIES[family]
    tokenizer = tiny_tokenizer(special, eos)
    torch.manual_seed(seed)
    model_class, config = _config(architecture, len(tokenizer), tokenizer.convert_tokens_to_ids(eos))
    model = model_class(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def force_next_token(model, token_id: int) -> None:
    """Make the model predict `token_id` at every step: a zero projection plus a one-hot bias."""
    hidden, vocab = model.lm_head.in_features, model.lm_head.out_features
    head = torch.nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[token_id] = 10.0
    model.lm_head = head.to(model.device)


def build_plain_text_model(directory: Path, letters: str = "x_yz") -> Path:
    """A tiny qwen2.5-coder model whose suggestions are printable, for tests that read them
    off a screen: it writes the first or second single-byte token of `letters` (which one
    follows the sign of one hidden unit: logits ±100·h0), and the third or fourth (±50·h0) is
    always the runner-up, so alternatives branched at the first token are printable too. The
    other tokens' logits are zero."""
    build_tiny_model("qwen2.5-coder", directory)
    model = Qwen2ForCausalLM.from_pretrained(directory)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    ids = tokenizer.convert_tokens_to_ids(list(letters))
    with torch.no_grad():
        model.lm_head.weight.zero_()
        for token, weight in zip(ids, (100.0, -100.0, 50.0, -50.0)):
            model.lm_head.weight[token, 0] = weight
    model.save_pretrained(directory, safe_serialization=True)
    return directory
