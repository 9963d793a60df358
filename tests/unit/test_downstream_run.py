"""End to end through the jobs: a failing downstream pass warns, the run keeps its checkpoints, and the results reach
summary.json and the model card. The jobs hand the tokenizer to the loop through `fit`."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_llm.config import load_config
from hf_llm.pretrain import run_pretraining
from hf_llm.train.checkpoint import list_checkpoints

from ..conftest import tiny_overrides

TASKS = Path(__file__).resolve().parents[1] / "data" / "tasks"


def test_pretraining_survives_a_failing_downstream_pass(tmp_path, shared_corpus, prepared_corpus, monkeypatch):
    import hf_llm.downstream as downstream

    real, calls = downstream.score_requests, []

    def flaky(*args, **kwargs):  # the first pass (step 3) fails, the last one (step 6) works
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected scoring failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(downstream, "score_requests", flaky)
    out = tmp_path / "run"
    tasks = (f"eval.tasks=[{{path: '{TASKS / 'everyday_mc.jsonl'}'}}, "
             f"{{path: '{TASKS / 'last_word_cloze.jsonl'}', kind: cloze}}]")
    with pytest.warns(RuntimeWarning, match="downstream evaluation failed at step 3"):
        cfg = load_config(None, tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}", tasks))
        summary = run_pretraining(cfg)
    assert summary["steps"] == 6
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-3", "step-6"]
    written = json.loads((out / "summary.json").read_text())
    assert "injected scoring failure" in written["downstream_warnings"][0]
    assert set(written["downstream"]) == {"everyday_mc", "last_word_cloze"}
    assert written["downstream"]["everyday_mc"]["step"] == 6
    card = ModelCard.load(out / "model" / "README.md")
    assert {("everyday_mc", "acc"), ("everyday_mc", "acc_norm"), ("last_word_cloze", "acc"),
            ("last_word_cloze", "perplexity")} <= {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
