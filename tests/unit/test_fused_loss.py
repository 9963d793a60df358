"""The chunked linear + cross-entropy (train.fused_loss) against the plain path: loss and gradients, on packed
batches with ignored positions, tied embeddings, LoRA and bf16 autocast; where it cannot apply; and a few loop
steps giving the same weights."""

from __future__ import annotations


import pytest
import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from hf_llm.config import TrainConfig, load_config
from hf_llm.errors import ConfigError
from hf_llm.train.collate import IGNORE_INDEX, PackedCollator
from hf_llm.train.objective import CausalLMObjective
from hf_llm.train.loss import (OutputLoss, fused_loss_blocker, linear_cross_entropy, output_loss_for,
                               resolve_fused_loss)

from ..conftest import tiny_overrides

VOCAB = 96


def _model(tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, eos_token_id=1,
                                        tie_word_embeddings=tie))


def _packed_batch() -> dict[str, torch.Tensor]:
    """Four packed rows (EOS-separated documents, so position ids restart) with masked tails of uneven length."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(2, VOCAB, (4, 24), generator=gen)
    ids[:, [5, 13]] = 1  # document boundaries
    batch = PackedCollator(1)([{"input_ids": row} for row in ids])
    for row, keep in enumerate([24, 17, 4, 11]):
        batch["labels"][row, keep:] = IGNORE_INDEX
    return batch


def _loss_and_grads(model, batch, fused: bool, normaliser: float = 37.0):
    model.zero_grad(set_to_none=True)
    loss, _ = CausalLMObjective(OutputLoss(_head(model)) if fused else None).loss(model, batch, normaliser)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_output_embeddings()


def _assert_close(a, b, atol):
    loss_a, grads_a = a
    loss_b, grads_b = b
    assert abs(loss_a.item() - loss_b.item()) <= atol * max(1.0, abs(loss_b.item()))
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=atol, rtol=0), (name, (grads_a[name] - grads_b[name]).abs().max())


@pytest.mark.parametrize("select", [True, False], ids=["ignored-rows-dropped", "ignored-rows-masked"])
def test_chunked_loss_and_gradients_equal_plain_cross_entropy_fp32(select):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(50, 16, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 16, generator=gen, requires_grad=True)
    labels = torch.randint(0, VOCAB, (50,), generator=gen)
    labels[::3] = IGNORE_INDEX
    ours = linear_cross_entropy(hidden, weight, labels, 29.0, chunk_rows=7, select=select)  # ragged last chunk
    ours.backward()
    g_hidden, g_weight = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref = torch.nn.functional.cross_entropy(hidden @ weight.t(), labels, ignore_index=IGNORE_INDEX, reduction="sum") / 29
    ref.backward()
    assert abs(ours.item() - ref.item()) <= 1e-5
    assert torch.allclose(g_hidden, hidden.grad, atol=1e-5, rtol=0)
    assert torch.allclose(g_weight, weight.grad, atol=1e-5, rtol=0)
    assert g_hidden[::3].abs().max() == 0  # an ignored position gets no gradient


@pytest.mark.parametrize("tie", [False, True])
def test_fused_model_loss_equals_the_models_own_on_a_packed_batch(tie):
    model, batch = _model(tie), _packed_batch()
    plain = _loss_and_grads(model, batch, fused=False)
    fused = _loss_and_grads(model, batch, fused=True)
    _assert_close(fused, plain, 1e-5)
    assert ("lm_head.weight" in plain[1]) != tie  # tied: the head's gradient lands on the embedding


def test_fused_loss_with_a_lora_model():
    from hf_llm.finetune import AdapterConfig, apply_adapter

    model = apply_adapter(_model(), AdapterConfig(r=4, dropout=0.0))  # no randomness between the two
    for name, p in model.named_parameters():  # LoRA's B starts at zero, which would hide a wrong gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    assert fused_loss_blocker(model) is None
    batch = _packed_batch()
    plain = _loss_and_grads(model, batch, fused=False)
    fused = _loss_and_grads(model, batch, fused=True)
    assert plain[1] and all("lora" in n for n in plain[1])
    _assert_close(fused, plain, 1e-5)


def test_fused_loss_under_bf16_autocast_matches_within_bf16_rounding():
    model, batch = _model(), _packed_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _loss_and_grads(model, batch, fused=False)
        fused = _loss_and_grads(model, batch, fused=True)
    ref = _loss_and_grads(model, batch, fused=False)  # fp32: both must be as close to it as bf16 allows
    assert abs(fused[0].item() - plain[0].item()) <= 2e-2
    for name, g in plain[1].items():
        scale = ref[1][name].abs().max().item() + 1e-12
        assert (fused[1][name] - g).abs().max().item() <= 0.05 * scale, name


def test_where_the_fused_loss_cannot_apply():
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma2Config, Gemma2ForCausalLM

    adapted_head = get_peft_model(_model(), LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    assert "plain bias-free torch.nn.Linear" in fused_loss_blocker(adapted_head)
    capped = Gemma2ForCausalLM(Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                            head_dim=16))
    assert "not one whose loss" in fused_loss_blocker(capped)
    assert resolve_fused_loss("auto", capped) is False  # auto falls back to the model's own loss
    assert resolve_fused_loss("false", _model()) is False
    with pytest.raises(ConfigError, match="train.fused_loss=true cannot apply"):
        resolve_fused_loss("true", capped)
    acc = Accelerator(cpu=True)
    assert isinstance(output_loss_for("auto", acc, _model()), OutputLoss)
    from types import SimpleNamespace

    zero3 = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(
        deepspeed_config={"zero_optimization": {"stage": 3}})), distributed_type="DistributedType.DEEPSPEED")
    fsdp = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None), distributed_type="DistributedType.FSDP")
    assert "ZeRO-3" in fused_loss_blocker(_model(), zero3) and "FSDP" in fused_loss_blocker(_model(), fsdp)
    with pytest.raises(ConfigError, match="ZeRO-3 partitions"):
        resolve_fused_loss("true", _model(), zero3)


def test_fused_loss_setting_is_checked():
    assert TrainConfig(fused_loss=True).fused_loss == "true"  # YAML's true arrives as a boolean
    with pytest.raises(ConfigError, match="train.fused_loss must be one of"):
        TrainConfig(fused_loss="sometimes")


def test_a_few_loop_steps_give_the_same_weights_with_and_without_the_fused_loss(tmp_path, shared_corpus,
                                                                                 prepared_corpus, one_thread):
    from safetensors.torch import load_file

    from hf_llm.pretrain import run_pretraining

    weights = {}
    for setting in ("true", "false"):
        out = tmp_path / setting
        cfg = load_config(None, tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}",
                                               f"train.fused_loss={setting}", "train.max_steps=4",
                                               "train.save_every=null", "eval.every=100"))
        summary = run_pretraining(cfg)
        weights[setting] = load_file(str(next((out / "model").glob("*.safetensors"))))
        assert summary["final_train_loss"] > 0
        assert summary["fused_loss"] == (setting == "true")  # the summary says which loss ran
        assert summary["peak_memory_bytes"] > 0 and summary["largest_micro_batch"] > 0
        assert all(p["peak_memory_bytes"] > 0 for p in summary["history"] if "loss" in p)
    assert weights["true"].keys() == weights["false"].keys()
    for name, w in weights["false"].items():
        assert torch.allclose(weights["true"][name], w, atol=1e-5, rtol=0), name


def test_the_fused_loss_fits_a_larger_micro_batch_in_the_same_memory():
    from transformers import AutoConfig

    from hf_llm.estimate import GiB, activation_memory, largest_micro_batch, shape_from_config

    shape = shape_from_config(AutoConfig.for_model("llama", vocab_size=32000, hidden_size=512, intermediate_size=1408,
                                                   num_hidden_layers=6, num_attention_heads=8))
    plain = largest_micro_batch(shape, 1024, 16 * GiB, "ddp", 1)
    fused = largest_micro_batch(shape, 1024, 16 * GiB, "ddp", 1, fused_loss=True)
    assert fused > 1.5 * plain > 0  # at a 32k vocabulary the fp32 logits are most of a small model's activations
    # The chunked loss's memory does not grow with the micro-batch.
    grow = [activation_memory(shape, 1024, b, fused_loss=True) for b in (1, 2, 3)]
    assert grow[2] - grow[1] == pytest.approx(grow[1] - grow[0])
    assert activation_memory(shape, 1024, 0, fused_loss=True) > 0 == activation_memory(shape, 1024, 0)


@pytest.mark.parametrize("offset, used", [(0.0, True), (1.0, False)])
def test_a_kernel_is_used_only_after_it_agrees_on_the_first_micro_batch(monkeypatch, offset, used):
    """On CUDA Liger's kernel stands in for ours only if its loss matches on the first micro-batch; here a stand-in
    kernel (ours, shifted by `offset`) is checked the same way."""
    import hf_llm.train.loss as loss_module

    calls = []

    def kernel(hidden, weight, labels, normaliser):
        calls.append(1)
        return linear_cross_entropy(hidden, weight, labels, normaliser) + offset

    monkeypatch.setattr(loss_module, "liger_loss", lambda weight: kernel)
    model, batch = _model(), _packed_batch()
    chosen = OutputLoss(_head(model))
    plain = _loss_and_grads(model, batch, fused=False)
    model.zero_grad(set_to_none=True)
    got, _ = CausalLMObjective(chosen).loss(model, batch, 37.0)
    assert (chosen.kernel is kernel) == used
    assert len(calls) == (2 if used else 1)  # the check, then (if it agreed) the real call
    assert abs(got.item() - plain[0].item()) <= 1e-5


def test_fp16_gradients_do_not_underflow_at_a_large_normaliser():
    """(softmax - onehot) / normaliser is below fp16's smallest subnormal at large vocabularies and batches; the
    gradient must be divided in fp32 and carry the loss scale before it is cast, as the plain path's does."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 16, generator=gen).half().requires_grad_()
    weight = torch.randn(4096, 16, generator=gen).half().requires_grad_()
    labels = torch.randint(0, 4096, (64,), generator=gen)
    (linear_cross_entropy(hidden, weight, labels, 1e5) * 65536.0).backward()  # a loss scale, as GradScaler's
    ref_h = hidden.detach().float().requires_grad_()
    ref_w = weight.detach().float().requires_grad_()
    (torch.nn.functional.cross_entropy(ref_h @ ref_w.t(), labels, reduction="sum") / 1e5 * 65536.0).backward()
    assert (weight.grad != 0).float().mean() > 0.99  # the plain fp16 division would have zeroed most of them
    for got, ref in ((weight.grad, ref_w.grad), (hidden.grad, ref_h.grad)):  # to fp16 rounding
        assert (got.float() - ref).abs().max() <= 1e-2 * ref.abs().max()


@pytest.mark.parametrize("cache_mib, vocab, rows", [(32, 8192, 512), (32, 32768, 256), (None, 8192, 1024),
                                                    (1, 8192, 1024), (512, 8192, 1024), (32, 151936, 55)])
def test_chunk_rows_fit_the_cache_only_where_that_keeps_chunks_large(monkeypatch, cache_mib, vocab, rows):
    from hf_llm.train import loss

    monkeypatch.setattr(loss, "last_level_cache_bytes", lambda: cache_mib and cache_mib << 20)
    assert loss.chunk_rows_for(vocab, "cpu") == rows
    assert loss.chunk_rows_for(vocab, "cuda") == max(1, loss.CHUNK_ELEMENTS // vocab)  # GPUs: the memory bound only
    assert loss.chunk_rows_for(vocab, "cpu") * vocab <= loss.CHUNK_ELEMENTS  # the estimate's bound holds


def test_the_last_level_cache_is_read_or_none():
    from hf_llm.train.loss import last_level_cache_bytes

    size = last_level_cache_bytes()
    assert size is None or size >= 1 << 16
