"""Model cards, the data card (DATA_CARD.md) and the dataset card (a pushed data folder's README), rendered from the
jinja2 templates in hf_llm/templates/ (model and dataset cards through huggingface_hub's `ModelCard.from_template` /
`DatasetCard.from_template`, which add the YAML metadata), and the Evaluation section `scripts/evaluate.py` writes
into a model card. Python picks and formats the values; the templates hold the layout and the prose. The pictures
the cards show are drawn by hf_llm.plots.

Every card is scrubbed of the Hub token: configs hold no token by design, this is the second line of defence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .auth import scrub

TEMPLATES = Path(__file__).parent / "templates"
LOSS_CURVE, LEARNING_RATE = "loss_curve.png", "learning_rate.png"
# The pictures a model card can show (hf_llm.plots), in the order it shows them, with their alt text.
PICTURES = {LOSS_CURVE: "training and validation loss against tokens seen",
            LEARNING_RATE: "learning rate against optimizer steps"}
TOKEN_LENGTHS, REJECTIONS = "token_lengths.png", "rejections.png"  # the pictures DATA_CARD.md can show
LANGUAGES = "languages.png"
EVAL_BEGIN, EVAL_END = "<!-- hf_llm:evaluation:begin -->", "<!-- hf_llm:evaluation:end -->"


def fmt(value: Any) -> str:
    """A card's number: 4 significant digits for floats, thousands separators for integers."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _split_rows(stats: dict[str, Any], keys: tuple[str, ...]) -> list[list[str]]:
    """[split, *values] for train and validation; '?' where a statistic was not recorded."""
    return [[split, *(fmt(stats.get(split, {}).get(k, "?")) for k in keys)] for split in ("train", "validation")]


# ------------------------------------------------------------------------------------------------------ dataset card


def dataset_readme(folder: str | Path) -> str:
    """The dataset card of a prepared data folder: its DATA_CARD.md (given metadata if it has none), else one
    rendered from data_card.json."""
    from huggingface_hub import DatasetCard, DatasetCardData

    folder = Path(folder)
    written = folder / "DATA_CARD.md"
    text = written.read_text() if written.is_file() else None
    if text is not None and text.startswith("---\n"):
        return text
    stats = {} if text is not None else json.loads((folder / "data_card.json").read_text())
    card = DatasetCard.from_template(
        DatasetCardData(tags=["hf_llm", "tokenized", "packed"]), template_path=str(TEMPLATES / "dataset_card.md"),
        written=text, name=folder.name, statistics=json.dumps(stats, indent=2),
        split_rows=[[*row, str(stats.get(row[0], {}).get("seq_len", "?"))]  # "2048", as a length reads
                    for row in _split_rows(stats, ("documents", "tokens", "blocks"))])
    return str(card)


# --------------------------------------------------------------------------------------------------------- data card


def number(value: Any) -> str:
    """A data card's number: '–' when not measured, thousands separators, 4 significant digits for floats."""
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def bar_chart(hist: dict[str, Any], width: int = 40) -> str:
    """A token-length histogram as text: one row per bin, a bar of Unicode eighth-blocks, and the count."""
    counts = hist.get("counts", [])
    if not counts or max(counts) == 0:
        return "(no documents)"
    blocks = " ▏▎▍▌▋▊▉█"
    rows = []
    for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], counts):
        eighths = round(c / max(counts) * width * 8)
        bar = "█" * (eighths // 8) + (blocks[eighths % 8] if eighths % 8 else "")
        rows.append(f"{lo:>7,}–{hi - 1:<7,} {bar:<{width}} {c:,}")
    return "\n".join(rows)


def data_card_pictures(card: dict[str, Any]) -> dict[str, bytes]:
    """The data card's pictures: kept documents by token length, and rejections by reason when there are any."""
    from .plots import languages_png, rejections_png, token_length_png

    drawn = {TOKEN_LENGTHS: token_length_png(card["token_length_histogram"]),
             REJECTIONS: rejections_png(card["rejections"]), LANGUAGES: languages_png(card.get("languages", {}))}
    return {name: png for name, png in drawn.items() if png is not None}


def render_data_card(card: dict[str, Any], pictures: Iterable[str] = ()) -> str:
    """DATA_CARD.md from data_card.json (hf_llm.data.card.build_card); `pictures` are the files written beside it."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)  # a key the card lacks fails, never renders blank
    template = env.from_string((TEMPLATES / "data_card.md").read_text())
    shown = set(pictures)
    return template.render(card=card, token_lengths=TOKEN_LENGTHS if TOKEN_LENGTHS in shown else None,
                           rejections=REJECTIONS if REJECTIONS in shown else None,
                           languages=LANGUAGES if LANGUAGES in shown else None, n=number, bar_chart=bar_chart,
                           percent=lambda share: f"{share:.1%}",
                           listing=lambda counts: ", ".join(f"{k}: {c:,}" for k, c in counts.items()) or "–")


# -------------------------------------------------------------------------------------------------------- model card


def model_card_pictures(history: list[dict[str, Any]]) -> dict[str, bytes]:
    """The pictures that go into an export next to its card (those its history has points for)."""
    from .plots import learning_rate_png, loss_curve_png

    drawn = {LOSS_CURVE: loss_curve_png(history), LEARNING_RATE: learning_rate_png(history)}
    return {name: png for name, png in drawn.items() if png is not None}


def eval_results(metrics: list[dict[str, Any]]) -> list:
    """[{metric, value, dataset, dataset_type, split?, name?, task_name?}] → EvalResults (the card's model-index)."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="text-generation", task_name=m.get("task_name", "Language modelling"),
                       dataset_type=m["dataset_type"],
                       dataset_name=m["dataset"], dataset_split=m.get("split"), metric_type=m["metric"],
                       metric_name=m.get("name", m["metric"]), metric_value=m["value"]) for m in metrics]


def _data_view(data: dict[str, Any]) -> dict[str, Any]:
    """The Data section's values: one row per source, one per split, block length and vocabulary."""
    sources = [(name, ", ".join(f"{k}={fmt(v)}" for k, v in stats.items()))
               for name, stats in data.get("sources", {}).items()]
    return {"source_rows": sources, "split_rows": _split_rows(data, ("documents", "tokens", "blocks")),
            "seq_len": data.get("train", {}).get("seq_len", "?"), "vocab_size": fmt(data.get("vocab_size", "?"))}


def _training_value(key: str, value: Any) -> str:
    return f"{value:.2%}" if "mfu" in key and isinstance(value, float) else fmt(value)


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
    pictures: Iterable[str] = (),
    fine_tuning: Optional[dict[str, Any]] = None,
) -> str:
    """A README.md whose YAML metadata round-trips through `huggingface_hub.ModelCardData` (model-index included).

    `data` is a data card's statistics; `training` and `results` become tables; `metrics` the model-index (see
    `eval_results`); `datasets` are Hub dataset ids; `pictures` the files of PICTURES shipped next to the card;
    `fine_tuning` (see finetune.py) adds the Fine-tuning section.
    """
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="text-generation", tags=["hf_llm", "causal-lm", architecture],
        base_model=base_model, datasets=datasets or None, model_name=model_name if metrics else None,
        eval_results=eval_results(metrics) if metrics else None)
    shown = set(pictures)
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATES / "model_card.md"), model_name=model_name,
        architecture=architecture, parameters=f"{parameters:,}", base_model=base_model, **_data_view(data),
        training_rows=[(k, _training_value(k, v)) for k, v in training.items()],
        result_rows=[(k, fmt(v)) for k, v in results.items()], load_id=repo_id or "PATH_OR_REPO_ID",
        pictures=[(name, alt) for name, alt in PICTURES.items() if name in shown], recipe_yaml=recipe_yaml.strip(),
        fine_tuning=fine_tuning)
    return scrub(str(card))


RESULT_KEYS = ("final_train_loss", "final_val_loss", "final_val_perplexity", "unigram_val_loss")  # from a summary


def run_card(cfg, summary: dict[str, Any], *, architecture: str, parameters: int, data: dict[str, Any],
             training_keys: Sequence[str], metrics: list[dict[str, Any]], results: dict[str, Any],
             base_model: Optional[str] = None, pictures: Iterable[str] = (),
             fine_tuning: Optional[dict[str, Any]] = None) -> str:
    """The model card of a training run (pretraining or fine-tuning), from its config (a RunConfig) and summary:
    the summary's `training_keys` and RESULT_KEYS, the hardware, and the job's own `metrics` and `results` rows."""
    from .config import config_to_yaml
    from .train.metrics import hardware_name

    training = {k: summary[k] for k in training_keys if summary.get(k) is not None}
    training["hardware"] = hardware_name()
    shown = {k: summary[k] for k in RESULT_KEYS if summary.get(k) is not None}
    hub = [src.path for src in [*cfg.data.sources, *(s for st in cfg.data.stages for s in st.sources)]
           if src.format == "hub"]
    return render_model_card(Path(cfg.output_dir).name, architecture, parameters, data, training,
                             {**shown, **results}, config_to_yaml(cfg), base_model, repo_id=cfg.hub.repo_id,
                             metrics=metrics or None, datasets=hub, pictures=pictures, fine_tuning=fine_tuning)


def validation_metrics(summary: dict[str, Any], sources: str) -> list[dict[str, Any]]:
    """Model-index entries for the final validation perplexity and loss on held-out documents of `sources`."""
    return [{"metric": metric, "name": name, "value": round(summary[key], 4), "split": "validation",
             "dataset": f"held-out documents of the training mixture ({sources})", "dataset_type": sources}
            for key, metric, name in (("final_val_perplexity", "perplexity", "Validation perplexity"),
                                      ("final_val_loss", "loss", "Validation loss (nats/token)"))
            if summary.get(key) is not None]


def update_card_results(card_path: str | Path, results: dict[str, Any]) -> None:
    """Put `scripts/evaluate.py` results into a model card: model-index entries (replacing those for the same
    dataset and metric) and an Evaluation section (replacing the previous one)."""
    from huggingface_hub import ModelCard

    card_path = Path(card_path)
    card = ModelCard.load(card_path) if card_path.is_file() else ModelCard("---\n---\n")
    new = eval_results(_eval_metrics(results))
    keep = [e for e in (card.data.eval_results or [])
            if not any(e.dataset_type == n.dataset_type and e.metric_type == n.metric_type for n in new)]
    card.data.eval_results = keep + new
    card.data.model_name = card.data.model_name or card_path.parent.name
    section = _evaluation_section(results)
    text = card.text
    if EVAL_BEGIN in text and EVAL_END in text:
        text = text[:text.index(EVAL_BEGIN)] + section + text[text.index(EVAL_END) + len(EVAL_END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    card.text = text
    card_path.write_text(scrub(str(card)))


def _eval_metrics(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"metric": metric, "name": name, "value": round(r[metric], 6), "dataset": label,
             "dataset_type": r.get("path") or label, "split": r.get("split")}
            for label, r in results["datasets"].items()
            for metric, name in (("perplexity", "Perplexity"), ("bits_per_byte", "Bits per byte"))]


def _evaluation_section(results: dict[str, Any]) -> str:
    """The Evaluation section, between markers so that the next evaluation replaces it."""
    import jinja2

    rows = [[label, f"{r['perplexity']:.4g}", f"{r['bits_per_byte']:.4f}", f"{r['tokens']:,}", f"{r['bytes']:,}"]
            for label, r in results["datasets"].items()]
    samples = [(s["prompt"], " ".join(s["greedy"].split())[:200]) for s in results.get("samples", [])]
    template = jinja2.Template((TEMPLATES / "evaluation.md").read_text())
    return template.render(begin=EVAL_BEGIN, end=EVAL_END, seq_len=results["seq_len"], stride=results["stride"],
                           rows=rows, samples=samples)
