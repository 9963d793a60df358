"""Preference tuning (DPO, IPO, SimPO) on the one loop: pair formats and bad pairs, the losses against TRL's
trainers, the reference model (adapters disabled, precomputed, frozen copy), accumulation, and a learnable
preference reaching high held-out reward accuracy from the exported policy."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from hf_llm.config import TokenizerConfig, load_config
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.errors import DataError
from hf_llm.finetune import FinetuneRunConfig, run_finetuning
from hf_llm.preference_data import (PreferenceConfig, build_preference_datasets, encode_pair, fit_pair,
                                    split_implicit)
from hf_llm.sft import DEFAULT_CHAT_TEMPLATE, complete_tokenizer
from hf_llm.train.preference import PairCollator, PreferenceObjective, compute_reference_logps, sequence_logps

from ..conftest import REPO, reset_accelerate_state

RECIPE = REPO / "configs" / "recipes" / "dpo_lora_tiny.yaml"
PAIRS = REPO / "tests" / "data" / "preference_sample.jsonl"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "model")


def make_base(out: Path) -> Path:
    """A tiny random Llama and a BPE tokenizer learned from the preference sample, saved as a model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    texts = [m["content"] for r in rows for part in ("prompt", "chosen", "rejected") for m in r[part]]
    tok = train_bpe_tokenizer(texts * 3, TokenizerConfig(vocab_size=400, min_frequency=2))
    complete_tokenizer(tok, DEFAULT_CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _overrides(out: Path, base: Path, *extra: str) -> list[str]:
    return [f"output_dir={out}", f"model.name_or_path={base}", "train.precision=fp32", "train.report_to=[none]",
            "train.save_every=null", "train.cpu_threads=1", *extra]


def _run(out: Path, base: Path, *extra: str) -> dict:
    try:
        return run_finetuning(load_config(RECIPE, _overrides(out, base, *extra), schema=FinetuneRunConfig))
    finally:
        reset_accelerate_state()



def _models(base: Path, seed: int = 1):
    """(policy, reference): the base, and the base with its weights moved a little (so policy != reference)."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    policy = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return policy.eval(), reference


def _tok(base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


def _trl_rows(n: int = 6) -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text().splitlines()[:n]]


@pytest.mark.parametrize("loss_type, beta", [("sigmoid", 0.5), ("ipo", 0.1)])
def test_loss_and_metrics_equal_trl_dpo_trainer(base, tmp_path, loss_type, beta):
    """The same model, reference, pairs and settings give TRL's DPOTrainer loss and logged metrics (fp32, 1e-5);
    our encoding of the conversational pairs is TRL's token for token."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy, reference = _models(base)
    tok = _tok(base)
    rows = _trl_rows()
    args = DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=[loss_type], beta=beta, use_cpu=True,
                     report_to="none", per_device_train_batch_size=len(rows), max_length=None,
                     dataset_num_proc=None, bf16=False, fp16=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    encoded = trainer.train_dataset
    for row, trl_row in zip(rows, encoded):  # the same tokens: prompt rendered once, the responses after it
        assert list(encode_pair(tok, row["prompt"], row["chosen"], row["rejected"], None)) == \
            [trl_row["prompt_ids"], trl_row["chosen_ids"], trl_row["rejected_ids"]]
    trl_batch = trainer.data_collator([encoded[i] for i in range(len(rows))])
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, trl_batch, False).item()
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}  # the policy is in eval mode

    ours = PreferenceObjective(loss_type, beta, "frozen", ref_model=reference)
    batch = PairCollator(tok.pad_token_id)([encoded[i] for i in range(len(rows))])
    with torch.no_grad():
        loss, sums = ours.loss(policy, batch, normaliser=float(len(rows)))
    assert loss.item() == pytest.approx(trl_loss, abs=1e-5)
    names = {"rewards/chosen": "rewards/chosen", "rewards/rejected": "rewards/rejected",
             "rewards/accuracy": "rewards/accuracies", "rewards/margin": "rewards/margins",
             "logps/chosen": "logps/chosen", "logps/rejected": "logps/rejected"}
    for ours_name, trl_name in names.items():
        assert sums[ours_name].item() / len(rows) == pytest.approx(trl_metrics[trl_name], abs=1e-5, rel=1e-6), ours_name
    assert 0 < trl_metrics["rewards/accuracies"] < 1 or loss_type == "ipo"  # a batch that tells the sides apart


def test_simpo_equals_trl_cpo_trainer(base, tmp_path):
    """SimPO (reference-free, length-normalised) equals TRL's CPOTrainer with loss_type=simpo and cpo_alpha=0."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    policy, _ = _models(base)
    tok = _tok(base)
    rows = _trl_rows()
    pairs = [dict(zip(("prompt_ids", "chosen_ids", "rejected_ids"),
                      encode_pair(tok, r["prompt"], r["chosen"], r["rejected"], None))) for r in rows]
    args = CPOConfig(output_dir=str(tmp_path / "trl"), loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5,
                     use_cpu=True, report_to="none", bf16=False, fp16=False)
    texts = [{"prompt": "a", "chosen": "b", "rejected": "c"}]
    trainer = CPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(texts), processing_class=tok)

    def side(name: str) -> dict[str, torch.Tensor]:
        length = max(len(p["prompt_ids"]) + len(p[f"{name}_ids"]) for p in pairs)
        ids = torch.full((len(pairs), length), tok.pad_token_id)
        labels = torch.full((len(pairs), length), -100)
        mask = torch.zeros((len(pairs), length), dtype=torch.long)
        for i, p in enumerate(pairs):
            seq = p["prompt_ids"] + p[f"{name}_ids"]
            ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
            labels[i, len(p["prompt_ids"]):len(seq)] = torch.tensor(p[f"{name}_ids"])
        return {f"{name}_input_ids": ids, f"{name}_attention_mask": mask, f"{name}_labels": labels}

    with torch.no_grad():
        trl_loss, trl_metrics = trainer.get_batch_loss_metrics(policy, {**side("chosen"), **side("rejected")})
        loss, sums = PreferenceObjective("simpo", 2.0, "none", simpo_gamma=0.5).loss(
            policy, PairCollator(tok.pad_token_id)(pairs), normaliser=float(len(pairs)))
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    for name in ("rewards/chosen", "rewards/rejected"):
        assert sums[name].item() / len(pairs) == pytest.approx(trl_metrics[name], abs=1e-5)
    assert sums["rewards/accuracy"].item() / len(pairs) == pytest.approx(trl_metrics["rewards/accuracies"], abs=1e-6)



def _pairs_batch(tok, n: int = 4, offset: int = 0) -> dict[str, torch.Tensor]:
    rows = _trl_rows(offset + n)[offset:]
    pairs = [dict(zip(("prompt_ids", "chosen_ids", "rejected_ids"),
                      encode_pair(tok, r["prompt"], r["chosen"], r["rejected"], None))) for r in rows]
    return PairCollator(tok.pad_token_id)(pairs)


def _lora(model, seed: int = 0):
    """A LoRA adapter whose B matrices are not zero (as after training), so adapters change the outputs."""
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return peft


def test_reference_with_adapters_is_the_base_model(base):
    """With adapters the reference is the base with the adapter disabled: equal to the plain base model's
    log-probabilities, while the policy's differ."""
    _, reference = _models(base)
    tok, batch = _tok(base), _pairs_batch(_tok(base))
    peft = _lora(copy.deepcopy(reference))
    objective = PreferenceObjective("sigmoid", 0.1, "adapters")
    ref_c, ref_r = objective.reference_logps(peft, batch)
    with torch.no_grad():
        base_logps, _ = sequence_logps(reference, batch)
        policy_logps, _ = sequence_logps(peft, batch)
    assert torch.equal(torch.cat([ref_c, ref_r]), base_logps)
    assert (policy_logps - base_logps).abs().max() > 1e-3  # the adapter is live outside the reference forward
    assert peft.active_adapters == ["default"]  # and enabled again afterwards


@pytest.mark.parametrize("loss_type, step0", [("sigmoid", math.log(2)), ("ipo", (1 / (2 * 0.1)) ** 2)])
def test_step0_loss_when_policy_is_reference(base, loss_type, step0):
    """A fresh adapter (B = 0) is the reference: the DPO loss is ln 2 (IPO's: 1/(2β)²), rewards and margins 0."""
    from peft import LoraConfig, get_peft_model

    _, reference = _models(base)
    tok = _tok(base)
    peft = get_peft_model(copy.deepcopy(reference), LoraConfig(r=4, target_modules="all-linear"))
    loss, sums = PreferenceObjective(loss_type, 0.1, "adapters").loss(peft, _pairs_batch(tok), normaliser=4.0)
    assert loss.item() == pytest.approx(step0, abs=2e-7)  # ln 2 in fp32
    assert sums["rewards/margin"].item() == 0.0 and sums["rewards/accuracy"].item() == 0.0


def test_precomputed_reference_equals_a_frozen_copy(base):
    """Reference log-probabilities computed once before training equal those a frozen copy gives in the step."""
    from datasets import Dataset

    _, reference = _models(base)
    tok = _tok(base)
    rows = _trl_rows(10)
    pairs = Dataset.from_list([dict(zip(("prompt_ids", "chosen_ids", "rejected_ids"),
                                        encode_pair(tok, r["prompt"], r["chosen"], r["rejected"], None)))
                               for r in rows])
    collate = PairCollator(tok.pad_token_id)
    chosen, rejected = compute_reference_logps(copy.deepcopy(reference), pairs, collate, 3, "cpu")
    stored = pairs.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)
    frozen = PreferenceObjective("sigmoid", 0.1, "frozen", ref_model=reference)
    batch_rows = [stored[i] for i in (7, 2, 5, 0)]  # another grouping and padding than the precompute's
    batch = collate(batch_rows)
    got = PreferenceObjective("sigmoid", 0.1, "batch").reference_logps(None, batch)
    want = frozen.reference_logps(None, {k: v for k, v in batch.items() if not k.startswith("ref_")})
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=0)


def test_accumulation_equals_one_batch_of_pairs(base):
    """Two micro-batches of two pairs give the loss, metrics and gradients of one batch of four."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    from hf_llm.train.loop import train_step

    policy, reference = _models(base)
    tok = _tok(base)
    batch = _pairs_batch(tok, 4)
    objective = PreferenceObjective("sigmoid", 0.1, "frozen", ref_model=reference)

    def run(micro: list, k: int):
        reset_accelerate_state()
        acc = Accelerator(cpu=True, gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=k, sync_with_dataloader=False))
        model = copy.deepcopy(policy).train()
        loss, units, metrics = train_step(acc, model, micro, objective)
        return {"loss": loss, **metrics}, units, {n: p.grad.clone() for n, p in model.named_parameters()}

    def split(b: dict, lo: int, hi: int) -> dict:  # pairs lo..hi: their chosen rows and their rejected rows
        out = {k: torch.cat([v[lo:hi], v[4 + lo:4 + hi]]) for k, v in b.items()}
        length = int(out["attention_mask"].sum(1).max())
        return {k: v[:, :length] for k, v in out.items()}

    one, n1, g1 = run([batch], 1)
    two, n2, g2 = run([split(batch, 0, 2), split(batch, 2, 4)], 2)
    reset_accelerate_state()
    assert n1 == n2 == 4
    for name in one:
        assert one[name] == pytest.approx(two[name], abs=1e-5), name
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-5, rtol=0), name


def test_bad_pairs_are_skipped_and_counted(base, tmp_path):
    tok = _tok(base)
    good = _trl_rows(12)
    bad = [
        {"prompt": "Hi", "chosen": "Same.", "rejected": "Same."},  # identical
        {"prompt": "Hi", "chosen": "", "rejected": "No."},  # empty response
        {"prompt": "Hi", "chosen": "Yes."},  # missing field
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "robot", "content": "x"}],
         "rejected": [{"role": "assistant", "content": "y"}]},  # unknown role
        {"prompt": [{"role": "user", "content": "Hi " * 300}], "chosen": "Yes.", "rejected": "No."},  # long prompt
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good + bad) + "{not json\n")
    from hf_llm.config import DataConfig, SourceConfig

    data = DataConfig(sources=[SourceConfig(path=str(path))], validation_fraction=0.2)
    built = build_preference_datasets(data, PreferenceConfig(max_prompt_length=200), tok)
    assert built.stats["sources"]["pairs"]["rejected"] == {
        "identical": 1, "empty_response": 1, "missing_field": 1, "unknown_role": 1, "prompt_too_long": 1,
        "bad_json": 1}
    assert len(built.train) + len(built.validation) == 12
    assert sorted(r["row"] for r in built.rejects) == list(range(12, 18))
    with pytest.raises(DataError, match=r"row 12: chosen and rejected responses are the same"):
        build_preference_datasets(data, PreferenceConfig(strict=True), tok)


def test_truncation_cuts_the_prompt_first():
    pref = PreferenceConfig(max_length=10)
    p, c, r, status = fit_pair(list(range(8)), [20, 21, 22], [30, 31], pref)
    assert (p, c, r, status) == ([1, 2, 3, 4, 5, 6, 7], [20, 21, 22], [30, 31], "truncated")
    p, c, r, status = fit_pair([1, 2], list(range(20, 40)), [30], pref)  # a response alone over the limit
    assert (p, len(c), r) == ([2], 9, [30])
    p, c, r, _ = fit_pair(list(range(8)), [20, 21, 22], [30, 31], PreferenceConfig(max_length=10,
                                                                                   truncation="response_first"))
    assert (len(p), c, r) == (8, [20, 21], [30, 31])


def test_implicit_pairs_split_at_the_shared_prefix():
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Name a fruit"}]
    prompt, chosen, rejected = split_implicit(conv + [{"role": "assistant", "content": "Apple"}],
                                              conv + [{"role": "assistant", "content": "No"}])
    assert prompt == conv and chosen[0]["content"] == "Apple" and rejected[0]["content"] == "No"
    prompt, chosen, rejected = split_implicit("\n\nHuman: Hi\n\nAssistant: Hello there",
                                              "\n\nHuman: Hi\n\nAssistant: Go away")
    assert (prompt, chosen, rejected) == ("\n\nHuman: Hi\n\nAssistant:", " Hello there", " Go away")



TOPICS = ["apples", "rivers", "clocks", "horses", "winter", "music", "bread", "ships", "gardens", "stars", "paper",
          "bridges", "coffee", "mountains", "birds", "candles", "forests", "trains", "honey", "islands", "lamps",
          "oceans", "pianos", "roses", "salt", "tigers", "violins", "wheat", "glass", "maps", "deserts", "kites",
          "lemons", "owls", "pearls", "quilts", "rain", "snow", "tea", "wolves"]


def _learnable_rows(topics: list[str], implicit: bool) -> list[dict]:
    """Helpful answers preferred over dismissive ones: a preference that generalises to unseen topics."""
    rows = []
    for i, topic in enumerate(topics):
        prompt = [{"role": "user", "content": f"Tell me about {topic}."}]
        chosen = [{"role": "assistant", "content": f"Sure! {topic.capitalize()} are a fine subject to learn about."}]
        rejected = [{"role": "assistant", "content": ["Go away.", "Not now.", "Ask someone else."][i % 3]}]
        rows.append({"chosen": prompt + chosen, "rejected": prompt + rejected} if implicit else
                    {"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def _response_logp(model, tok, prompt: list, response: list) -> float:
    """log p(response | prompt) from a plain forward of `model` (independent of the training code)."""
    prompt_ids = tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
    ids = tok(tok.apply_chat_template(prompt + response, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    return float(logps[len(prompt_ids) - 1:].sum())


@pytest.mark.slow
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_learnable_preference_reaches_high_held_out_reward_accuracy(base, tmp_path, implicit):
    """DPO with LoRA on a learnable preference: the implicit reward β·(log π − log π_ref), computed from the
    exported (merged) policy and the base on held-out topics, ranks chosen over rejected for ≥ 90% of pairs."""
    from transformers import AutoModelForCausalLM

    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in _learnable_rows(TOPICS[:32], implicit)))
    summary = _run(tmp_path / "run", base, f"data.sources=[{{path: '{train_file}'}}]", "train.max_steps=30",
                   "train.lr=5e-3", "train.micro_batch_size=8", "adapter.merge=true", "eval.every=30",
                   "data.validation_fraction=0.125")
    assert summary["data"]["sources"]["train"]["format"] == ("implicit" if implicit else "explicit")
    tok = _tok(base)
    policy = AutoModelForCausalLM.from_pretrained(summary["merged_dir"], dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    held_out = _learnable_rows(TOPICS[32:], implicit=False)
    wins = 0
    for row in held_out:
        rewards = [_response_logp(policy, tok, row["prompt"], row[side]) -
                   _response_logp(reference, tok, row["prompt"], row[side]) for side in ("chosen", "rejected")]
        wins += rewards[0] > rewards[1]
    assert wins / len(held_out) >= 0.9
    assert summary["preference_metrics"]["validation"]["rewards/accuracy"] >= 0.9


def test_recipe_writes_adapter_summary_card_and_rejects(base, tmp_path):
    """The shipped recipe (after its data.sources override) runs, writes OUTPUT/adapter with a card that lists the
    preference metrics, the summary's metrics on training and held-out pairs, and the (empty) rejects file."""
    out = tmp_path / "run"
    s = _run(out, base, "train.max_steps=2", "train.log_every=1", "eval.every=2")
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert s["objective"] == "preference" and s["preference"]["reference"] == "adapters"
    for split in ("train", "validation"):
        assert set(s["preference_metrics"][split]) == {"loss", "rewards/chosen", "rewards/rejected",
                                                       "rewards/accuracy", "rewards/margin", "logps/chosen",
                                                       "logps/rejected"}
    first = next(h for h in s["history"] if "rewards/accuracy" in h) if "history" in s else None
    card = (out / "adapter" / "README.md").read_text()
    assert "DPO (sigmoid), beta=0.1" in card and "| rewards/accuracy |" in card
    assert (out / "rejects.jsonl").read_text() == ""
    assert json.loads((out / "summary.json").read_text())["preference_metrics"] == s["preference_metrics"]
    del first


def test_full_finetuning_precomputes_the_reference_once(base, tmp_path):
    """Full fine-tuning: reference log-probabilities are computed before training, stored under a fingerprint of
    model and pairs, reused by a second run on the same model and data, and the first step's DPO loss is ln 2."""
    out = tmp_path / "run"
    s = _run(out, base, "adapter.method=full", "train.max_steps=1", "train.log_every=1", "eval.every=1",
             "train.overwrite_output_dir=true")
    assert s["preference"]["reference"] == "precompute"
    assert s["preference_metrics"]["train"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    stored = list((out / "reference").glob("*.json"))
    assert len(stored) == 1
    mtime = stored[0].stat().st_mtime_ns
    _run(out, base, "adapter.method=full", "train.max_steps=1", "train.overwrite_output_dir=true")
    assert [p.stat().st_mtime_ns for p in (out / "reference").glob("*.json")] == [mtime]  # reused
    _run(out, base, "adapter.method=full", "train.max_steps=1", "train.overwrite_output_dir=true",
         "preference.max_length=24")  # other pairs (truncated): recomputed under a new fingerprint
    assert len(list((out / "reference").glob("*.json"))) == 2


@pytest.mark.parametrize("override, message", [
    ("preference.reference=adapters", "needs adapter.method=lora or qlora"),
    ("sft.packing=true", "sft.packing does not apply to preference pairs"),
    ("preference.loss_type=orpo", "preference.loss_type must be one of"),
    ("preference.max_length=4096", "preference.max_length=4096 exceeds the model's 512 positions"),
])
def test_bad_preference_settings_fail_before_training(base, tmp_path, override, message):
    from hf_llm.errors import ConfigError
    from hf_llm.finetune import check_finetune_config

    with pytest.raises(ConfigError, match=message):
        extra = ["adapter.method=full"] if "adapters" in override else []
        check_finetune_config(load_config(RECIPE, _overrides(tmp_path, base, override, *extra),
                                          schema=FinetuneRunConfig))
