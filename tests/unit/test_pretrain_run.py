"""End-to-end pretraining in-process on a tiny model: checkpoints, the export, and the errors a user can hit."""

import json
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


def test_the_export_is_the_last_checkpoint_and_a_working_model(tiny_base_run):
    """The shared base run's export: the last checkpoint's weights (the tied head saved once), the files a user
    loads, a card, and it generates. (Resume is proven in tests/matrix/test_resume_matrix.py, export ≡ live model in
    tests/matrix/test_export_matrix.py.)"""
    summary = json.loads((tiny_base_run / "summary.json").read_text())
    assert summary["steps"] == 12
    assert [p.name for p in list_checkpoints(tiny_base_run / "checkpoints")] == ["step-6", "step-12"]
    assert latest_checkpoint(tiny_base_run / "checkpoints").name == "step-12"

    from transformers import AutoModelForCausalLM, pipeline

    export = tiny_base_run / "model"
    loaded = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    trained = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    state = load_file(str(tiny_base_run / "checkpoints" / "step-12" / "model.safetensors"))
    missing, unexpected = trained.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in m for m in missing)
    exported = _weights(export)
    assert all(torch.equal(exported[k], state[k]) for k in exported)
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
