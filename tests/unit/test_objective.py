"""The loop's objective seam: units, loss and metrics through `train_step`, validation through `evaluate_loss`."""

import copy
import inspect

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin

from hf_llm.train.loop import evaluate_loss, train_step
from hf_llm.train.objective import CausalLMObjective
from hf_llm.train.stages import build_eval_loader
from tests.unit.test_accumulation import _batch, _model


class CountingObjective(CausalLMObjective):
    """Causal LM plus two metrics whose per-unit value is known: 1 per target, and the loss itself."""

    def loss(self, model, batch, normaliser):
        loss, _ = super().loss(model, batch, normaliser)
        targets = torch.tensor(float(self.units(batch)))
        return loss, {"one": targets, "summed_loss": loss.detach().float() * normaliser}

    def eval_items(self, model, batch):
        items = super().eval_items(model, batch)
        return {**items, "one": items["units"].float(), "twice": 2 * items["loss"]}


def _accelerator(k: int) -> Accelerator:
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(cpu=True, gradient_accumulation_plugin=GradientAccumulationPlugin(
        num_steps=k, sync_with_dataloader=False))


def test_metrics_are_summed_over_micro_batches_and_divided_by_the_steps_units():
    base, batch = _model(), _batch()
    one = train_step(_accelerator(1), copy.deepcopy(base), [batch], CountingObjective())
    micro = [{k: v[i:i + 2] for k, v in batch.items()} for i in range(0, 8, 2)]
    four = train_step(_accelerator(4), copy.deepcopy(base), micro, CountingObjective())
    for loss, units, metrics in (one, four):
        assert metrics["one"] == 1.0  # a sum over the step's units, divided by them
        assert abs(metrics["summed_loss"] - loss) <= 1e-5  # the same mean as the loss the loop reports
        assert units == CausalLMObjective().units(batch)
    assert abs(one[0] - four[0]) <= 1e-5 and one[1] == four[1]


def test_validation_goes_through_the_objective_with_its_metrics_per_unit():
    from hf_llm.train.collate import PackedCollator

    model, batch = _model(), _batch()
    rows = [{"input_ids": ids} for ids in batch["input_ids"]]
    loader = build_eval_loader(rows, 3, PackedCollator(1))  # 8 rows: batches of 3, 3, 2
    acc = _accelerator(1)
    loss, units, metrics = evaluate_loss(acc, model, loader)
    assert metrics == {}
    assert units == CausalLMObjective().units(PackedCollator(1)(rows))
    with torch.no_grad():  # the mean over all target tokens, whatever the batches
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        labels = PackedCollator(1)(rows)["labels"]
        ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1))
    assert abs(loss - ref.item()) <= 1e-5
    counted = evaluate_loss(acc, model, loader, CountingObjective())
    assert counted[:2] == (loss, units)
    assert counted[2] == {"one": 1.0, "twice": pytest.approx(2 * loss)}


def test_fit_takes_at_most_eight_parameters():
    from hf_llm.train.run import fit

    assert len(inspect.signature(fit).parameters) <= 8
