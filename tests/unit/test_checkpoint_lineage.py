"""A run owns its checkpoints: a fresh run into a folder with another run's checkpoints is refused (or, asked
explicitly, starts over), and a run resumed from an older checkpoint continues that lineage only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_llm.config import load_config
from hf_llm.errors import ConfigError
from hf_llm.pretrain import run_pretraining
from hf_llm.train.checkpoint import latest_checkpoint, list_checkpoints

from ..conftest import tiny_overrides


@pytest.fixture
def corpus(shared_corpus, prepared_corpus):
    """The session's corpus and its prepared folder: these runs are about checkpoints, not data."""
    return shared_corpus, prepared_corpus


def _run(out: Path, corpus: tuple[Path, Path], *extra: str) -> dict:
    source, prepared = corpus
    return run_pretraining(load_config(None, tiny_overrides(out, source, f"data.prepared={prepared}", "train.lr=3e-2",
                                                            *extra)))


def _step(ckpt: Path) -> int:
    return json.loads((ckpt / "trainer_state.json").read_text())["step"]


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path, corpus):
    out = tmp_path / "run"
    _run(out, corpus, "train.max_steps=6", "train.save_every=3")
    before = [p.name for p in list_checkpoints(out / "checkpoints")]
    with pytest.raises(ConfigError, match="resume_from=latest.*output_dir.*overwrite_output_dir"):
        _run(out, corpus, "train.max_steps=3")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == before  # nothing touched


def test_overwrite_starts_over_and_keeps_what_it_wrote(tmp_path, corpus):
    out = tmp_path / "run"
    _run(out, corpus, "train.max_steps=6", "train.save_every=3")  # step-3, step-6
    # A shorter run: with the earlier step-6 left in place, keep_last would delete the step-3 it just wrote.
    summary = _run(out, corpus, "train.max_steps=3", "train.save_every=3", "train.overwrite_output_dir=true")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-3"]
    assert summary["steps"] == 3 and _step(latest_checkpoint(out / "checkpoints")) == 3


def test_resuming_an_older_checkpoint_continues_its_lineage(tmp_path, corpus):
    out = tmp_path / "run"
    _run(out, corpus, "train.max_steps=9", "train.save_every=3", "train.keep_last=3")  # step-3, 6, 9
    old6 = load_file(str(out / "checkpoints" / "step-6" / "model.safetensors"))
    # Branch from step 3 with another batch order (train.seed) so the new lineage differs from the abandoned one.
    _run(out, corpus, "train.max_steps=9", "train.save_every=3", "train.keep_last=1", "train.seed=4321",
         f"train.resume_from={out / 'checkpoints' / 'step-3'}", "train.stop_after_steps=6")
    kept = list_checkpoints(out / "checkpoints")
    assert [p.name for p in kept] == ["step-6"], "the checkpoint just written must survive keep_last"
    new6 = load_file(str(kept[0] / "model.safetensors"))
    assert any(not torch.equal(old6[k], new6[k]) for k in old6), "step-6 is still the abandoned run's"
    abandoned = sorted((out / "checkpoints").glob("abandoned-after-step-3-*"))
    assert len(abandoned) == 1 and sorted(p.name for p in abandoned[0].iterdir()) == ["step-6", "step-9"]
    # latest now continues the new lineage, not the abandoned step-9.
    summary = _run(out, corpus, "train.max_steps=9", "train.save_every=3", "train.keep_last=1",
                   "train.seed=4321", "train.resume_from=latest")
    assert summary["steps"] == 9 and [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-9"]
