"""Fine-tuning an existing causal LM: full, LoRA or QLoRA; SFT data from hf_llm.sft; the shared loop; export.

config → checks (no weights) → tokenizer (pad, chat template) → SFT data → base model (+ adapter) → `fit` →
adapter folder (PEFT format) and optionally a merged model, or the full model; summary and model card.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from .config import RunConfig
from .config.domains import AT_LEAST_1, TEXT, Checked, OneOf, Range
from .errors import ConfigError
from .model import build_model_config, load_pretrained, max_positions
from .sft import SFTConfig, SFTData, build_sft_datasets, complete_tokenizer
from .io import publishing
from .train.checkpoint import LoopState, export_model, strip_compile_prefix, unwrap_for_export
from .train.collate import PackedCollator, PaddingCollator, needs_varlen_kwargs
from .train.run import TrainData, fit, resolve_precision, start_run, strategy_name, wait_for_main
from .train.stages import BlockStage
from .train.samplers import LengthGroupedSampler

METHODS = ("full", "lora", "qlora")


@dataclass
class AdapterConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "method": OneOf(METHODS), "r": AT_LEAST_1, "alpha": AT_LEAST_1, "dropout": Range(0, 1, hi_open=True),
        "target_modules": Checked("all-linear or a list of module names", 7),
    }

    method: str = "lora"  # full | lora | qlora (4-bit nf4 base, CUDA + bitsandbytes only)
    r: int = 16  # LoRA rank: capacity of the update; 8-64 covers most SFT
    alpha: int = 32  # LoRA scale is alpha / r; keeping alpha = 2r keeps the LR meaningful across ranks
    dropout: float = 0.05  # on the LoRA input; regularises small data sets
    target_modules: Any = "all-linear"  # "all-linear" or a list of module names (q_proj, v_proj, ...)
    modules_to_save: list[str] = field(default_factory=list)  # modules trained in full beside the adapter (lm_head)
    use_dora: bool = False  # DoRA: magnitude/direction split, closer to full fine-tuning at low rank
    merge: bool = False  # also write OUTPUT/merged: base + adapter folded into plain weights

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"adapter.method must be one of {METHODS}, got {self.method!r}")
        if self.r < 1:
            raise ConfigError(f"adapter.r must be at least 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"adapter.dropout must be in [0, 1), got {self.dropout}")
        targets = self.target_modules
        if not (targets == "all-linear" or (isinstance(targets, (list, tuple)) and targets
                                            and all(isinstance(t, str) for t in targets))):
            raise ConfigError(f"adapter.target_modules must be 'all-linear' or a list of module names, got {targets!r}")
        if self.merge and self.method == "full":
            raise ConfigError("adapter.merge applies to lora/qlora; full fine-tuning already writes a plain model")


@dataclass
class FinetuneRunConfig(RunConfig):
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "output_dir": TEXT,
    }

    output_dir: str = "runs/finetune"  # adapter/ or model/, merged/, checkpoints/, logs/, config.yaml, summary.json
    sft: SFTConfig = field(default_factory=SFTConfig)  # data formats, chat template, masking, length, packing
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  # what is trained and what is written


def check_qlora_available() -> None:
    """QLoRA needs CUDA and bitsandbytes; checked before any weight is loaded."""
    if not torch.cuda.is_available():
        raise ConfigError("adapter.method=qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); use adapter.method=lora")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA setup raising at import
        raise ConfigError(f"adapter.method=qlora needs the bitsandbytes package ({e}); install it, or use lora") \
            from None


def check_base_model(name_or_path: Optional[str]) -> None:
    if not name_or_path:
        raise ConfigError("model.name_or_path is required: the model to fine-tune (a local folder or a Hub id)")
    path = Path(name_or_path).expanduser()
    looks_local = path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(f"model.name_or_path={name_or_path!r} does not exist or has no config.json (a model folder "
                          f"such as OUTPUT/model from scripts/pretrain.py, or a Hub id)")


def check_finetune_config(cfg: FinetuneRunConfig) -> tuple[str, Any]:
    """Checks that need no data or weights, so mistakes fail in seconds. Returns (precision, model config)."""
    from .downstream import check_tasks
    from .hub import check_push_ready

    if cfg.data.stages:
        raise ConfigError("data.stages (staged mixtures) is for pretraining; fine-tuning reads data.sources")
    check_base_model(cfg.model.name_or_path)
    check_push_ready(cfg.hub)  # no token or offline mode: fail now, not after training
    check_tasks(cfg.eval.tasks, cfg.eval.harness_tasks)  # a malformed task file fails before data preparation
    if cfg.hub.push_every:
        raise ConfigError("hub.push_every exports full checkpoints; fine-tuning pushes its final adapter or model "
                          "(hub.push=true) only")
    if cfg.model.overrides:
        raise ConfigError("model.overrides are not applied when fine-tuning: the base model's config is used as is")
    if cfg.data.prepared:
        raise ConfigError("data.prepared holds packed pretraining blocks; fine-tuning reads data.sources")
    if cfg.export.gguf and cfg.adapter.method != "full" and not cfg.adapter.merge:
        raise ConfigError("export.gguf needs plain weights: set adapter.merge=true (the GGUF is written from merged/) "
                          "or adapter.method=full")
    precision = resolve_precision(cfg.train.precision)
    if cfg.adapter.method == "qlora":
        check_qlora_available()
    try:
        model_config = build_model_config(cfg.model)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read model.name_or_path={cfg.model.name_or_path!r}: {e}") from None
    limit = max_positions(model_config)
    if limit is not None and cfg.sft.max_length > limit:
        raise ConfigError(f"sft.max_length={cfg.sft.max_length} exceeds the model's {limit} positions; lower it")
    from .data.sources import resolve_files

    for src in cfg.data.sources:
        if src.format != "hub":
            resolve_files(src.path)
    return precision, model_config


def load_sft_tokenizer(cfg: FinetuneRunConfig, model_config) -> tuple[Any, dict[str, str]]:
    """The base model's tokenizer (or tokenizer.name_or_path), given a pad token and chat template if missing."""
    from .data.tokenizer import load_tokenizer

    name = cfg.tokenizer.name_or_path or cfg.model.name_or_path
    try:
        tokenizer = load_tokenizer(name, cfg.model.revision if name == cfg.model.name_or_path else None,
                                   cfg.model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from {name!r}: {e}; set tokenizer.name_or_path") from None
    if len(tokenizer) > model_config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model only {model_config.vocab_size} "
                          f"embeddings; use the base model's own tokenizer")
    return tokenizer, complete_tokenizer(tokenizer, cfg.sft.chat_template)


def load_base_model(cfg: FinetuneRunConfig, precision: str, device_index: int = 0):
    """fp32 master weights for full fine-tuning; a frozen base in the compute dtype for LoRA; 4-bit nf4 for QLoRA."""
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if cfg.adapter.method == "full":
        return load_pretrained(cfg.model, torch.float32)
    if cfg.adapter.method == "lora":
        return load_pretrained(cfg.model, compute)  # frozen: no fp32 masters needed; adapters stay fp32 (peft)
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code,
        attn_implementation=cfg.model.attn_implementation, dtype=compute, use_safetensors=True,
        quantization_config=quant, device_map={"": device_index},  # 4-bit weights are placed at load time
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def apply_adapter(model, adapter: AdapterConfig):
    """Wrap `model` in a PEFT LoRA (or DoRA) adapter; only the adapter (and modules_to_save) stays trainable."""
    from peft import LoraConfig, get_peft_model

    targets = adapter.target_modules if adapter.target_modules == "all-linear" else list(adapter.target_modules)
    lora = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, target_modules=targets,
                      modules_to_save=list(adapter.modules_to_save) or None, use_dora=adapter.use_dora,
                      bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"adapter.target_modules: {e}; this model's linear layers are {linear}") from None


def count_trainable(model) -> tuple[int, int]:
    """(trainable, total) parameters; peft counts 4-bit weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return tuple(int(x) for x in model.get_nb_trainable_parameters())
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


def build_finetune_model(cfg: FinetuneRunConfig, precision: str, device_index: int = 0):
    model = load_base_model(cfg, precision, device_index)
    return model if cfg.adapter.method == "full" else apply_adapter(model, cfg.adapter)


def run_finetuning(cfg: FinetuneRunConfig) -> dict[str, Any]:
    """The main job. Returns the summary it also prints and writes to OUTPUT_DIR/summary.json."""
    from accelerate.utils import set_seed

    from .data.tokenizer import adds_bos

    precision, model_config = check_finetune_config(cfg)
    tokenizer, notes = load_sft_tokenizer(cfg, model_config)
    if cfg.export.gguf:  # an architecture or tokenizer GGUF cannot declare fails now, not after training
        from .gguf import check_exportable

        check_exportable(model_config, tokenizer)
    started = time.perf_counter()
    accelerator, out, cfg = start_run(cfg, precision)  # cfg: the run's, with grad_accum_steps resolved
    # The main process writes the datasets cache first, the others then read it (main_process_first, with a
    # barrier whose timeout names the setting to raise).
    def build() -> SFTData:
        return build_sft_datasets(cfg.data, cfg.sft, tokenizer, adds_bos(tokenizer))

    data = build() if accelerator.is_main_process else None
    wait_for_main(accelerator, cfg.train, "preparing the fine-tuning data")
    data = data if data is not None else build()
    for line in notes.values():
        if "tokenizer's own" not in line:  # never silent about what we added to the tokenizer
            accelerator.print(f"note: {line}")
    set_seed(cfg.train.seed)  # adapter initialisation independent of what data preparation consumed
    model = build_finetune_model(cfg, precision, accelerator.local_process_index)
    trainable, total = count_trainable(model)
    if cfg.sft.packing:
        collate = PackedCollator(tokenizer.eos_token_id, tokenizer.pad_token_id,
                                 varlen=needs_varlen_kwargs(cfg.model.attn_implementation))
        sampler = None
        seq_len = cfg.sft.max_length
    else:
        lengths = [len(x) for x in data.train["input_ids"]]
        collate = PaddingCollator(tokenizer.pad_token_id)
        sampler = LengthGroupedSampler(lengths, cfg.train.micro_batch_size, cfg.train.seed)
        seq_len = max(1, round(data.stats["train"]["mean_length"]))  # token budget and throughput count real tokens
    description = (f"fine-tuning {cfg.model.name_or_path} ({cfg.adapter.method}): {trainable:,} trainable of "
                   f"{total:,} parameters ({trainable / total:.2%})")
    train_data = TrainData([BlockStage(data.train, collate, sampler=sampler)], seq_len, data.validation, collate,
                           tokenizer=tokenizer)
    state, model = fit(cfg, accelerator, model, train_data, precision, out, description=description)
    summary = _summary(cfg, data, state, trainable, total, precision, notes, tokenizer, accelerator.num_processes,
                       time.perf_counter() - started, strategy_name(accelerator))
    card = _model_card(cfg, model_config, total, data, summary, tokenizer, adapter_folder=cfg.adapter.method != "full")
    if cfg.adapter.method == "full":
        summary["model_dir"] = str(export_model(accelerator, model, tokenizer, out / "model", card))
    else:
        summary["adapter_dir"] = str(export_adapter(accelerator, model, tokenizer, out / "adapter", card))
        if cfg.adapter.merge:
            summary["merged_dir"] = str(out / "merged")
            if accelerator.is_main_process:
                merged_card = _model_card(cfg, model_config, total, data, summary, tokenizer, adapter_folder=False)
                merge_adapter(cfg, out / "adapter", tokenizer, out / "merged", merged_card)
            accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if cfg.export.gguf:  # from the plain weights: model/ (full) or merged/ (checked before training)
            from .gguf import write_job_gguf

            summary["gguf"] = write_job_gguf(Path(summary.get("merged_dir") or summary["model_dir"]), cfg.export.gguf)
        if cfg.hub.push:  # the adapter (or the full model); a failure is reported with its retry command, not raised
            from .hub import finish_pushes

            summary["hub"] = finish_pushes(cfg.hub, Path(summary.get("adapter_dir") or summary["model_dir"]), None)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(format_summary(summary))
    accelerator.end_training()
    return summary


def export_adapter(accelerator, model, tokenizer, out_dir: Path, card: str) -> Path:
    """PEFT adapter folder (adapter_config.json + adapter_model.safetensors), tokenizer and model card."""
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3/FSDP: every process calls it
    unwrapped = unwrap_for_export(accelerator, model)
    if accelerator.is_main_process:
        with publishing(out_dir) as tmp:
            # peft keeps only the adapter's tensors
            unwrapped.save_pretrained(str(tmp), state_dict=strip_compile_prefix(state_dict))
            tokenizer.save_pretrained(str(tmp))
            (tmp / "README.md").write_text(card)  # replaces peft's generic card
    accelerator.wait_for_everyone()
    return out_dir


def merge_adapter(cfg: FinetuneRunConfig, adapter_dir: Path, tokenizer, out_dir: Path, card: str) -> Path:
    """Fold the adapter into a full-precision copy of the base (not the 4-bit one) and save a plain model folder.

    Main process only: it reloads the base from disk, so it works the same after ZeRO-3 or QLoRA training.
    """
    from peft import PeftModel

    from .model import outside_zero3

    with outside_zero3():  # a plain load on one process, even inside a ZeRO-3 launch
        base = load_pretrained(cfg.model, torch.float32)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if merged.generation_config.pad_token_id is None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    with publishing(out_dir) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(card)
    return out_dir


def _summary(cfg: FinetuneRunConfig, data: SFTData, state: LoopState, trainable: int, total: int, precision: str,
             notes: dict[str, str], tokenizer, world: int, seconds: float, strategy: str) -> dict[str, Any]:
    from .train.summary import run_summary

    examples_seen = state.step * cfg.train.micro_batch_size * cfg.train.grad_accum_steps * world
    return run_summary(cfg, state, precision, world, seconds, {
        "base_model": cfg.model.name_or_path,
        "method": cfg.adapter.method,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_fraction": trainable / max(1, total),
        "epochs": round(examples_seen / max(1, len(data.train)), 3),
        "data": data.stats,
        "pad_token": notes["pad_token"],
        "chat_template_source": notes["chat_template"],
        "chat_template": tokenizer.chat_template,
        # Frozen weights get no weight gradient: MFU charges them 4 FLOPs per token, not 6 (hf_llm.estimate).
        "mfu_flops_per_token": ("6N + attention" if cfg.adapter.method == "full"
                                else "4N + 2N_trainable + attention (frozen base weights get no weight gradient)"),
    }, strategy)


TRAINING_KEYS = ("method", "trainable_parameters", "steps", "epochs", "train_seconds", "processes", "strategy",
                 "precision", "median_mfu", "mfu_flops_per_token")  # the card's Training table


def _model_card(cfg: FinetuneRunConfig, model_config, total: int, data: SFTData, summary: dict, tokenizer,
                adapter_folder: bool = True) -> str:
    """The shared run card plus a Fine-tuning section; `adapter_folder` adds how to load a PEFT adapter."""
    from .cards import run_card
    from .downstream import card_metrics, card_results

    stats = dict(data.stats)  # the card's split table speaks of documents (here examples) and blocks (rows)
    for split in ("train", "validation"):
        stats[split] = {**stats[split], "documents": stats[split]["examples"], "blocks": stats[split]["rows"]}
    stats["vocab_size"] = len(tokenizer)
    downstream = summary.get("downstream") or {}
    return run_card(cfg, summary, architecture=model_config.model_type, parameters=total, data=stats,
                    training_keys=TRAINING_KEYS, results=card_results(downstream),
                    metrics=card_metrics(downstream, cfg.eval.tasks), base_model=cfg.model.name_or_path,
                    fine_tuning=_fine_tuning_section(cfg, summary, tokenizer, adapter_folder))


def _fine_tuning_section(cfg: FinetuneRunConfig, summary: dict, tokenizer, adapter_folder: bool) -> dict[str, Any]:
    """The values of the card's Fine-tuning section (hf_llm/templates/model_card.md)."""
    a = cfg.adapter
    adapter = (f"LoRA r={a.r}, alpha={a.alpha}, dropout={a.dropout}, targets {a.target_modules}"
               f"{', DoRA' if a.use_dora else ''}{', 4-bit nf4 base (QLoRA)' if a.method == 'qlora' else ''}")
    batching = (f"packed rows of {cfg.sft.max_length} tokens, position ids restarting per example" if cfg.sft.packing
                else "padded per batch, grouped by length")
    loss = "assistant turns and their closing end-of-turn token only" if cfg.sft.completion_only else "every token"
    return {"base_model": cfg.model.name_or_path, "method": "full fine-tuning" if a.method == "full" else adapter,
            "loss": loss, "batching": batching, "pad_token": summary["pad_token"],
            "chat_template_source": summary["chat_template_source"], "chat_template": tokenizer.chat_template,
            "adapter": adapter_folder}


def format_summary(s: dict[str, Any]) -> str:
    from .train.summary import format_summary as frame, run_lines

    d = s["data"]
    dropped = {k: sum(v.get(k, 0) for v in d["sources"].values()) for k in ("truncated", "dropped", "no_targets")}
    facts = [
        f"base model        {s['base_model']} ({s['method']})",
        f"parameters        {s['trainable_parameters']:,} trainable of {s['total_parameters']:,} "
        f"({s['trainable_fraction']:.2%})",
        f"examples          {d['train']['examples']:,} train, {d['validation']['examples']:,} validation; "
        f"{dropped['truncated']} truncated, {dropped['dropped']} dropped (too long), "
        f"{dropped['no_targets']} dropped (no target left)",
        f"steps             {s['steps']:,} ({s['epochs']} epochs), {s['train_seconds']:.0f} s training, "
        f"{s['processes']} process(es), {s['strategy']}, {s['precision']}",
        *run_lines(s),
        f"pad token         {s['pad_token']}",
        f"chat template     {s['chat_template_source']}",
    ]
    outputs = [f"{label:<18}{s[key]}" for key, label in (("adapter_dir", "adapter (PEFT)"),
                                                          ("merged_dir", "merged model"), ("model_dir", "model"),
                                                          ("gguf", "gguf (llama.cpp)"))
               if key in s]
    return frame("fine-tuning", s, facts, [*outputs, f"config, summary   {s['output_dir']}/config.yaml, summary.json"])
