"""Pushing exports, adapters and prepared datasets to the Hugging Face Hub.

The token comes from hf_llm.auth (HF_TOKEN or the saved login), and every message we emit about a push is scrubbed of
it (a server's error text may echo request headers); a dataset folder goes up with its card (hf_llm.cards).
Per-checkpoint pushes upload on a background thread, and a failed push warns with the command that retries it: a Hub
that is down or refuses never costs a training run.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .auth import hub_token, scrub
from .cards import dataset_readme
from .config import HubConfig
from .errors import ConfigError, HfLlmError, HubPushError

logger = logging.getLogger(__name__)

PUSH_SCRIPT = "scripts/push_to_hub.py"
EXPORTS_DIR = "hub-exports"  # OUTPUT_DIR/hub-exports/step-N: checkpoint exports waiting for (or failed) upload
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------- checks


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
