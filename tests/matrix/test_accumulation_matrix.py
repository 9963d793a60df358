"""Invariant: k micro-batches of b give the gradient of one batch of k·b (the loss normalised by the target tokens of
the whole step), over precision {fp32, bf16 autocast}. The 2-process cells (DDP ≡ accumulation, fp32 and bf16) are in
tests/integration/test_distributed.py.

Tolerances: fp32 1e-5 (summation order only). bf16 autocast rounds every matmul input to 8 bits of mantissa and a
batch of 8 rows may take other kernel blocking than one of 2, so results agree to bf16 rounding: loss within 2e-3
relative and every gradient within 2% of its tensor's largest entry (measured on this CPU: loss ≤5e-7, gradients
≤0.5% of their scale).
"""

from __future__ import annotations

import copy

import pytest
import torch

from hf_llm.train.run import cpu_supports_bf16

from ..unit.test_accumulation import _batch, _model

TOLERANCE = {"fp32": (1e-5, 1e-5), "bf16": (2e-3, 2e-2)}  # (loss, gradient relative to the tensor's max)


def _run(model, batches, k: int, precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import GradientAccumulationPlugin

    from hf_llm.train.loop import train_step
    from hf_llm.train.objective import CausalLMObjective

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    acc = Accelerator(cpu=True, mixed_precision={"fp32": "no"}.get(precision, precision),
                      gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=k, sync_with_dataloader=False))
    loss, targets, _ = train_step(acc, model, batches, CausalLMObjective())
    return loss, targets, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_micro_batches_equal_one_batch(precision, k, one_thread):
    if precision == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    base, batch = _model(), _batch()
    loss1, n1, grads1 = _run(copy.deepcopy(base), [batch], 1, precision)
    size = 8 // k
    micro = [{key: v[i:i + size] for key, v in batch.items()} for i in range(0, 8, size)]
    lossk, nk, gradsk = _run(copy.deepcopy(base), micro, k, precision)
    loss_tol, grad_tol = TOLERANCE[precision]
    assert n1 == nk
    assert abs(loss1 - lossk) <= loss_tol * max(1.0, abs(loss1)), (loss1, lossk)
    worst = max(((grads1[n] - gradsk[n]).abs().max() / grads1[n].abs().max().clamp_min(1e-12)).item() for n in grads1)
    assert worst <= grad_tol, f"{precision}, k={k}: gradients differ by {worst:.3g} of their scale"
    # Not vacuous at this tolerance: averaging per-micro-batch means (the usual mistake) moves the gradients
    # further than it allows.
    naive = _naive_gradients(copy.deepcopy(base), micro, precision)
    wrong = max(((grads1[n] - naive[n]).abs().max() / grads1[n].abs().max().clamp_min(1e-12)).item() for n in grads1)
    assert wrong > 2 * grad_tol, wrong


def _naive_gradients(model, micro, precision: str) -> dict[str, torch.Tensor]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for b in micro:
        with torch.autocast("cpu", dtype=dtype, enabled=precision == "bf16"):
            loss = model(input_ids=b["input_ids"], position_ids=b["position_ids"], labels=b["labels"]).loss
        (loss / len(micro)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}
