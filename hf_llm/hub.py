"""Model cards for exported models (huggingface_hub ModelCard)."""

from __future__ import annotations

from typing import Any, Optional


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_model_card(
    model_name: str,
    architecture: str,
    parameters: int,
    data: dict[str, Any],
    training: dict[str, Any],
    results: dict[str, Any],
    recipe_yaml: str,
    base_model: Optional[str] = None,
) -> str:
    """A README.md with YAML metadata that `huggingface_hub.ModelCard` validates.

    `recipe_yaml` must already be free of secrets (configs hold no tokens by design).
    """
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hf_llm", "causal-lm", architecture],
        base_model=base_model,
    )
    sources = data.get("sources", {})
    source_rows = "\n".join(
        f"| {name} | " + " | ".join(f"{k}={_fmt(v)}" for k, v in stats.items()) + " |" for name, stats in sources.items()
    ) or "| (none recorded) | |"
    train_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in training.items())
    result_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in results.items())
    body = f"""
# {model_name}

A {architecture} causal language model with {parameters:,} parameters, trained with
hf_llm {"from " + base_model if base_model else "from scratch"}.

## Data

| source | statistics |
|---|---|
{source_rows}

Tokens: {_fmt(data.get("train", {}).get("tokens", "?"))} training, {_fmt(data.get("validation", {}).get("tokens", "?"))} validation
(packed into blocks of {data.get("train", {}).get("seq_len", "?")} tokens; documents kept apart by position ids).

## Training

| | |
|---|---|
{train_rows}

## Results

| metric | value |
|---|---|
{result_rows}

## Use

```python
from transformers import pipeline
generate = pipeline("text-generation", model="PATH_OR_REPO_ID")
print(generate("And it came to pass", max_new_tokens=40)[0]["generated_text"])
```

## Recipe

```yaml
{recipe_yaml.strip()}
```
"""
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}"))
