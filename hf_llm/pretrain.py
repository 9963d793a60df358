"""Pretraining: config → data → model → the shared loop → export and summary."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from .config import ConfigError, RunConfig, config_to_yaml, save_config
from .model import build_model, build_model_config, count_parameters, max_positions
from .train.checkpoint import LoopState, export_model, load_checkpoint, resolve_resume
from .train.collate import PackedCollator
from .train.loop import LoopSetup, build_eval_loader, build_train_loader, run_loop
from .train.metrics import device_peak_flops, model_flops_per_token
from .train.optim import build_optimizer, build_scheduler


def cpu_supports_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str) -> str:
    """`auto` → bf16 where the hardware computes it natively, else fp32; an impossible request is an error."""
    cuda = torch.cuda.is_available()
    bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_supports_bf16()
    where = torch.cuda.get_device_name() if cuda else "CPU"
    if requested == "auto":
        return "bf16" if bf16 else "fp32"
    if requested == "bf16" and not bf16:
        raise ConfigError(f"train.precision=bf16 but this {where} has no bf16 support; use train.precision=fp32 or auto")
    if requested == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use bf16 (if supported) or fp32")
    return requested


def check_run_config(cfg: RunConfig) -> tuple[str, Any]:
    """Checks that need no data or weights, so mistakes fail in seconds. Returns (precision, model config)."""
    precision = resolve_precision(cfg.train.precision)
    model_config = build_model_config(cfg.model)
    limit = max_positions(model_config)
    if limit is not None and cfg.data.seq_len > limit:
        raise ConfigError(
            f"data.seq_len={cfg.data.seq_len} exceeds the model's max_position_embeddings={limit}; lower "
            f"data.seq_len or raise model.overrides.max_position_embeddings"
        )
    if cfg.data.prepared is None:
        from .data.sources import resolve_files

        for src in cfg.data.sources:
            if src.format != "hub":
                resolve_files(src.path)
    elif not Path(cfg.data.prepared).is_dir():
        raise ConfigError(f"data.prepared={cfg.data.prepared!r} is not a folder; run scripts/prepare_data.py first")
    return precision, model_config


def make_accelerator(cfg: RunConfig, precision: str, out: Path):
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, InitProcessGroupKwargs, ProjectConfiguration

    import os

    # DeepSpeed on CPU needs gloo named explicitly; a single process must get no backend at all.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if distributed and not torch.cuda.is_available() else []
    return Accelerator(
        mixed_precision={"fp32": "no"}.get(precision, precision),
        # The loop decides when a window ends; an epoch boundary must not cut a window short.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.train.grad_accum_steps, sync_with_dataloader=False
        ),
        step_scheduler_with_optimizer=False,
        log_with="tensorboard" if cfg.train.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=handlers,
    )


def prepare_data(cfg: RunConfig, accelerator, out: Path):
    """The prepared folder: given, reused from an earlier run with the same data config, or built (main first)."""
    from .data.pipeline import build_prepared_data, load_prepared, reusable

    if cfg.data.prepared:
        return load_prepared(cfg.data.prepared, cfg.tokenizer.name_or_path)
    target = out / "data"
    if accelerator.is_main_process and not reusable(target, cfg.data, cfg.tokenizer):
        build_prepared_data(cfg.data, cfg.tokenizer, target)
    accelerator.wait_for_everyone()
    return load_prepared(target)


def total_steps(cfg: RunConfig, tokens_per_step: int) -> int:
    limits = []
    if cfg.train.max_steps is not None:
        limits.append(cfg.train.max_steps)
    if cfg.train.max_tokens is not None:
        limits.append(math.ceil(cfg.train.max_tokens / tokens_per_step))
    return max(1, min(limits))


def run_pretraining(cfg: RunConfig) -> dict[str, Any]:
    """The main job. Returns the summary it also prints and writes to OUTPUT_DIR/summary.json."""
    from accelerate.utils import set_seed

    precision, _ = check_run_config(cfg)
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg, precision, out)
    started = time.perf_counter()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    set_seed(cfg.train.seed)
    prep = prepare_data(cfg, accelerator, out)
    tokenizer = prep.tokenizer
    from .data.tokenizer import special_token_ids

    model_config = build_model_config(cfg.model, len(tokenizer), special_token_ids(tokenizer))
    seq_len = len(prep.train[0]["input_ids"])
    if seq_len != cfg.data.seq_len and cfg.data.prepared:
        accelerator.print(f"note: the prepared data has blocks of {seq_len} tokens; data.seq_len is ignored")
    set_seed(cfg.train.seed)  # the same initial weights whatever data preparation consumed from the RNG
    model = build_model(model_config, cfg.model.attn_implementation)
    n_params = count_parameters(model_config)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = build_optimizer(model, cfg.train)
    tokens_per_step = cfg.train.micro_batch_size * seq_len * cfg.train.grad_accum_steps * accelerator.num_processes
    steps = total_steps(cfg, tokens_per_step)
    scheduler = build_scheduler(optimizer, steps, cfg.train)
    collate = PackedCollator(tokenizer.eos_token_id, tokenizer.pad_token_id)
    train_loader = build_train_loader(prep.train, cfg.train.micro_batch_size, collate, cfg.train.seed)
    eval_loader = build_eval_loader(prep.validation, cfg.train.micro_batch_size, collate)
    if cfg.train.compile:
        model = torch.compile(model)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    state = LoopState()
    ckpt_root = out / "checkpoints"
    resume = resolve_resume(cfg.train.resume_from, ckpt_root)
    if resume is not None:
        state = load_checkpoint(accelerator, resume)
        accelerator.print(f"resumed from {resume} at step {state.step}")
    if cfg.train.tensorboard:
        accelerator.init_trackers("tensorboard", config=_flat_hparams(cfg))
    setup = LoopSetup(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
        train_loader=train_loader, eval_loader=eval_loader, total_steps=steps, tokens_per_step=tokens_per_step,
        flops_per_token=model_flops_per_token(model_config, seq_len),
        peak_flops=device_peak_flops(accelerator.device, precision, cfg.train.peak_flops),
        checkpoint_dir=ckpt_root,
    )
    accelerator.print(
        f"model: {model_config.model_type}, {n_params:,} parameters | data: {len(prep.train):,} blocks of {seq_len} "
        f"tokens | {steps} steps of {tokens_per_step:,} tokens | {accelerator.num_processes} process(es), {precision}"
    )
    state = run_loop(setup, state, cfg.train, cfg.eval)
    summary = _summary(cfg, prep, state, n_params, precision, accelerator.num_processes, time.perf_counter() - started)
    card = _model_card(cfg, model_config, n_params, prep.card, summary)
    export_dir = export_model(accelerator, model, tokenizer, out / "model", card)
    if accelerator.is_main_process:
        summary["samples"] = generate_samples(export_dir, cfg.eval.sample_prompts, cfg.eval.sample_max_new_tokens,
                                              cfg.eval.sample_temperature, cfg.train.seed)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(format_summary(summary))
    accelerator.end_training()
    return summary


def generate_samples(model_dir: Path, prompts: list[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
    """Continue each prompt with the exported model (which also proves the export loads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    texts = []
    for prompt in prompts:
        torch.manual_seed(seed)
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else None, top_p=0.95 if temperature > 0 else None,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        texts.append(tok.decode(out[0], skip_special_tokens=True))
    return texts


def _flat_hparams(cfg: RunConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in asdict(cfg).items():
        if isinstance(values, dict):
            for k, v in values.items():
                if isinstance(v, (int, float, str, bool)):
                    flat[f"{section}.{k}"] = v
        elif isinstance(values, (int, float, str, bool)):
            flat[section] = values
    return flat


def _summary(cfg, prep, state: LoopState, n_params: int, precision: str, world: int, seconds: float) -> dict[str, Any]:
    rates = [p["tokens_per_second"] for p in state.history if "tokens_per_second" in p]
    mfus = [p["mfu"] for p in state.history if "mfu" in p]
    return {
        "output_dir": str(Path(cfg.output_dir).resolve()),
        "parameters": n_params,
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "epochs": round(state.tokens_seen / max(1, prep.card["train"]["tokens"]), 3),
        "wall_seconds": round(seconds, 1),
        "train_seconds": round(state.elapsed_seconds, 1),
        "processes": world,
        "precision": precision,
        "final_train_loss": state.train_loss,
        "final_val_loss": state.val_loss,
        "final_val_perplexity": math.exp(min(state.val_loss, 50)) if state.val_loss is not None else None,
        "unigram_val_loss": prep.card.get("unigram_validation_loss"),
        "median_tokens_per_second": sorted(rates)[len(rates) // 2] if rates else None,
        "median_mfu": sorted(mfus)[len(mfus) // 2] if mfus else None,
        "history": state.history,
    }


def _model_card(cfg: RunConfig, model_config, n_params: int, data_card: dict, summary: dict) -> str:
    from .hub import render_model_card

    training = {k: summary[k] for k in ("steps", "tokens_seen", "epochs", "train_seconds", "processes", "precision",
                                       "median_tokens_per_second", "median_mfu") if summary.get(k) is not None}
    training["hardware"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    results = {k: summary[k] for k in ("final_train_loss", "final_val_loss", "final_val_perplexity", "unigram_val_loss")
               if summary.get(k) is not None}
    return render_model_card(
        model_name=Path(cfg.output_dir).name, architecture=model_config.model_type, parameters=n_params,
        data=data_card, training=training, results=results, recipe_yaml=config_to_yaml(cfg),
    )


def format_summary(s: dict[str, Any]) -> str:
    def f(x: Optional[float], spec: str = ".4f") -> str:
        return "n/a" if x is None else format(x, spec)

    lines = [
        "=" * 72,
        "hf_llm pretraining summary",
        "-" * 72,
        f"parameters        {s['parameters']:,}",
        f"steps / tokens    {s['steps']:,} steps, {s['tokens_seen']:,} tokens ({s['epochs']} epochs)",
        f"time              {s['train_seconds']:.0f} s training, {s['wall_seconds']:.0f} s in all, "
        f"{s['processes']} process(es), {s['precision']}",
        f"throughput        {f(s['median_tokens_per_second'], ',.0f')} tokens/s, MFU {f(s['median_mfu'], '.1%')}",
        f"train loss        {f(s['final_train_loss'])}",
        f"validation loss   {f(s['final_val_loss'])} (perplexity {f(s['final_val_perplexity'], '.2f')}); "
        f"unigram baseline {f(s['unigram_val_loss'])}",
        "-" * 72,
        f"model (Hub-ready) {s['output_dir']}/model",
        f"checkpoints       {s['output_dir']}/checkpoints",
        f"tensorboard       tensorboard --logdir {s['output_dir']}/logs",
        f"config, summary   {s['output_dir']}/config.yaml, summary.json",
    ]
    for text in s.get("samples", []):
        lines += ["-" * 72, "sample: " + " ".join(text.split())[:400]]
    lines.append("=" * 72)
    return "\n".join(lines)
