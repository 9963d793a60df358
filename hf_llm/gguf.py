"""An exported model folder → one GGUF file that llama.cpp (and Ollama, LM Studio) runs, written with `gguf`, the
Python library of llama.cpp itself.

llama.cpp's own converter (`convert_hf_to_gguf.py`) recognises a BPE tokenizer by hashing the ids it gives a fixed
test string, so every newly trained vocabulary is refused. Here the pre-tokenizer is read from `tokenizer.json` and
declared by name instead: a byte-level BPE whose pre-tokenizer is `ByteLevel(use_regex=True)` (GPT-2's split regex,
what hf_llm trains) is llama.cpp's `gpt-2` pre-tokenizer, checked token for token against llama.cpp
(benchmarks/llama_cpp_check.py). A tokenizer whose splitting cannot be named exactly (a normalizer, another regex, a
SentencePiece model, ...) is refused rather than written with a guess: llama.cpp would run, tokenize differently and
produce quietly worse text.

Architectures: the Llama family the presets build (`model_type: llama`, default RoPE, no biases). Tensors follow
llama.cpp's converter: GGUF names from gguf's own table, and q/k projections permuted to GGML's RoPE layout.
Output types: f32 (exact), f16 and q8_0 (2-D weights; norms stay f32, as llama.cpp writes them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .config import GGUF_OUTTYPES as OUTTYPES
from .errors import ConfigError

ARCHITECTURES = ("llama",)
# llama.cpp's name for tokenizers' ByteLevel(use_regex=True) split (GPT-2's regex); "gpt2" is refused at load.
GPT2_PRE = "gpt-2"


def _require_gguf():
    try:
        import gguf
    except ImportError as e:  # a dependency of hf_llm; only a broken environment lacks it
        raise ConfigError(f"GGUF export needs the gguf package (pip install gguf): {e}") from None
    return gguf


# ------------------------------------------------------------------------------------------------ checks


def check_architecture(config: Any) -> None:
    """Refuse, before any work, a model llama.cpp's Llama graph would run differently."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"GGUF export supports {', '.join(ARCHITECTURES)} models (what the presets build); this "
                          f"model is {model_type!r}. Use llama.cpp's convert_hf_to_gguf.py for other architectures")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"GGUF export supports default RoPE only; this model has rope_type={rope['rope_type']!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            raise ConfigError(f"GGUF export: {flag}=true is not written (llama.cpp's Llama loader would ignore it)")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ConfigError(f"GGUF export: llama.cpp's Llama uses SiLU; this model has hidden_act={config.hidden_act!r}")


def tokenizer_metadata(tokenizer_json: dict, vocab_size: int, adds: tuple[bool, bool]) -> dict[str, Any]:
    """The `tokenizer.ggml.*` fields for a tokenizer.json, or a ConfigError naming what cannot be declared exactly.

    `vocab_size` is the model's (embedding rows, possibly padded past the tokenizer); `adds` says whether the
    tokenizer puts BOS / EOS around a text by itself."""
    model = tokenizer_json.get("model") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE":
        raise ConfigError(f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')!r}")
    if tokenizer_json.get("normalizer") is not None:
        raise ConfigError("GGUF export: the tokenizer has a normalizer, which llama.cpp's gpt-2 pre-tokenizer does not "
                          f"apply ({tokenizer_json['normalizer'].get('type')}); it would tokenize differently")
    if not (pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")):
        raise ConfigError(
            "GGUF export declares the pre-tokenizer by llama.cpp's name and knows one exactly: ByteLevel with "
            f"use_regex=true and add_prefix_space=false (llama.cpp's {GPT2_PRE!r}); this tokenizer has "
            f"{json.dumps(pre)[:200]}")
    if decoder.get("type") != "ByteLevel":
        raise ConfigError(f"GGUF export: a byte-level BPE needs the ByteLevel decoder, got {decoder.get('type')!r}")
    for key, ok in (("dropout", None), ("continuing_subword_prefix", None), ("end_of_word_suffix", None)):
        if model.get(key) not in (ok, ""):
            raise ConfigError(f"GGUF export: BPE {key}={model[key]!r} has no llama.cpp equivalent")
    if model.get("byte_fallback") or model.get("ignore_merges"):
        raise ConfigError("GGUF export: BPE byte_fallback / ignore_merges have no equivalent in llama.cpp's gpt-2 BPE")

    gguf = _require_gguf()
    tokens: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in tokens}
    for added in tokenizer_json.get("added_tokens") or []:
        if not added.get("special"):
            raise ConfigError(f"GGUF export: added token {added['content']!r} is not special; only special added "
                              "tokens (matched whole, as llama.cpp matches CONTROL tokens) are declared")
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL
    if max(tokens) >= vocab_size:
        raise ConfigError(f"GGUF export: token id {max(tokens)} is beyond the model's {vocab_size} embeddings")
    # Rows the model has past the tokenizer (vocabulary padded to a multiple): placeholders llama.cpp never emits,
    # named as its converter names them.
    token_list = [tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    type_list = [int(types.get(i, gguf.TokenType.UNUSED)) for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": token_list, "types": type_list, "merges": merges, "add_bos": adds[0], "add_eos": adds[1]}


def check_exportable(config: Any, tokenizer) -> None:
    """Both checks on a live config and a transformers tokenizer: what a job runs before training, so that
    `export.gguf` cannot fail after hours of it."""
    check_architecture(config)
    tokenizer_metadata(json.loads(tokenizer.backend_tokenizer.to_str()), max(config.vocab_size, len(tokenizer)),
                       _special_adds(tokenizer))


def _special_adds(tokenizer) -> tuple[bool, bool]:
    """Whether the tokenizer adds BOS first / EOS last by itself; anything else it adds cannot be declared."""
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a b")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = len(full) > len(plain) and full[0] == bos
    add_eos = len(full) > len(plain) + add_bos and full[-1] == eos
    if full[int(add_bos):len(full) - int(add_eos)] != plain:
        raise ConfigError(f"GGUF export: the tokenizer's template adds {full} around {plain}; llama.cpp can only add "
                          "BOS first and EOS last")
    return add_bos, add_eos


# ------------------------------------------------------------------------------------------------ tensors


def _permute_for_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows → GGML's interleaved pairs (llama.cpp's converter does the same; transformers'
    GGUF loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _state_dict(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) for every tensor of the folder's safetensors, one at a time (memory: one tensor)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir} holds no *.safetensors weights (an exported model folder is expected; a LoRA "
                          "adapter needs adapter.merge=true and the merged/ folder)")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name).float().numpy()


def _encode(gguf, data: np.ndarray, outtype: str) -> tuple[np.ndarray, Optional[Any]]:
    """The array to store and its raw GGML type (None: the numpy dtype says it). Norms and other 1-D tensors stay
    f32, as llama.cpp writes them; q8_0 needs rows that are whole 32-value blocks, else f16."""
    if outtype == "f32" or data.ndim < 2:
        return data.astype(np.float32), None
    if outtype == "q8_0" and data.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data, qtype), qtype
    return data.astype(np.float16), None


# ------------------------------------------------------------------------------------------------ export


def export_gguf(model_dir: str | os.PathLike, outfile: str | os.PathLike, outtype: str = "f32") -> Path:
    """Write `outfile` (a GGUF of the model and tokenizer in `model_dir`); returns its path. Written under a
    temporary name and renamed when complete."""
    from transformers import AutoConfig, AutoTokenizer

    gguf = _require_gguf()
    if outtype not in OUTTYPES:
        raise ConfigError(f"GGUF outtype must be one of {OUTTYPES}, got {outtype!r}")
    model_dir, outfile = Path(model_dir), Path(outfile)
    if not (model_dir / "config.json").is_file() or not (model_dir / "tokenizer.json").is_file():
        raise ConfigError(f"{model_dir} is not an exported model folder (config.json and tokenizer.json expected)")
    config = AutoConfig.from_pretrained(str(model_dir))
    check_architecture(config)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tok = tokenizer_metadata(json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")),
                             config.vocab_size, _special_adds(tokenizer))

    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = getattr(config, "rope_parameters", None) or {}
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = outfile.with_name(f".{outfile.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama", use_temp_file=True)  # tensors spill to disk as they are added
    try:
        writer.add_name(model_dir.resolve().name if model_dir.name in ("", "model") else model_dir.name)
        writer.add_vocab_size(config.vocab_size)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_file_type(int(file_type))
        writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
        writer.add_tokenizer_pre(GPT2_PRE)
        writer.add_token_list(tok["tokens"])
        writer.add_token_types(tok["types"])
        writer.add_token_merges(tok["merges"])
        for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                              (writer.add_eos_token_id, tokenizer.eos_token_id),
                              (writer.add_pad_token_id, tokenizer.pad_token_id)):
            if token_id is not None:
                add(int(token_id))
        writer.add_add_bos_token(tok["add_bos"])
        writer.add_add_eos_token(tok["add_eos"])
        if getattr(tokenizer, "chat_template", None):
            writer.add_chat_template(tokenizer.chat_template)

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
        seen = set()
        for name, data in _state_dict(model_dir):
            if name.endswith("rotary_emb.inv_freq"):
                continue  # recomputed from rope_theta
            if name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
                continue  # tied: llama.cpp uses token_embd when output is absent
            target = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ConfigError(f"GGUF export: no llama.cpp name for tensor {name!r}")
            if name.endswith("self_attn.q_proj.weight"):
                data = _permute_for_rope(data, n_head)
            elif name.endswith("self_attn.k_proj.weight"):
                data = _permute_for_rope(data, n_kv)
            stored, raw = _encode(gguf, data, outtype)
            writer.add_tensor(target, stored, raw_dtype=raw)
            seen.add(target)
        if "token_embd.weight" not in seen:
            raise ConfigError(f"GGUF export: {model_dir} has no embedding tensor (model.embed_tokens.weight)")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, outfile)
    return outfile


def job_gguf_path(model_dir: Path, outtype: str) -> Path:
    """Where a job's `export.gguf=TYPE` (and `hf-llm gguf` by default) writes: inside the export, so a push
    publishes it beside the weights."""
    return model_dir / f"model-{outtype}.gguf"


def write_job_gguf(model_dir: Path, outtype: Optional[str]) -> Optional[str]:
    """A job's `export.gguf`: the file's path, or None when not asked for."""
    if outtype is None:
        return None
    return str(export_gguf(model_dir, job_gguf_path(model_dir, outtype), outtype))
