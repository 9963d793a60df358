"""Downstream zero-shot tasks: lm-eval-style scores of hand-built models on the hand-made tasks in tests/data/tasks,
the tie rule, acc against acc_norm, cloze, sharding, config errors, the lm-eval wiring, and a failing evaluation
that must not cost the run."""

from __future__ import annotations

import importlib.machinery
import json
import math
import random
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hf_llm.config import EvalConfig, TaskConfig, TokenizerConfig, TrainConfig, load_config
from hf_llm.errors import ConfigError
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.downstream import (check_tasks, Item, Task, WARNING_KEY, build_requests, harness_metrics, parse_multiple_choice,
                               read_task, score_requests, task_metrics, tie_credit)
from hf_llm.train.downstream import downstream_metrics, evaluate_tasks, shard_indices, unshard

from ..conftest import sample_documents

TASKS = Path(__file__).resolve().parents[1] / "data" / "tasks"
MC, SAME_LENGTH, CLOZE = TASKS / "everyday_mc.jsonl", TASKS / "same_length_mc.jsonl", TASKS / "last_word_cloze.jsonl"

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(path: Path, kind: str = "multiple_choice", **kw) -> Task:
    return read_task(TaskConfig(path=str(path), kind=kind, **kw))


@pytest.fixture(scope="module")
def chars():
    """One token per character: token counts are character counts, so the hand-made tasks decide ties exactly."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = "".join(json.dumps(json.loads(line)) for f in TASKS.glob("*.jsonl") for line in f.read_text().splitlines())
    alphabet = sorted(set(text) | set("abcdefghijklmnopqrstuvwxyz :\n"))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{c: i + 4 for i, c in enumerate(alphabet)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(iter(d["text"] for d in sample_documents(60)),
                               TokenizerConfig(vocab_size=400, min_frequency=2))


def _llama(vocab_size: int, zero_head: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, tie_word_embeddings=False)).eval()
    if zero_head:  # every next token gets probability 1/vocab_size: a model with no preferences
        with torch.no_grad():
            model.lm_head.weight.zero_()
    return model


class Oracle(torch.nn.Module):
    """Knows some token sequences: where the input so far is a prefix of one, it puts almost all its probability
    on that sequence's next token; elsewhere its logits are zero (uniform)."""

    def __init__(self, sequences, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.next = {tuple(s[:t]): s[t] for s in sequences for t in range(1, len(s))}

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                token = self.next.get(tuple(row[:t + 1]))
                if token is not None:
                    logits[b, t, token] = 20.0
        return SimpleNamespace(logits=logits)


def _knowing(tokenizer, texts: list[str]) -> Oracle:
    # Built from the raw text, not from build_requests: a wrong split or shift in the code under test shows.
    return Oracle([[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
                  len(tokenizer))


def _uniform(tokenizer) -> Oracle:
    return Oracle([], len(tokenizer))


def _metrics(model, task: Task, tokenizer, batch_size: int = 3) -> dict[str, float]:
    logprobs, greedy = score_requests(model, build_requests(task, tokenizer, 512), batch_size, "cpu")
    return task_metrics(task, logprobs, greedy)


# -- multiple choice ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [MC, SAME_LENGTH], ids=lambda p: p.stem)
def test_a_model_that_prefers_the_correct_choice_scores_one(chars, path):
    task = _task(path)
    right = _knowing(chars, [i.context + " " + i.choices[i.label] for i in task.items])
    assert _metrics(right, task, chars) == {"acc": 1.0, "acc_norm": 1.0}
    # The same model taught the next choice instead: every answer wrong.
    wrong = _knowing(chars, [i.context + " " + i.choices[(i.label + 1) % len(i.choices)] for i in task.items])
    assert _metrics(wrong, task, chars) == {"acc": 0.0, "acc_norm": 0.0}


def test_a_uniform_model_scores_chance(chars):
    task = _task(SAME_LENGTH)  # four choices of equal length per item: all of them tie
    assert _metrics(_uniform(chars), task, chars) == {"acc": 0.25, "acc_norm": 0.25}
    # A real transformers model with a zero output layer ties the same way (and its labels are not all first).
    assert _metrics(_llama(len(chars), zero_head=True), task, chars) == {"acc": 0.25, "acc_norm": 0.25}
    assert len({i.label for i in task.items}) > 1


def test_tie_rule_splits_credit_among_tied_best_choices():
    assert tie_credit([-1.0, -1.0, -3.0], 0) == 0.5
    assert tie_credit([-1.0, -1.0, -3.0], 2) == 0.0
    assert tie_credit([-2.0, -1.0, -1.0, -1.0], 3) == pytest.approx(1 / 3)
    assert tie_credit([-2.0, -1.0], 1) == 1.0


def test_acc_norm_and_acc_differ_on_choices_of_different_lengths(chars, tmp_path):
    """A uniform model gives each token log(1/V): the sum favours the shortest choice, the per-character mean the
    longest (" " + c has len(c) + 1 tokens, and (len + 1) / len falls with len)."""
    model = _uniform(chars)
    for label, expected in ((1, {"acc": 0.0, "acc_norm": 1.0}), (0, {"acc": 1.0, "acc_norm": 0.0})):
        path = tmp_path / f"lengths{label}.jsonl"
        path.write_text(json.dumps({"context": "Pick one:", "choices": ["ab", "abcdefgh"], "label": label}) + "\n")
        task = _task(path)
        logprobs, _ = score_requests(model, build_requests(task, chars, 512), 2, "cpu")
        assert logprobs == pytest.approx([-3 * math.log(len(chars)), -9 * math.log(len(chars))], rel=1e-6)
        assert task_metrics(task, logprobs, [False, False]) == expected


def test_lm_eval_field_names_are_read():
    item = parse_multiple_choice({"query": "Q: 2 + 2?", "endings": ["3", "4"], "gold": "1"})
    assert item == Item("Q: 2 + 2?", ("3", "4"), 1)
    arc = parse_multiple_choice({"question": "Sky?", "choices": {"text": ["blue", "red"], "label": ["A", "B"]},
                                 "label": 0})
    assert arc.choices == ("blue", "red")


# -- cloze ----------------------------------------------------------------------------------------------------------

def test_cloze_accuracy_and_perplexity(chars):
    task = _task(CLOZE, kind="cloze")
    texts = [i.context + " " + i.choices[0] for i in task.items]
    knows = _metrics(_knowing(chars, texts), task, chars)
    assert knows["acc"] == 1.0 and 1.0 <= knows["perplexity"] < 1.0001
    # Right first letter, wrong rest: greedy must produce every target token.
    near = [i.context + " " + i.choices[0][0] + "q" * (len(i.choices[0]) - 1) for i in task.items]
    assert _metrics(_knowing(chars, near), task, chars)["acc"] == 0.0
    # Uniform: no token is a unique argmax; perplexity is V to the mean number of target tokens (" " + word).
    uniform = _metrics(_uniform(chars), task, chars)
    mean_tokens = sum(len(i.choices[0]) + 1 for i in task.items) / len(task.items)
    assert uniform["acc"] == 0.0
    assert uniform["perplexity"] == pytest.approx(len(chars) ** mean_tokens, rel=1e-6)


# -- requests and scoring on a real tokenizer and model --------------------------------------------------------------

def test_requests_follow_lm_eval_encoding(bpe):
    task = _task(MC)
    requests = build_requests(task, bpe, 512)
    pairs = [(i.context, c) for i in task.items for c in i.choices]
    assert len(requests) == len(pairs)
    for r, (context, choice) in zip(requests, pairs):
        head = list(r.tokens[:len(r.tokens) - r.n_targets])
        assert head == [bpe.eos_token_id] + bpe(context, add_special_tokens=False)["input_ids"]
        assert bpe.decode(r.tokens[-r.n_targets:]) == " " + choice
    # The context's trailing space moves to the continuation, as in lm-eval.
    spaced = build_requests(Task("t", "multiple_choice", "-", [Item("Answer: ", ("honey", "glass"), 0)]), bpe, 512)
    assert list(spaced[0].tokens[:-spaced[0].n_targets]) == [bpe.eos_token_id] + bpe("Answer:")["input_ids"]
    assert bpe.decode(spaced[0].tokens[-spaced[0].n_targets:]) == "  honey"
    # Over the model's length the oldest context goes, the continuation stays.
    short = build_requests(task, bpe, 6)
    assert all(len(r.tokens) <= 7 and r.tokens[-r.n_targets:] == full.tokens[-full.n_targets:]
               for r, full in zip(short, requests) if full.n_targets < 7)


def test_scores_equal_a_plain_forward_whatever_the_batching(bpe):
    model = _llama(len(bpe))
    requests = build_requests(_task(MC), bpe, 512)
    one, greedy_one = score_requests(model, requests, 1, "cpu")
    five, greedy_five = score_requests(model, requests, 5, "cpu")  # right-padded rows of different lengths
    assert five == pytest.approx(one, abs=1e-5) and greedy_one == greedy_five
    for r, score in zip(requests[:6], one):
        with torch.no_grad():
            lp = model(torch.tensor([r.tokens[:-1]])).logits[0].log_softmax(-1)
        expected = sum(lp[t - 1, r.tokens[t]].item() for t in range(len(r.tokens) - r.n_targets, len(r.tokens)))
        assert score == pytest.approx(expected, abs=1e-5)


# -- sharding over processes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
def test_shards_cover_every_request_once_with_equal_lengths(world):
    for n in range(1, 14):
        shards = [shard_indices(n, rank, world) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1  # the same number of forwards on every process
        real = [i for s in shards for i in s if i >= 0]
        assert real == list(range(n))
        gathered = [i for s in shards for i in s]  # accelerate's gather concatenates in rank order
        assert unshard(gathered, [f"v{i}" for i in gathered], n) == [f"v{i}" for i in range(n)]
    with pytest.raises(ValueError, match="cover"):
        unshard([0, -1], ["a", "b"], 2)


def test_sharded_scoring_equals_one_process(bpe):
    """What each of three processes scores (padding included), gathered, gives the one-process scores."""
    model = _llama(len(bpe))
    requests = build_requests(_task(MC), bpe, 512)
    full, _ = score_requests(model, requests, 4, "cpu")
    gathered_idx, gathered = [], []
    for rank in range(3):
        idx = shard_indices(len(requests), rank, 3)
        scores, _ = score_requests(model, [requests[max(i, 0)] for i in idx], 4, "cpu")
        gathered_idx += idx
        gathered += scores
    assert unshard(gathered_idx, gathered, len(requests)) == pytest.approx(full, abs=1e-5)


def test_evaluate_tasks_on_one_process_matches_the_metrics(chars):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    mc, cloze = _task(MC), _task(CLOZE, kind="cloze")
    model = _knowing(chars, [i.context + " " + i.choices[i.label] for i in mc.items])
    tasks = [(mc, build_requests(mc, chars, 512)), (cloze, build_requests(cloze, chars, 512))]
    metrics = evaluate_tasks(acc, model, tasks, 4)
    assert metrics["everyday_mc/acc"] == 1.0 and metrics["everyday_mc/acc_norm"] == 1.0
    assert metrics["last_word_cloze/acc"] == 0.0 and metrics["last_word_cloze/perplexity"] > 1.0
    assert model.training  # evaluation gives the model back in the mode it found it


# -- config errors, before training ----------------------------------------------------------------------------------

def _checked(overrides: list[str]):
    """What the jobs do first (check_run_config / check_finetune_config): load the recipe, then check the tasks."""
    cfg = load_config(None, overrides)
    check_tasks(cfg.eval.tasks, cfg.eval.harness_tasks)
    return cfg


def _load(tmp_path: Path, rows: list, kind: str = "multiple_choice"):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return _checked([f"eval.tasks=[{{path: '{path}', kind: {kind}}}]"])


GOOD = {"context": "c", "choices": ["a", "b"], "label": 0}


@pytest.mark.parametrize("rows,kind,match", [
    ([GOOD, {"context": "c", "label": 0}], "multiple_choice", r"bad.jsonl:2: .*missing field 'choices'"),
    ([GOOD, GOOD, {"context": "c", "choices": ["a", "b"], "label": 2}], "multiple_choice",
     r"bad.jsonl:3: .*label 2 is out of range for 2 choices"),
    ([{"context": "c", "choices": ["a"], "label": 0}], "multiple_choice", r"bad.jsonl:1: .*at least two"),
    ([{"context": "c", "choices": ["a", "b"], "label": "x"}], "multiple_choice", r"bad.jsonl:1: .*'label'"),
    ([GOOD, "{not json"], "multiple_choice", r"bad.jsonl:2: bad multiple_choice row"),
    (["", "   "], "multiple_choice", r"bad.jsonl: no items"),
    ([{"text": "oneword"}], "cloze", r"bad.jsonl:1: .*last word"),
    ([{"sentence": "a b"}], "cloze", r"bad.jsonl:1: .*missing field 'text'"),
])
def test_malformed_task_files_name_file_and_line(tmp_path, rows, kind, match):
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, rows, kind)


def test_other_task_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is not a file"):
        _checked([f"eval.tasks=[{{path: '{tmp_path / 'nope.jsonl'}'}}]"])
    with pytest.raises(ConfigError, match="kind must be one of"):
        _checked([f"eval.tasks=[{{path: '{MC}', kind: mcq}}]"])
    with pytest.raises(ConfigError, match=r"eval.tasks\[0\].limit must be >= 1, got 0"):
        _checked([f"eval.tasks=[{{path: '{MC}', limit: 0}}]"])
    with pytest.raises(ConfigError, match="unique"):
        _checked([f"eval.tasks=[{{path: '{MC}'}}, {{path: '{MC}'}}]"])
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # not installed, whatever this machine has
    with pytest.raises(ConfigError, match="pip install lm-eval"):
        _checked(["eval.harness_tasks=[hellaswag]"])
    # Rows past the limit are never read, so a cheap pass over a huge file stays cheap.
    path = tmp_path / "limited.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n{json.dumps(GOOD)}\n{{broken\n")
    cfg = load_config(None, [f"eval.tasks=[{{path: '{path}', limit: 2}}]"])
    assert len(read_task(cfg.eval.tasks[0]).items) == 2


def test_task_settings_round_trip_through_the_saved_config(tmp_path):
    from hf_llm.config import save_config

    cfg = load_config(None, [f"eval.tasks=[{{path: '{MC}', limit: 4}}, {{path: '{CLOZE}', kind: cloze, name: lw}}]",
                             "eval.task_batch_size=2"])
    assert load_config(save_config(cfg, tmp_path / "config.yaml")) == cfg
    assert [t.name for t in cfg.eval.tasks] == [None, "lw"] and EvalConfig().tasks == []  # off by default


# -- lm-evaluation-harness wiring ------------------------------------------------------------------------------------

def test_harness_runs_simple_evaluate_on_the_live_model(monkeypatch, bpe):
    from accelerate import Accelerator

    calls = {}

    class FakeHFLM:
        def __init__(self, pretrained, tokenizer, batch_size):
            calls["hflm"] = (pretrained, tokenizer, batch_size)

    def simple_evaluate(model, tasks, limit, log_samples):
        calls["evaluate"] = (model, tasks, limit, log_samples)
        torch.manual_seed(0)  # as lm-eval does; training's random streams must come back untouched
        random.seed(0)
        return {"results": {"hellaswag": {"alias": "hellaswag", "acc,none": 0.25, "acc_stderr,none": 0.01,
                                          "acc_norm,none": 0.5},
                            "lambada_openai": {"perplexity,none": 12.5, "acc,none": 0.4}}}

    lm_eval = types.ModuleType("lm_eval")
    lm_eval.__spec__ = importlib.machinery.ModuleSpec("lm_eval", None)
    lm_eval.simple_evaluate = simple_evaluate
    models, huggingface = types.ModuleType("lm_eval.models"), types.ModuleType("lm_eval.models.huggingface")
    huggingface.HFLM, models.huggingface, lm_eval.models = FakeHFLM, huggingface, models
    for name, module in (("lm_eval", lm_eval), ("lm_eval.models", models), ("lm_eval.models.huggingface", huggingface)):
        monkeypatch.setitem(sys.modules, name, module)

    evaluation = load_config(None, ["eval.harness_tasks=[hellaswag, lambada_openai]", "eval.harness_limit=20"]).eval
    acc = Accelerator(cpu=True)
    model = acc.prepare(_llama(len(bpe)))
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    metrics = downstream_metrics(acc, model, bpe, evaluation, [])
    assert calls["hflm"] == (acc.unwrap_model(model), bpe, 8)
    assert isinstance(calls["evaluate"][0], FakeHFLM)
    assert calls["evaluate"][1:] == (["hellaswag", "lambada_openai"], 20, False)
    assert metrics == {"eval/hellaswag/acc": 0.25, "eval/hellaswag/acc_norm": 0.5,
                       "eval/lambada_openai/perplexity": 12.5, "eval/lambada_openai/acc": 0.4}
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state


def test_harness_metrics_keep_filters_and_drop_stderr():
    out = {"results": {"gsm8k": {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.01,
                                 "alias": "gsm8k"}}}
    assert harness_metrics(out) == {"gsm8k/exact_match_strict-match": 0.1}
    assert harness_metrics(None) == {}  # lm-eval returns None on processes other than its rank 0


# -- a failing evaluation does not cost the run ----------------------------------------------------------------------

def _tiny_run(tmp_path: Path, tokenizer, evaluation: EvalConfig, hand_over_tokenizer: bool = True):
    """The shared loop on a tiny Llama, a real Accelerator and real checkpoints: 4 steps, saving every 2."""
    from accelerate import Accelerator

    from hf_llm.train.checkpoint import LoopState
    from hf_llm.train.collate import PackedCollator
    from hf_llm.train.loop import LoopSetup, run_loop
    from hf_llm.train.objective import CausalLMObjective
    from hf_llm.train.stages import BlockStage, StepBatches

    acc = Accelerator(cpu=True)
    ids = tokenizer(" ".join(d["text"] for d in sample_documents(8)), add_special_tokens=False)["input_ids"]
    blocks = [{"input_ids": ids[i:i + 32]} for i in range(0, 32 * 16, 32)]
    model = _llama(len(tokenizer)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    stage = BlockStage(blocks, PackedCollator(tokenizer.eos_token_id, tokenizer.pad_token_id))
    train = TrainConfig(micro_batch_size=4, max_steps=4, warmup_steps=0, log_every=2, save_every=2, keep_last=2,
                        precision="fp32")
    model, optimizer, loader = acc.prepare(model, optimizer, stage.loader(train))
    state = LoopState()
    batches = StepBatches(acc, [stage.epochs(acc, loader)], [0], state)
    setup = LoopSetup(accelerator=acc, model=model, optimizer=optimizer, scheduler=scheduler, batches=batches,
                      objective=CausalLMObjective(),
                      eval_loader=None, total_steps=4, tokens_per_step=4 * 32, flops_per_token=1.0, peak_flops=None,
                      checkpoint_dir=tmp_path / "checkpoints",
                      tokenizer=tokenizer if hand_over_tokenizer else None)
    return run_loop(setup, state, train, evaluation)


@pytest.mark.parametrize("failure", ["scoring", "task_file"])
def test_a_failing_evaluation_warns_and_the_run_keeps_its_checkpoints(tmp_path, monkeypatch, bpe, failure):
    import hf_llm.downstream as downstream
    from hf_llm.config import RunConfig
    from hf_llm.pretrain import _model_card, _summary
    from hf_llm.train.checkpoint import list_checkpoints

    task_file = tmp_path / "mc.jsonl"
    task_file.write_text(MC.read_text())
    evaluation = load_config(None, [f"eval.tasks=[{{path: '{task_file}', name: mc}}]", "eval.every=1",
                                    "eval.sample_prompts=[]"]).eval  # valid when the run starts
    if failure == "scoring":
        real, calls = downstream.score_requests, []

        def flaky(*args, **kwargs):  # the second pass (step 2) fails inside scoring, the others work
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("injected scoring failure")
            return real(*args, **kwargs)

        monkeypatch.setattr(downstream, "score_requests", flaky)
    else:  # the file goes bad after the config was checked: found at the first pass, and at every later one
        task_file.write_text('{"context": "c", "choices": ["a"]}\n')
    with pytest.warns(RuntimeWarning, match="downstream evaluation failed at step"):
        state = _tiny_run(tmp_path, bpe, evaluation)

    assert state.step == 4
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-2", "step-4"]
    saved = json.loads((tmp_path / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    warned = [p["step"] for p in state.history if WARNING_KEY in p]
    scored = [p["step"] for p in state.history if "eval/mc/acc" in p]
    assert warned == ([2] if failure == "scoring" else [1, 2, 3, 4])
    assert scored == ([1, 3, 4] if failure == "scoring" else [])
    assert any(WARNING_KEY in p for p in saved["history"])  # the checkpoint after the failure holds the warning
    if failure == "task_file":
        assert "mc.jsonl:1" in state.history[-1][WARNING_KEY]
        return

    # Results reach the summary and the model card's model-index.
    from huggingface_hub import ModelCard
    from transformers import LlamaConfig

    cfg = RunConfig(eval=evaluation)
    prep = SimpleNamespace(train=[0], card={"train": {"tokens": 512}})
    summary = _summary(cfg, prep, state, 1000, "fp32", 1, 1.0, "single process")
    assert summary["downstream"]["mc"]["step"] == 4 and set(summary["downstream"]["mc"]) == {"acc", "acc_norm", "step"}
    assert len(summary["downstream_warnings"]) == 1 and "injected scoring failure" in summary["downstream_warnings"][0]
    json.dumps(summary)  # summary.json
    card = ModelCard(_model_card(cfg, LlamaConfig(), 1000, {}, summary))
    entries = {(r.dataset_name, r.metric_type): r for r in card.data.eval_results}
    assert entries[("mc", "acc")].metric_value == round(summary["downstream"]["mc"]["acc"], 4)
    assert entries[("mc", "acc_norm")].dataset_type == "mc.jsonl"
    assert "mc acc_norm (step 4)" in card.text


def test_a_loop_without_a_tokenizer_refuses_tasks_before_training(tmp_path, bpe):
    evaluation = EvalConfig(tasks=[TaskConfig(path=str(MC))], sample_prompts=[])
    with pytest.raises(ValueError, match="need a tokenizer"):
        _tiny_run(tmp_path, bpe, evaluation, hand_over_tokenizer=False)
    assert not (tmp_path / "checkpoints").exists()
