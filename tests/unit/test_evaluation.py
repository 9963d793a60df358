"""Perplexity and bits per byte against hand and analytic computations; sliding windows; the evaluate script."""

import json
import math

import pytest
import torch

from hf_llm.config import EvaluateConfig, TokenizerConfig, load_config
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.evaluation import prefix_token_id, row_token_nll, score_texts, sliding_windows, summed_token_nll

from ..conftest import sample_documents

TEXTS = [
    "And it came to pass, when the evening was come, that they went down to the river.",
    "HACKER, n. One who works like a hack at writing and programming; naïve café ünïcode bytes.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [d["text"] for d in sample_documents(60)]


def _tokenizer(corpus: list[str], vocab_size: int):
    return train_bpe_tokenizer(iter(corpus), TokenizerConfig(vocab_size=vocab_size, min_frequency=2))


def _model(vocab_size: int, uniform: bool = False, seed: int = 0):
    """A 2-layer Llama; `uniform` zeroes the output layer, so every next token has probability 1/vocab_size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    if uniform:
        with torch.no_grad():
            model.lm_head.weight.zero_()
    return model


@pytest.mark.parametrize("n,seq_len,stride", [(1, 4, 2), (2, 4, 2), (5, 8, 3), (40, 8, 1), (40, 8, 7), (33, 16, 8)])
def test_sliding_windows_score_every_token_once_with_context(n, seq_len, stride):
    ids = list(range(100, 100 + n))
    scored = []
    for window, n_targets in sliding_windows(ids, seq_len, stride):
        assert len(window) <= seq_len and 1 <= n_targets <= len(window) - 1
        start = ids.index(window[0])
        targets = list(range(start + len(window) - n_targets, start + len(window)))
        assert targets[0] > start  # a window's first token is context, never a target
        # Each target sees its whole document so far, or at least seq_len - stride tokens of it.
        assert targets[0] - start >= min(targets[0], seq_len - stride)
        scored += targets
    assert scored == list(range(1, n))


def test_stride_must_leave_context():
    with pytest.raises(Exception, match="stride"):
        sliding_windows([1, 2, 3], 4, 4)
    with pytest.raises(Exception, match="stride"):
        load_config(None, ["seq_len=8", "stride=8"], schema=EvaluateConfig)


def test_perplexity_equals_hand_computation(corpus):
    tok = _tokenizer(corpus, 300)
    model = _model(len(tok))
    text = TEXTS[0]
    ids = [prefix_token_id(tok)] + tok(text, add_special_tokens=False)["input_ids"]
    n = len(ids) - 1

    # By hand, one window: -log p(ids[t] | ids[:t]) summed over t >= 1.
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]), use_cache=False).logits[0].double(), dim=-1)
    nll = -sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)))
    got = score_texts(model, tok, [text], seq_len=128, stride=64)
    assert got["tokens"] == n and got["bytes"] == len(text.encode())
    assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(nll / math.log(2) / len(text.encode()), rel=1e-5)

    # By hand, stride 1 with windows of 8: token t is predicted from the 7 tokens before it (fewer at the start).
    seq_len = 8
    with torch.no_grad():
        hand = 0.0
        for t in range(1, len(ids)):
            ctx = ids[max(0, t - seq_len + 1):t + 1]
            logits = model(torch.tensor([ctx]), use_cache=False).logits[0, -2].double()
            hand -= torch.log_softmax(logits, dim=-1)[ids[t]].item()
    windowed = score_texts(model, tok, [text], seq_len=seq_len, stride=1, batch_size=5)
    assert windowed["nll_nats"] == pytest.approx(hand, rel=1e-5)
    assert windowed["tokens"] == n


def test_bits_per_byte_matches_the_analytic_value_for_two_tokenizers(corpus):
    """A uniform model over V tokens costs log2(V) bits per token: bpb = tokens · log2(V) / bytes, exactly."""
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    seen = {}
    for vocab in (300, 1000):
        tok = _tokenizer(corpus, vocab)
        model = _model(len(tok), uniform=True)
        tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
        for seq_len, stride in ((256, 128), (8, 3)):  # windows change context, and a uniform model ignores context
            got = score_texts(model, tok, TEXTS, seq_len=seq_len, stride=stride, batch_size=3)
            assert got["tokens"] == tokens and got["bytes"] == n_bytes
            expected = tokens * math.log2(len(tok)) / n_bytes
            assert got["bits_per_byte"] == pytest.approx(expected, rel=1e-6)  # float32 logits
            assert got["perplexity"] == pytest.approx(len(tok), rel=1e-6)
        seen[vocab] = tokens
    assert seen[1000] < seen[300]  # the bigger vocabulary needs fewer tokens for the same bytes


def test_summed_token_nll_is_the_training_validation_computation():
    from hf_llm.train import objective

    assert objective.row_token_nll is row_token_nll  # the loop's validation; summed_token_nll is its sum over rows
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, -100, 4, 5], [-100, -100, 3, 3, 1]])
    nll, count = summed_token_nll(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), reduction="sum")
    assert count.item() == 6 and nll.item() == pytest.approx(ref.item(), rel=1e-6)
    rows, counts = row_token_nll(logits, labels)
    assert counts.tolist() == [3, 3] and rows.sum().item() == pytest.approx(ref.item(), rel=1e-6)


def test_evaluate_script_writes_results_samples_and_card(tmp_path, corpus):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    from hf_llm.cli import run_cli
    from hf_llm.evaluation import run_evaluation
    from hf_llm.cards import render_model_card

    tok = _tokenizer(corpus, 300)
    model_dir = tmp_path / "model"
    _model(len(tok)).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    (model_dir / "README.md").write_text(render_model_card("model", "llama", 1, {}, {}, {"loss": 1.0}, "a: 1"))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"text": t[:1000]}) + "\n" for t in corpus[-3:]))  # short: a fast test
    txt = tmp_path / "extra.txt"
    txt.write_text("\n\n".join(TEXTS))
    argv = [f"model={model_dir}", f"data=[{{path: '{held_out}'}}, {{path: '{txt}'}}]", "seq_len=32", "stride=16",
            "max_documents=2", "prompts=[And it came]", "max_new_tokens=5", "update_model_card=true"]
    assert run_cli(run_evaluation, None, argv, schema=EvaluateConfig) == 0
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert set(results["datasets"]) == {"held_out", "extra"} and results["datasets"]["held_out"]["documents"] == 2
    assert results["all"]["tokens"] == sum(r["tokens"] for r in results["datasets"].values())
    sample = results["samples"][0]
    assert sample["prompt"] == "And it came" and sample["greedy"] and sample["sampled"]

    # Seeded: the same continuations again; a second card update replaces the results rather than adding to them.
    assert run_cli(run_evaluation, None, argv, schema=EvaluateConfig) == 0
    again = json.loads((model_dir / "eval_results.json").read_text())
    assert again["samples"] == results["samples"]
    card = ModelCard.load(model_dir / "README.md")
    metrics = {(e.dataset_name, e.metric_type): e.metric_value for e in card.data.eval_results}
    assert metrics[("extra", "bits_per_byte")] == pytest.approx(results["datasets"]["extra"]["bits_per_byte"], rel=1e-4)
    assert len(card.data.eval_results) == 4 and card.text.count("## Evaluation") == 1

    # The folder still loads in a transformers pipeline.
    generate = pipeline("text-generation", model=str(model_dir))
    assert generate("And it came", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("And it came")


def test_evaluate_reports_a_bad_model_path(tmp_path, capsys):
    from hf_llm.cli import run_cli
    from hf_llm.evaluation import run_evaluation

    assert run_cli(run_evaluation, None, [f"model={tmp_path / 'missing'}"], schema=EvaluateConfig) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bits_per_byte_matches_lm_evaluation_harness(tmp_path, corpus):
    """The exported folder runs in lm-evaluation-harness (`hf` model, a local loglikelihood_rolling task, offline),
    and its bits per byte equal ours with the same windows: max_length L there is seq_len L+1, stride L here."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    tok = _tokenizer(corpus, 300)
    model_dir = tmp_path / "model"
    model = _model(len(tok))
    model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    texts = [t[:600] for t in corpus[-3:]]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "held_out.yaml").write_text(
        f"task: hf_llm_held_out\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: bits_per_byte\n"
    )
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32,max_length=32",
                                  tasks=["hf_llm_held_out"], task_manager=TaskManager(include_path=str(tasks)),
                                  device="cpu", batch_size=4)
    theirs = out["results"]["hf_llm_held_out"]["bits_per_byte,none"]
    ours = score_texts(model, tok, texts, seq_len=33, stride=32)["bits_per_byte"]
    assert ours == pytest.approx(theirs, rel=1e-5)
