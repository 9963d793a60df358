"""The output layer's loss without the full logits: a chunked linear + cross-entropy for training.

The plain path builds the (tokens × vocab) logits, upcasts them to fp32 for the cross-entropy, and autograd keeps
them (and their gradient) alive through the backward: at a 32k vocabulary that is the largest tensor of a small
model's step. Here the logits exist one chunk of rows at a time: each chunk's loss and the gradients of the hidden
states and of the head's weight are computed in the forward (logits in the compute dtype, logsumexp and softmax in
fp32, as the plain path does after its upcast) and the chunk is freed; the backward only scales the stored
gradients. Same numbers as the plain path (fp32: to rounding), a fraction of its memory.

On CUDA, Liger-Kernel's fused linear cross-entropy (Triton) is used where it is installed and agrees with this
function on a first micro-batch; on CPU, and wherever it is absent or disagrees, the plain-torch function below.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..errors import ConfigError
from ..estimate import FUSED_LOSS_CHUNK_ELEMENTS
from .collate import IGNORE_INDEX

# Rows per chunk: a chunk's fp32 logits hold at most this many elements (32 MiB). Large enough that the three
# matmuls per chunk stay efficient, small enough that the chunk is not the step's largest tensor.
CHUNK_ELEMENTS = FUSED_LOSS_CHUNK_ELEMENTS
# Architectures whose causal-LM forward is exactly decoder → norm → lm_head → cross-entropy (no logit scaling or
# soft-capping, no auxiliary loss), so the loss can be taken from the final hidden state.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3", "smollm3"})
# Config fields that change the logits after the head (Gemma 2/3, Cohere, Granite): a plain matmul would be wrong.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weightᵀ, labels_i) / normaliser over the rows whose label is not IGNORE_INDEX."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, normaliser: float,
                chunk_rows: int) -> torch.Tensor:
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # fp32 results, divided by the normaliser only there: (softmax - onehot) / normaliser would underflow in
        # fp16 at large vocabularies and batches (the plain path's gradient carries the loss scale at that point).
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if want_h else None
        # An fp32 accumulator, too: the sum over chunks must not round at each addition in bf16.
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # the caller chose the compute dtype
            for start in range(0, hidden.shape[0], chunk_rows):
                h, y = hidden[start:start + chunk_rows], labels[start:start + chunk_rows]
                # Ignored rows are few in packed pretraining: zeroing them by index costs less than a masking pass
                # over the chunk (every pass over the chunk's logits is what this loop's time goes to on a CPU).
                ignored = (y == IGNORE_INDEX).nonzero().squeeze(1)
                y = y.clamp(min=0)
                # One fused log-softmax in fp32 (what the plain path computes after its upcast): the loss is its
                # picked entries and the softmax its exp, in place.
                logp = torch.log_softmax((h @ weight.t()).float(), dim=-1)
                picked = logp.gather(1, y[:, None]).squeeze(1).index_fill_(0, ignored, 0.0)
                total -= picked.sum()
                if not (want_h or want_w):
                    continue
                grad = logp.exp_()
                grad[torch.arange(len(y), device=y.device), y] -= 1.0
                grad = grad.index_fill_(0, ignored, 0.0).to(hidden.dtype)
                if want_h:
                    grad_hidden[start:start + chunk_rows] = grad @ weight
                if want_w:
                    grad_weight += (grad.t() @ h).float()
        for g in (grad_hidden, grad_weight):
            if g is not None:
                g.div_(normaliser)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = hidden.dtype, weight.dtype
        return total / normaliser

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_out.float()  # under fp16 the loss scale: applied in fp32, before the cast
        gh = (grad_hidden * scale).to(ctx.dtypes[0]) if grad_hidden is not None else None
        gw = (grad_weight * scale).to(ctx.dtypes[1]) if grad_weight is not None else None
        return gh, gw, None, None, None


# A chunk the CPU's last-level cache holds (its fp32 logits in at most half of it) must still have this many rows, or
# the three matmuls per chunk lose more than the cache saves.
CACHE_CHUNK_MIN_ROWS = 256


@functools.lru_cache(maxsize=None)
def last_level_cache_bytes() -> Optional[int]:
    """This CPU's largest cache (Linux sysfs), or None where it cannot be read."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def chunk_rows_for(vocab_size: int, device_type: str = "cpu") -> int:
    """Rows per chunk of the chunked loss: at most CHUNK_ELEMENTS logits. On a CPU, fewer where that keeps a chunk in
    the last-level cache with at least CACHE_CHUNK_MIN_ROWS rows: each chunk's logits are passed over ~5 times
    (upcast, log-softmax, exp, cast), from memory unless they stay cached. Measured on an AMD EPYC (32 MiB L3),
    4,096 rows of a d256 model with vocabulary 8,192: 217 ms at 512 rows (16 MiB) against 288 ms at 1,024 (32 MiB);
    at vocabulary 32,768 no chunk of 256 rows fits and the larger chunk is faster (1.74 s at 2,048 rows, 2.04 s at
    256)."""
    rows = max(1, CHUNK_ELEMENTS // vocab_size)
    cache = last_level_cache_bytes() if device_type == "cpu" else None
    if cache:
        cached = cache // 2 // (4 * vocab_size)
        if CACHE_CHUNK_MIN_ROWS <= cached < rows:
            return cached
    return rows


def compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype autocast would run the head's matmul in here (that of the weights when it is off)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return dtype


# Above this share of ignored rows (SFT prompts) they are dropped before the matmuls; below it (packed
# pretraining: one per document) copying the kept rows out and back would cost more than computing and masking them.
SELECT_ABOVE_IGNORED = 0.25


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, normaliser: float,
                         chunk_rows: Optional[int] = None, select: Optional[bool] = None) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` (rows × vocab, never built whole) over the rows whose label is
    not IGNORE_INDEX, divided by `normaliser`. `hidden` is (rows, hidden), `labels` (rows,), already aligned.
    `select`: drop the ignored rows first (None: when more than SELECT_ABOVE_IGNORED of them are ignored)."""
    dtype = compute_dtype(hidden.device, weight.dtype)
    valid = labels != IGNORE_INDEX
    if select is None:
        select = labels.numel() > 0 and 1.0 - valid.float().mean().item() > SELECT_ABOVE_IGNORED
    if select:
        keep = valid.nonzero().squeeze(1)
        hidden, labels = hidden.index_select(0, keep), labels.index_select(0, keep)
    return _LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), labels, float(normaliser),
                                     chunk_rows or chunk_rows_for(weight.shape[0], hidden.device.type))


def causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, normaliser: float,
                   chunk_rows: Optional[int] = None) -> torch.Tensor:
    """The loss transformers' causal LMs compute from `labels` (shifted by one inside, as they do), from the final
    hidden states (batch, seq, hidden) and the head's weight."""
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, shifted.reshape(-1), normaliser,
                                chunk_rows)


def fused_loss_blocker(model: Any, accelerator: Any = None) -> Optional[str]:
    """Why the chunked loss cannot stand in for this model's own loss, or None when it can. `model` is the
    unwrapped model (a PEFT model, or a transformers causal LM)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "a prompt-learning PEFT adapter changes the inputs inside the PEFT forward"
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type not in PLAIN_HEAD_MODEL_TYPES:
        return f"model_type {model_type!r} is not one whose loss is a plain lm_head + cross-entropy"
    for name in LOGIT_TRANSFORMS:
        if getattr(base.config, name, None) not in (None, 1, 1.0):
            return f"the model transforms its logits after the head ({name})"
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return ("the output layer is not a plain bias-free torch.nn.Linear (a LoRA adapter or modules_to_save on "
                "lm_head, a quantised head)")
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return "the model's forward has no logits_to_keep"
    if hasattr(head.weight, "ds_id") or zero_stage(accelerator) == 3:
        return "ZeRO-3 partitions the head's weight outside the forward"
    if is_fsdp(accelerator):
        return "FSDP shards the head's weight outside the forward"
    return None


def is_fsdp(accelerator: Any) -> bool:
    """Whether `accelerator` shards with FSDP (1 or 2)."""
    return str(getattr(accelerator, "distributed_type", "")).endswith("FSDP")


def zero_stage(accelerator: Any) -> Optional[int]:
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is None:
        return None
    return plugin.deepspeed_config.get("zero_optimization", {}).get("stage")


def resolve_fused_loss(setting: str, model: Any, accelerator: Any = None) -> bool:
    """`train.fused_loss`: auto → the chunked loss wherever it applies; true → it, or an error saying why not;
    false → the model's own loss."""
    if setting == "false":
        return False
    reason = fused_loss_blocker(model, accelerator)
    if reason is not None and setting == "true":
        raise ConfigError(f"train.fused_loss=true cannot apply here: {reason}; set train.fused_loss=auto (falls back "
                          f"to the model's own loss) or false")
    return reason is None


def liger_loss(weight: torch.Tensor) -> Optional[Callable]:
    """Liger-Kernel's fused linear cross-entropy as (hidden, weight, labels, normaliser) → loss, if installed and
    on CUDA; None otherwise."""
    if weight.device.type != "cuda":
        return None
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None

    def loss(hidden: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, normaliser: float) -> torch.Tensor:
        summed = liger_fused_linear_cross_entropy(hidden, w, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        summed = summed[0] if isinstance(summed, tuple) else summed  # some versions return (loss, z_loss)
        return summed / normaliser

    return loss


class OutputLoss:
    """The training loss of the output layer, chosen once per run: Liger's kernel where it is installed and agreed
    with the plain-torch chunked loss on the first micro-batch (within bf16 rounding), else the plain-torch one."""

    def __init__(self, head: torch.nn.Linear, tolerance: float = 1e-2, final_norm: Optional[torch.nn.Module] = None):
        self.head, self.tolerance = head, tolerance
        self.kernel: Optional[Callable] = liger_loss(head.weight)
        self.checked = self.kernel is None
        # The final hidden state is the decoder's last norm's output (what `hidden_states[-1]` holds), taken by a
        # hook: asking the model for `output_hidden_states` hooks every decoder layer through a ContextVar, which
        # breaks each compiled layer's graph in two (torch.compile cannot trace ContextVar.get).
        self.final_norm = final_norm
        self._capturing = False
        self._captured: list[torch.Tensor] = []
        if final_norm is not None:
            final_norm.register_forward_hook(self._capture)

    def _capture(self, _module, _inputs, output) -> None:
        if self._capturing:
            self._captured.append(output)

    def final_hidden(self, model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's final hidden state (batch, seq, hidden) from a forward through `model` (the wrapper
        accelerate returned, which must see the call) that computes the logits of one position only."""
        if self.final_norm is None:
            out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            return out.hidden_states[-1]
        self._capturing, self._captured = True, []
        try:
            model(**inputs, use_cache=False, logits_to_keep=1)
        finally:
            self._capturing = False
        hidden, self._captured = self._captured[-1], []
        return hidden

    def __call__(self, hidden: torch.Tensor, labels: torch.Tensor, normaliser: float) -> torch.Tensor:
        weight = self.head.weight
        if not self.checked:
            self.checked = True
            self.kernel = self._agrees(hidden, labels, normaliser)
        if self.kernel is None:
            return causal_lm_loss(hidden, weight, labels, normaliser)
        shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
        dtype = compute_dtype(hidden.device, weight.dtype)
        return self.kernel(hidden.reshape(-1, hidden.shape[-1]).to(dtype), weight.to(dtype), shifted, normaliser)

    def _agrees(self, hidden: torch.Tensor, labels: torch.Tensor, normaliser: float) -> Optional[Callable]:
        with torch.no_grad():
            ours = causal_lm_loss(hidden.detach(), self.head.weight, labels, normaliser).float()
            try:
                shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
                dtype = compute_dtype(hidden.device, self.head.weight.dtype)
                theirs = self.kernel(hidden.detach().reshape(-1, hidden.shape[-1]).to(dtype),
                                     self.head.weight.to(dtype), shifted, normaliser).float()
            except Exception:  # a kernel that fails on this shape is simply not used
                return None
        close = torch.isclose(theirs, ours, rtol=self.tolerance, atol=self.tolerance).item()
        return self.kernel if close else None


def output_loss_for(setting: str, accelerator: Any, model: Any) -> Optional[OutputLoss]:
    """The chunked output loss for `model` as accelerate wrapped it (under DDP/DeepSpeed: the head of the module
    inside), or None where the model's own loss runs (`train.fused_loss`, see resolve_fused_loss)."""
    unwrapped = accelerator.unwrap_model(model)
    if not resolve_fused_loss(setting, unwrapped, accelerator):
        return None
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    # Every PLAIN_HEAD_MODEL_TYPES decoder ends in `model.norm`; the head reads its output.
    norm = getattr(getattr(base, "model", None), "norm", None)
    return OutputLoss(base.get_output_embeddings(), final_norm=norm if isinstance(norm, torch.nn.Module) else None)
