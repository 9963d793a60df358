"""Invariant: packed documents are isolated, over attention {sdpa, eager, flash} × micro-batch {1, 4} × packing
{concat, best_fit, SFT packing}.

For sdpa and eager, transformers builds a block-causal mask from position ids that restart at each document.
Flash kernels get no mask: transformers' `_flash_attention_forward` keeps documents apart only through varlen
kwargs (`cu_seq_lens_*`, `max_length_*`) or, failing those, position ids of a ONE-row batch
(`_is_packed_sequence`). So under flash the collator passes the varlen kwargs of the micro-batch (its sequences
over the rows laid end to end); transformers' flash path then flattens the batch itself. CPU has no flash kernels: the flash cells run transformers' real routing code over reference
kernels (`emulated_flash`), which compute what flash computes — one causal sequence per row unless varlen
boundaries are given — so a leak shows as it would on a GPU. `flash_packing_parity` in benchmarks/gpu_check.py
is the same check with the real kernels, for a CUDA machine.
"""

from __future__ import annotations

import importlib.util
from unittest import mock

import numpy as np
import pytest
import torch

from hf_llm.data.pack import make_packer
from hf_llm.model import build_model
from hf_llm.sft import pack_examples
from hf_llm.train.collate import PaddingCollator
from hf_llm.train.collate import IGNORE_INDEX, PackedCollator, count_targets, needs_varlen_kwargs
from hf_llm.train.objective import CausalLMObjective

from ..unit.test_packing import EOS

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, VOCAB, SEQ = 2, 128, 32  # token ids 3.. are text, so EOS and PAD only ever mark boundaries
ATTENTIONS = ["sdpa", "eager", "flash_attention_2"]
PACKINGS = ["concat", "best_fit", "sft"]
MICRO = [1, 4]


# ------------------------------------------------------------------------------------------------ data


def _documents(n: int, seed: int) -> list[np.ndarray]:
    """Documents of varied lengths (2 to 19 text tokens), each closed by EOS."""
    rng = np.random.default_rng(seed)
    return [np.append(rng.integers(3, VOCAB, int(k)), EOS) for k in rng.integers(2, 20, n)]


def packed_rows(packing: str, micro: int) -> list[dict]:
    """`micro` rows as the training set holds them: blocks of the data pipeline's packers, or SFT packed rows."""
    if packing == "sft":
        examples = []
        for doc in _documents(24, seed=2):
            prompt = len(doc) // 2  # completion-only: the prompt half and the first token are not targets
            labels = [IGNORE_INDEX] * prompt + doc[prompt:].tolist()
            examples.append((doc.tolist(), labels))
        packed = pack_examples(examples, SEQ, PAD)
        rows = [{k: packed[k][r] for k in packed} for r in range(len(packed["input_ids"]))]
    else:
        docs = _documents(24, seed=1)
        packer = make_packer(packing, SEQ, VOCAB, PAD)
        parts = [packer.add(np.concatenate(docs), np.array([len(d) for d in docs])), packer.finish()]
        blocks = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        rows = [{k: blocks[k][r].tolist() for k in blocks} for r in range(len(blocks["input_ids"]))]
    assert len(rows) >= micro
    if packing == "best_fit":
        rows.sort(key=lambda r: r["input_ids"].count(PAD), reverse=True)  # rows with padding tails come first
        assert rows[0]["input_ids"][-1] == PAD
    return rows[:micro]


def document_starts(rows: list[dict]) -> list[int]:
    """Where each sequence starts in the rows laid end to end, found from the tokens alone: each row's start and
    the token after every EOS (a padding tail starts after the last document's EOS)."""
    starts = []
    for r, row in enumerate(rows):
        ids = row["input_ids"]
        starts += [r * SEQ] + [r * SEQ + i + 1 for i, t in enumerate(ids[:-1]) if t == EOS]
    return starts


# ------------------------------------------------------------------------------------------------ models


def _collator(attn: str) -> PackedCollator:
    """The collator pretrain.py and finetune.py build for `attn`."""
    return PackedCollator(EOS, PAD, varlen=needs_varlen_kwargs(attn))


def _model(attn: str):
    from transformers import LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=EOS, pad_token_id=PAD)
    flash = "flash" in attn
    model = build_model(config, "sdpa" if flash else attn).eval()
    if flash:
        model.config._attn_implementation = attn  # routed by transformers, computed by `emulated_flash`'s kernels
    return model


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, causal: bool) -> torch.Tensor:
    """Attention of one sequence, (tokens, heads, dim); key/value heads repeated for grouped-query attention."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if causal:
        n = q.shape[0]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def reference_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    # flash_attn_func: every row is ONE sequence, whatever its position ids say.
    return torch.stack([_attend(q[b], k[b], v[b], softmax_scale, causal) for b in range(q.shape[0])])


def reference_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                     softmax_scale=None, causal=False):
    # flash_attn_varlen_func: tokens of all sequences end to end, sequence i is cu_seqlens[i]:cu_seqlens[i + 1].
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and cu_seqlens_q.dtype == torch.int32
    lengths = cu_seqlens_q.diff()
    assert int(max_seqlen_q) == int(lengths.max()) == int(max_seqlen_k)
    out = torch.empty_like(q)
    for a, b in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist()):
        out[a:b] = _attend(q[a:b], k[a:b], v[a:b], softmax_scale, causal)
    return out


@pytest.fixture
def emulated_flash(monkeypatch):
    """transformers' flash routing over the reference kernels. Yields the spy on `_prepare_from_posids`, the
    path that infers boundaries from position ids when no varlen kwargs come with the batch."""
    import transformers.modeling_flash_attention_utils as fa

    kernels = ((reference_flash_attn_func, reference_flash_attn_varlen_func, None, fa._pad_input, fa._unpad_input),
               (fa._lazy_define_process_function(reference_flash_attn_varlen_func), dict))
    monkeypatch.setattr(fa, "lazy_import_flash_attention", lambda *args, **kwargs: kernels)
    inferred = mock.Mock(wraps=fa._prepare_from_posids)
    monkeypatch.setattr(fa, "_prepare_from_posids", inferred)
    yield inferred


@torch.no_grad()
def _logits(model, batch: dict) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # what the loop passes (train and evaluation)
    return model(**inputs, use_cache=False).logits.reshape(-1, SEQ, VOCAB)


# ------------------------------------------------------------------------------------------------ kwargs


@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("micro", MICRO)
def test_flash_batch_marks_every_document_boundary(packing, micro):
    from transformers.modeling_flash_attention_utils import _is_packed_sequence, prepare_fa_kwargs_from_position_ids

    rows = packed_rows(packing, micro)
    batch = _collator("flash_attention_2")(rows)
    # transformers' flash code takes its varlen path when all four kwargs come with the batch, whatever its rows;
    # without them it would infer boundaries only for a batch of one row.
    varlen = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
    assert all(batch.get(k) is not None for k in varlen), f"{sorted(batch)}: flash would not see packing"
    assert batch["input_ids"].shape == (micro, SEQ) or _is_packed_sequence(batch["position_ids"], 1)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    expected = document_starts(rows) + [micro * SEQ]
    assert cu_q.tolist() == expected  # every document boundary, found by transformers from the position ids
    assert batch["cu_seq_lens_q"].dtype == batch["cu_seq_lens_k"].dtype == torch.int32
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == expected  # and given as they are
    assert int(batch["max_length_q"]) == int(batch["max_length_k"]) == int(max_q) == int(max_k)
    labels = batch["labels"].reshape(-1)
    assert all(labels[s] == IGNORE_INDEX for s in expected[:-1])  # no prediction across a boundary
    reference = PackedCollator(EOS, PAD)(rows)
    assert count_targets(batch["labels"]) == count_targets(reference["labels"])
    assert torch.equal(batch["input_ids"].reshape(micro, SEQ), reference["input_ids"])


@pytest.mark.parametrize("micro", MICRO)
def test_padded_sft_batch_is_unpadded_by_its_attention_mask(micro, emulated_flash):
    """SFT without packing: flash unpads by the attention mask, one sequence per example, no flattening needed."""
    from transformers.modeling_flash_attention_utils import _get_unpad_data

    docs = _documents(micro, seed=3)
    rows = [{"input_ids": d.tolist(), "labels": [IGNORE_INDEX] + d[1:].tolist()} for d in docs]
    batch = PaddingCollator(PAD)(rows)
    _, cu, max_len = _get_unpad_data(batch["attention_mask"])
    assert cu.tolist() == np.cumsum([0] + [len(d) for d in docs]).tolist() and max_len == max(len(d) for d in docs)
    model = _model("flash_attention_2")
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        for r, doc in enumerate(docs):
            alone = model(input_ids=torch.as_tensor(doc)[None], use_cache=False).logits[0]
            assert (logits[r, : len(doc)] - alone).abs().max() <= 1e-4


# ------------------------------------------------------------------------------------------------ semantics


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("micro", MICRO)
def test_flash_layout_gives_the_same_logits_and_loss(attn, packing, micro):
    """The batch flash gets (rows plus varlen kwargs) is the same computation as the plain rows on the other
    backends, which ignore the kwargs: same per-token logits, summed loss and target count."""
    rows = packed_rows(packing, micro)
    flat, plain = _collator("flash_attention_2")(rows), PackedCollator(EOS, PAD)(rows)
    assert flat["input_ids"].shape == (micro, SEQ) and torch.equal(flat["labels"], plain["labels"])
    model = _model(attn)
    assert (_logits(model, flat) - _logits(model, plain)).abs().max() <= 1e-5
    with torch.no_grad():
        losses = [CausalLMObjective().loss(model, b, 1.0)[0] for b in (flat, plain)]
    assert count_targets(flat["labels"]) == count_targets(plain["labels"])
    assert torch.allclose(losses[0], losses[1], rtol=1e-6, atol=1e-5), losses


@pytest.mark.parametrize("attn", ATTENTIONS)
@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("micro", MICRO)
def test_packed_documents_equal_documents_alone(attn, packing, micro, request):
    """Each packed document's logits equal its logits alone, with the batch the collator builds for `attn`."""
    inferred = request.getfixturevalue("emulated_flash") if "flash" in attn else None
    rows = packed_rows(packing, micro)
    batch = _collator(attn)(rows)
    model = _model(attn)
    logits = _logits(model, batch)
    if inferred is not None:
        assert inferred.call_count == 0  # the collator's varlen kwargs were used; nothing was inferred
    starts = document_starts(rows) + [micro * SEQ]
    ids = torch.as_tensor([r["input_ids"] for r in rows]).reshape(-1)
    checked = 0
    with torch.no_grad():
        for a, b in zip(starts, starts[1:]):
            if ids[a] == PAD:
                continue  # a padding tail
            alone = model(input_ids=ids[a:b][None], use_cache=False).logits[0]
            diff = (logits.reshape(-1, VOCAB)[a:b] - alone).abs().max().item()
            assert diff <= 1e-4, f"{attn}, {packing}, micro-batch {micro}: the document at {a} sees others ({diff:.3g})"
            checked += 1
    assert checked >= 2 * micro


# ------------------------------------------------------------------------------------------------ the leak


def test_flash_sees_no_packing_in_a_batch_of_several_rows(emulated_flash):
    """Why the collator passes varlen kwargs: rows with restarting position ids but several per batch are, for flash, plain
    sequences — transformers' own check says so, and the documents of a row then attend to each other."""
    from transformers.modeling_flash_attention_utils import _is_packed_sequence

    rows = packed_rows("concat", 4)
    plain = PackedCollator(EOS, PAD)(rows)
    assert not _is_packed_sequence(plain["position_ids"], 4)
    assert _is_packed_sequence(plain["position_ids"][:1], 1)
    model = _model("flash_attention_2")
    logits = _logits(model, plain)
    a, b = document_starts(rows)[1:3]  # the second document of the first row
    with torch.no_grad():
        alone = model(input_ids=plain["input_ids"][0, a:b][None], use_cache=False).logits[0]
    assert (logits[0, a:b] - alone).abs().max() > 1e-2  # it attends to the first document


# ------------------------------------------------------------------------------------------------ the choice


@pytest.mark.parametrize("name, flat", [
    ("flash_attention_2", True), ("flash_attention_3", True), ("kernels-community/flash-attn2", True),
    ("kernels-community/vllm-flash-attn3", True), ("sdpa", False), ("eager", False), ("flex_attention", False),
    (None, False),
])
def test_which_attention_needs_varlen_kwargs(name, flat):
    assert needs_varlen_kwargs(name) is flat


def test_a_row_that_does_not_start_a_sequence_is_refused():
    row = {"input_ids": [5, 6, EOS, 7], "position_ids": [3, 4, 5, 0], "labels": [5, 6, EOS, IGNORE_INDEX]}
    with pytest.raises(ValueError, match="position id 0"):
        PackedCollator(EOS, PAD, varlen=True)([row])


def test_flash_packing_parity_harness_on_cpu(emulated_flash, monkeypatch):
    """The GPU check itself, over the emulated kernels in bf16: no leak in the batch with varlen kwargs, the leak in
    the one without, so on a GPU a small number means the real kernels keep documents apart."""
    import hf_llm.model
    from benchmarks.gpu_check import flash_packing_parity

    def build_emulated(config, attn_implementation="sdpa", dtype=torch.float32):
        model = build_model(config, "sdpa", dtype)
        model.config._attn_implementation = attn_implementation
        return model

    monkeypatch.setattr(hf_llm.model, "build_model", build_emulated)
    with_varlen, rows = flash_packing_parity("cpu", seq_len=64), flash_packing_parity("cpu", varlen=False, seq_len=64)
    assert with_varlen <= 5e-2 and with_varlen < 0.1 * rows, (with_varlen, rows)


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
                    reason="needs a CUDA device with flash_attn")
def test_flash_packing_parity_on_cuda():
    from benchmarks.gpu_check import flash_packing_parity

    with_varlen, rows = flash_packing_parity("cuda"), flash_packing_parity("cuda", varlen=False)
    assert with_varlen <= 5e-2 and with_varlen < 0.1 * rows, (with_varlen, rows)  # bf16 noise, against the leak


@pytest.mark.parametrize("packing", PACKINGS)
def test_the_loop_takes_the_flash_layout(packing):
    """train_step and evaluate_loss (the loop's own) on the flash batch: same loss and target count as plain rows."""
    from accelerate import Accelerator

    from hf_llm.train.loop import evaluate_loss, train_step
    from hf_llm.train.objective import CausalLMObjective
    from hf_llm.train.stages import build_eval_loader

    rows = packed_rows(packing, 4)
    acc = Accelerator(cpu=True)
    results = []
    for collate in (_collator("flash_attention_2"), PackedCollator(EOS, PAD)):
        model = _model("sdpa")
        step = train_step(acc, model, [collate(rows[:2]), collate(rows[2:])], CausalLMObjective())[:2]
        evaluation = evaluate_loss(acc, model, build_eval_loader(rows, 2, collate))
        results.append((step, evaluation))
    (step_flat, eval_flat), (step_rows, eval_rows) = results
    assert step_flat[1] == step_rows[1] and eval_flat[1] == eval_rows[1]  # targets
    assert step_flat[0] == pytest.approx(step_rows[0], abs=1e-5)
    assert eval_flat[0] == pytest.approx(eval_rows[0], abs=1e-5)
