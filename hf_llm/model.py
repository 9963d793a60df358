"""Model presets → transformers configs; building models from a config or from pretrained weights."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import yaml

from .config import ModelConfig
from .errors import ConfigError
from .shipped import shipped_file, shipped_path


def preset_dir() -> Path:
    return shipped_file("configs/models")


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (configs/models/NAME.yaml) or by path to a YAML file of config attributes."""
    path = Path(shipped_path(name_or_path))
    if not path.suffix:
        path = preset_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"model preset {name_or_path!r} not found; choose one of {list_presets()} or give a YAML path")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict) or "model_type" not in values:
        raise ConfigError(f"model preset {path} must be a mapping with a model_type key")
    return values


def build_model_config(
    cfg: ModelConfig,
    vocab_size: Optional[int] = None,
    special_token_ids: Optional[dict[str, Optional[int]]] = None,
):
    """Resolve the transformers config: an existing model's, a model_type's defaults, or a preset; then overrides.

    `vocab_size` (a tokenizer's length) resizes the vocabulary, rounded up to `cfg.pad_vocab_multiple`.
    """
    from transformers import AutoConfig, CONFIG_MAPPING

    overrides = dict(cfg.overrides)
    if cfg.name_or_path:
        config = AutoConfig.from_pretrained(
            cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    else:
        values: dict[str, Any] = {}
        model_type = cfg.model_type
        if model_type is None:
            if not cfg.preset:
                raise ConfigError("set model.preset, model.model_type or model.name_or_path")
            values = load_preset(cfg.preset)
            model_type = values.pop("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ConfigError(f"unknown model_type {model_type!r}; transformers knows e.g. llama, mistral, qwen2, gpt2")
        _check_attributes(CONFIG_MAPPING[model_type](), {**values, **overrides})
        # Through the constructor, so derived attributes (head_dim, ...) follow the overridden shapes.
        config = CONFIG_MAPPING[model_type](**{**values, **overrides})
        overrides = {}
    _check_attributes(config, overrides)
    for key, value in overrides.items():
        setattr(config, key, value)
    if vocab_size is not None:
        multiple = max(1, cfg.pad_vocab_multiple)
        needed = -(-vocab_size // multiple) * multiple
        if cfg.name_or_path is None or config.vocab_size < vocab_size:
            config.vocab_size = needed
    for name, value in (special_token_ids or {}).items():
        if value is not None:
            setattr(config, name, value)
    return config


def _check_attributes(config, values: dict[str, Any]) -> None:
    import difflib

    for key in values:
        if not hasattr(config, key):
            close = difflib.get_close_matches(key, [k for k in vars(config) if not k.startswith("_")], n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"model.overrides.{key}: {type(config).__name__} has no attribute {key!r}{hint}")


def max_positions(config) -> Optional[int]:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def count_parameters(config) -> int:
    """Parameters of the transformers model for `config`, instantiated on the meta device (no memory)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    # The class constructor, not from_config: under DeepSpeed ZeRO-3, from_config would enter zero.Init and
    # initialise weights, which fails on meta tensors.
    with torch.device("meta"):
        model = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)](config)
    # Tied weights are one tensor: parameters() yields it once.
    return sum(p.numel() for p in model.parameters())


def build_model(config, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32):
    """A freshly initialised causal LM (fp32 master weights by default; autocast supplies bf16 compute)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)


def load_pretrained(cfg: ModelConfig, dtype: torch.dtype = torch.float32):
    """An existing model's weights (safetensors only; remote code only when asked for)."""
    from transformers import AutoModelForCausalLM

    if not cfg.name_or_path:
        raise ConfigError("model.name_or_path is required to load a pretrained model")
    path = Path(cfg.name_or_path)
    if (cfg.name_or_path.startswith((".", "/")) or path.exists()) and not (path / "config.json").is_file():
        raise ConfigError(f"model folder {cfg.name_or_path!r} does not exist or has no config.json")
    return AutoModelForCausalLM.from_pretrained(
        cfg.name_or_path,
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        dtype=dtype,
        use_safetensors=True,
    )


@contextmanager
def outside_zero3() -> Iterator[None]:
    """Load a model the ordinary way inside a ZeRO-3 launch, e.g. on the main process only after export.

    Under ZeRO-3 transformers builds every model through zero.Init, a collective that would wait forever for the
    other processes. transformers keeps the switch in a module-level weak reference; it is restored on exit.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
