"""Throughput and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Optional

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_name() -> str:
    """What trains here, as a model card names it: the GPU, or the CPU model."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({cpu_name()})"


def measure_matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 3, device: str = "cpu") -> float:
    """Best-of-`repeats` FLOP/s of an n×n×n matmul: the practical peak MFU is measured against on a CPU."""
    # Its own generator: this runs after a resumed run restored the global RNG, which dropout then draws from.
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    torch.matmul(a, b)  # warm up kernels and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def cpu_peak_flops(dtype: torch.dtype) -> float:
    """Measured at the start of each run (~0.5 s), best of several: a cached figure taken while the machine
    was busy would overstate MFU for every later run."""
    return measure_matmul_flops(dtype, repeats=5)


def device_peak_flops(device: torch.device, precision: str, override: Optional[float] = None) -> Optional[float]:
    """Peak FLOP/s of one device: the configured value, a GPU datasheet entry, or a measured CPU matmul."""
    from ..estimate import lookup_gpu_peak

    if override:
        return override
    if device.type == "cuda":
        return lookup_gpu_peak(torch.cuda.get_device_name(device), precision)
    if device.type == "cpu":
        return cpu_peak_flops(torch.bfloat16 if precision == "bf16" else torch.float32)
    return None


def frozen_matmul_params(model) -> int:
    """Weights of the model's linear layers that get no gradient (a LoRA/QLoRA base; 4-bit layers count at their
    logical size)."""
    return sum(m.in_features * m.out_features for m in model.modules()
               if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad)


def model_flops_per_token(config, seq_len: int, frozen: int = 0) -> float:
    """Training FLOPs per token of `config`; `frozen` matmul weights cost no weight gradient (see flops_per_token)."""
    from ..estimate import flops_per_token, shape_from_config

    return flops_per_token(shape_from_config(config), seq_len, training=True, frozen_matmul_params=frozen)


def peak_memory_bytes(device: torch.device) -> int:
    """The most memory this process has held: on CUDA what tensors held (max_memory_allocated), on CPU the peak
    resident set (tensors, the Python heap and libraries alike)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def device_memory_bytes(device: torch.device) -> Optional[int]:
    """The memory budget of one device: a GPU's memory, or the machine's RAM on CPU."""
    import os

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_summary(accelerator, model, train, model_config, seq_len: int) -> dict:
    """Peak memory of the run, and the largest micro-batch the estimator fits in this device's memory for this
    model, sequence length, strategy, checkpointing and loss (the chunked loss's logits do not grow with it)."""
    from ..estimate import largest_micro_batch, shape_from_config
    from .loss import fused_loss_blocker, is_fsdp, zero_stage

    device = accelerator.device
    fused = train.fused_loss != "false" and fused_loss_blocker(accelerator.unwrap_model(model), accelerator) is None
    stage = zero_stage(accelerator)
    # FSDP's full sharding keeps what ZeRO-3 keeps per process (a shard of weights, gradients, optimizer states).
    strategy = f"zero{stage}" if stage else ("zero3" if is_fsdp(accelerator) else "ddp")
    budget = device_memory_bytes(device)
    largest = None
    if budget:
        largest = largest_micro_batch(shape_from_config(model_config), seq_len, budget, strategy,
                                      accelerator.num_processes, checkpointing=train.gradient_checkpointing,
                                      fused_loss=fused)
    return {"peak_memory_bytes": peak_memory_bytes(device), "memory_budget_bytes": budget,
            "largest_micro_batch": largest, "fused_loss": fused}
