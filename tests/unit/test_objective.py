"""The loop's objective seam: units, loss and metrics through `train_step`, validation through `evaluate_loss`."""

import copy
import inspect

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin

from hf_llm.train.loop import evaluate_loss, train_step
from hf_llm.train.objective import CausalLMObjective, Objective
from hf_llm.train.stages import build_eval_loader
from tests.unit.test_accumulation import _batch, _model


class CountingObjective(CausalLMObjective):
    """Causal LM plus two metrics whose per-unit value is known: 1 per target, and the loss itself."""

    def loss(self, model, batch, normaliser):
        loss, _ = super().loss(model, batch, normaliser)
        targets = torch.tensor(float(self.units(batch)))
        return loss, {"one": targets, "summed_loss": loss.detach().float() * normaliser}


class RowwiseObjective(Objective):
    """The causal LM loss through the protocol's default (row by row) validation."""

    def __init__(self):
        self.inner = CausalLMObjective()

    def units(self, batch):
        return self.inner.units(batch)

    def loss(self, model, batch, normaliser):
        return self.inner.loss(model, batch, normaliser)


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


def test_validation_goes_through_the_objective_and_its_default_is_the_same_loss():
    model, batch = _model(), _batch()
    rows = [{"input_ids": ids} for ids in batch["input_ids"]]
    from hf_llm.train.collate import PackedCollator

    loader = build_eval_loader(rows, 3, PackedCollator(1))
    acc = _accelerator(1)
    causal = evaluate_loss(acc, model, loader)
    rowwise = evaluate_loss(acc, model, loader, RowwiseObjective())
    assert causal[1] == rowwise[1] == sum(CausalLMObjective().units(PackedCollator(1)([r])) for r in rows)
    assert abs(causal[0] - rowwise[0]) <= 1e-5


def test_fit_takes_at_most_eight_parameters():
    from hf_llm.train.run import fit

    assert len(inspect.signature(fit).parameters) <= 8
