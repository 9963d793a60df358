"""Pushing to a fake Hub on 127.0.0.1 (tests/hub_server.py): files, branches, background uploads, failures that
never kill training, and a token that never leaks. The cards themselves: tests/unit/test_cards.py."""

import json
import logging
import re
import time
from pathlib import Path

import pytest
import yaml

from hf_llm.config import HubConfig, load_config
from hf_llm.errors import ConfigError
from hf_llm.auth import scrub
from hf_llm.hub import CheckpointPusher, check_push_ready, detect_repo_type, push_folder, retry_command
from hf_llm.errors import HubPushError
from hf_llm.pretrain import run_pretraining

from ..conftest import REPO, tiny_overrides
from ..hub_server import FakeHub

TOKEN = "hf_TestTokenThatMustNeverLeak0123456789"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def online(monkeypatch, caplog):
    """A token in the environment and offline mode lifted for this test only (conftest sets HF_HUB_OFFLINE=1,
    which huggingface_hub reads once at import); requests go to the loopback fake Hub and nowhere else."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    caplog.set_level(logging.INFO)
    return caplog


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


def _tree_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def test_push_folder_creates_repo_branch_and_commit(tmp_path, online, capsys):
    folder = _folder(tmp_path / "export", {"config.json": b"{}", "model.safetensors": b"\0" * 64,
                                           "nested/extra.txt": b"x", ".cache/skip": b"local only"})
    with FakeHub() as hub:
        url = push_folder(folder, "me/tiny", revision="step-3", endpoint=hub.endpoint, retries=0)
        assert url.startswith(f"{hub.endpoint}/me/tiny/commit/")
        assert set(hub.files("me/tiny", "step-3")) == {".gitattributes", "config.json", "model.safetensors",
                                                        "nested/extra.txt"}
        assert hub.files("me/tiny", "step-3")["model.safetensors"] == b"\0" * 64
        assert set(hub.files("me/tiny", "main")) == {".gitattributes"}  # only the branch got the commit
        assert hub.repos[("model", "me/tiny")].private is True
        assert hub.auth == {f"Bearer {TOKEN}"}  # the token went where it belongs
    out = capsys.readouterr()
    _assert_no_token(out.out, out.err, online.text)


def test_dataset_folder_is_pushed_as_a_dataset_with_its_card(tmp_path, online):
    card = {"train": {"documents": 10, "tokens": 1000, "blocks": 15, "seq_len": 64}, "validation": {"tokens": 50}}
    folder = _folder(tmp_path / "prepared", {"train/data-00000-of-00001.arrow": b"a", "validation/state.json": b"{}",
                                             "tokenizer/tokenizer.json": b"{}",
                                             "data_card.json": json.dumps(card).encode()})
    assert detect_repo_type(folder) == "dataset" and detect_repo_type(tmp_path) == "model"
    with FakeHub() as hub:
        push_folder(folder, "me/data", endpoint=hub.endpoint, retries=0)
        files = hub.files("me/data", repo_type="dataset")
    assert {"README.md", "data_card.json", "train/data-00000-of-00001.arrow", "tokenizer/tokenizer.json"} <= set(files)
    readme = files["README.md"].decode()
    assert readme.startswith("---\n") and "| train | 10 | 1,000 | 15 | 64 |" in readme
    (tmp_path / "prepared" / "DATA_CARD.md").write_text("# My data\n\nWritten by hand.\n")
    from hf_llm.cards import dataset_readme

    assert dataset_readme(folder).endswith("# My data\n\nWritten by hand.\n")


def test_background_pushes_do_not_block(tmp_path, online):
    hub_cfg = HubConfig(push=True, repo_id="me/tiny", push_every=1, retries=0)
    with FakeHub(delay=0.2) as hub:  # every request takes 0.2 s: an upload takes a second or more
        hub_cfg.endpoint = hub.endpoint
        pusher = CheckpointPusher(hub_cfg)
        started = time.perf_counter()
        for step in (1, 2):
            pusher.submit(_folder(tmp_path / f"step-{step}", {"config.json": b"{}"}), step)
        assert time.perf_counter() - started < 0.2  # handed over, not uploaded
        report = pusher.close()
    assert [r["revision"] for r in report] == ["step-1", "step-2"] and all(r["pushed"] for r in report)
    assert not (tmp_path / "step-1").exists()  # a pushed export is not kept twice


def test_pretraining_pushes_checkpoints_in_the_background_and_the_final_model(tmp_path, shared_corpus, prepared_corpus,
                                                                              online, capsys):
    out = tmp_path / "run"
    with FakeHub() as hub:
        cfg = load_config(None, tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}", "hub.push=true",
                                               "hub.repo_id=me/tiny-llama", "hub.push_every=3",
                                               f"hub.endpoint={hub.endpoint}"))
        summary = run_pretraining(cfg)
        repo = hub.repos[("model", "me/tiny-llama")]
    assert set(repo.branches) == {"main", "step-3", "step-6"}
    assert [c["revision"] for c in repo.commits] == ["step-3", "step-6", "main"]
    main = repo.branches["main"]
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md",
                 "loss_curve.png"):
        assert name in main and name in repo.branches["step-3"], name
    assert main["loss_curve.png"].startswith(b"\x89PNG")
    shown = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", main["README.md"].decode()))
    assert shown == {"loss_curve.png", "learning_rate.png"} and shown <= set(main)  # the card's pictures went up
    assert summary["hub"]["final"]["pushed"] and all(c["pushed"] for c in summary["hub"]["checkpoints"])
    assert not (out / "hub-exports" / "step-3").exists()  # uploaded, then removed

    # The card: valid metadata (model-index) that round-trips through ModelCardData, and the usage snippet.
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard(main["README.md"].decode())
    meta = yaml.safe_load(main["README.md"].decode().split("---\n")[1])
    assert ModelCardData(**meta).to_dict() == card.data.to_dict()
    assert {e.metric_type for e in card.data.eval_results} == {"perplexity", "loss"}
    assert 'pipeline("text-generation", model="me/tiny-llama")' in card.text and "![training" in card.text
    assert "tokens_seen" in card.text and "hardware" in card.text

    # What was pushed is a working model.
    from transformers import pipeline

    pulled = _folder(tmp_path / "pulled", main)
    text = pipeline("text-generation", model=str(pulled))("And it came", max_new_tokens=4, do_sample=False)
    assert text[0]["generated_text"].startswith("And it came")

    # The token is nowhere: not in the uploads, the saved config, the summary, the card, or the logs.
    captured = capsys.readouterr()
    uploads = "".join(v.decode("utf-8", "replace") for b in repo.branches.values() for v in b.values())
    _assert_no_token(uploads, _tree_text(out), captured.out, captured.err, online.text)
    assert f"Bearer {TOKEN}" in hub.auth


def test_a_failing_hub_never_kills_training(tmp_path, shared_corpus, prepared_corpus, online, capsys):
    out = tmp_path / "run"
    with FakeHub(fail_status=500) as hub:  # every answer is a 500 whose body echoes the Authorization header
        cfg = load_config(None, tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}", "hub.push=true",
                                               "hub.repo_id=me/tiny-llama", "hub.push_every=3", "hub.retries=1",
                                               "hub.backoff_seconds=0.01",
                                               f"hub.endpoint={hub.endpoint}"))
        summary = run_pretraining(cfg)
    assert summary["steps"] == 6 and (out / "model" / "model.safetensors").is_file()
    final = summary["hub"]["final"]
    assert not final["pushed"] and "500" in final["error"]
    command = retry_command(out / "model", "me/tiny-llama", endpoint=hub.endpoint)
    assert final["retry"] == command and command.startswith(f"python scripts/push_to_hub.py {out.resolve() / 'model'}")
    captured = capsys.readouterr()
    assert command in captured.out  # in the printed summary
    assert "retrying in" in online.text and "push it again with" in online.text  # warned, with backoff
    # The failed checkpoint exports stay for their retry commands.
    assert [c["pushed"] for c in summary["hub"]["checkpoints"]] == [False, False]
    assert (out / "hub-exports" / "step-3" / "model.safetensors").is_file()
    _assert_no_token(captured.out, captured.err, online.text, json.dumps(summary), _tree_text(out))
    assert "***" in online.text  # the echoed token was there, and was scrubbed

    # The printed command works once the Hub is back (what scripts/push_to_hub.py runs, in-process).
    from hf_llm.cli import run_command

    assert "run_command(\"push\"" in (REPO / "scripts" / "push_to_hub.py").read_text()
    with FakeHub() as hub:
        assert run_command("push", [str(out / "model"), "me/tiny-llama", "--endpoint", hub.endpoint]) == 0
        assert "model.safetensors" in hub.files("me/tiny-llama")


def test_push_errors_are_scrubbed_and_not_retried_when_pointless(tmp_path, online):
    folder = _folder(tmp_path / "export", {"README.md": b"---\nmodel-index: [{name: x, results: 3}]\n---\nbad\n"})
    with FakeHub() as hub, pytest.raises(HubPushError, match="after 1 attempt") as info:
        push_folder(folder, "me/tiny", endpoint=hub.endpoint, retries=3, backoff_seconds=10)  # a bad README: no retry
    assert TOKEN not in str(info.value)
    assert scrub(f"Bearer {TOKEN} and hf_AnotherTokenShape1234567890") == "Bearer *** and hf_***"


def test_push_needs_a_token_and_network(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("hf_llm.hub.hub_token", lambda: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        check_push_ready(HubConfig(push=True, repo_id="me/x"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        check_push_ready(HubConfig(push=True, repo_id="me/x"))
    with pytest.raises(ConfigError, match="repo_id"):
        load_config(None, ["hub.push=true"])
    with pytest.raises(ConfigError, match="multiple of train.save_every"):
        load_config(None, ["hub.push=true", "hub.repo_id=me/x", "hub.push_every=7", "train.save_every=5"])
