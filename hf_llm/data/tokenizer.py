"""Train a byte-level BPE tokenizer, or load an existing one; both end as a transformers fast tokenizer."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

from ..config import ConfigError, TokenizerConfig


def train_bpe_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, chat_template: Optional[str] = None):
    """Byte-level BPE (GPT-2 style: every byte representable, no unknown token) learned from `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [cfg.eos_token, cfg.pad_token, *[t for t in cfg.extra_special_tokens if t]]
    if len(set(specials)) != len(specials):
        raise ConfigError(f"tokenizer special tokens must be distinct, got {specials}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if cfg.vocab_size < len(alphabet) + len(specials):
        raise ConfigError(f"tokenizer.vocab_size must be at least {len(alphabet) + len(specials)} for byte-level BPE")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(_batches(texts, cfg.max_train_documents), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=cfg.eos_token,
        bos_token=cfg.eos_token,  # GPT-2 convention: generation may start from the document separator
        pad_token=cfg.pad_token,
        additional_special_tokens=[t for t in cfg.extra_special_tokens if t] or None,
        model_max_length=1_000_000,
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _batches(texts: Iterable[str], limit: Optional[int], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for i, text in enumerate(texts):
        if limit is not None and i >= limit:
            break
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_tokenizer(name_or_path: str, revision: Optional[str] = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise ConfigError(f"tokenizer {name_or_path!r} has no EOS token; documents could not be separated")
    return tok


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own encoding starts documents with BOS (Llama-style families expect one)."""
    bos = tokenizer.bos_token_id
    if bos is None or bos == tokenizer.eos_token_id:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def special_token_ids(tokenizer) -> dict[str, Optional[int]]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
