"""Model cards, and pushing exports, adapters and prepared datasets to the Hugging Face Hub.

The token comes from HF_TOKEN or the saved login (`huggingface_hub.get_token`); it is never a config field, and
every message we emit about a push is scrubbed of it (a server's error text may echo request headers). Per-checkpoint
pushes upload on a background thread, and a failed push warns with the command that retries it: a Hub that is down
or refuses never costs a training run.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .config import HubConfig
from .errors import ConfigError, HfLlmError, HubPushError

logger = logging.getLogger(__name__)

LOSS_CURVE = "loss_curve.png"
PUSH_SCRIPT = "scripts/push_to_hub.py"
EXPORTS_DIR = "hub-exports"  # OUTPUT_DIR/hub-exports/step-N: checkpoint exports waiting for (or failed) upload
EVAL_BEGIN, EVAL_END = "<!-- hf_llm:evaluation:begin -->", "<!-- hf_llm:evaluation:end -->"
# Anything shaped like a Hub user access token, in case a token other than the current one shows up in a message.
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{16,}")
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------- tokens


def hub_token() -> Optional[str]:
    """HF_TOKEN, else the token saved by `hf auth login`, else None."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # an OIDC exchange can fail; a missing token is reported by the caller
        return None


def scrub(text: str, token: Optional[str] = None) -> str:
    """`text` with the token (given, or the current one) and anything shaped like a Hub token replaced by ***."""
    token = token if token is not None else hub_token()
    if token:
        text = text.replace(token, "***")
    return _TOKEN_SHAPE.sub("hf_***", text)


def check_push_ready(hub: HubConfig) -> None:
    """Fail before training, not after it, when a push could not even start (no token, offline mode)."""
    if not hub.push:
        return
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise ConfigError("pushing to the Hub needs the network, but HF_HUB_OFFLINE is set: unset it (a finished run "
                          f"can be pushed later with {PUSH_SCRIPT})")
    if not hub_token():
        raise ConfigError("pushing to the Hub needs a token: `export HF_TOKEN=...` or run `hf auth login`")


# ---------------------------------------------------------------------------------------------------------- pushing


def detect_repo_type(folder: str | Path) -> str:
    """The repository type: dataset for a prepared data folder (train/ + validation/ + data_card.json), else model."""
    folder = Path(folder)
    parts = (folder / "train").is_dir() and (folder / "validation").is_dir() and (folder / "data_card.json").is_file()
    return "dataset" if parts else "model"


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


def _operations(folder: Path, repo_type: str) -> list:
    """One CommitOperationAdd per file; hidden files and folders (temporary, caches) stay local."""
    from huggingface_hub import CommitOperationAdd

    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]
    if repo_type == "dataset" and (folder / "data_card.json").is_file():
        ops = [op for op in ops if op.path_in_repo != "README.md"]
        ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=dataset_readme(folder).encode()))
    return ops


def _is_retriable(error: Exception) -> bool:
    """Server errors, rate limits and network failures may pass; bad credentials or a bad README will not."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        return status >= 500 or status in (408, 429)
    return not isinstance(error, (ValueError, TypeError, FileNotFoundError, HfLlmError))


def with_retries(action: Callable[[], T], what: str, retries: int, backoff_seconds: float,
                 token: Optional[str] = None) -> T:
    """Run `action`; on a retriable failure wait backoff·2^k seconds and try again, up to `retries` more times."""
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as e:  # every failure of a push must end as a warning or a HubPushError, never a crash
            message = " ".join(scrub(f"{type(e).__name__}: {e}", token).split())  # one line per log record
            if attempt == retries or not _is_retriable(e):
                # `from None`: the original exception's text (and its chain) may hold the token.
                raise HubPushError(f"{what} failed after {attempt + 1} attempt(s): {message}") from None
            wait = backoff_seconds * 2 ** attempt
            logger.warning("%s failed (attempt %d of %d): %s; retrying in %.1f s", what, attempt + 1, retries + 1,
                           message, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def push_folder(folder: str | Path, repo_id: str, *, revision: str = "main", private: bool = True,
                repo_type: Optional[str] = None, endpoint: Optional[str] = None, retries: int = 3,
                backoff_seconds: float = 2.0, commit_message: Optional[str] = None) -> str:
    """Upload every file of `folder` to `repo_id@revision` in one commit (the repo and branch are created when
    missing). `repo_type` None detects a prepared dataset folder. Returns the commit URL; raises HubPushError."""
    from huggingface_hub import HfApi

    from . import __version__

    folder = Path(folder)
    if not folder.is_dir():
        raise HubPushError(f"{folder} is not a folder; push an export (model/), an adapter or a prepared data folder")
    repo_type = repo_type or detect_repo_type(folder)
    token = hub_token()

    def attempt() -> str:
        api = HfApi(endpoint=endpoint, token=token, library_name="hf_llm", library_version=__version__)
        api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        message = commit_message or f"Upload {folder.name} with hf_llm"
        info = api.create_commit(repo_id, operations=_operations(folder, repo_type), repo_type=repo_type,
                                 revision=revision, commit_message=message)
        return info.commit_url

    return with_retries(attempt, f"push of {folder} to {repo_id}@{revision}", retries, backoff_seconds, token)


def retry_command(folder: str | Path, repo_id: str, revision: str = "main", private: bool = True,
                  endpoint: Optional[str] = None) -> str:
    """The exact command that pushes `folder` again."""
    parts = ["python", PUSH_SCRIPT, str(Path(folder).resolve()), repo_id]
    if revision != "main":
        parts += ["--revision", revision]
    if not private:
        parts.append("--no-private")
    if endpoint:
        parts += ["--endpoint", endpoint]
    return " ".join(shlex.quote(p) for p in parts)


def push_path(path: str | Path, repo_id: str, *, private: bool = True, revision: str = "main",
              repo_type: Optional[str] = None, endpoint: Optional[str] = None, retries: int = 3) -> str:
    """`scripts/push_to_hub.py`: push an existing export, adapter or prepared data folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"{repo_id!r} is not a valid repository id: {e}") from None
    if not Path(path).is_dir():
        raise ConfigError(f"{path} is not a folder; give an export (model/), an adapter or a prepared data folder")
    check_push_ready(HubConfig(push=True, repo_id=repo_id))
    return push_folder(path, repo_id, revision=revision, private=private, repo_type=repo_type, endpoint=endpoint,
                       retries=retries)


class CheckpointPusher:
    """Uploads checkpoint exports to branches `step-N` on one background thread, so training never waits on the
    network. A pushed export is deleted locally; a failed one stays for the retry command."""

    def __init__(self, hub: HubConfig):
        self.hub = hub
        # One worker: uploads land in step order and do not compete for bandwidth.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_llm-push")
        self._jobs: list[tuple[str, Path, Future]] = []

    def submit(self, folder: Path, step: int) -> None:
        revision = f"step-{step}"
        self._jobs.append((revision, folder, self._pool.submit(self._push, folder, revision)))

    def _push(self, folder: Path, revision: str) -> str:
        try:
            url = push_folder(folder, self.hub.repo_id, revision=revision, private=self.hub.private,
                              endpoint=self.hub.endpoint, retries=self.hub.retries,
                              backoff_seconds=self.hub.backoff_seconds)
        except HubPushError as e:
            logger.warning("%s; training goes on. Retry later with: %s", e, self._retry(folder, revision))
            raise
        shutil.rmtree(folder, ignore_errors=True)
        return url

    def _retry(self, folder: Path, revision: str) -> str:
        return retry_command(folder, self.hub.repo_id, revision, self.hub.private, self.hub.endpoint)

    def close(self) -> list[dict[str, Any]]:
        """Wait for every upload; one report per checkpoint."""
        self._pool.shutdown(wait=True)
        report = []
        for revision, folder, future in self._jobs:
            error = future.exception()
            if error is None:
                report.append({"revision": revision, "pushed": True, "url": future.result()})
            else:
                report.append({"revision": revision, "pushed": False, "error": scrub(str(error)),
                               "retry": self._retry(folder, revision)})
        return report


def checkpoint_push_hook(hub: HubConfig, accelerator, tokenizer, out: Path,
                         card_for: Callable[[Any], tuple[str, dict[str, bytes]]]):
    """(on_checkpoint hook for the loop, pusher or None). Every `hub.push_every` steps every process joins the
    export (gathering ZeRO-3/FSDP shards); the main process hands the folder to the background pusher."""
    if not (hub.push and hub.push_every):
        return None, None
    from .train.checkpoint import export_model

    pusher = CheckpointPusher(hub) if accelerator.is_main_process else None

    def hook(state, model) -> None:
        if state.step % hub.push_every:
            return
        card, files = card_for(state)
        folder = export_model(accelerator, model, tokenizer, out / EXPORTS_DIR / f"step-{state.step}", card,
                              extra_files=files)
        if pusher is not None:
            pusher.submit(folder, state.step)

    return hook, pusher


def finish_pushes(hub: HubConfig, export_dir: Path, pusher: Optional[CheckpointPusher]) -> Optional[dict[str, Any]]:
    """Wait for the checkpoint uploads, then push the final export; failures become a report, never an exception."""
    if not hub.push:
        return None
    checkpoints = pusher.close() if pusher is not None else []
    retry = retry_command(export_dir, hub.repo_id, hub.revision, hub.private, hub.endpoint)
    try:
        url = push_folder(export_dir, hub.repo_id, revision=hub.revision, private=hub.private, endpoint=hub.endpoint,
                          retries=hub.retries, backoff_seconds=hub.backoff_seconds)
        final = {"revision": hub.revision, "pushed": True, "url": url}
    except HubPushError as e:
        logger.warning("%s. The model is safe in %s; push it again with:\n  %s", e, export_dir, retry)
        final = {"revision": hub.revision, "pushed": False, "error": str(e), "retry": retry}
    return {"repo_id": hub.repo_id, "final": final, "checkpoints": checkpoints}


def format_push_report(report: Optional[dict[str, Any]]) -> list[str]:
    """Summary lines: where the model went, or the command that retries each failed push."""
    if not report:
        return []
    lines = []
    for item in [report["final"], *report["checkpoints"]]:
        where = f"{report['repo_id']}@{item['revision']}"
        if item["pushed"]:
            lines.append(f"hub               pushed {where}")
        else:
            lines.append(f"hub               PUSH FAILED for {where}; retry with:\n    {item['retry']}")
    return lines


# ------------------------------------------------------------------------------------------------------- model card


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
