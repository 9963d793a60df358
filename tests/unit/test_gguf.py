"""GGUF export (hf_llm.gguf): transformers' own GGUF loader reads the file back with the same logits and the same
tokenization, the metadata declares the pre-tokenizer, and what cannot be declared exactly is refused.
(llama.cpp itself: benchmarks/llama_cpp_check.py, opt-in, results in the README.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_llm.config import TokenizerConfig
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.errors import ConfigError
from hf_llm.gguf import export_gguf

from ..conftest import sample_documents

gguf = pytest.importorskip("gguf")

# Prose, whitespace runs, tabs, newlines, digits, accents, CJK, emoji, a special token: where splits differ.
TEXTS = ["And it came to pass, in the 1611th year...", "  two  spaces\tand a tab\n\nnew lines   ",
         "Café déjà vu — naïve façade", "中文字符和日本語のテキスト", "emoji 🙂 and 12345678 digits<|endoftext|>x"]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [d["text"] for d in sample_documents(60)]
    return train_bpe_tokenizer(texts, TokenizerConfig(vocab_size=512))


def _export(tmp_path: Path, tokenizer, tied: bool = True, **overrides) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=528,  # padded past the tokenizer's 512, as model.pad_vocab_multiple pads
                         hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tied,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **overrides)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # weights of a trained model's scale, so that logits differ visibly between tokens
        for p in model.parameters():
            p.normal_(0, 0.2) if p.ndim > 1 else p.uniform_(0.5, 1.5)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits[0]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_f32_reads_back_with_the_same_logits_and_tokens(tmp_path, tokenizer, tied):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _export(tmp_path, tokenizer, tied=tied)
    out = export_gguf(folder, tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(str(out))
    fields = {name: f.contents() for name, f in reader.fields.items() if "tokens" not in name and "merges" not in name
              and "token_type" not in name}
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["general.architecture"] == "llama" and fields["llama.vocab_size"] == 528
    assert ("output.weight" in {t.name for t in reader.tensors}) is not tied

    live = AutoModelForCausalLM.from_pretrained(folder).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf").eval()
    back_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert back_tok(text)["input_ids"] == ids, text
        assert back_tok.decode(ids) == tokenizer.decode(ids)
        assert torch.allclose(_logits(back, ids), _logits(live, ids), atol=1e-4, rtol=0), text
    assert back_tok.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("outtype,atol", [("f16", 0.05), ("q8_0", 0.15)])
def test_f16_and_q8_0_load_and_stay_close(tmp_path, tokenizer, outtype, atol):
    from transformers import AutoModelForCausalLM

    folder = _export(tmp_path, tokenizer)
    f32 = export_gguf(folder, tmp_path / "f32.gguf", "f32").stat().st_size
    size = export_gguf(folder, tmp_path / f"{outtype}.gguf", outtype).stat().st_size
    assert size < 0.6 * f32  # really stored in the smaller type
    live = AutoModelForCausalLM.from_pretrained(folder).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"{outtype}.gguf", dtype=torch.float32).eval()
    ids = tokenizer(TEXTS[0])["input_ids"]
    a, b = _logits(live, ids), _logits(back, ids)
    assert (a - b).abs().max() < atol * a.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


def test_refuses_what_it_cannot_declare(tmp_path, tokenizer):
    folder = _export(tmp_path, tokenizer)
    spec = json.loads((folder / "tokenizer.json").read_text())
    # A Metaspace / other split: llama.cpp would tokenize differently, so no file is written.
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="pre-tokenizer"):
        export_gguf(folder, tmp_path / "x.gguf")
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    spec["normalizer"] = {"type": "NFKC"}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="normalizer"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp*"))


def test_refuses_other_architectures(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=512)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(ConfigError, match="supports llama"):
        export_gguf(folder, tmp_path / "x.gguf")
    llama = _export(tmp_path / "rope", tokenizer, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                    "rope_theta": 10000.0})
    with pytest.raises(ConfigError, match="default RoPE"):
        export_gguf(llama, tmp_path / "x.gguf")


def test_pretrain_export_option_writes_the_gguf_of_its_export(tmp_path, small_corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_llm.config import load_config
    from hf_llm.pretrain import run_pretraining

    from ..conftest import tiny_overrides

    out = tmp_path / "run"
    summary = run_pretraining(load_config(None, tiny_overrides(out, small_corpus, "train.max_steps=2",
                                                               "train.save_every=2", "eval.every=2",
                                                               "export.gguf=f32")))
    assert Path(summary["gguf"]) == out / "model" / "model-f32.gguf"
    live = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    back = AutoModelForCausalLM.from_pretrained(out / "model", gguf_file="model-f32.gguf").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    ids = tok(TEXTS[1])["input_ids"]
    assert AutoTokenizer.from_pretrained(out / "model", gguf_file="model-f32.gguf")(TEXTS[1])["input_ids"] == ids
    assert torch.allclose(_logits(back, ids), _logits(live, ids), atol=1e-4, rtol=0)


def test_jobs_refuse_an_export_they_cannot_write_before_any_work(tmp_path, small_corpus, tokenizer):
    from hf_llm.cli import main

    out = tmp_path / "gpt2"
    with pytest.raises(ConfigError, match="supports llama"):
        from hf_llm.config import load_config
        from hf_llm.pretrain import run_pretraining

        run_pretraining(load_config(None, [f"output_dir={out}", f"data.sources=[{{path: '{small_corpus}'}}]",
                                           "model.preset=null", "model.model_type=gpt2", "export.gguf=f16"]))
    assert not (out / "data").exists()  # refused before data preparation
    assert main(["pretrain", "export.gguf=q4"]) == 2  # not a type it writes
    base = _export(tmp_path, tokenizer)
    assert main(["finetune", f"model.name_or_path={base}", f"output_dir={tmp_path / 'ft'}", "export.gguf=f16"]) == 2
    assert not (tmp_path / "ft").exists()  # a LoRA adapter has no plain weights: adapter.merge=true is asked for
