"""Wiring shared by pretraining and fine-tuning: precision, the Accelerator, and `fit` around the one loop."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from ..config import RunConfig, TrainConfig
from ..errors import ConfigError, HfLlmError
from .checkpoint import (LoopState, check_checkpoint_owner, check_init_from, claim_lineage, load_checkpoint,
                         resolve_resume, start_from_checkpoint)
from .loss import is_fsdp, output_loss_for, zero_stage
from .loop import LoopSetup, run_loop
from .metrics import device_peak_flops, frozen_matmul_params, model_flops_per_token
from .objective import CausalLMObjective, Objective
from .optim import build_optimizer, build_scheduler, restart_schedule
from .stages import StepBatches, TrainStage, build_eval_loader, stage_ends


def cpu_supports_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str) -> str:
    """`auto` → bf16 where the hardware computes it natively, else fp16 on a GPU (with loss scaling) or fp32 on a
    CPU; an impossible request is an error."""
    cuda = torch.cuda.is_available()
    # Native only: older GPUs (V100, T4) emulate bf16 at a fraction of fp16's speed.
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False) if cuda else cpu_supports_bf16()
    where = torch.cuda.get_device_name() if cuda else "CPU"
    if requested == "auto":
        return "bf16" if bf16 else ("fp16" if cuda else "fp32")
    if requested == "bf16" and not bf16:
        raise ConfigError(f"train.precision=bf16 but this {where} has no bf16 support; use train.precision=fp32 or auto")
    if requested == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use bf16 (if supported) or fp32")
    return requested


def start_run(cfg: RunConfig, precision: str):
    """The Accelerator, the output folder with the user's config in it, the seed, and the run's config: `cfg` with
    what depends on the launch resolved (`train.grad_accum_steps`, from `global_batch_size` and the world size).
    `cfg` itself is never changed, so config.yaml is what the user gave. Returns (accelerator, folder, run config)."""
    from accelerate.utils import set_seed

    from ..config import save_config

    out = Path(cfg.output_dir)
    check_checkpoint_owner(out / "checkpoints", cfg.train.resume_from, cfg.train.overwrite_output_dir)
    accum = resolve_accumulation(cfg.train, launch_world_size())
    run_cfg = replace(cfg, train=replace(cfg.train, grad_accum_steps=accum))
    accelerator = make_accelerator(run_cfg.train, precision, out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    # Here, not in fit: a tracker that cannot start (no login, a bad MLflow URI) fails before data preparation.
    start_trackers(accelerator, run_cfg, out)
    set_seed(cfg.train.seed)
    return accelerator, out, run_cfg


def launch_world_size() -> int:
    """Processes of this launch, as the launcher (accelerate launch, torchrun) sets them; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_accumulation(train: TrainConfig, world: int) -> int:
    """Accumulation steps: given, or derived from `global_batch_size`, which must split evenly over processes."""
    if train.global_batch_size is None:
        return train.grad_accum_steps
    per_step = train.micro_batch_size * world
    if train.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={train.global_batch_size} is not a multiple of micro_batch_size × processes = "
            f"{train.micro_batch_size} × {world}; choose a global batch divisible by {per_step} or change micro_batch_size"
        )
    return train.global_batch_size // per_step


def make_accelerator(train: TrainConfig, precision: str, out: Path):
    """The Accelerator for this launch, accumulating `resolve_accumulation(train, world size)` micro-batches per
    optimizer step. `train` is not changed: `start_run` hands the jobs a copy with the resolved value."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    world = launch_world_size()
    accum = resolve_accumulation(train, world)
    check_trackers_installed(train.trackers)
    handlers = process_group_kwargs(train, world, torch.cuda.is_available())
    accelerator = Accelerator(
        mixed_precision={"fp32": "no"}.get(precision, precision),
        # The loop decides when a window ends; an epoch boundary must not cut a window short.
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=accum, sync_with_dataloader=False),
        step_scheduler_with_optimizer=False,
        log_with=train.trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=handlers,
    )
    # accelerate drops a tracker it judges unavailable with only a debug message; a run must not log nowhere.
    dropped = [n for n in train.trackers if n not in {str(t) for t in accelerator.log_with}]
    if dropped:
        raise ConfigError(f"accelerate does not see the package for train.report_to={dropped} as installed (it reads "
                          f"the package metadata): {TRACKER_INSTALL[dropped[0]]}, or remove it from train.report_to")
    honour_launch(accelerator, world)
    check_strategy_options(accelerator, train)
    if accelerator.device.type == "cpu":
        set_cpu_threads(train.cpu_threads)
    accelerator.print(f"strategy: {strategy_name(accelerator)} over {accelerator.num_processes} process(es) on "
                      f"{accelerator.device.type}")
    return accelerator


def honour_launch(accelerator, world: int) -> None:
    """Run what the launch config asked for, or stop with the reason: accelerate replaces a strategy it cannot set up
    on this machine without a word (FSDP and DeepSpeed become DDP under ACCELERATE_USE_CPU; on a machine without
    GPUs a GPU config without ACCELERATE_USE_CPU wraps nothing, and each process trains its own replica). The one
    exception is repaired, not refused: FSDP2 on CPUs (see `fsdp_on_cpu`)."""
    from accelerate.utils import DistributedType

    asked = launch_request()
    ran = accelerator.distributed_type
    # A GPU config (ddp, fsdp) on a machine without GPUs and without ACCELERATE_USE_CPU: accelerate finds no device
    # type to distribute over and sets up NO; with our gloo backend it still joins the processes in a group (so
    # the data is split) but wraps nothing, and each process would train its own replica.
    alone = ran == DistributedType.NO and (accelerator.num_processes > 1 or world > 1)
    if alone or (world > 1 and accelerator.num_processes != world):
        raise ConfigError(
            f"the launcher started {world} processes but accelerate set up {ran.value} over "
            f"{accelerator.num_processes}: each process would train alone. On a machine without GPUs prefix the "
            f"launch with ACCELERATE_USE_CPU=1 (not with DeepSpeed, which runs over gloo by itself)")
    if asked == "deepspeed" and ran != DistributedType.DEEPSPEED:
        raise ConfigError(
            f"the launch config asks for DeepSpeed but accelerate set up {ran.value} (ACCELERATE_USE_CPU="
            f"{os.environ.get('ACCELERATE_USE_CPU')!r} turns DeepSpeed into DDP); launch DeepSpeed without "
            f"ACCELERATE_USE_CPU: on CPUs it runs over gloo by itself")
    if asked == "fsdp" and ran != DistributedType.FSDP:
        version = os.environ.get("FSDP_VERSION", "1")
        if ran == DistributedType.MULTI_CPU and version == "2":
            fsdp_on_cpu(accelerator)
        else:
            raise ConfigError(
                f"the launch config asks for FSDP (fsdp_version {version}) but accelerate set up {ran.value}; FSDP "
                f"runs on GPUs, or on CPUs with fsdp_version: 2 and ACCELERATE_USE_CPU=1 "
                f"(configs/accelerate/fsdp.yaml)")


def check_strategy_options(accelerator, train: TrainConfig) -> None:
    """Options the strategy that runs cannot honour stop the run here, in seconds, before any data work."""
    if train.fused_loss == "true" and is_fsdp(accelerator):
        raise ConfigError("train.fused_loss=true cannot apply under FSDP: FSDP shards the head's weight outside the "
                          "forward; set train.fused_loss=auto (the model's own loss runs) or false")


def launch_request() -> Optional[str]:
    """The sharding the launcher was asked for (accelerate launch exports it to every process), or None."""
    for name, flag in (("deepspeed", "ACCELERATE_USE_DEEPSPEED"), ("fsdp", "ACCELERATE_USE_FSDP")):
        if os.environ.get(flag, "false").lower() == "true":
            return name
    return None


def fsdp_on_cpu(accelerator) -> None:
    """FSDP2 over gloo on CPUs, through accelerate's own FSDP2 code.

    accelerate (checked on 1.16) turns FSDP on only in `AcceleratorState` for accelerator devices (its MULTI_GPU,
    MULTI_XPU, ... branch); a CPU launch (ACCELERATE_USE_CPU=1 → MULTI_CPU, gloo) keeps DDP and drops the FSDP
    settings it was handed. Nothing after that needs a GPU: torch's `fully_shard` runs on a CPU device mesh over gloo,
    and accelerate's FSDP2 paths (prepare: `fully_shard` per decoder layer, `clip_grad_norm_`, `get_state_dict`
    gathering the full state dict, `save_state`/`load_state` through torch.distributed.checkpoint) take the device
    from the mesh. So this sets the state accelerate sets on a GPU launch, from the same FSDP_* variables the
    launcher exported: the distributed type and the plugin, with the run's mixed precision. Called right after the
    Accelerator is built, before anything is prepared."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* as accelerate's Accelerator does
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    AcceleratorState._shared_state.update(distributed_type=DistributedType.FSDP, fsdp_plugin=plugin)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if not accelerator.is_fsdp2:
        raise HfLlmError("could not switch accelerate to FSDP2 on CPU (its state layout changed?); launch with "
                         "configs/accelerate/ddp.yaml, or on GPUs")


def strategy_name(accelerator) -> str:
    """The strategy this run actually runs (not the one asked for): what the log line, the summary and the card
    state. "single process", "DDP", "FSDP2" (+ parameter offload), "ZeRO-n" (+ offload)."""
    state = accelerator.state
    if getattr(state, "deepspeed_plugin", None) is not None:
        zero = state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
        offload = [what for what in ("optimizer", "param")
                   if zero.get(f"offload_{what}", {}).get("device", "none") not in (None, "none")]
        name = f"ZeRO-{zero_stage(accelerator) or 0}"
        return name + (f" (offload: {', '.join(offload)} to {zero['offload_' + offload[0]]['device']})"
                       if offload else "")
    if is_fsdp(accelerator):
        plugin = state.fsdp_plugin
        offload = getattr(plugin.cpu_offload, "offload_params", False) or type(plugin.cpu_offload).__name__ == \
            "CPUOffloadPolicy"
        return f"FSDP{plugin.fsdp_version}" + (" (offload: parameters to cpu)" if offload else "")
    return "DDP" if accelerator.num_processes > 1 else "single process"


def process_group_kwargs(train: TrainConfig, world: int, cuda: bool) -> list:
    """The process group's settings: none for one process; gloo on CPU (DeepSpeed needs it named); and a timeout
    long enough for the other ranks to wait while rank 0 prepares the data (NCCL's watchdog gives 10 minutes)."""
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    if world <= 1:
        return []
    timeout = timedelta(minutes=train.dist_timeout_minutes)
    return [InitProcessGroupKwargs(timeout=timeout) if cuda else InitProcessGroupKwargs(backend="gloo", timeout=timeout)]


def wait_for_main(accelerator, train: TrainConfig, what: str) -> None:
    """Barrier after work done on the main process only; a timeout says which setting to raise."""
    try:
        accelerator.wait_for_everyone()
    except Exception as e:  # gloo: RuntimeError; NCCL: DistBackendError (a RuntimeError) from its watchdog
        if "timeout" not in str(e).lower() and "timed out" not in str(e).lower():
            raise
        raise HfLlmError(
            f"the other processes waited more than train.dist_timeout_minutes={train.dist_timeout_minutes:g} "
            f"for the main process to finish {what}. Raise train.dist_timeout_minutes, or run that step once "
            f"beforehand (scripts/prepare_data.py, then data.prepared=PATH) and launch again ({e})"
        ) from None


def set_cpu_threads(requested: Optional[int]) -> int:
    """`accelerate launch` exports OMP_NUM_THREADS=1 even for a single process, which halves CPU throughput on two
    cores; give each process its share of the cores instead (or what the recipe asks for)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = requested or max(1, (os.cpu_count() or 1) // local)
    torch.set_num_threads(threads)
    return threads


def check_deepspeed(accelerator, train: TrainConfig, precision: str) -> None:
    """The recipe is the one source of batch size, accumulation, clipping and precision: a DeepSpeed config that
    hard-codes a different value, or asks for something that cannot work, stops the run before training."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    expected = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "gradient_clipping": float(train.max_grad_norm or 0.0),
        "train_batch_size": train.micro_batch_size * train.grad_accum_steps * accelerator.num_processes,
    }
    for key, want in expected.items():
        have = ds.get(key, "auto")
        if have != "auto" and float(have) != float(want):
            raise ConfigError(
                f"the DeepSpeed config sets {key}={have} but the recipe gives {want}; set it to \"auto\" in the JSON "
                f"(the recipe is the single source) or change the recipe"
            )
    for name, section in (("bf16", ds.get("bf16", {})), ("fp16", ds.get("fp16", {}))):
        enabled = section.get("enabled", "auto")
        if enabled != "auto" and bool(enabled) != (precision == name):
            raise ConfigError(
                f"the DeepSpeed config sets {name}.enabled={enabled} but train.precision resolves to {precision}; "
                f"use \"auto\" in the JSON"
            )
    zero = ds.get("zero_optimization", {})
    if zero.get("stage") == 3 and train.compile == "true":
        raise ConfigError("train.compile=true does not work with ZeRO-3 parameter partitioning; set train.compile=false")
    if ds.get("gradient_clipping", "auto") == "auto":
        # accelerate would fill "auto" with 1.0 whatever the recipe says.
        ds["gradient_clipping"] = float(train.max_grad_norm or 0.0)


# `train.compile=auto`: compile where the expected saving exceeds the compile's one-off cost.
# On a CPU (bf16), measured by benchmarks/bench_compile.py (AMD EPYC, 2 cores, batch 16 × 256, regional compile with
# an empty cache): 17 s to compile, then 1.21× faster steps (d256 and d512), which wins the compile back after 99
# steps of 189 GFLOP (d256) and 39 steps of 615 GFLOP (d512): ~19-24 TFLOP of training per process in both. The
# saving per step grows with the step's FLOPs and the cost hardly does, so the rule is a FLOP count: a third above
# the larger break-even (a second run, a resume or another process reuses the compile cache and pays ~3 s:
# break-even after 6-18 steps). The default 200-step tiny run (38 TFLOP) compiles.
COMPILE_MIN_CPU_FLOPS = 32e12
# Elsewhere (GPUs: not measured here) a run of at least this many optimizer steps: compile costs ~20-60 s, and at
# GPU step times of ~0.1 s a ~15-20% saving wins that back after about a thousand steps.
COMPILE_MIN_STEPS = 1000


def resolve_compile(setting: str, steps: int, precision: str, device_type: str, zero: Optional[int],
                    process_flops: float = 0.0) -> bool:
    """`train.compile`: auto compiles a run whose expected saving exceeds the compile time: on a CPU one of at least
    COMPILE_MIN_CPU_FLOPS training FLOPs per process (`process_flops`, the whole run's), elsewhere one of at least
    COMPILE_MIN_STEPS optimizer steps; never in fp32 on a CPU (measured: no gain) or under ZeRO-3 (which it does not
    work with; true is refused there). A function of the configuration only, so a resumed run decides as the run it
    resumes did (compiled and eager steps round differently)."""
    if setting != "auto":
        return setting == "true"
    if zero == 3:
        return False
    if device_type == "cpu":
        return precision != "fp32" and process_flops >= COMPILE_MIN_CPU_FLOPS
    return steps >= COMPILE_MIN_STEPS


def use_compile_cache() -> Path:
    """The folder torch.compile caches its graphs and kernels in: TORCHINDUCTOR_CACHE_DIR where the user set it,
    else `~/.cache/hf_llm/torch_compile` (XDG_CACHE_HOME respected) rather than torch's /tmp default, which a
    reboot or a batch job's private /tmp empties (torch's default is taken as unset). A run that finds its graphs
    there compiles in ~3 s instead of ~17 s (bench_compile.py); every process of a run and every later run share
    it."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen or chosen == default_cache_dir():  # torch writes its default into the variable when it first looks
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        chosen = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(base) / "hf_llm" / "torch_compile")
    return Path(chosen)


def compile_regions(model) -> int:
    """torch.compile each repeated decoder layer in place (transformers names their class in `_no_split_modules`);
    returns how many. The layers share one compiled graph, so compiling costs one layer's time, not the whole
    model's; in place, every state dict, checkpoint and export keeps the model's own parameter names. A model that
    names no layer class is compiled whole (also in place)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    classes = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in classes]
    if not blocks:
        model.compile()
    for block in blocks:
        block.compile()
    return len(blocks)


def offloads_optimizer(accelerator) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return False
    device = plugin.deepspeed_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")


def total_steps(train: TrainConfig, tokens_per_step: int) -> int:
    limits = []
    if train.max_steps is not None:
        limits.append(train.max_steps)
    if train.max_tokens is not None:
        limits.append(math.ceil(train.max_tokens / tokens_per_step))
    return max(1, min(limits))


# The module each tracker imports, and how to get it (wandb and mlflow are extras: training never needs them).
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TRACKER_INSTALL = {
    "tensorboard": "pip install tensorboard",
    "wandb": "pip install -e '.[wandb]' (or pip install wandb)",
    "mlflow": "pip install -e '.[mlflow]' (or pip install mlflow-skinny)",
}
# Credentials the trackers read from the environment; like HF_TOKEN, never part of what is logged.
TRACKER_SECRETS = ("WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")
# What to check when a tracker installed fine but does not start.
TRACKER_HINTS = {
    "wandb": "log in (`wandb login` or WANDB_API_KEY), or log locally with WANDB_MODE=offline (sync later with "
             "`wandb sync`)",
    "mlflow": "set MLFLOW_TRACKING_URI to your tracking server (http://HOST:5000), or to a local store: "
              "file:/abs/path/mlruns (MLflow 3 also needs MLFLOW_ALLOW_FILE_STORE=true) or sqlite:///mlflow.db "
              "(needs the full mlflow package)",
}


def check_trackers_installed(report_to: list[str]) -> None:
    """Every tracker asked for can be imported: fail in seconds, not after data preparation (and accelerate would
    silently skip it)."""
    import importlib.util

    missing = [n for n in report_to if importlib.util.find_spec(TRACKER_MODULES[n]) is None]
    if missing:
        fixes = "; ".join(f"{n}: {TRACKER_INSTALL[n]}" for n in missing)
        raise ConfigError(f"train.report_to asks for {missing} but the package is not installed. Install it ({fixes}) "
                          f"or remove it from train.report_to (train.report_to=[none] logs nowhere)")


def tracker_config(cfg: Any) -> dict[str, Any]:
    """The resolved config as flat `section.key` scalars (what every tracker's hparams/params view accepts); lists
    and nulls as JSON text. Scrubbed of tokens: a token pasted into a value (a URL, say) must not leave the machine."""
    import json

    from ..auth import hub_token, scrub

    secrets = [s for s in (hub_token(), *map(os.environ.get, TRACKER_SECRETS)) if s]

    def clean(text: str) -> str:
        for secret in secrets:
            text = scrub(text, secret)
        return scrub(text, "")  # and anything shaped like a Hub token

    def walk(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(value, dict):
            for key, sub in value.items():
                yield from walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, (bool, int, float)):
            yield prefix, value
        else:
            yield prefix, clean(value if isinstance(value, str) else json.dumps(value, default=str))

    return dict(walk("", asdict(cfg)))


def start_trackers(accelerator, cfg: Any, out: Path) -> None:
    """Start `train.report_to` (main process only, through accelerate) with the resolved config. Runs are named
    after the output folder and grouped under `train.project`; wandb writes into OUTPUT_DIR/logs unless WANDB_DIR
    says otherwise."""
    train, trackers = cfg.train, cfg.train.trackers
    if not trackers or not accelerator.is_main_process:
        return
    from ..auth import scrub

    name = out.resolve().name
    init_kwargs: dict[str, dict[str, Any]] = {"wandb": {"name": name}, "mlflow": {"run_name": name}}
    if "wandb" in trackers and "WANDB_DIR" not in os.environ:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        init_kwargs["wandb"]["dir"] = str(out / "logs")
    try:
        accelerator.init_trackers(train.project, config=tracker_config(cfg), init_kwargs=init_kwargs)
    except Exception as e:  # each tracker raises its own types (wandb.Error, MlflowException, OSError, ...)
        hints = "; ".join(f"{n}: {TRACKER_HINTS[n]}" for n in trackers if n in TRACKER_HINTS)
        cause = " ".join(f"{type(e).__name__}: {e}".split())
        raise HfLlmError(scrub(f"train.report_to={trackers}: a tracker did not start ({cause})"
                               + (f". Check: {hints}" if hints else ""))) from None


@dataclass
class TrainData:
    """What a job hands `fit` to train on."""

    stages: list[TrainStage]  # curriculum stages in order (train.stages); a run without data.stages has one
    seq_len: int  # tokens per training row (for token budgets and throughput; SFT: the mean example length)
    validation: Any = None  # a Dataset of validation rows (collated like the training rows), or None
    collate: Optional[Callable] = None  # rows → batch, for the validation rows
    objective: Optional[Objective] = None  # None: causal LM (with train.fused_loss's output loss where it applies)
    tokenizer: Any = None  # tokenises eval.tasks and serves eval.harness_tasks


def fit(cfg: RunConfig, accelerator, model, data: TrainData, precision: str, out: Path, description: str = "",
        on_checkpoint: Callable[[LoopState, Any], None] | None = None) -> tuple[LoopState, Any]:
    """Optimizer, schedule, loaders, accelerate.prepare, resume, then the loop. Returns (state, the model as
    accelerate wrapped it).

    `on_checkpoint` is handed to the loop (called on every process after each checkpoint). Each stage's DataLoader
    goes through accelerate.prepare (sharded over processes); a streamed stage's data is split by node already.

    `train.init_from` (a fresh run only: a checkpoint of this run's own wins) starts from another run's weights,
    optimizer state and RNG with this run's schedule from step 0 (see checkpoint.start_from_checkpoint).
    """
    train, stages = cfg.train, data.stages
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    check_deepspeed(accelerator, train, precision)
    # Before ZeRO-3 shards the weights. A PEFT model answers with its base model's config.
    flops_per_token = model_flops_per_token(model.config, data.seq_len, frozen_matmul_params(model))
    optimizer = build_optimizer(model, train, cpu_offload=offloads_optimizer(accelerator))
    tokens_per_step = train.micro_batch_size * data.seq_len * train.grad_accum_steps * accelerator.num_processes
    steps = total_steps(train, tokens_per_step)
    ends = stage_ends(stages, tokens_per_step, steps)
    loaders = [stage.loader(train) for stage in stages]
    eval_loader = build_eval_loader(data.validation, train.micro_batch_size, data.collate) \
        if data.validation is not None else None
    process_flops = flops_per_token * train.micro_batch_size * data.seq_len * train.grad_accum_steps * steps
    if resolve_compile(train.compile, steps, precision, accelerator.device.type, zero_stage(accelerator),
                       process_flops):
        cache = use_compile_cache()
        blocks = compile_regions(model)
        accelerator.print((f"torch.compile: {blocks} decoder layers in place" if blocks else "torch.compile: the model")
                          + f" (train.compile={train.compile}; cache {cache})")
    # One call with the model: DeepSpeed reads the micro-batch size from a loader it is given alongside.
    model, optimizer, *sharded = accelerator.prepare(model, optimizer, *(x for x in loaders if x is not None))
    sharded.reverse()
    loaders = [sharded.pop() if x is not None else None for x in loaders]
    # Built on the optimizer accelerate returned: ZeRO regroups parameters, and the schedule must drive the groups
    # that step.
    scheduler = build_scheduler(optimizer, steps, train)
    accelerator.register_for_checkpointing(scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    objective = data.objective
    if objective is None:
        objective = CausalLMObjective(output_loss_for(train.fused_loss, accelerator, model))
    state = LoopState()
    ckpt_root = out / "checkpoints"
    resume = resolve_resume(train.resume_from, ckpt_root)
    init_from = check_init_from(train.init_from, ckpt_root) if resume is None else None
    if resume is not None:
        state = load_checkpoint(accelerator, resume)
        accelerator.print(f"resumed from {resume} at step {state.step}")
    elif init_from is not None:
        state, kept = start_from_checkpoint(accelerator, init_from, stages[0].fingerprint)
        was = scheduler.get_last_lr()[0]
        restart_schedule(optimizer, scheduler, steps, train)
        accelerator.print(f"started from {init_from}: its weights and optimizer state, a new {train.schedule} schedule "
                          f"over {steps} steps from train.lr={train.lr:g} (the checkpoint was at lr {was:g}); data "
                          + ("continues where it was (the same data)" if kept else "starts at its beginning"))
    state.data_fingerprints = [stage.fingerprint for stage in stages]
    claim_lineage(accelerator, ckpt_root, resume, train.overwrite_output_dir)
    batches = StepBatches(accelerator, [stage.epochs(accelerator, loader) for stage, loader in zip(stages, loaders)],
                          [0, *ends[:-1]], state)
    setup = LoopSetup(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, batches=batches,
        objective=objective, eval_loader=eval_loader, total_steps=steps, tokens_per_step=tokens_per_step,
        flops_per_token=flops_per_token,
        peak_flops=device_peak_flops(accelerator.device, precision, train.peak_flops),
        checkpoint_dir=ckpt_root, tokenizer=data.tokenizer,
        stage_names=[stage.name for stage in stages] if len(stages) > 1 else [],
    )
    if len(stages) > 1:
        accelerator.print("data stages: " + ", ".join(f"{s.name} to step {end}" for s, end in zip(stages, ends)))
    counts = [stage.rows() for stage in stages]
    rows = "streamed" if None in counts else "+".join(f"{n:,}" for n in counts)
    accelerator.print(
        f"{description} | {rows} training rows of {data.seq_len} tokens | {steps} steps of "
        f"{tokens_per_step:,} tokens | {accelerator.num_processes} process(es), {precision}"
    )
    return run_loop(setup, state, train, cfg.eval, on_checkpoint=on_checkpoint), model
