"""The planner behind scripts/plan.py: size, tokens, time and per-GPU memory of a training run, and a launch
recommendation (ZeRO stage, micro-batch, accumulation), optionally written as an accelerate config + recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import yaml

from .config import ModelConfig
from .config.domains import AT_LEAST_1, POSITIVE, TEXT, OneOf, Range
from .errors import ConfigError
from .estimate import (
    GPU_PEAK_FLOPS,
    GiB,
    chinchilla_optimal,
    chinchilla_tokens,
    parameter_counts,
    flops_per_token,
    format_table,
    match_gpu,
    memory_table,
    recommend,
    shape_from_config,
    training_time_seconds,
)
from .model import build_model_config
from .shipped import shipped_file, shipped_path

# Memory per GPU in GB (datasheets), for the memory check when gpu_memory_gb is not given.
GPU_MEMORY_GB = {
    "B200": 180, "H200": 141, "H200 NVL": 141, "GH200": 96, "H100 SXM": 80, "H100 NVL": 94, "H100 PCIe": 80,
    "A100 80GB": 80, "A100 40GB": 40, "A10G": 24, "A10": 24, "L40S": 48, "L40": 48, "L4": 24, "RTX 4090": 24,
    "RTX 3090": 24, "V100 SXM2": 32, "V100 PCIe": 32, "T4": 16, "MI300X": 192,
}


@dataclass
class PlanConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "seq_len": AT_LEAST_1, "tokens": POSITIVE, "gpu": TEXT, "gpus": AT_LEAST_1, "nodes": AT_LEAST_1,
        "hours": POSITIVE, "gpu_memory_gb": POSITIVE, "mfu": Range(0, 1, lo_open=True),
        "precision": OneOf(("fp8", "bf16", "fp16", "tf32", "fp32")), "global_batch_tokens": AT_LEAST_1,
        "write_dir": TEXT,
    }

    model: ModelConfig = field(default_factory=lambda: ModelConfig(preset="1b"))
    seq_len: int = 2048
    tokens: Optional[float] = None  # training tokens; None = the budget's tokens, else Chinchilla-optimal for the model
    gpu: str = "H100"  # a name from the peak-FLOPs table (matched loosely: "H100", "A100 80GB", "L4", ...)
    gpus: int = 8  # in total, over all nodes
    nodes: int = 1
    hours: Optional[float] = None  # compute budget in wall-clock hours on `gpus` GPUs
    gpu_memory_gb: Optional[float] = None  # None = the GPU's datasheet memory
    mfu: float = 0.4  # model FLOPs utilisation to assume; 0.35-0.5 is typical for dense LLMs on GPUs
    precision: str = "bf16"
    global_batch_tokens: int = 1_048_576  # tokens per optimizer step (~1M is the usual 1B-7B choice)
    write_dir: Optional[str] = None  # write accelerate.yaml and recipe.yaml for the recommendation here

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.nodes < 1 or self.gpus % self.nodes:
            raise ConfigError(f"gpus={self.gpus} must be a positive multiple of nodes={self.nodes}")
        if not 0 < self.mfu <= 1:
            raise ConfigError(f"mfu must be in (0, 1], got {self.mfu}")


def gpu_specs(cfg: PlanConfig) -> tuple[str, float, float]:
    name = match_gpu(cfg.gpu) or (cfg.gpu if cfg.gpu in GPU_PEAK_FLOPS else None)
    if name is None:
        raise ConfigError(f"unknown GPU {cfg.gpu!r}; known: {', '.join(GPU_PEAK_FLOPS)}")
    peak = GPU_PEAK_FLOPS[name].get(cfg.precision)
    if peak is None:
        raise ConfigError(f"{name} has no {cfg.precision} peak in the table; choose precision among {list(GPU_PEAK_FLOPS[name])}")
    memory = cfg.gpu_memory_gb if cfg.gpu_memory_gb is not None else GPU_MEMORY_GB[name]
    return name, peak, memory * 1e9


def make_plan(cfg: PlanConfig) -> dict[str, Any]:
    """Every number the planner prints, as a dict (pure arithmetic; no weights are loaded)."""
    config = build_model_config(cfg.model)
    shape = shape_from_config(config)
    params = parameter_counts(shape)
    per_token = flops_per_token(shape, cfg.seq_len)
    gpu, peak, memory = gpu_specs(cfg)
    budget_flops = cfg.hours * 3600 * cfg.gpus * peak * cfg.mfu if cfg.hours else None
    if cfg.tokens:
        tokens = float(cfg.tokens)
    elif budget_flops:
        tokens = budget_flops / per_token
    else:
        tokens = chinchilla_tokens(params["total"])
    total_flops = per_token * tokens
    result: dict[str, Any] = {
        "model_type": config.model_type,
        "parameters": params["total"],
        "non_embedding_parameters": params["non_embedding"],
        "flops_per_token": per_token,
        "chinchilla_tokens_for_model": chinchilla_tokens(params["total"]),
        "tokens": tokens,
        "total_flops": total_flops,
        "gpu": gpu,
        "gpus": cfg.gpus,
        "training_days": training_time_seconds(total_flops, cfg.gpus, peak, cfg.mfu) / 86400,
        "memory_rows": memory_table(shape, cfg.seq_len, memory, cfg.gpus, num_nodes=cfg.nodes),
        "recommendation": recommend(shape, cfg.seq_len, memory, cfg.gpus, cfg.global_batch_tokens, num_nodes=cfg.nodes),
        "gpu_memory_bytes": memory,
    }
    if budget_flops:
        optimal_params, optimal_tokens = chinchilla_optimal(budget_flops)
        result.update(budget_flops=budget_flops, optimal_params_for_budget=optimal_params,
                      optimal_tokens_for_budget=optimal_tokens)
    return result


def format_plan(p: dict[str, Any], cfg: PlanConfig) -> str:
    lines = [
        f"model             {p['model_type']}: {p['parameters']:,} parameters ({p['non_embedding_parameters']:,} non-embedding)",
        f"FLOPs per token   {p['flops_per_token']:.3e} (6N + attention at seq_len {cfg.seq_len})",
        f"Chinchilla        {p['chinchilla_tokens_for_model']:.3e} tokens are compute-optimal for this model",
    ]
    if "budget_flops" in p:
        lines.append(
            f"budget            {cfg.gpus} × {p['gpu']} × {cfg.hours} h at {cfg.mfu:.0%} MFU = {p['budget_flops']:.3e} FLOPs; "
            f"compute-optimal there: {p['optimal_params_for_budget']:.3e} parameters on {p['optimal_tokens_for_budget']:.3e} tokens"
        )
    lines += [
        f"training          {p['tokens']:.3e} tokens = {p['total_flops']:.3e} FLOPs → {p['training_days']:.2f} days "
        f"on {cfg.gpus} × {p['gpu']} at {cfg.mfu:.0%} MFU",
        "",
        f"per-GPU memory at micro-batch 1 ({p['gpu_memory_bytes'] / GiB:.0f} GiB per GPU, {cfg.gpus} GPUs):",
        format_table(p["memory_rows"]),
        "",
    ]
    rec = p["recommendation"]
    if rec is None:
        lines.append("recommendation    nothing fits: use more GPUs, a shorter sequence, or a smaller model")
    else:
        lines.append(
            f"recommendation    {rec['strategy']}{' + gradient checkpointing' if rec['checkpointing'] else ''}, "
            f"micro-batch {rec['micro_batch']}, accumulation {rec['grad_accum']} "
            f"({rec['global_batch_tokens']:,} tokens per step, {rec['memory'] / GiB:.1f} GiB per GPU)"
        )
    return "\n".join(lines)


def write_launch_files(p: dict[str, Any], cfg: PlanConfig, out_dir: str | Path) -> list[Path]:
    """An accelerate config (from the shipped one for the strategy) and a pretraining recipe for the plan."""
    rec = p["recommendation"]
    if rec is None:
        raise ConfigError("nothing fits, so there is no launch to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shipped = shipped_file(f"configs/accelerate/{rec['strategy']}.yaml")
    launch = yaml.safe_load(shipped.read_text())
    launch.update(num_processes=cfg.gpus, num_machines=cfg.nodes)
    paths = [out / "accelerate.yaml", out / "recipe.yaml"]
    ds = launch.get("deepspeed_config", {})
    if ds.get("deepspeed_config_file"):
        # The shipped config names its DeepSpeed JSON relative to the checkout, which accelerate would resolve from
        # the launch's working directory: copy the JSON beside it and point at the copy, so the folder is whole (named
        # as write_dir was given, like the printed launch command: both work from where the plan was written).
        source = shipped_file(ds["deepspeed_config_file"])
        paths.append(out / source.name)
        paths[-1].write_text(source.read_text())
        ds["deepspeed_config_file"] = str(paths[-1])
    recipe = {
        "model": {k: v for k, v in vars(cfg.model).items() if v not in (None, {}, [])},
        "data": {"seq_len": cfg.seq_len},
        "train": {
            "micro_batch_size": rec["micro_batch"],
            "grad_accum_steps": rec["grad_accum"],
            "max_tokens": int(p["tokens"]),
            "max_steps": None,
            "precision": cfg.precision,
            "gradient_checkpointing": bool(rec["checkpointing"]),
        },
    }
    paths[0].write_text(yaml.safe_dump(launch, sort_keys=False))
    paths[1].write_text(yaml.safe_dump(recipe, sort_keys=False))
    return paths


def run_plan(cfg: PlanConfig) -> dict[str, Any]:
    p = make_plan(cfg)
    print(format_plan(p, cfg))
    if cfg.write_dir:
        for path in write_launch_files(p, cfg, cfg.write_dir):
            print(f"wrote {path}")
        print(f"launch: accelerate launch --config_file {cfg.write_dir}/accelerate.yaml "
              f"{shipped_path('scripts/pretrain.py')} "
              f"{cfg.write_dir}/recipe.yaml data.sources=[...]")
    return p
