"""Build a transformers causal LM whose weights stay GGUF-packed (kernels/packed_linear.py).

The model class comes from transformers (Qwen2, Llama: the families whose GGUF tensors map
one to one onto it); its linear layers and token embedding are replaced by packed modules
over memory-mapped GGUF bytes, so loading converts nothing and the resident size stays close
to the file's. Norms and biases (F32 in GGUF) are copied. Files this cannot take exactly
(another architecture, rope scaling, a block format without a kernel) raise
`PackedUnsupported` with the reason; the caller then converts them to fp32 instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from kernels import gguf_blocks
from kernels.cpu_gemm import SmallBatchGemm
from kernels.packed_linear import PackedEmbedding, PackedLinear

from .gguf_file import GGUFFile, GGUFTensor
from .lean_forward import use_lean_forwards

ARCHITECTURES = ("qwen2", "llama")
_LINEAR = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}
_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


class PackedUnsupported(ValueError):
    """This GGUF file cannot run packed (the message says why)."""


def packed_config(gguf: GGUFFile):
    """The transformers config of a GGUF model, from its metadata."""
    from transformers import AutoConfig

    arch, meta = gguf.architecture, gguf.metadata
    if arch not in ARCHITECTURES:
        raise PackedUnsupported(f"architecture {arch!r} has no packed path (packed: {', '.join(ARCHITECTURES)})")
    if meta.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise PackedUnsupported(f"rope scaling {meta[f'{arch}.rope.scaling.type']!r} is not mapped")
    if "token_embd.weight" not in gguf.tensors:
        raise PackedUnsupported("no token_embd.weight tensor")

    def key(name, default=None):
        return meta.get(f"{arch}.{name}", default)

    heads = key("attention.head_count")
    config = dict(
        vocab_size=gguf.tensors["token_embd.weight"].shape[0],
        hidden_size=key("embedding_length"), intermediate_size=key("feed_forward_length"),
        num_hidden_layers=key("block_count"), num_attention_heads=heads,
        num_key_value_heads=key("attention.head_count_kv", heads),
        max_position_embeddings=key("context_length"), rms_norm_eps=key("attention.layer_norm_rms_epsilon"),
        rope_parameters={"rope_type": "default", "rope_theta": float(key("rope.freq_base", 10000.0))},
        tie_word_embeddings="output.weight" not in gguf.tensors,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )
    if key("attention.key_length") and key("attention.key_length") != config["hidden_size"] // heads:
        config["head_dim"] = key("attention.key_length")
    if None in (heads, config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]):
        raise PackedUnsupported(f"{gguf.path.name} lacks {arch} size metadata")
    return AutoConfig.for_model(arch, **config)


def build_packed_model(gguf: GGUFFile, config, gemm: SmallBatchGemm | None, device: torch.device):
    """A transformers model over the packed tensors of `gguf` (fp32 activations)."""
    from transformers import AutoModelForCausalLM

    unsupported = sorted({t.format_name for t in gguf.tensors.values() if t.type_id not in gguf_blocks.FORMATS_BY_ID})
    if unsupported:
        raise PackedUnsupported(f"block formats without a kernel: {', '.join(unsupported)}")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    try:
        _put_tensors(model, gguf, config, gemm, device)
    except KeyError as missing:
        raise PackedUnsupported(f"tensor {missing} is not in the GGUF file") from None
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise PackedUnsupported(f"tensors not found in the GGUF file: {', '.join(left[:5])}")
    model.eval().requires_grad_(False)
    if gemm is not None:
        use_lean_forwards(model, gemm)
    return model


def _put_tensors(model, gguf: GGUFFile, config, gemm: SmallBatchGemm | None, device: torch.device) -> None:
    inner = model.model
    embed = gguf.tensors["token_embd.weight"]
    inner.embed_tokens = PackedEmbedding(_bytes(embed, device), _format(embed), config.hidden_size, gemm)
    inner.norm.weight = _parameter(gguf.tensors["output_norm.weight"], device)
    head = gguf.tensors.get("output.weight", embed)
    model.lm_head = PackedLinear(_bytes(head, device), _format(head), config.hidden_size, gemm=gemm)
    for index, layer in enumerate(inner.layers):
        for short, path in _LINEAR.items():
            tensor = gguf.tensors[f"blk.{index}.{short}.weight"]
            bias = gguf.tensors.get(f"blk.{index}.{short}.bias")
            data = _bytes(tensor, device)
            if gguf.architecture == "llama" and short in ("attn_q", "attn_k"):
                data = _unpermute_rows(data, config.num_attention_heads if short == "attn_q"
                                       else config.num_key_value_heads)
            owner, name = path.split(".")
            setattr(getattr(layer, owner), name, PackedLinear(
                data, _format(tensor), tensor.shape[1], None if bias is None else _floats(bias, device), gemm))
        for short, name in _NORMS.items():
            getattr(layer, name).weight = _parameter(gguf.tensors[f"blk.{index}.{short}.weight"], device)
    inner.rotary_emb = type(inner.rotary_emb)(config=config).to(device)


def _format(tensor: GGUFTensor) -> gguf_blocks.BlockFormat:
    return gguf_blocks.FORMATS_BY_ID[tensor.type_id]


def _bytes(tensor: GGUFTensor, device: torch.device) -> torch.Tensor:
    """The packed rows as a (rows, row bytes) uint8 tensor sharing the file's memory map."""
    with warnings.catch_warnings():  # the map is read-only; nothing writes to weights
        warnings.simplefilter("ignore", UserWarning)
        data = torch.from_numpy(tensor.data).reshape(tensor.shape[0], -1)
    return data if device.type == "cpu" else data.to(device)


def _floats(tensor: GGUFTensor, device: torch.device) -> torch.Tensor:
    values = gguf_blocks.dequantize(torch.from_numpy(np.array(tensor.data)).reshape(1, -1), _format(tensor),
                                    1, int(np.prod(tensor.shape)))
    return values.reshape(tensor.shape).to(device)


def _parameter(tensor: GGUFTensor, device: torch.device) -> torch.nn.Parameter:
    return torch.nn.Parameter(_floats(tensor, device), requires_grad=False)


def _unpermute_rows(data: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's converter interleaves the rotary halves of each Q/K head; transformers
    expects them split. Rows are whole blocks, so the packed rows are reordered as they are."""
    rows = data.shape[0]
    return data.reshape(heads, rows // heads // 2, 2, -1).transpose(1, 2).reshape(rows, -1).contiguous()


def packed_tokenizer(gguf_path, config):
    """The tokenizer stored in the GGUF file, of the class transformers pairs with `config`
    (what AutoTokenizer builds, without its second parse of the whole file: ~2 s, not ~30)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    tokenizer_class = TOKENIZER_MAPPING.get(type(config), None) or PreTrainedTokenizerFast
    path = Path(gguf_path)
    return tokenizer_class.from_pretrained(path.parent, gguf_file=path.name)
