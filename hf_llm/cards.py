"""Model and dataset cards, and the evaluation results `scripts/evaluate.py` writes into a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .auth import scrub

LOSS_CURVE = "loss_curve.png"
EVAL_BEGIN, EVAL_END = "<!-- hf_llm:evaluation:begin -->", "<!-- hf_llm:evaluation:end -->"


def dataset_readme(folder: str | Path) -> str:
    """The dataset card of a prepared data folder: its DATA_CARD.md, else one rendered from data_card.json."""
    from huggingface_hub import DatasetCard, DatasetCardData

    folder = Path(folder)
    written = folder / "DATA_CARD.md"
    if written.is_file():
        text = written.read_text()
        if text.startswith("---\n"):
            return text
        body = text
    else:
        stats = json.loads((folder / "data_card.json").read_text())
        rows = "\n".join(
            f"| {split} | {_fmt(s.get('documents', '?'))} | {_fmt(s.get('tokens', '?'))} "
            f"| {_fmt(s.get('blocks', '?'))} | {s.get('seq_len', '?')} |"
            for split, s in ((k, stats.get(k, {})) for k in ("train", "validation"))
        )
        body = f"""
# {folder.name}

Tokenised documents packed into fixed-length blocks (documents separated by EOS), prepared by hf_llm; the
tokenizer is in `tokenizer/`.

| split | documents | tokens | blocks | tokens per block |
|---|---|---|---|---|
{rows}

## Use

```python
from datasets import load_dataset
blocks = load_dataset("REPO_ID", data_files={{"train": "train/*.arrow", "validation": "validation/*.arrow"}})
```

With hf_llm: `hf download REPO_ID --repo-type dataset --local-dir data/prepared`, then `data.prepared=data/prepared`.

## Statistics (data_card.json)

```json
{json.dumps(stats, indent=2)}
```
"""
    card_data = DatasetCardData(tags=["hf_llm", "tokenized", "packed"])
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def loss_curve_png(history: list[dict[str, Any]], width: int = 640, height: int = 360) -> Optional[bytes]:
    """Training and validation loss against steps as a PNG (Pillow, installed with tensorboard); None when there is
    nothing to plot or no Pillow."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return None
    train = [(p["step"], p["loss"]) for p in history if "loss" in p]
    val = [(p["step"], p["val_loss"]) for p in history if "val_loss" in p]
    points = train + val
    if not points:
        return None
    left, right, top, bottom = 60, width - 20, 30, height - 40
    x0, x1 = min(s for s, _ in points), max(s for s, _ in points)
    y0, y1 = min(v for _, v in points), max(v for _, v in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)

    def xy(step: float, value: float) -> tuple[float, float]:
        return (left + (step - x0) / (x1 - x0) * (right - left), bottom - (value - y0) / (y1 - y0) * (bottom - top))

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for value in (y0, (y0 + y1) / 2, y1):
        _, y = xy(x0, value)
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((4, y - 6), f"{value:.3g}", fill="black")
    draw.text((left, bottom + 8), f"step {x0:,}", fill="black")
    draw.text((right - 70, bottom + 8), f"step {x1:,}", fill="black")
    # Validation points are few and far apart: dots make each one visible.
    for series, colour, label, offset, dots in ((train, (31, 119, 180), "train loss", 0, False),
                                                (val, (255, 127, 14), "validation loss", 110, True)):
        if not series:
            continue
        if len(series) > 1:
            draw.line([xy(s, v) for s, v in series], fill=colour, width=2)
        for s, v in series if dots or len(series) == 1 else []:
            x, y = xy(s, v)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.rectangle([left + 10 + offset, 8, left + 22 + offset, 18], fill=colour)
        draw.text((left + 26 + offset, 6), label, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def card_files(history: list[dict[str, Any]]) -> dict[str, bytes]:
    """Files that go into an export next to its card (the loss curve, when it can be drawn)."""
    png = loss_curve_png(history)
    return {LOSS_CURVE: png} if png is not None else {}


def eval_results(metrics: list[dict[str, Any]]) -> list:
    """[{metric, value, dataset, dataset_type, split?, name?, task_name?}] → EvalResults (the card's model-index)."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="text-generation", task_name=m.get("task_name", "Language modelling"),
                       dataset_type=m["dataset_type"],
                       dataset_name=m["dataset"], dataset_split=m.get("split"), metric_type=m["metric"],
                       metric_name=m.get("name", m["metric"]), metric_value=m["value"]) for m in metrics]


def render_model_card(
    model_name: str,
    architecture: str,
    parameters: int,
    data: dict[str, Any],
    training: dict[str, Any],
    results: dict[str, Any],
    recipe_yaml: str,
    base_model: Optional[str] = None,
    *,
    repo_id: Optional[str] = None,
    metrics: Optional[list[dict[str, Any]]] = None,
    datasets: Optional[list[str]] = None,
    loss_curve: Optional[str] = None,
) -> str:
    """A README.md whose YAML metadata round-trips through `huggingface_hub.ModelCardData` (model-index included).

    `metrics` become the model-index (see `eval_results`); `datasets` are Hub dataset ids; `loss_curve` is the file
    name of a PNG shipped next to the card. The recipe must be free of secrets (configs hold no token by design); the
    whole card is scrubbed of the current token anyway.
    """
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hf_llm", "causal-lm", architecture],
        base_model=base_model,
        datasets=datasets or None,
        model_name=model_name if metrics else None,
        eval_results=eval_results(metrics) if metrics else None,
    )
    sources = data.get("sources", {})
    source_rows = "\n".join(
        f"| {name} | " + ", ".join(f"{k}={_fmt(v)}" for k, v in stats.items()) + " |" for name, stats in sources.items()
    ) or "| (none recorded) | |"
    split_rows = "\n".join(
        f"| {split} | {_fmt(s.get('documents', '?'))} | {_fmt(s.get('tokens', '?'))} | {_fmt(s.get('blocks', '?'))} |"
        for split, s in ((k, data.get(k, {})) for k in ("train", "validation"))
    )
    train_rows = "\n".join(f"| {k} | {v:.2%} |" if "mfu" in k and isinstance(v, float) else f"| {k} | {_fmt(v)} |"
                           for k, v in training.items())
    result_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in results.items())
    load_id = repo_id or "PATH_OR_REPO_ID"
    curve = f"\n![training and validation loss]({loss_curve})\n" if loss_curve else ""
    body = f"""
# {model_name}

A {architecture} causal language model with {parameters:,} parameters, trained with
hf_llm {"from " + base_model if base_model else "from scratch"}.

## Data

| source | statistics |
|---|---|
{source_rows}

| split | documents | tokens | blocks |
|---|---|---|---|
{split_rows}

Blocks of {data.get("train", {}).get("seq_len", "?")} tokens; packed documents are kept apart by position ids.
Vocabulary: {_fmt(data.get("vocab_size", "?"))} tokens.

## Training

| | |
|---|---|
{train_rows}
{curve}
## Results

| metric | value |
|---|---|
{result_rows}

Validation loss is the mean cross-entropy (nats per token) on held-out documents of the training mixture; the
unigram baseline is what a model that ignores context would reach. Evaluate on other text (perplexity and bits
per byte, comparable across tokenizers) with `python scripts/evaluate.py model={load_id} data='[{{path: FILE}}]'`.

## Use

```python
from transformers import pipeline
generate = pipeline("text-generation", model="{load_id}")
print(generate("And it came to pass", max_new_tokens=40)[0]["generated_text"])
```

## Recipe

```yaml
{recipe_yaml.strip()}
```
"""
    return scrub(str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")))


def update_card_results(card_path: str | Path, results: dict[str, Any]) -> None:
    """Put `scripts/evaluate.py` results into a model card: model-index entries (replacing those for the same
    dataset and metric) and an Evaluation section (replacing the previous one)."""
    from huggingface_hub import ModelCard

    card_path = Path(card_path)
    card = ModelCard.load(card_path) if card_path.is_file() else ModelCard("---\n---\n")
    metrics = []
    for label, r in results["datasets"].items():
        for metric, name in (("perplexity", "Perplexity"), ("bits_per_byte", "Bits per byte")):
            metrics.append({"metric": metric, "name": name, "value": round(r[metric], 6), "dataset": label,
                            "dataset_type": r.get("path") or label, "split": r.get("split")})
    new = eval_results(metrics)
    keep = [e for e in (card.data.eval_results or [])
            if not any(e.dataset_type == n.dataset_type and e.metric_type == n.metric_type for n in new)]
    card.data.eval_results = keep + new
    card.data.model_name = card.data.model_name or card_path.parent.name
    rows = "\n".join(f"| {label} | {r['perplexity']:.4g} | {r['bits_per_byte']:.4f} | {r['tokens']:,} "
                     f"| {r['bytes']:,} |" for label, r in results["datasets"].items())
    samples = "\n".join(f"- **{s['prompt']}** → {' '.join(s['greedy'].split())[:200]}"
                        for s in results.get("samples", []))
    section = f"""{EVAL_BEGIN}
## Evaluation

Windows of {results['seq_len']} tokens, stride {results['stride']} (`scripts/evaluate.py`).

| dataset | perplexity | bits per byte | tokens | bytes |
|---|---|---|---|---|
{rows}

{"Greedy samples:" + chr(10) + chr(10) + samples if samples else ""}
{EVAL_END}"""
    text = card.text
    if EVAL_BEGIN in text and EVAL_END in text:
        text = text[:text.index(EVAL_BEGIN)] + section + text[text.index(EVAL_END) + len(EVAL_END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    card.text = text
    card_path.write_text(scrub(str(card)))
