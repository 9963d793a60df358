"""Staged data mixtures (`data.stages`) and decaying a stable-phase checkpoint (`train.init_from`).

In-process runs of the tiny model on two small corpora of different text (KJV verses, Jargon File entries), each
prepared once with one shared tokenizer:
- every micro-batch before the boundary comes from the first stage, every one after it from the second; the same
  with `data.stream_train` (resume across the boundary, bit for bit: tests/matrix/test_resume_matrix.py);
- stages built on the fly: one folder per stage, one tokenizer (learned on the first stage), reused when unchanged
  and rebuilt when the first stage's tokenizer changed; summary and model card say what each stage trained;
- a decay run from a stable-phase checkpoint continues that run exactly: on the same data with the same LR
  multipliers its export equals the single WSD run's, its first loss is that run's next loss, its LR decays linearly
  from the stable LR to the minimum, and an interrupted decay run resumes exactly;
- the configuration errors a user can hit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_llm.config import load_config, save_config
from hf_llm.errors import ConfigError
from hf_llm.errors import DataError
from hf_llm.train.loop import optimizer_step  # the original: tests wrap the loop's

from ..conftest import sample_documents, tiny_overrides, reset_accelerate_state

STEPS = 6
BOUNDARY = 3  # the first stage ends after step 3: until_tokens=700 at 256 tokens per step rounds up to it


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Two corpora of 30 short documents each, a tokenizer trained on both, and each corpus prepared with it."""
    from hf_llm.config import TokenizerConfig
    from hf_llm.data.pipeline import build_prepared_data
    from hf_llm.data.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("stages")
    texts = {"kjv": [d["text"][:300] for d in sample_documents(30, "kjv")],
             "jargon": [d["text"][:300] for d in sample_documents(30, "jargon_file")]}
    paths: dict[str, Path] = {}
    for name, docs in texts.items():
        paths[name] = root / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    train_bpe_tokenizer(texts["kjv"] + texts["jargon"], TokenizerConfig(vocab_size=400)).save_pretrained(
        str(root / "tokenizer"))
    paths["tokenizer"] = root / "tokenizer"
    for name in ("kjv", "jargon"):
        cfg = load_config(None, _data_settings(paths) + [f"data.sources=[{{path: '{paths[name]}'}}]"])
        prepared = build_prepared_data(cfg.data, cfg.tokenizer, root / f"prepared-{name}")
        assert len(prepared.train) >= 40 and len(prepared.validation) >= 2
        paths[f"prepared-{name}"] = root / f"prepared-{name}"
    return paths


def _data_settings(paths: dict[str, Path]) -> list[str]:
    """Short documents would all fail the Gopher filters; the tokenizer is the shared one."""
    return ["data.seq_len=64", "data.validation_fraction=0.2", f"tokenizer.name_or_path={paths['tokenizer']}",
            "data.clean.gopher_quality.enabled=false", "data.clean.gopher_repetition.enabled=false"]


def _overrides(out: Path, paths: dict[str, Path], *extra: str) -> list[str]:
    """4 blocks of 64 tokens per step (2 micro-batches of 2: a boundary must not split an accumulation window).
    tiny_overrides names one source; a staged run has none besides its stages'."""
    staged = ["data.sources=[]"] if any(e.startswith("data.stages=") for e in extra) else []
    return tiny_overrides(out, paths["kjv"], *_data_settings(paths), *staged, f"train.max_steps={STEPS}",
                          "train.micro_batch_size=2", "train.grad_accum_steps=2", "train.save_every=1",
                          "train.keep_last=10", "train.log_every=1", "eval.every=2", "train.cpu_threads=1", *extra)


def _staged(paths: dict[str, Path], stream: bool = False) -> list[str]:
    if stream:
        stages = (f"data.stages=[{{sources: [{{path: '{paths['kjv']}'}}], until_tokens: 700, name: main}}, "
                  f"{{sources: [{{path: '{paths['jargon']}'}}], name: anneal}}]")
        return [stages, "data.stream_train=true"]
    return [f"data.stages=[{{prepared: '{paths['prepared-kjv']}', until_tokens: 700, name: main}}, "
            f"{{prepared: '{paths['prepared-jargon']}', name: anneal}}]"]


def _run(out: Path, overrides: list[str], record: list | None = None) -> dict:
    """One in-process run; `record` collects, per optimizer step, the input_ids rows of each micro-batch."""
    from hf_llm.pretrain import run_pretraining
    from hf_llm.train import loop

    original = loop.train_step

    def recorded(accelerator, model, micro_batches, *args, **kwargs):
        record.append([[tuple(row) for row in b["input_ids"].tolist()] for b in micro_batches])
        return original(accelerator, model, micro_batches, *args, **kwargs)

    if record is not None:
        loop.train_step = recorded
    try:
        return run_pretraining(load_config(None, overrides))
    finally:
        loop.train_step = original
        reset_accelerate_state()


def _state(out: Path, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step-{step}" / "trainer_state.json").read_text())


def _assert_same_tensors(a_file: Path, b_file: Path) -> None:
    a, b = load_file(str(a_file)), load_file(str(b_file))
    assert a.keys() == b.keys() and a
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


def _by_step(summary: dict, key: str) -> dict[int, float]:
    return {p["step"]: p[key] for p in summary["history"] if key in p}


def _rows(prepared: Path) -> set[tuple[int, ...]]:
    from datasets import load_from_disk

    return {tuple(r) for r in load_from_disk(str(prepared / "train"))["input_ids"]}


def _streamed_rows(paths: dict[str, Path], name: str) -> set[tuple[int, ...]]:
    """The blocks one epoch of a source's training stream holds (one process)."""
    from hf_llm.data.stream import train_blocks
    from hf_llm.data.tokenizer import load_tokenizer

    data = load_config(None, _data_settings(paths) + [f"data.sources=[{{path: '{paths[name]}'}}]"]).data
    return {tuple(b["input_ids"].tolist()) for b in train_blocks(data, load_tokenizer(str(paths["tokenizer"])), 0, 1)}


# ------------------------------------------------------------------------------------------------ the switch
# (Resume across the boundary, bit for bit, stopped before, at and after it, in memory and streamed, on 1 and 2
# processes: tests/matrix/test_resume_matrix.py.)


def test_a_staged_run_switches_data_at_the_boundary(corpora, tmp_path, one_thread):
    full_out, full_batches = tmp_path / "full", []
    full = _run(full_out, _overrides(full_out, corpora, *_staged(corpora)), full_batches)

    # The switch: every micro-batch of the first 3 steps is first-stage data, every later one second-stage data.
    first, second = _rows(corpora["prepared-kjv"]), _rows(corpora["prepared-jargon"])
    assert not first & second
    assert len(full_batches) == STEPS
    for step, micro in enumerate(full_batches, start=1):
        assert all(set(rows) <= (first if step <= BOUNDARY else second) for rows in micro), step
    assert [_state(full_out, s)["stage"] for s in range(1, STEPS + 1)] == [0, 0, 0, 1, 1, 1]
    # At the boundary the position is still the first stage's (3 steps of 2 micro-batches); then it restarts.
    assert (_state(full_out, 3)["batches_in_epoch"], _state(full_out, 4)["batches_in_epoch"]) == (6, 2)
    assert [(s["name"], s["steps"], s["tokens"]) for s in full["stages"]] == [("main", 3, 768), ("anneal", 3, 768)]
    assert [p["data_stage"] for p in full["history"] if "loss" in p] == [0, 0, 0, 1, 1, 1]


def test_streamed_stages_switch_at_the_boundary(corpora, tmp_path, one_thread):
    full_out, full_batches = tmp_path / "full", []
    full = _run(full_out, _overrides(full_out, corpora, *_staged(corpora, stream=True)), full_batches)
    assert [(s["name"], s["steps"]) for s in full["stages"]] == [("main", 3), ("anneal", 3)]
    first, second = _streamed_rows(corpora, "kjv"), _streamed_rows(corpora, "jargon")
    assert not first & second
    for step, micro in enumerate(full_batches, start=1):
        assert all(set(rows) <= (first if step <= BOUNDARY else second) for rows in micro), step
    assert _state(full_out, 4)["stream_positions"] == [[0, 2]]


def test_resuming_with_boundaries_that_move_the_checkpoint_to_another_stage(corpora, tmp_path, one_thread):
    out = tmp_path / "run"
    _run(out, _overrides(out, corpora, *_staged(corpora), "train.stop_after_steps=4"))
    moved = _staged(corpora)[0].replace("until_tokens: 700", "until_step: 5")
    with pytest.raises(ConfigError, match="written in data stage 1.*put step 4 in stage 0"):
        _run(out, _overrides(out, corpora, moved, "train.resume_from=latest"))


# ------------------------------------------------------------------------------------------------ built on the fly


def test_stages_built_on_the_fly_share_one_tokenizer(corpora, tmp_path, one_thread, monkeypatch, capsys):
    from hf_llm.data import pipeline
    from hf_llm.data.stages import same_tokenizer

    built = []
    original = pipeline.build_prepared_data
    monkeypatch.setattr(pipeline, "build_prepared_data", lambda *a, **k: built.append(a[2]) or original(*a, **k))
    out = tmp_path / "run"
    # No tokenizer given: it is learned on the first stage. The anneal stage reads the main stage's corpus too.
    stages = (f"data.stages=[{{sources: [{{path: '{corpora['kjv']}'}}], until_step: 2, name: main}}, "
              f"{{sources: [{{path: '{corpora['jargon']}', weight: 3}}, {{path: '{corpora['kjv']}'}}], name: anneal}}]")
    overrides = [o for o in _overrides(out, corpora, stages, "train.max_steps=3") if "name_or_path" not in o]
    summary = _run(out, overrides)
    assert [Path(p).name for p in built] == ["stage-0", "stage-1"]
    cards = [json.loads((out / "data" / f"stage-{i}" / "data_card.json").read_text()) for i in (0, 1)]
    assert cards[0]["tokenizer"]["trained"] and not cards[1]["tokenizer"]["trained"]
    assert cards[1]["tokenizer"]["name_or_path"] == str(out / "data" / "stage-0" / "tokenizer")
    from hf_llm.data.tokenizer import load_tokenizer

    tokenizers = [load_tokenizer(str(out / "data" / f"stage-{i}" / "tokenizer")) for i in (0, 1)]
    assert same_tokenizer(*tokenizers) and len(tokenizers[0]) == 512
    assert "documents held out for validation from main may be trained on in anneal" in capsys.readouterr().out

    # Summary and model card: which stage trained how long; validation is the first stage's held-out set.
    assert [(s["name"], s["steps"], s["tokens"]) for s in summary["stages"]] == [("main", 2, 512), ("anneal", 1, 256)]
    card = (out / "model" / "README.md").read_text()
    assert "| stage main | stage=0, steps=2, tokens=512" in card and "| anneal/jargon | weight=3" in card
    assert f"| validation | {cards[0]['validation']['documents']} | {cards[0]['validation']['tokens']:,} |" in card
    assert summary["unigram_val_loss"] == cards[0]["unigram_validation_loss"]

    # A rerun reuses both folders.
    built.clear()
    _run(out, [*overrides, "train.overwrite_output_dir=true"])
    assert built == []
    # A first stage with other sources learns another tokenizer: the second stage, whose own config is unchanged,
    # is tokenised again with it.
    more = stages.replace(f"[{{path: '{corpora['kjv']}'}}], until_step", f"[{{path: '{corpora['kjv']}'}}, "
                                                                         f"{{path: '{corpora['jargon']}'}}], until_step")
    rerun = [o for o in _overrides(out, corpora, more, "train.max_steps=3", "train.overwrite_output_dir=true")
             if "name_or_path" not in o]
    _run(out, rerun)
    assert [Path(p).name for p in built] == ["stage-0", "stage-1"]
    assert same_tokenizer(*[load_tokenizer(str(out / "data" / f"stage-{i}" / "tokenizer")) for i in (0, 1)])
    assert not same_tokenizer(tokenizers[0], load_tokenizer(str(out / "data" / "stage-0" / "tokenizer")))


def test_a_prepared_stage_with_another_tokenizer_is_an_error(corpora, tmp_path, one_thread):
    from hf_llm.data.pipeline import build_prepared_data

    other = [o for o in _data_settings(corpora) if not o.startswith("tokenizer.")]
    cfg = load_config(None, [*other, "tokenizer.vocab_size=300", f"data.sources=[{{path: '{corpora['jargon']}'}}]"])
    build_prepared_data(cfg.data, cfg.tokenizer, tmp_path / "other")
    stages = (f"data.stages=[{{prepared: '{corpora['prepared-kjv']}', until_step: 2}}, "
              f"{{prepared: '{tmp_path / 'other'}'}}]")
    with pytest.raises(ConfigError, match=r"data.stages\[1\]: .*other was tokenised with another tokenizer"):
        _run(tmp_path / "run", _overrides(tmp_path / "run", corpora, stages))


# ------------------------------------------------------------------------------------------------ decay


def _wsd(out: Path, corpora, *extra: str) -> list[str]:
    """A plain (one-mixture) WSD run on the first corpus; dropout on, so the RNG a checkpoint restores matters."""
    return _overrides(out, corpora, f"data.prepared={corpora['prepared-kjv']}", "train.schedule=wsd",
                      "model.overrides.attention_dropout=0.05", "train.save_every=3", *extra)


def _applied_lrs(record: list):
    """The loop's `optimizer_step`, recording the LR each update used."""

    def recorded(accelerator, optimizer, scheduler):
        record.append(optimizer.param_groups[0]["lr"])
        return optimizer_step(accelerator, optimizer, scheduler)

    return recorded


def test_decay_from_a_stable_checkpoint_continues_the_run(corpora, tmp_path, one_thread, monkeypatch):
    from transformers import AutoModelForCausalLM

    from hf_llm.train import loop

    # The single run: warmup 2, stable to step 3, then a linear decay over its last 3 steps (decay_fraction 0.5).
    single_out, single_lrs = tmp_path / "single", []
    monkeypatch.setattr(loop, "optimizer_step", _applied_lrs(single_lrs))
    single = _run(single_out, _wsd(single_out, corpora, "train.decay_fraction=0.5"))
    stable = single_out / "checkpoints" / "step-3"

    # The decay run: its own output_dir, the stable checkpoint, 3 steps all decaying, no warmup.
    decay_out, decay_lrs = tmp_path / "decay", []
    monkeypatch.setattr(loop, "optimizer_step", _applied_lrs(decay_lrs))
    decay_args = [f"train.init_from={stable}", "train.max_steps=3", "train.decay_fraction=1.0",
                  "train.warmup_steps=0"]
    decay = _run(decay_out, _wsd(decay_out, corpora, *decay_args))

    # (a) it starts from the checkpoint: its first loss is the single run's next one (same weights, same batch).
    assert _by_step(decay, "loss")[1] == _by_step(single, "loss")[4]
    # (b) the LR decays linearly from the stable LR to the minimum over its 3 steps, as the single run's did.
    lr, floor = 3e-3, 0.1
    assert single_lrs[2] == pytest.approx(lr)  # the stable phase the checkpoint was taken in
    assert decay_lrs == pytest.approx([lr * (1 - (1 - floor) * k / 3) for k in (1, 2, 3)])
    assert decay_lrs == single_lrs[3:]
    # Weights, optimizer moments, RNG and data position all continue: the export is the single run's, bit for bit.
    _assert_same_tensors(single_out / "model" / "model.safetensors", decay_out / "model" / "model.safetensors")
    assert _by_step(decay, "val_loss")[3] == _by_step(single, "val_loss")[6]
    # (c) a normal export and checkpoints of its own; the stable run's are left as they were.
    model = AutoModelForCausalLM.from_pretrained(str(decay_out / "model"))
    assert model.config.attention_dropout == 0.05 and (decay_out / "model" / "README.md").is_file()
    assert sorted(p.name for p in (decay_out / "checkpoints").iterdir()) == ["step-3"]
    assert sorted(p.name for p in (single_out / "checkpoints").iterdir()) == ["step-3", "step-6"]
    assert decay["steps"] == 3 and decay["tokens_seen"] == 3 * 256

    # An interrupted decay run resumes from its own checkpoint (train.init_from is then ignored).
    part_out = tmp_path / "decay_part"
    monkeypatch.setattr(loop, "optimizer_step", _applied_lrs([]))
    _run(part_out, _wsd(part_out, corpora, *decay_args, "train.save_every=1", "train.stop_after_steps=1"))
    resumed = _run(part_out, _wsd(part_out, corpora, *decay_args, "train.save_every=1", "train.resume_from=latest"))
    _assert_same_tensors(decay_out / "model" / "model.safetensors", part_out / "model" / "model.safetensors")
    assert _by_step(resumed, "loss") == _by_step(decay, "loss")

    # On other data the position starts at that data's beginning.
    other_out = tmp_path / "other"
    other = [o.replace(str(corpora["prepared-kjv"]), str(corpora["prepared-jargon"]))
             for o in _wsd(other_out, corpora, *decay_args)]
    _run(other_out, other)
    assert (_state(other_out, 3)["epoch"], _state(other_out, 3)["batches_in_epoch"]) == (0, 6)
    assert (_state(decay_out, 3)["epoch"], _state(decay_out, 3)["batches_in_epoch"]) == \
        (_state(single_out, 6)["epoch"], _state(single_out, 6)["batches_in_epoch"])


def test_init_from_errors(corpora, tmp_path, one_thread):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="is not a complete checkpoint"):
        _run(out, _wsd(out, corpora, f"train.init_from={tmp_path}"))
    _run(out, _wsd(out, corpora, "train.max_steps=3"))
    with pytest.raises(ConfigError, match="inside this run's own checkpoints folder.*new output_dir"):
        _run(out, _wsd(out, corpora, f"train.init_from={out / 'checkpoints' / 'step-3'}",
                       "train.overwrite_output_dir=true"))
    assert (out / "checkpoints" / "step-3").is_dir()  # failed before anything was removed


# ------------------------------------------------------------------------------------------------ config


def _stages(*stages: str) -> str:
    return "data.stages=[" + ", ".join(stages) + "]"


@pytest.mark.parametrize("overrides,message", [
    ([_stages("{sources: [{path: a}], until_step: 3}", "{sources: [{path: b}]}"), "data.sources=[{path: c}]"],
     r"data.stages and data.sources are both set.*remove data.sources"),
    ([_stages("{until_step: 3}", "{sources: [{path: b}]}")], r"data.stages\[0\] has no sources"),
    ([_stages("{sources: [{path: a}], prepared: x, until_step: 3}", "{sources: [{path: b}]}")],
     r"data.stages\[0\] sets both sources and prepared"),
    ([_stages("{sources: [{path: a}], until_step: 5}", "{sources: [{path: b}], until_step: 3}", "{prepared: c}")],
     r"boundaries must increase: data.stages\[1\].until_step=3 is not after .*until_step=5"),
    ([_stages("{sources: [{path: a}]}", "{sources: [{path: b}]}")], r"data.stages\[0\] needs exactly one boundary"),
    ([_stages("{sources: [{path: a}], until_step: 3, until_tokens: 99}", "{prepared: b}")],
     r"data.stages\[0\] needs exactly one boundary"),
    ([_stages("{sources: [{path: a}], until_step: 3}", "{sources: [{path: b}], until_step: 6}")],
     r"data.stages\[1\] is the last stage: it runs to the end of the run"),
    ([_stages("{sources: [{path: a}], until_step: 0}", "{prepared: b}")], r"data.stages\[0\].until_step must be >= 1, got 0"),
    ([_stages("{prepared: a, until_step: 3}", "{prepared: b}"), "data.prepared=c"],
     r"data.prepared and data.stages are both set"),
    ([_stages("{prepared: a, until_step: 3}", "{sources: [{path: b}]}"), "data.stream_train=true"],
     r"data.stages\[0\].prepared: data.stream_train=true reads sources"),
    ([_stages("{prepared: a, name: x, until_step: 3}", "{prepared: b, name: x}")], r"names must be distinct"),
])
def test_stage_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_stage_config_round_trips_and_plain_sources_are_unchanged(tmp_path):
    from hf_llm.config import SourceConfig

    cfg = load_config(None, [_stages("{sources: [{path: a.jsonl, weight: 2}], until_tokens: 1000, name: main}",
                                     "{prepared: b}")])
    assert cfg.data.sources == [] and cfg.data.stages[0].sources[0].weight == 2.0
    assert load_config(save_config(cfg, tmp_path / "config.yaml")) == cfg
    assert load_config(None, []).data.sources == [SourceConfig()] and load_config(None, []).data.stages == []
    with pytest.raises(ConfigError, match="prepare_data writes one folder"):
        from hf_llm.config import PrepareDataConfig

        load_config(None, [_stages("{sources: [{path: a}], until_step: 3}", "{prepared: b}")],
                    schema=PrepareDataConfig)


def test_stage_ends_round_tokens_up_to_whole_steps():
    from hf_llm.train.stages import StreamedStage, stage_ends

    stage = lambda **k: StreamedStage(None, "s", **k)  # noqa: E731
    assert stage_ends([stage(until_tokens=700), stage()], 256, 6) == [3, 6]
    assert stage_ends([stage(until_tokens=768), stage(until_step=4), stage()], 256, 6) == [3, 4, 6]
    with pytest.raises(ConfigError, match=r"until_step=3, not after the previous stage's end at step 3"):
        stage_ends([stage(until_tokens=700), stage(until_step=3), stage()], 256, 6)
    with pytest.raises(ConfigError, match="the run has 6 steps, so the stages after it would never run"):
        stage_ends([stage(until_step=6), stage()], 256, 6)
    assert stage_ends([stage()], 256, 6) == [6]


def test_stage_source_checks_fail_before_reading(tmp_path, corpora):
    from hf_llm.data.stages import check_stage_sources

    def data(*stages):
        return load_config(None, [_stages(*stages)]).data

    with pytest.raises(DataError, match="matches no file"):
        check_stage_sources(data(f"{{sources: [{{path: '{corpora['kjv']}'}}], until_step: 2}}",
                                 f"{{sources: [{{path: '{tmp_path / 'missing.jsonl'}'}}]}}"))
    with pytest.raises(ConfigError, match=r"data.stages\[1\].sources\[0\].weight must be >= 0, got -1.0"):
        data(f"{{sources: [{{path: '{corpora['kjv']}'}}], until_step: 2}}",  # now refused when parsed
             f"{{sources: [{{path: '{corpora['jargon']}', weight: -1}}]}}")
    with pytest.raises(ConfigError, match=r"data.stages\[1\].prepared=.* is not a folder"):
        check_stage_sources(data(f"{{sources: [{{path: '{corpora['kjv']}'}}], until_step: 2}}",
                                 f"{{prepared: '{tmp_path / 'nothing'}'}}"))
    check_stage_sources(data(f"{{sources: [{{path: '{corpora['kjv']}'}}], until_step: 2}}",
                             f"{{sources: [{{path: '{corpora['jargon']}'}}]}}"))


def test_finetuning_rejects_stages():
    from hf_llm.finetune import FinetuneRunConfig, check_finetune_config

    cfg = load_config(None, ["model.name_or_path=x", _stages("{prepared: a, until_step: 3}", "{prepared: b}")],
                      schema=FinetuneRunConfig)
    with pytest.raises(ConfigError, match="data.stages .* is for pretraining"):
        check_finetune_config(cfg)


def test_shared_source_notes_only_where_the_hold_out_differs():
    from hf_llm.data.stages import shared_source_notes

    stages = _stages("{sources: [{path: a.jsonl}, {path: b.jsonl}], until_step: 2, name: main}",
                     "{sources: [{path: c.jsonl}], until_step: 4}", "{sources: [{path: b.jsonl}], name: anneal}")
    notes = shared_source_notes(load_config(None, [stages]).data)
    assert len(notes) == 1 and notes[0].startswith("data stage anneal reads b.jsonl, which main reads too")
    # Streamed, a document is held out by its text's hash: held out in every stage alike.
    assert shared_source_notes(load_config(None, [stages, "data.stream_train=true"]).data) == []
