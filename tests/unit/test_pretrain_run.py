"""End-to-end pretraining in-process on a tiny model: resume determinism, checkpoints, export round trip."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_llm.config import load_config
from hf_llm.errors import ConfigError
from hf_llm.errors import DataError
from hf_llm.pretrain import run_pretraining
from hf_llm.train.checkpoint import latest_checkpoint, list_checkpoints

from ..conftest import tiny_overrides


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _run(out, corpus, *extra):
    return run_pretraining(load_config(None, tiny_overrides(out, corpus, *extra)))


def test_resume_is_bit_identical_and_export_round_trips(tmp_path, small_corpus):
    full = _run(tmp_path / "full", small_corpus)
    assert full["steps"] == 6 and (tmp_path / "full" / "model" / "model.safetensors").is_file()
    prepared = tmp_path / "full" / "data"

    # The same run, stopped after 3 steps (the schedule still spans 6), then resumed from the latest checkpoint.
    part = tmp_path / "part"
    first = _run(part, small_corpus, f"data.prepared={prepared}", "train.stop_after_steps=3")
    assert first["steps"] == 3 and latest_checkpoint(part / "checkpoints").name == "step-3"
    second = _run(part, small_corpus, f"data.prepared={prepared}", "train.resume_from=latest")
    assert second["steps"] == 6

    a, b = _weights(tmp_path / "full" / "model"), _weights(part / "model")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    assert [p["loss"] for p in full["history"] if "loss" in p][-1] == second["final_train_loss"]

    # keep_last=2 of the checkpoints at steps 3 and 6.
    assert [p.name for p in list_checkpoints(tmp_path / "full" / "checkpoints")] == ["step-3", "step-6"]

    # Export round trip: the exported folder gives the trained model's logits and generates.
    from transformers import AutoModelForCausalLM, pipeline

    export = tmp_path / "full" / "model"
    loaded = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    trained = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    state = load_file(str(tmp_path / "full" / "checkpoints" / "step-6" / "model.safetensors"))
    missing, unexpected = trained.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in m for m in missing)
    ids = torch.randint(0, loaded.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, trained(ids).logits, atol=1e-6)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "README.md"):
        assert (export / name).is_file(), name
    card = (export / "README.md").read_text()
    assert "parameters" in card and "tokens_seen" in card
    generate = pipeline("text-generation", model=str(export))
    text = generate("And it came", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("And it came") and len(text) > len("And it came")


def test_interrupted_checkpoint_is_never_latest(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step-2").mkdir(parents=True)
    (root / "step-2" / "trainer_state.json").write_text("{}")
    (root / ".tmp-step-4").mkdir()  # a save that crashed before its rename
    (root / ".tmp-step-4" / "trainer_state.json").write_text("{}")
    (root / "step-6").mkdir()  # a folder without its state file (copied in part)
    assert latest_checkpoint(root).name == "step-2"


def test_missing_corpus_path(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        _run(tmp_path / "o", tmp_path / "nope.jsonl")
    assert not (tmp_path / "o").exists()  # failed before creating anything


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": "   "}\n')
    with pytest.raises(DataError, match="has no usable text"):
        _run(tmp_path / "o", empty)


def test_missing_text_column(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"body": "some words here"}\n')
    with pytest.raises(DataError, match=r"columns are \['body'\]"):
        _run(tmp_path / "o", corpus)


def test_unknown_config_key(tmp_path, small_corpus):
    with pytest.raises(ConfigError, match="did you mean train.max_steps"):
        _run(tmp_path / "o", small_corpus, "train.max_step=3")


def test_seq_len_above_max_positions(tmp_path, small_corpus):
    with pytest.raises(ConfigError, match="max_position_embeddings=1024"):
        _run(tmp_path / "o", small_corpus, "data.seq_len=4096")
    assert not (tmp_path / "o").exists()


def test_bf16_without_hardware_support(tmp_path, small_corpus, monkeypatch):
    import hf_llm.train.run as pretrain

    monkeypatch.setattr(pretrain, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no bf16 support"):
        _run(tmp_path / "o", small_corpus, "train.precision=bf16")
    assert pretrain.resolve_precision("auto") == "fp32"
