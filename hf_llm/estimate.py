"""Back-of-the-envelope arithmetic for decoder-only transformers: parameters, FLOPs, memory, compute-optimal size.

Pure functions with no I/O; transformers is only touched by `shape_from_config`, and only through the config object.
The training loop uses `flops_per_token`, `lookup_gpu_peak` and `model_flops_utilization` for its MFU metric;
`scripts/plan.py` uses `memory_table`, `recommend` and `format_table`. Memory is in bytes, FLOPs are counted as
multiply-add = 2 FLOPs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from transformers import PretrainedConfig

GiB = 2**30

# Cheapest first: DDP and ZeRO-1/2 cost the same all-reduce volume; ZeRO-3 adds a parameter all-gather (1.5x the
# traffic, ZeRO paper section 7); offloading moves the Adam step to the CPU and every step's states over PCIe.
STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "zero3_offload")

# Memory a GPU cannot give to model states or activations: CUDA context, NCCL and ZeRO bucket buffers, allocator
# fragmentation. 2 GiB is a conservative allowance seen in practice on 24-80 GiB cards.
DEFAULT_RESERVE_BYTES = 2 * GiB

# Chinchilla (Hoffmann et al. 2022), Table 3 (Approach 1, N_opt ~ C^0.50, D_opt ~ C^0.50): its rows hold 20.0 (400M)
# to 21.6 (10T) tokens per parameter; the least-squares fit in log space over the table is 21.
CHINCHILLA_TOKENS_PER_PARAM = 21.0

_FLASH_LIKE = ("sdpa", "flash", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass(frozen=True)
class ModelShape:
    """The numbers that decide parameters, FLOPs and activations of a decoder-only transformer."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_embeddings: bool = False
    mlp_type: str = "gated"  # "gated": SwiGLU, 3 matrices (Llama, Mistral, Qwen); "plain": 2 matrices (GPT-2)
    qkv_bias: bool = False  # Qwen2, GPT-2
    out_bias: bool = False  # bias on the attention output projection (GPT-2; Llama with attention_bias)
    mlp_bias: bool = False
    norm: str = "rmsnorm"  # "rmsnorm" (weight only) or "layernorm" (weight and bias)
    qk_norm: bool = False  # per-head RMSNorm on queries and keys (Qwen3)
    learned_positions: int = 0  # rows of a learned absolute position table (GPT-2's wpe); 0 for RoPE

    def __post_init__(self) -> None:
        if self.mlp_type not in ("gated", "plain"):
            raise ValueError(f"mlp_type must be 'gated' or 'plain', got {self.mlp_type!r}")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {self.norm!r}")


def shape_from_config(config: PretrainedConfig) -> ModelShape:
    """Read a ModelShape from a transformers config (llama, mistral, qwen2, qwen3, gpt2; Llama-style fallback)."""
    model_type = getattr(config, "model_type", "")
    tie = bool(getattr(config, "tie_word_embeddings", False))
    if model_type == "gpt2":
        h = config.n_embd
        return ModelShape(
            vocab_size=config.vocab_size, hidden_size=h, intermediate_size=config.n_inner or 4 * h,
            num_layers=config.n_layer, num_heads=config.n_head, num_kv_heads=config.n_head,
            head_dim=h // config.n_head, tie_embeddings=tie, mlp_type="plain", qkv_bias=True, out_bias=True,
            mlp_bias=True, norm="layernorm", learned_positions=config.n_positions,
        )
    if any(getattr(config, k, None) for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise ValueError(f"model_type={model_type!r} is a mixture of experts; only dense models are supported")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if getattr(config, k, None) is None]
    if missing:
        raise ValueError(
            f"cannot tell the shape of model_type={model_type!r}: config lacks {missing}; "
            "supported: llama, mistral, qwen2, qwen3, gpt2 and Llama-style configs"
        )
    # llama, mistral, qwen2, qwen3 and the fallback share Llama's attribute names and block layout.
    heads = config.num_attention_heads
    attention_bias = bool(getattr(config, "attention_bias", False))
    return ModelShape(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_layers=config.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads, tie_embeddings=tie,
        qkv_bias=model_type == "qwen2" or attention_bias, out_bias=model_type != "qwen2" and attention_bias,
        mlp_bias=bool(getattr(config, "mlp_bias", False)), qk_norm=model_type == "qwen3",
    )


def _norm_parameters(shape: ModelShape) -> int:
    return shape.hidden_size * (2 if shape.norm == "layernorm" else 1)


def _layer_parameters(shape: ModelShape) -> int:
    h, i, d = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q, kv = shape.num_heads * d, shape.num_kv_heads * d
    attention = h * q + 2 * h * kv + q * h
    attention += (q + 2 * kv) * shape.qkv_bias + h * shape.out_bias + 2 * d * shape.qk_norm
    matrices = 3 if shape.mlp_type == "gated" else 2
    mlp = matrices * h * i + ((matrices - 1) * i + h) * shape.mlp_bias
    return attention + mlp + 2 * _norm_parameters(shape)


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Analytic parameter counts.

    `embedding` is the input token (and learned position) table, `lm_head` the untied output projection (0 when
    tied), `non_embedding` the blocks and final norm (Kaplan et al. 2020's N); `total` is their sum.
    """
    embedding = (shape.vocab_size + shape.learned_positions) * shape.hidden_size
    lm_head = 0 if shape.tie_embeddings else shape.vocab_size * shape.hidden_size
    per_layer = _layer_parameters(shape)
    non_embedding = shape.num_layers * per_layer + _norm_parameters(shape)
    return {
        "total": embedding + lm_head + non_embedding, "embedding": embedding, "lm_head": lm_head,
        "non_embedding": non_embedding, "per_layer": per_layer,
    }


def largest_layer_params(shape: ModelShape) -> int:
    """Parameters of the largest single module (what ZeRO-3 gathers at once; DeepSpeed's `model_to_params`)."""
    h, i, d = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q = shape.num_heads * d
    candidates = [
        shape.vocab_size * h,  # embedding table, and the lm_head (tied or not)
        shape.learned_positions * h,
        h * i + i * shape.mlp_bias,  # up (and gate) projection
        i * h + h * shape.mlp_bias,  # down projection
        h * q + q * shape.qkv_bias,  # query projection
    ]
    if shape.mlp_type == "plain" and shape.qkv_bias:  # GPT-2 fuses q, k, v into one Conv1D (c_attn)
        candidates.append(h * 3 * q + 3 * q)
    return max(candidates)


def flops_per_token(shape: ModelShape, seq_len: int, training: bool = True, frozen_matmul_params: int = 0) -> float:
    """Model FLOPs per token, PaLM appendix B (Chowdhery et al. 2022): 6N + 12·L·H·Q·T for training.

    N counts every matmul weight: the non-embedding parameters plus the output projection (a real V x h matmul,
    tied or not); the input embedding is a lookup and costs nothing. The attention term 12·L·(H·Q)·T counts the full
    T x T score and value matmuls: PaLM's convention applies no causal halving, so MFU is comparable to published
    numbers. The forward pass is one third (2N + 4·L·H·Q·T); backward is twice the forward: 2N for the gradients
    of the activations and 2N for those of the weights. Frozen weights (LoRA/QLoRA bases) get no weight gradient,
    so training costs about 4N + 2·N_trainable: `frozen_matmul_params` is subtracted twice.
    """
    matmul_params = parameter_counts(shape)["non_embedding"] + shape.vocab_size * shape.hidden_size
    attention = 4 * shape.num_layers * shape.num_heads * shape.head_dim * seq_len
    forward = 2 * matmul_params + attention
    if not training:
        return float(forward)
    frozen = min(frozen_matmul_params, matmul_params)
    return float(3 * forward - 2 * frozen)


def model_state_memory(
    n_params: int, strategy: str, world_size: int, *, largest_layer_params: int = 0, num_nodes: int = 1,
    optimizer_bytes: float = 12.0, accounting: str = "zero_paper",
) -> dict[str, float]:
    """Bytes of parameters, gradients and optimizer state per GPU for mixed-precision AdamW.

    ZeRO paper (Rajbhandari et al. 2020, section 3.1 and figure 1): 2 bytes/param of 16-bit weights, 2 of 16-bit
    gradients and K = `optimizer_bytes` = 12 of fp32 master weights, momentum and variance; ZeRO-1 shards the
    optimizer over `world_size`, ZeRO-2 also the gradients, ZeRO-3 also the weights. ZeRO-3 further holds the
    gathered 16-bit weights and gradients of the largest module (2 + 2 bytes each, as DeepSpeed counts).
    `zero3_offload` keeps all states in CPU RAM; `cpu` is that, per node (0 for the other strategies).

    accounting="deepspeed" follows DeepSpeed's own estimators, which also hold an fp32 copy of the rank's gradient
    partition (+4 bytes/param, sharded) that the optimizer reads; in ZeRO-3 that fp32 partition replaces the
    persistent 16-bit gradients (those only pass through reduce-scatter buckets). DeepSpeed's 1.5 buffer factor
    applies to its CPU figure only and is not included here.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if accounting not in ("zero_paper", "deepspeed"):
        raise ValueError(f"accounting must be 'zero_paper' or 'deepspeed', got {accounting!r}")
    p, n, k = float(n_params), world_size, optimizer_bytes
    fp32_grads = 4.0 if accounting == "deepspeed" else 0.0
    zero3_grads = 4.0 if accounting == "deepspeed" else 2.0
    gathered = 2.0 * largest_layer_params  # one module's 16-bit weights (or gradients), materialised whole
    cpu = 0.0
    if strategy == "ddp":
        params, grads, optimizer = 2 * p, 2 * p, k * p
    elif strategy == "zero1":
        params, grads, optimizer = 2 * p, 2 * p + fp32_grads * p / n, k * p / n
    elif strategy == "zero2":
        params, grads, optimizer = 2 * p, (2 + fp32_grads) * p / n, k * p / n
    elif strategy == "zero3":
        params, grads, optimizer = 2 * p / n + gathered, zero3_grads * p / n + gathered, k * p / n
    else:  # zero3_offload: 16-bit weight shards, gradients and optimizer live in CPU RAM
        params, grads, optimizer = gathered, gathered, 0.0
        cpu = (2 + zero3_grads + k) * p / num_nodes
    return {"params": params, "grads": grads, "optimizer": optimizer, "total": params + grads + optimizer, "cpu": cpu}


# Elements of one chunk's logits in hf_llm.train.loss (the chunked linear + cross-entropy); here so both agree.
FUSED_LOSS_CHUNK_ELEMENTS = 1 << 23


def fused_loss_memory(shape: ModelShape) -> float:
    """Bytes the chunked loss holds instead of the logits, whatever the micro-batch: one chunk's fp32 logits and
    their 16-bit gradient, and the head's fp32 weight-gradient accumulator."""
    return FUSED_LOSS_CHUNK_ELEMENTS * (4 + 2) + 4.0 * shape.vocab_size * shape.hidden_size


def activation_memory(
    shape: ModelShape, seq_len: int, micro_batch: int, dtype_bytes: int = 2, checkpointing: bool = False,
    attention: str = "sdpa", fused_loss: bool = False,
) -> float:
    """Bytes of activations kept for the backward pass of one micro-batch, plus the fp32 logits.

    Korthikanti et al. 2022, eq. (1): s·b·h·(34 + 5·a·s/h) bytes per layer with 16-bit activations; the 5·a·s/h
    term is the a·s² attention scores, softmax and dropout mask, which flash / memory-efficient SDPA kernels never
    store ("eager" keeps it). With full recomputation (section 4.3) only each layer's input (s·b·h·2 bytes) is kept,
    plus one layer's full activations while it is recomputed. Logits: s·b·V·4 bytes for the fp32 loss, or with
    `fused_loss` (train.fused_loss) a fixed `fused_loss_memory` that does not grow with the micro-batch.
    """
    if attention != "eager" and attention not in _FLASH_LIKE:
        raise ValueError(f"attention must be 'eager' or one of {_FLASH_LIKE}, got {attention!r}")
    s, b, h = seq_len, micro_batch, shape.hidden_size
    per_layer = 34.0 * s * b * h
    if attention == "eager":
        per_layer += 5.0 * shape.num_heads * s * s * b
    per_layer *= dtype_bytes / 2  # the paper's counts assume 2-byte activations
    if checkpointing:
        layers = shape.num_layers * s * b * h * dtype_bytes + per_layer
    else:
        layers = shape.num_layers * per_layer
    return layers + (fused_loss_memory(shape) if fused_loss else 4.0 * s * b * shape.vocab_size)


def largest_micro_batch(
    shape: ModelShape, seq_len: int, gpu_memory_bytes: float, strategy: str, world_size: int, *,
    checkpointing: bool = False, attention: str = "sdpa", num_nodes: int = 1,
    reserve_bytes: float = DEFAULT_RESERVE_BYTES, accounting: str = "zero_paper", fused_loss: bool = False,
) -> int:
    """Largest micro-batch (sequences per GPU) whose model states + activations + reserve fit; 0 if none does."""
    states = model_state_memory(
        parameter_counts(shape)["total"], strategy, world_size, largest_layer_params=largest_layer_params(shape),
        num_nodes=num_nodes, accounting=accounting,
    )["total"]
    kwargs = dict(checkpointing=checkpointing, attention=attention, fused_loss=fused_loss)
    fixed = activation_memory(shape, seq_len, 0, **kwargs)  # what does not grow with the batch (the fused loss)
    per_sequence = activation_memory(shape, seq_len, 1, **kwargs) - fixed
    free = gpu_memory_bytes - reserve_bytes - states - fixed
    return max(0, math.floor(free / per_sequence))  # the rest of the activations is linear in the micro-batch


def chinchilla_tokens(params: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
    """Compute-optimal training tokens for a model of `params` parameters (Hoffmann et al. 2022, Table 3)."""
    return tokens_per_param * params


def chinchilla_optimal(
    compute_flops: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> tuple[float, float]:
    """Compute-optimal (params, tokens) for a budget C ≈ 6·N·D with N_opt, D_opt ∝ C^0.5 (Approaches 1 and 2)."""
    params = math.sqrt(compute_flops / (6.0 * tokens_per_param))
    return params, tokens_per_param * params


# Dense (no 2:4 sparsity) peak FLOP/s from vendor datasheets; bf16/fp16/fp8 are tensor-core rates with fp32
# accumulation, fp32 is the non-tensor rate. A10G is AWS-only: AWS/NVIDIA's published G5 figures.
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "B200": {"fp8": 4500e12, "bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12, "fp32": 75e12},
    "H200": {"fp8": 1978.9e12, "bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H200 NVL": {"fp8": 1670.5e12, "bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12},
    "GH200": {"fp8": 1978.9e12, "bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100 SXM": {"fp8": 1978.9e12, "bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100 NVL": {"fp8": 1670.5e12, "bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12},
    "H100 PCIe": {"fp8": 1513e12, "bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378e12, "fp32": 51.2e12},
    "A100 80GB": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "A100 40GB": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "A10G": {"bf16": 70e12, "fp16": 70e12, "tf32": 35e12, "fp32": 35e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "L40S": {"fp8": 733e12, "bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12},
    "L40": {"fp8": 362e12, "bf16": 181.05e12, "fp16": 181.05e12, "tf32": 90.5e12, "fp32": 90.5e12},
    "L4": {"fp8": 242.5e12, "bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "RTX 4090": {"fp8": 330.3e12, "bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12},
    "V100 SXM2": {"fp16": 125e12, "fp32": 15.7e12},
    "V100 PCIe": {"fp16": 112e12, "fp32": 14e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
    "MI300X": {"fp8": 2614.9e12, "bf16": 1307.4e12, "fp16": 1307.4e12, "tf32": 653.7e12, "fp32": 163.4e12},
}

# (pattern on the upper-cased name with '-' and '_' as spaces, table key); first match wins, so specific first.
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bB200\b", "B200"), (r"\bGH200\b", "GH200"), (r"\bH200\b.*\bNVL\b", "H200 NVL"), (r"\bH200\b", "H200"),
    (r"\bH100\b.*\bNVL\b", "H100 NVL"), (r"\bH100\b.*\bPCIE\b", "H100 PCIe"), (r"\bH100\b", "H100 SXM"),
    (r"\bA100\b.*\b80\s?GB\b", "A100 80GB"), (r"\bA100\b", "A100 40GB"), (r"\bA10G\b", "A10G"), (r"\bA10\b", "A10"),
    (r"\bL40S\b", "L40S"), (r"\bL40\b", "L40"), (r"\bL4\b", "L4"),
    (r"\bRTX 4090\b(?! D\b)", "RTX 4090"), (r"\bRTX 3090\b(?! TI\b)", "RTX 3090"),
    (r"\bV100\b.*\bPCIE\b", "V100 PCIe"), (r"\bV100", "V100 SXM2"), (r"\bT4\b", "T4"), (r"\bMI300X\b", "MI300X"),
)

_DTYPE_ALIASES = {
    "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16", "fp32": "fp32",
    "float32": "fp32", "float": "fp32", "tf32": "tf32", "fp8": "fp8", "float8": "fp8", "float8_e4m3fn": "fp8",
}


def match_gpu(device_name: str) -> str | None:
    """The GPU_PEAK_FLOPS key for a device name such as "NVIDIA A100-SXM4-80GB"; None if unknown."""
    name = re.sub(r"[-_]", " ", device_name.upper())
    return next((gpu for pattern, gpu in _GPU_PATTERNS if re.search(pattern, name)), None)


def lookup_gpu_peak(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s for a device name such as "NVIDIA H100 80GB HBM3" and a dtype; None if not in the table."""
    key = dtype.removeprefix("torch.").lower()
    if key not in _DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPE_ALIASES)}")
    gpu = match_gpu(device_name)
    return None if gpu is None else GPU_PEAK_FLOPS[gpu].get(_DTYPE_ALIASES[key])


def training_time_seconds(total_flops: float, n_gpus: int, peak_flops: float, mfu: float) -> float:
    """Wall-clock seconds to spend `total_flops` on `n_gpus` GPUs running at `mfu` of their `peak_flops`."""
    return total_flops / (n_gpus * peak_flops * mfu)


def model_flops_utilization(
    tokens_per_second: float, flops_per_token: float, n_gpus: int, peak_flops: Optional[float]
) -> Optional[float]:
    """MFU (PaLM appendix B): achieved model FLOP/s over the aggregate peak of the devices; None if the peak is
    unknown. The planner and the training loop's logged `mfu` both use this."""
    if not peak_flops:
        return None
    return tokens_per_second * flops_per_token / (n_gpus * peak_flops)


def memory_table(
    shape: ModelShape, seq_len: int, gpu_memory_bytes: float, world_size: int, *, micro_batch: int = 1,
    num_nodes: int = 1, attention: str = "sdpa", reserve_bytes: float = DEFAULT_RESERVE_BYTES,
    accounting: str = "zero_paper", strategies: tuple[str, ...] = STRATEGIES,
) -> list[dict[str, Any]]:
    """Per-GPU memory of every strategy x activation checkpointing at `micro_batch`, with the largest micro-batch."""
    n_params, largest = parameter_counts(shape)["total"], largest_layer_params(shape)
    rows = []
    for strategy in strategies:
        states = model_state_memory(
            n_params, strategy, world_size, largest_layer_params=largest, num_nodes=num_nodes, accounting=accounting
        )
        for checkpointing in (False, True):
            activations = activation_memory(
                shape, seq_len, micro_batch, checkpointing=checkpointing, attention=attention
            )
            total = states["total"] + activations + reserve_bytes
            rows.append({
                "strategy": strategy, "checkpointing": checkpointing, "weights": states["params"],
                "grads": states["grads"], "optimizer": states["optimizer"], "activations": activations,
                "reserve": float(reserve_bytes), "total": total, "cpu": states["cpu"],
                "fits": total <= gpu_memory_bytes,
                "max_micro_batch": largest_micro_batch(
                    shape, seq_len, gpu_memory_bytes, strategy, world_size, checkpointing=checkpointing,
                    attention=attention, num_nodes=num_nodes, reserve_bytes=reserve_bytes, accounting=accounting,
                ),
            })
    return rows


def _preference(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # No checkpointing before checkpointing (recomputation costs ~1/3 more compute, Korthikanti et al. section 4.3),
    # except that offloading comes last of all: a CPU Adam step and PCIe traffic cost more than recomputing.
    def cost(row: dict[str, Any]) -> tuple[int, int, int]:
        offload = row["strategy"] == "zero3_offload"
        return (offload, row["checkpointing"], STRATEGIES.index(row["strategy"]))

    return sorted(rows, key=cost)


def recommend(
    shape: ModelShape, seq_len: int, gpu_memory_bytes: float, world_size: int, global_batch_tokens: int, *,
    num_nodes: int = 1, attention: str = "sdpa", reserve_bytes: float = DEFAULT_RESERVE_BYTES,
    accounting: str = "zero_paper",
) -> dict[str, Any] | None:
    """Cheapest strategy that fits, with micro-batch and accumulation for a global batch of about
    `global_batch_tokens`; None if nothing fits. Prefers DDP > ZeRO-1 > ZeRO-2 > ZeRO-3 and no checkpointing."""
    options = dict(num_nodes=num_nodes, attention=attention, reserve_bytes=reserve_bytes, accounting=accounting)
    for row in _preference(memory_table(shape, seq_len, gpu_memory_bytes, world_size, **options)):
        if row["max_micro_batch"] < 1:
            continue
        sequences_per_gpu = max(1, math.ceil(global_batch_tokens / (seq_len * world_size)))
        grad_accum = math.ceil(sequences_per_gpu / row["max_micro_batch"])
        micro_batch = math.ceil(sequences_per_gpu / grad_accum)  # fewest steps, then the smallest even split
        chosen = memory_table(
            shape, seq_len, gpu_memory_bytes, world_size, micro_batch=micro_batch, strategies=(row["strategy"],),
            **options,
        )[int(row["checkpointing"])]
        return {
            "strategy": row["strategy"], "checkpointing": row["checkpointing"], "micro_batch": micro_batch,
            "grad_accum": grad_accum, "global_batch_tokens": micro_batch * grad_accum * world_size * seq_len,
            "memory": chosen["total"], "row": chosen,
        }
    return None


_BYTE_COLUMNS = ("weights", "grads", "optimizer", "activations", "reserve", "total", "cpu", "memory")


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `plan` rows (byte columns shown in GiB)."""
    if not rows:
        return ""
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]

    def cell(key: str, value: Any) -> str:
        if key in _BYTE_COLUMNS:
            return f"{value / GiB:.1f}"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    titles = [f"{k} GiB" if k in _BYTE_COLUMNS else k for k in keys]
    body = [[cell(k, row[k]) for k in keys] for row in rows]
    widths = [max(len(t), *(len(line[i]) for line in body)) for i, t in enumerate(titles)]

    def render(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([render(titles), render(["-" * w for w in widths]), *(render(line) for line in body)])
