"""Pretraining: config → data → model → the shared loop → export and summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from .config import RunConfig
from .errors import ConfigError
from .model import build_model, build_model_config, count_parameters, max_positions
from .train.checkpoint import LoopState, export_model
from .train.metrics import memory_summary
from .train.collate import PackedCollator, needs_varlen_kwargs
from .train.run import TrainData, fit, resolve_precision, start_run, strategy_name, wait_for_main
from .train.stages import TrainStage


def check_run_config(cfg: RunConfig) -> tuple[str, Any]:
    """Checks that need no data or weights, so mistakes fail in seconds. Returns (precision, model config)."""
    from .downstream import check_tasks
    from .hub import check_push_ready

    check_push_ready(cfg.hub)  # no token or offline mode: fail now, not after training
    check_tasks(cfg.eval.tasks, cfg.eval.harness_tasks)  # a malformed task file fails before data preparation
    precision = resolve_precision(cfg.train.precision)
    model_config = build_model_config(cfg.model)
    if cfg.export.gguf:
        from .gguf import check_architecture

        check_architecture(model_config)  # the tokenizer is checked once it exists, still before training
    limit = max_positions(model_config)
    if limit is not None and cfg.data.seq_len > limit:
        raise ConfigError(
            f"data.seq_len={cfg.data.seq_len} exceeds the model's max_position_embeddings={limit}; lower "
            f"data.seq_len or raise model.overrides.max_position_embeddings"
        )
    if cfg.data.stream_train:
        from .data.stream import check_stream_config

        check_stream_config(cfg.data, cfg.tokenizer.name_or_path)
    if cfg.train.init_from:
        from .train.checkpoint import check_init_from, resolve_resume

        if resolve_resume(cfg.train.resume_from, Path(cfg.output_dir) / "checkpoints") is None:
            check_init_from(cfg.train.init_from, Path(cfg.output_dir) / "checkpoints")
    if cfg.data.stages:
        from .data.stages import check_stage_sources

        check_stage_sources(cfg.data)
    elif cfg.data.prepared is None:
        from .data.sources import resolve_files

        for src in cfg.data.sources:
            if src.format != "hub":
                resolve_files(src.path)
    elif not Path(cfg.data.prepared).is_dir():
        raise ConfigError(f"data.prepared={cfg.data.prepared!r} is not a folder; run scripts/prepare_data.py first")
    return precision, model_config


def prepare_data(cfg: RunConfig, accelerator, out: Path):
    """The prepared folder: given, reused from an earlier run with the same data config, or built (main first)."""
    from .data.pipeline import PreparedData, build_prepared_data, data_fingerprint, load_prepared, reusable

    if cfg.data.stream_train:  # nothing written: validation is packed in memory, training is read as it goes
        from .data.stream import validation_dataset
        from .data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer.name_or_path)
        validation = validation_dataset(cfg.data, tokenizer)
        card = {"streamed": True, "train": {"seq_len": cfg.data.seq_len},
                "fingerprint": data_fingerprint(cfg.data, cfg.tokenizer),
                "validation": {"blocks": len(validation), "tokens": len(validation) * cfg.data.seq_len}}
        return PreparedData(None, validation, tokenizer, card, out)
    if cfg.data.prepared:
        return load_prepared(cfg.data.prepared, cfg.tokenizer.name_or_path)
    target = out / "data"
    if accelerator.is_main_process and not reusable(target, cfg.data, cfg.tokenizer):
        build_prepared_data(cfg.data, cfg.tokenizer, target)
    wait_for_main(accelerator, cfg.train, "preparing the data")
    return load_prepared(target)


def prepare_stages(cfg: RunConfig, accelerator, out: Path):
    """`data.stages`: one prepared folder per stage (built on the main process, or given), or one stream per stage.
    Returns (the run's data: the first stage's validation and tokenizer with the staged card, every stage's data)."""
    from .data.pipeline import PreparedData
    from .data.stages import (build_stage_folders, load_stage_folders, shared_source_notes, stage_data_config,
                              stage_names, staged_card, streamed_fingerprints)

    names = stage_names(cfg.data)
    for note in shared_source_notes(cfg.data):
        accelerator.print(f"note: {note}")
    if cfg.data.stream_train:
        from .data.sources import source_label
        from .data.stream import validation_dataset
        from .data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer.name_or_path)
        validation = validation_dataset(stage_data_config(cfg.data, cfg.data.stages[0]), tokenizer)
        fingerprints = streamed_fingerprints(cfg.data, cfg.tokenizer)
        cards = [{"streamed": True, "fingerprint": fp, "train": {"seq_len": cfg.data.seq_len},
                  "sources": {source_label(src): {"weight": src.weight} for src in stage.sources}}
                 for fp, stage in zip(fingerprints, cfg.data.stages)]
        cards[0]["validation"] = {"blocks": len(validation), "tokens": len(validation) * cfg.data.seq_len}
        stages = [PreparedData(None, validation if i == 0 else None, tokenizer, card, out)
                  for i, card in enumerate(cards)]
    else:
        if accelerator.is_main_process:
            build_stage_folders(cfg.data, cfg.tokenizer, out / "data")
        wait_for_main(accelerator, cfg.train, "preparing the data stages")
        stages = load_stage_folders(cfg.data, cfg.tokenizer, out / "data")
    first = stages[0]
    prep = PreparedData(first.train, first.validation, first.tokenizer, staged_card(names, [s.card for s in stages]),
                        out / "data")
    return prep, stages


def run_pretraining(cfg: RunConfig) -> dict[str, Any]:
    """The main job. Returns the summary it also prints and writes to OUTPUT_DIR/summary.json."""
    from accelerate.utils import set_seed

    precision, _ = check_run_config(cfg)
    started = time.perf_counter()
    accelerator, out, cfg = start_run(cfg, precision)  # cfg: the run's, with grad_accum_steps resolved
    stages = None  # data.stages: every stage's data; `prep` is then the run's view (first stage's validation)
    if cfg.data.stages:
        prep, stages = prepare_stages(cfg, accelerator, out)
    else:
        prep = prepare_data(cfg, accelerator, out)
    tokenizer = prep.tokenizer
    from .data.tokenizer import special_token_ids

    model_config = build_model_config(cfg.model, len(tokenizer), special_token_ids(tokenizer))
    if cfg.export.gguf:  # an architecture or tokenizer GGUF cannot declare fails now, not after training
        from .gguf import check_exportable

        check_exportable(model_config, tokenizer)
    seq_len = cfg.data.seq_len if prep.train is None else len(prep.train[0]["input_ids"])
    if seq_len != cfg.data.seq_len and (cfg.data.prepared or stages):
        accelerator.print(f"note: the prepared data has blocks of {seq_len} tokens; data.seq_len is ignored")
    set_seed(cfg.train.seed)  # the same initial weights whatever data preparation consumed from the RNG
    model = build_model(model_config, cfg.model.attn_implementation)
    n_params = count_parameters(model_config)
    collate = PackedCollator(tokenizer.eos_token_id, tokenizer.pad_token_id,
                             varlen=needs_varlen_kwargs(cfg.model.attn_implementation))
    from .cards import model_card_pictures
    from .hub import checkpoint_push_hook, finish_pushes

    def data_card(st: LoopState) -> dict:
        """The data card at the loop's current state: a staged run's says what each stage has trained so far."""
        if stages is None:
            return prep.card
        from .data.stages import stage_names, staged_card

        return staged_card(stage_names(cfg.data), [s.card for s in stages], st)

    def card_for(st: LoopState) -> tuple[str, dict[str, bytes]]:
        """The card (and its pictures) of an export at the loop's current state."""
        files = model_card_pictures(st.history)
        interim = _summary(cfg, prep, st, n_params, precision, accelerator.num_processes, time.perf_counter() - started,
                           strategy_name(accelerator))
        return _model_card(cfg, model_config, n_params, data_card(st), interim, pictures=files), files

    push_hook, pusher = checkpoint_push_hook(cfg.hub, accelerator, tokenizer, out, card_for)
    data = TrainData(_train_stages(cfg, prep, stages, accelerator, collate), seq_len, prep.validation, collate,
                     tokenizer=tokenizer)
    state, model = fit(cfg, accelerator, model, data, precision, out,
                       description=f"model: {model_config.model_type}, {n_params:,} parameters",
                       on_checkpoint=push_hook)
    summary = _summary(cfg, prep, state, n_params, precision, accelerator.num_processes, time.perf_counter() - started,
                       strategy_name(accelerator))
    summary.update(memory_summary(accelerator, model, cfg.train, model_config, seq_len))
    if stages is not None:
        summary["stages"] = data_card(state)["stages"]
    card, files = card_for(state)
    export_dir = export_model(accelerator, model, tokenizer, out / "model", card, extra_files=files)
    if accelerator.is_main_process:
        from .gguf import write_job_gguf

        summary["gguf"] = write_job_gguf(export_dir, cfg.export.gguf)  # before the push, which then carries it
        summary["samples"] = sample_export(export_dir, cfg.eval.sample_prompts, cfg.eval.sample_max_new_tokens,
                                              cfg.eval.sample_temperature, cfg.train.seed)
        if cfg.hub.push:  # after the samples, which prove the export loads; a failure is reported, not raised
            summary["hub"] = finish_pushes(cfg.hub, export_dir, pusher)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(format_summary(summary))
    accelerator.end_training()
    return summary


def _train_stages(cfg: RunConfig, prep, stages, accelerator, collate) -> list[TrainStage]:
    """What the loop trains on: each data stage's blocks, or with stream_train its stream (one stage without
    data.stages)."""
    from .data.stream import batched_train_stream
    from .train.stages import BlockStage, StreamedStage

    rank, world, micro = accelerator.process_index, accelerator.num_processes, cfg.train.micro_batch_size
    if stages is None:
        if cfg.data.stream_train:
            return [StreamedStage(batched_train_stream(cfg.data, prep.tokenizer, rank, world, micro, collate),
                                  fingerprint=prep.card.get("fingerprint"))]
        return [BlockStage(prep.train, collate, fingerprint=prep.card.get("fingerprint"))]
    from .data.stages import stage_names, stream_stage_opens

    names, bounds = stage_names(cfg.data), [(stage.until_step, stage.until_tokens) for stage in cfg.data.stages]
    if cfg.data.stream_train:
        opens = stream_stage_opens(cfg.data, prep.tokenizer, rank, world, micro, collate)
        return [StreamedStage(open_, name, *bound, s.card.get("fingerprint"))
                for open_, name, bound, s in zip(opens, names, bounds, stages)]
    return [BlockStage(s.train, collate, name, *bound, s.card.get("fingerprint"))
            for s, name, bound in zip(stages, names, bounds)]


def sample_export(model_dir: Path, prompts: list[str], max_new_tokens: int, temperature: float,
                  seed: int) -> list[dict[str, str]]:
    """Greedy and sampled continuations from the exported folder (which also proves the export loads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluation import generate_samples
    from .model import outside_zero3

    if not prompts:
        return []
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    with outside_zero3():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    return generate_samples(model, tok, prompts, max_new_tokens, temperature, 0.95, seed)


def _summary(cfg, prep, state: LoopState, n_params: int, precision: str, world: int, seconds: float,
             strategy: str) -> dict[str, Any]:
    from .train.summary import run_summary

    epochs = None if prep.train is None else round(state.tokens_seen / max(1, prep.card["train"]["tokens"]), 3)
    return run_summary(cfg, state, precision, world, seconds, {
        "parameters": n_params, "tokens_seen": state.tokens_seen, "epochs": epochs,
        "unigram_val_loss": prep.card.get("unigram_validation_loss"),
    }, strategy)


TRAINING_KEYS = ("steps", "tokens_seen", "epochs", "train_seconds", "processes", "strategy", "precision",
                 "median_tokens_per_second", "median_mfu")  # the card's Training table


def _model_card(cfg: RunConfig, model_config, n_params: int, data_card: dict, summary: dict,
                pictures: Iterable[str] = ()) -> str:
    from .cards import run_card, validation_metrics
    from .downstream import card_metrics, card_results

    downstream = summary.get("downstream") or {}
    sources = "+".join(data_card.get("sources", {})) or "validation"
    return run_card(cfg, summary, architecture=model_config.model_type, parameters=n_params, data=data_card,
                    training_keys=TRAINING_KEYS, results=card_results(downstream), pictures=pictures,
                    metrics=[*validation_metrics(summary, sources), *card_metrics(downstream, cfg.eval.tasks)])


def format_summary(s: dict[str, Any]) -> str:
    from .train.summary import format_summary as frame, na, run_lines

    facts = [
        f"parameters        {s['parameters']:,}",
        f"steps / tokens    {s['steps']:,} steps, {s['tokens_seen']:,} tokens ({na(s['epochs'], 'g')} epochs)",
        f"time              {s['train_seconds']:.0f} s training, {s['wall_seconds']:.0f} s in all, "
        f"{s['processes']} process(es), {s['strategy']}, {s['precision']}",
        f"throughput        {na(s['median_tokens_per_second'], ',.0f')} tokens/s, MFU {na(s['median_mfu'], '.1%')}",
        *run_lines(s),
        *(f"data stage        {st['name']}: {st['steps']:,} steps, {st['tokens']:,} tokens ({st['sources']})"
          for st in s.get("stages", [])),
    ]
    outputs = [
        f"model (Hub-ready) {s['output_dir']}/model",
        *([f"gguf (llama.cpp) {s['gguf']}"] if s.get("gguf") else []),
        f"checkpoints       {s['output_dir']}/checkpoints",
        f"tensorboard       tensorboard --logdir {s['output_dir']}/logs",
        f"config, summary   {s['output_dir']}/config.yaml, summary.json",
    ]
    return frame("pretraining", s, facts, outputs)
