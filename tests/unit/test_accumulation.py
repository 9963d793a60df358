import copy

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin

from hf_llm.config import ModelConfig
from hf_llm.model import build_model, build_model_config
from hf_llm.train.collate import IGNORE_INDEX, PackedCollator
from hf_llm.train.loop import train_step
from hf_llm.train.objective import CausalLMObjective


def _model():
    torch.manual_seed(0)
    config = build_model_config(ModelConfig(preset="tiny", overrides={
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 64}))
    config.eos_token_id = 1
    return build_model(config)


def _batch():
    gen = torch.Generator().manual_seed(3)
    rows = [{"input_ids": torch.randint(2, 64, (16,), generator=gen)} for _ in range(8)]
    batch = PackedCollator(1)(rows)
    # Uneven numbers of target tokens per micro-batch of 2: mask a different share of each pair.
    for i, keep in enumerate([16, 15, 3, 4, 10, 9, 1, 16]):
        batch["labels"][i, keep:] = IGNORE_INDEX
    return batch


def _run(model, batches, k):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    acc = Accelerator(cpu=True, gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=k, sync_with_dataloader=False))
    loss, targets, metrics = train_step(acc, model, batches, CausalLMObjective())
    assert metrics == {}
    assert acc.sync_gradients
    return loss, targets, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_four_micro_batches_of_two_equal_one_batch_of_eight():
    base, batch = _model(), _batch()
    loss1, n1, grads1 = _run(copy.deepcopy(base), [batch], 1)
    micro = [{k: v[i:i + 2] for k, v in batch.items()} for i in range(0, 8, 2)]
    loss4, n4, grads4 = _run(copy.deepcopy(base), micro, 4)
    assert n1 == n4
    assert abs(loss1 - loss4) <= 1e-5
    for name in grads1:
        assert torch.allclose(grads1[name], grads4[name], atol=1e-5, rtol=0), name
    # The reference really is the mean over target tokens.
    with torch.no_grad():
        logits = base(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), batch["labels"][:, 1:].reshape(-1))
    assert abs(ref.item() - loss1) <= 1e-5


def test_naive_mean_of_micro_batch_means_differs():
    """Guards the test itself: with these uneven masks, averaging per-micro-batch means would be wrong."""
    base, batch = _model(), _batch()
    with torch.no_grad():
        means = []
        for i in range(0, 8, 2):
            out = base(input_ids=batch["input_ids"][i:i + 2], labels=batch["labels"][i:i + 2])
            means.append(out.loss.item())
        full = base(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert abs(sum(means) / 4 - full) > 1e-3
