"""hf_llm.estimate: analytic counts checked against transformers, torch's FLOP counter, DeepSpeed and the papers."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from hf_llm import estimate
from hf_llm.estimate import (
    GPU_PEAK_FLOPS,
    GiB,
    ModelShape,
    activation_memory,
    chinchilla_optimal,
    chinchilla_tokens,
    parameter_counts,
    flops_per_token,
    format_table,
    largest_layer_params,
    largest_micro_batch,
    lookup_gpu_peak,
    match_gpu,
    model_flops_utilization,
    model_state_memory,
    memory_table,
    recommend,
    shape_from_config,
    training_time_seconds,
)

TINY = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=8, vocab_size=1000)
LLAMA2_7B = LlamaConfig(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000
)
LLAMA2_70B = LlamaConfig(
    hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
    vocab_size=32000,
)
GPT2_SMALL = GPT2Config()

CONFIGS = {
    "llama2-7b": LLAMA2_7B,
    "llama-gqa": LlamaConfig(**TINY, num_key_value_heads=2),
    "llama-tied-bias": LlamaConfig(
        **TINY, num_key_value_heads=2, tie_word_embeddings=True, attention_bias=True, mlp_bias=True
    ),
    "gpt2": GPT2_SMALL,
    "gpt2-untied": GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=100, n_positions=128, vocab_size=500, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0,
    ),
    "qwen2": Qwen2Config(**TINY, num_key_value_heads=2),
    "qwen3": Qwen3Config(**TINY, num_key_value_heads=2, head_dim=32),
    "mistral": MistralConfig(**TINY, num_key_value_heads=2),
}


def _meta_model(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_counts_match_transformers(name):
    config = CONFIGS[name]
    model = _meta_model(config)
    shape = shape_from_config(config)
    assert parameter_counts(shape)["total"] == sum(p.numel() for p in model.parameters())
    # DeepSpeed's model_to_params: the largest module by its own (non-recursive) parameters.
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert largest_layer_params(shape) == largest


def test_llama2_7b_breakdown():
    counts = parameter_counts(shape_from_config(LLAMA2_7B))
    assert counts["total"] == 6_738_415_616
    assert counts["embedding"] == counts["lm_head"] == 32000 * 4096
    assert counts["non_embedding"] == 6_738_415_616 - 2 * 32000 * 4096
    assert counts["per_layer"] == 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096


def test_gpt2_small_is_124m_with_tied_head_and_learned_positions():
    shape = shape_from_config(GPT2_SMALL)
    assert (shape.mlp_type, shape.norm, shape.tie_embeddings, shape.learned_positions) == (
        "plain", "layernorm", True, 1024
    )
    counts = parameter_counts(shape)
    assert counts["total"] == 124_439_808 and counts["lm_head"] == 0
    assert counts["embedding"] == (50257 + 1024) * 768


def test_shape_from_config_fallback_and_errors():
    generic = PretrainedConfig(**TINY, num_key_value_heads=4)
    shape = shape_from_config(generic)
    assert (shape.num_kv_heads, shape.head_dim, shape.mlp_type) == (4, 8, "gated")
    with pytest.raises(ValueError, match="cannot tell"):
        shape_from_config(PretrainedConfig(hidden_size=64))
    with pytest.raises(ValueError, match="mixture of experts"):
        shape_from_config(MixtralConfig(**TINY, num_local_experts=4))
    with pytest.raises(ValueError, match="mlp_type"):
        ModelShape(10, 8, 16, 1, 2, 2, 4, mlp_type="moe")


def test_flops_per_token_formula():
    shape = shape_from_config(LLAMA2_7B)
    n = parameter_counts(shape)["non_embedding"] + 32000 * 4096  # input embedding excluded, output matmul kept
    assert flops_per_token(shape, 4096) == 6 * n + 12 * 32 * 4096 * 4096  # PaLM appendix B
    assert flops_per_token(shape, 4096, training=False) == pytest.approx(flops_per_token(shape, 4096) / 3)


@pytest.mark.parametrize("tie", [False, True])
def test_flops_per_token_matches_torch_flop_counter(tie):
    # Eager attention so the T x T matmuls are visible to the counter (CPU SDPA kernels are not registered).
    # The estimate counts norm weights in N (PaLM's convention); the counter does not, hence the tolerance.
    torch.manual_seed(0)
    config = LlamaConfig(**TINY, num_key_value_heads=2, tie_word_embeddings=tie)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    batch, seq = 2, 32
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    shape = shape_from_config(config)
    assert counter.get_total_flops() / (batch * seq) == pytest.approx(flops_per_token(shape, seq), rel=5e-3)


def test_zero_paper_figure_1():
    # Rajbhandari et al. 2020, figure 1: 7.5B parameters, 64 GPUs, K = 12.
    expected_gb = {"ddp": 120, "zero1": 31.4, "zero2": 16.6, "zero3": 1.9}
    for strategy, gb in expected_gb.items():
        assert model_state_memory(7.5e9, strategy, 64)["total"] / 1e9 == pytest.approx(gb, rel=0.02)
    with pytest.raises(ValueError):
        model_state_memory(1e9, "fsdp", 8)


@pytest.mark.parametrize("gpus_per_node,nodes", [(1, 1), (8, 1), (8, 4)])
def test_model_states_agree_with_deepspeed_estimators(gpus_per_node, nodes):
    stage_1_and_2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    shape = shape_from_config(LLAMA2_7B)
    total, largest = parameter_counts(shape)["total"], largest_layer_params(shape)
    world = gpus_per_node * nodes
    ours = dict(largest_layer_params=largest, num_nodes=nodes, accounting="deepspeed")

    _, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(total, gpus_per_node, nodes, False, 1.5)
    assert model_state_memory(total, "zero2", world, **ours)["total"] == pytest.approx(gpu, rel=0.05)

    zero3 = stage3.estimate_zero3_model_states_mem_needs
    _, gpu, _ = zero3(total, largest, gpus_per_node, nodes, False, False, True, 1.5)
    assert model_state_memory(total, "zero3", world, **ours)["total"] == pytest.approx(gpu, rel=0.05)

    # Offload: DeepSpeed's CPU figure is per node and carries its 1.5 buffer factor; ours is the bare states.
    cpu, gpu, _ = zero3(total, largest, gpus_per_node, nodes, True, True, True, 1.5)
    offload = model_state_memory(total, "zero3_offload", world, **ours)
    assert offload["total"] == pytest.approx(gpu, rel=0.05)
    assert offload["cpu"] * 1.5 == pytest.approx(cpu, rel=0.05)


def test_deepspeed_accounting_adds_the_fp32_gradient_partition():
    paper = model_state_memory(1e9, "zero2", 8)
    deepspeed = model_state_memory(1e9, "zero2", 8, accounting="deepspeed")
    assert deepspeed["grads"] - paper["grads"] == pytest.approx(4e9 / 8)
    assert deepspeed["params"] == paper["params"] and deepspeed["optimizer"] == paper["optimizer"]


def test_activation_memory_korthikanti():
    shape = shape_from_config(LLAMA2_7B)
    s, b, h, a, L, V = 2048, 2, 4096, 32, 32, 32000
    logits = 4 * s * b * V
    assert activation_memory(shape, s, b, attention="eager") == L * s * b * h * (34 + 5 * a * s / h) + logits
    assert activation_memory(shape, s, b, attention="sdpa") == L * s * b * h * 34 + logits
    assert activation_memory(shape, s, b, checkpointing=True) == L * s * b * h * 2 + s * b * h * 34 + logits
    assert activation_memory(shape, s, 2 * b) == pytest.approx(2 * activation_memory(shape, s, b))
    with pytest.raises(ValueError):
        activation_memory(shape, s, b, attention="magic")


def test_largest_micro_batch_is_the_boundary():
    shape = shape_from_config(LLAMA2_7B)
    memory = 80 * GiB
    for strategy in ("zero1", "zero3"):
        best = largest_micro_batch(shape, 4096, memory, strategy, 8)
        assert best >= 1
        totals = [memory_table(shape, 4096, memory, 8, micro_batch=m, strategies=(strategy,))[0] for m in (best, best + 1)]
        assert totals[0]["fits"] and not totals[1]["fits"]
    assert largest_micro_batch(shape, 4096, memory, "ddp", 1) == 0  # 16 bytes x 6.7B > 80 GiB


CHINCHILLA_TABLE_3 = [  # (parameters, FLOPs, tokens), Hoffmann et al. 2022
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
]


@pytest.mark.parametrize("params,flops,tokens", CHINCHILLA_TABLE_3)
def test_chinchilla_table_3(params, flops, tokens):
    assert chinchilla_tokens(params) == pytest.approx(tokens, rel=0.10)
    n_opt, d_opt = chinchilla_optimal(flops)
    assert n_opt == pytest.approx(params, rel=0.10)
    assert d_opt == pytest.approx(tokens, rel=0.10)
    assert 6 * n_opt * d_opt == pytest.approx(flops)


@pytest.mark.parametrize(
    "device,key,bf16",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4e12),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5e12),
        ("NVIDIA H100 NVL", "H100 NVL", 835.5e12),
        ("NVIDIA H200", "H200", 989.4e12),
        ("NVIDIA GH200 480GB", "GH200", 989.4e12),
        ("NVIDIA B200", "B200", 2250e12),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", "A100 80GB", 312e12),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB", 312e12),
        ("NVIDIA A10G", "A10G", 70e12),
        ("NVIDIA A10", "A10", 125e12),
        ("NVIDIA L4", "L4", 121e12),
        ("NVIDIA L40S", "L40S", 362.05e12),
        ("NVIDIA GeForce RTX 4090", "RTX 4090", 165.2e12),
        ("NVIDIA GeForce RTX 3090", "RTX 3090", 71e12),
        ("Tesla V100-SXM2-16GB", "V100 SXM2", None),
        ("Tesla V100-PCIE-32GB", "V100 PCIe", None),
        ("Tesla T4", "T4", None),
        ("AMD Instinct MI300X", "MI300X", 1307.4e12),
        ("NVIDIA GeForce GTX 1080", None, None),
        ("NVIDIA GeForce RTX 3090 Ti", None, None),
    ],
)
def test_lookup_gpu_peak(device, key, bf16):
    assert match_gpu(device) == key
    assert lookup_gpu_peak(device, "bf16") == bf16
    assert lookup_gpu_peak(device, str(torch.bfloat16)) == bf16


def test_gpu_table_is_dense_and_self_consistent():
    for gpu, peaks in GPU_PEAK_FLOPS.items():
        assert match_gpu(gpu) == gpu  # every key looks itself up
        assert "fp32" in peaks and "fp16" in peaks
        if "bf16" in peaks:
            assert peaks["bf16"] == peaks["fp16"]
    assert lookup_gpu_peak("Tesla V100-SXM2-16GB", "float16") == 125e12
    with pytest.raises(ValueError, match="unknown dtype"):
        lookup_gpu_peak("NVIDIA H100", "int3")


def test_training_time_and_mfu():
    assert training_time_seconds(1e24, 1000, 1e15, 0.5) == pytest.approx(2e6)
    # Llama 2 (Touvron et al. 2023, table 2): 7B, 2T tokens at 4096, 184,320 A100-80GB hours -> MFU ~ 0.45.
    shape = shape_from_config(LLAMA2_7B)
    seconds = 184_320 * 3600
    mfu = model_flops_utilization(2e12 / seconds, flops_per_token(shape, 4096), 1, GPU_PEAK_FLOPS["A100 80GB"]["bf16"])
    assert 0.4 < mfu < 0.5
    assert training_time_seconds(2e12 * flops_per_token(shape, 4096), 1, 312e12, mfu) == pytest.approx(seconds)
    assert model_flops_utilization(1e3, 1e9, 1, None) is None  # an unknown peak (a CPU the loop did not measure)


def test_plan_rows_and_table():
    shape = shape_from_config(LLAMA2_7B)
    rows = memory_table(shape, 4096, 80 * GiB, 8)
    assert [(r["strategy"], r["checkpointing"]) for r in rows] == [
        (s, c) for s in estimate.STRATEGIES for c in (False, True)
    ]
    for row in rows:
        parts = row["weights"] + row["grads"] + row["optimizer"] + row["activations"] + row["reserve"]
        assert row["total"] == pytest.approx(parts)
        assert row["fits"] == (row["max_micro_batch"] >= 1)
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == len(rows) + 2 and "total GiB" in lines[0] and "zero3_offload" in table
    assert format_table([]) == ""


def test_recommend_small_model_prefers_ddp():
    choice = recommend(shape_from_config(GPT2_SMALL), 1024, 24 * GiB, 1, global_batch_tokens=524_288)
    assert (choice["strategy"], choice["checkpointing"]) == ("ddp", False)
    assert choice["global_batch_tokens"] >= 524_288
    assert choice["micro_batch"] * choice["grad_accum"] * 1024 == choice["global_batch_tokens"]
    assert choice["memory"] <= 24 * GiB


def test_recommend_7b_on_8x80gb_uses_zero1_without_checkpointing():
    choice = recommend(shape_from_config(LLAMA2_7B), 4096, 80 * GiB, 8, global_batch_tokens=4 * 2**20)
    assert (choice["strategy"], choice["checkpointing"]) == ("zero1", False)
    assert choice["global_batch_tokens"] == 4 * 2**20  # 1024 sequences = 8 GPUs x micro-batch x accumulation


def test_recommend_prefers_sharding_over_checkpointing_and_offload_last():
    shape = shape_from_config(LLAMA2_7B)
    zero2 = next(r for r in memory_table(shape, 4096, 0, 8) if r["strategy"] == "zero2" and not r["checkpointing"])
    choice = recommend(shape, 4096, zero2["total"] + 1024, 8, global_batch_tokens=4096 * 8)
    assert (choice["strategy"], choice["checkpointing"], choice["micro_batch"]) == ("zero2", False, 1)
    seventy = recommend(shape_from_config(LLAMA2_70B), 4096, 80 * GiB, 1, global_batch_tokens=4096)
    assert (seventy["strategy"], seventy["checkpointing"]) == ("zero3_offload", True)
    assert recommend(shape, 4096, 1 * GiB, 8, global_batch_tokens=4096) is None
    assert math.isfinite(seventy["row"]["cpu"]) and seventy["row"]["cpu"] > 0
