"""Every picture the toolkit writes, as PNG bytes: the model card's loss curve and learning-rate schedule, the data
card's token-length histogram and rejections by reason.

matplotlib draws them on its Agg backend through `Figure` directly (no pyplot: no display, no global figure state,
safe beside the background pusher). Each picture is WIDTH × HEIGHT pixels and byte-for-byte the same for the same
input (no software version or date in the PNG metadata). A picture with nothing to show is None.
"""

from __future__ import annotations

import io
from typing import Any, Optional, Sequence

WIDTH, HEIGHT, DPI = 640, 360, 100
_TRAIN, _VALIDATION = "#1f77b4", "#ff7f0e"


def _axes(title: str, xlabel: str, ylabel: str, left: float = 0.12):
    """A figure of WIDTH × HEIGHT pixels with one titled, labelled plot; `left` is the share of the width kept for
    the y labels (fixed margins: a layout engine would double the cost of a picture)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=left, right=0.97, top=0.9, bottom=0.15)
    ax = figure.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return figure, ax


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no version: stable bytes
    return buffer.getvalue()


def _tokens_per_step(history: Sequence[dict[str, Any]]) -> Optional[float]:
    """Tokens per optimizer step, from the latest training point (fixed for a run; validation points lack it)."""
    seen = [p for p in history if "tokens_seen" in p and p.get("step")]
    return seen[-1]["tokens_seen"] / seen[-1]["step"] if seen else None


def loss_curve_png(history: Sequence[dict[str, Any]]) -> Optional[bytes]:
    """Training loss (a line) and validation loss (dots: there are few) against tokens seen."""
    from matplotlib.ticker import EngFormatter

    train = [(p["step"], p["loss"]) for p in history if "loss" in p]
    val = [(p["step"], p["val_loss"]) for p in history if "val_loss" in p]
    if not train and not val:
        return None
    per_step = _tokens_per_step(history)
    scale, xlabel = (per_step, "tokens seen") if per_step else (1.0, "optimizer step")
    figure, ax = _axes("Training and validation loss", xlabel, "loss (nats per token)")
    for series, colour, label, style in ((train, _TRAIN, "training loss", "-"), (val, _VALIDATION,
                                                                                "validation loss", "o-")):
        if series:
            ax.plot([s * scale for s, _ in series], [v for _, v in series], style, color=colour, label=label,
                    markersize=4)
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.legend()
    return _png(figure)


def learning_rate_png(history: Sequence[dict[str, Any]]) -> Optional[bytes]:
    """The learning rate the optimizer used at each logged step (warmup, decay, restarts)."""
    points = [(p["step"], p["lr"]) for p in history if "lr" in p]
    if not points:
        return None
    figure, ax = _axes("Learning rate schedule", "optimizer step", "learning rate")
    ax.plot([s for s, _ in points], [lr for _, lr in points], "-", color=_TRAIN, marker="." if len(points) < 50 else "")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_ylim(bottom=0)
    return _png(figure)


def token_length_png(hist: dict[str, Any]) -> bytes:
    """Kept documents per power-of-two token-length bin (`data.card.token_length_histogram`), on a log2 axis."""
    edges, counts = hist.get("edges", []), hist.get("counts", [])
    figure, ax = _axes(f"Kept documents by length ({hist.get('documents', 0):,} documents)",
                       "document length (tokens, log scale)", "documents")
    if counts and max(counts) > 0:
        ax.bar(edges[:-1], counts, width=[hi - lo for lo, hi in zip(edges[:-1], edges[1:])], align="edge",
               color=_TRAIN, edgecolor="white")
        ax.set_xscale("log", base=2)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xticks(edges, [f"{e:,}" for e in edges], rotation=45 if len(edges) > 9 else 0)
        ax.minorticks_off()
    else:
        ax.text(0.5, 0.5, "no documents", ha="center", va="center", transform=ax.transAxes)
    return _png(figure)


def languages_png(languages: dict[str, dict]) -> Optional[bytes]:
    """Kept documents, characters and tokens per language, each as a share of its total (largest languages first,
    at most 20), so a user sees at a glance what each language is of the mixture and what it costs in tokens."""
    shown = [(lang, row) for lang, row in languages.items() if row.get("documents_out")][:20]
    if not shown:
        return None
    import numpy as np

    names = [lang for lang, _ in shown][::-1]
    figure, ax = _axes(f"Kept data by language ({len(languages)} identified)", "share of the kept data", "",
                       left=0.15)
    y = np.arange(len(names))
    for k, (key, label) in enumerate((("documents_out", "documents"), ("characters_out", "characters"),
                                      ("tokens_out", "tokens"))):
        total = max(1, sum(row[key] for _, row in shown))
        ax.barh(y + (k - 1) * 0.27, [row[key] / total for _, row in shown][::-1], height=0.27, label=label)
    ax.set_yticks(y, names)
    ax.legend(loc="lower right", fontsize=8)
    return _png(figure)


def rejections_png(rejections: dict[str, int]) -> Optional[bytes]:
    """Rejected documents per reason (filter rule, duplicate, decontamination, unreadable row), largest first."""
    shown = sorted(((n, reason) for reason, n in rejections.items() if n), reverse=True)
    if not shown:
        return None
    figure, ax = _axes(f"Rejected documents by reason ({sum(n for n, _ in shown):,} in all)", "documents rejected",
                       "", left=0.3)
    ax.barh([reason for _, reason in shown][::-1], [n for n, _ in shown][::-1], color=_VALIDATION)
    ax.tick_params(axis="y", labelsize=8 if len(shown) > 8 else 10)
    return _png(figure)
