"""The last two passes as datatrove steps: pack (per task) and merge (the prepared folder).

`PackStep` tokenises one task's documents and runs emit.py's emission over them; `MergeStep` publishes the tasks'
shards as one prepared folder and builds the data card from the tasks' statistics. See hf_llm/data/executor.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from ..io import publishing
from .batches import BATCH
from .selection import KEPT_CODE, Keys
from .task_steps import CHUNK, PASSES, HfLlmStep, load, pass_timings, save, worker_processes


# ----------------------------------------------------------------------------------------------------- pack


class PackStep(HfLlmStep):
    """Tokenise this task's kept documents and run emit.py's emission over them: rejects/ rows (reason, detail),
    documents/, packed train and validation blocks, and the statistics the data card adds up."""

    name = "pack"

    def work(self, rank: int, world: int) -> None:
        from datasets import Dataset

        from .emit import Emitted, close_sinks, emit_source, open_sinks
        from .selection import Selection
        from .tokenizer import BatchEncoder, adds_bos

        data = self.cfg.data
        tp = load(self.out("select") / f"task-{rank:05d}.pkl")
        tokenizer = self.tokenizer_made()
        bos = tokenizer.bos_token_id if adds_bos(tokenizer) else None
        encoder = BatchEncoder(tokenizer)
        lengths = [len(st) for st in tp["status"]]
        selection = Selection(tp["status"], tp["validation"], tp["representative"],
                              np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), {})
        keys = Keys(reasons=tp["reasons"], chars_out=tp["chars_out"])
        with publishing(self.out("pack") / f"{rank:05d}") as tmp:
            sinks = open_sinks(tmp, self.specs, data, len(tokenizer), tokenizer.pad_token_id)
            e = Emitted(len(tokenizer))
            e.representative_origins = dict(tp["origins"])
            for i, spec in enumerate(self.specs):
                cleaned = Dataset.from_file(str(self.clean_dir(rank) / CHUNK.format(s=i)))
                ds = None
                if len(cleaned):  # a task may hold no file of a source
                    ds = tokenize_documents(cleaned, encoder, selection.kept(i), tokenizer, bos,
                                            worker_processes(data.num_proc), spec.label, tmp / f"ids-{i}.arrow")
                emit_source(i, ds, spec, selection, tp["passes"][i], keys, sinks, e)
            close_sinks(sinks, e)
            for f in tmp.glob("ids-*.arrow"):  # the token ids live on in the blocks
                f.unlink()
            read, kept = sum(lengths), int(sum((st == KEPT_CODE).sum() for st in tp["status"]))
            if kept + e.rejects != read:  # every document read is kept or in rejects/, never lost
                raise DataError(f"task {rank}: {read} documents read but {kept} kept + {e.rejects} rejected")
            save({"emitted": e, "read": read, "kept": kept, "rejected": e.rejects}, tmp / "stats.pkl")
        self.stat_update("documents_read", value=read)
        self.stat_update("documents_kept", value=kept)
        self.stat_update("documents_rejected", value=e.rejects)


def tokenize_documents(cleaned, encoder, keep: np.ndarray, tokenizer, bos: Optional[int], num_proc: int,
                       label: str, cache_file: Path):
    """`cleaned` plus `input_ids` (kept documents) and `n_tokens` (every document), written to `cache_file` and
    joined to the cleaned table side by side (no copy of the text); the dedup keys are no longer needed."""
    from datasets import Features, concatenate_datasets

    from .steps import tokenize_batch, tokenize_features

    drop = [k for k in ("minhash", "hash_hi", "hash_lo") if k in cleaned.features]
    kwargs = {"encoder": encoder, "keep": keep, "eos": tokenizer.eos_token_id, "bos": bos, "vocab_size": len(tokenizer)}
    procs = num_proc if num_proc > 1 and len(cleaned) >= 10_000 else None  # forking costs more below that
    ids = cleaned.map(tokenize_batch, batched=True, batch_size=BATCH, num_proc=procs, desc=f"tokenize {label}",
                      with_indices=True, input_columns=["text", "reason"], fn_kwargs=kwargs,
                      remove_columns=cleaned.column_names, features=tokenize_features(Features(), len(tokenizer)),
                      cache_file_name=str(cache_file))
    return concatenate_datasets([cleaned.remove_columns(drop), ids], axis=1)


# ---------------------------------------------------------------------------------------------------- merge


class MergeStep(HfLlmStep):
    """The prepared folder, published whole: the pack tasks' shards as datasets, the tokenizer, the data card."""

    name = "merge"

    def work(self, rank: int, world: int) -> None:
        from ..config import config_to_yaml
        from .card import CardInputs, build_card, data_fingerprint, write_card_pages
        from .decontam import build_index_from_config
        from .emit import merge_emitted
        from .tokenizer import adds_bos

        data, tasks = self.cfg.data, self.tasks["pack"]
        p = load(self.out("select") / "selection.pkl")
        stats = [load(self.out("pack") / f"{r:05d}" / "stats.pkl") for r in range(tasks)]
        e = merge_emitted([s["emitted"] for s in stats], len(self.specs))
        e.representative_origins = p["origins"]
        blocks = {s: sum(getattr(x["emitted"], f"{s}_stats")["blocks"] for x in stats) for s in ("train", "validation")}
        if not blocks["train"] or not blocks["validation"]:
            raise DataError(f"too little text for data.seq_len={data.seq_len}: {blocks['train']} training and "
                            f"{blocks['validation']} validation blocks; add documents or lower data.seq_len")
        tokenizer = self.tokenizer_made()
        eval_names = build_index_from_config(data.decontam).names if data.decontam.enabled else []
        card = build_card(CardInputs(data=data, tok_cfg=self.cfg.tokenizer, specs=self.specs, keys=p["keys"],
                                     selection=p["selection"], passes=p["passes"], tokenizer=tokenizer,
                                     adds_bos=adds_bos(tokenizer), emitted=e,
                                     timings=pass_timings(self.root, PASSES[:-1]), eval_names=eval_names,
                                     fingerprint=data_fingerprint(data, self.cfg.tokenizer)))
        if self.cfg.executor.kind != "process":
            card["executor"] = {"kind": self.cfg.executor.kind, "tasks": self.tasks,
                                "per_task": [{k: s[k] for k in ("read", "kept", "rejected")} for s in stats]}
        parts = ["train", "validation", "rejects"] + (["documents"] if data.save_documents else [])
        with publishing(Path(self.cfg.output_dir)) as out:
            for part in parts:
                shard_folder([self.out("pack") / f"{r:05d}" / f"{part}.arrow" for r in range(tasks)], out / part)
            shutil.copytree(self.out("select") / "tokenizer", out / "tokenizer")  # as saved, not as reloaded
            (out / "data_card.json").write_text(json.dumps(card, indent=2))
            write_card_pages(card, out)
            (out / "data_config.yaml").write_text(config_to_yaml(self.cfg))


def shard_folder(files: list[Path], folder: Path) -> None:
    """A `load_from_disk` folder over the tasks' Arrow files, hard-linked (copied across file systems)."""
    from datasets import Dataset

    folder.mkdir(parents=True)
    names = []
    for r, f in enumerate(files):
        name = f"data-{r:05d}-of-{len(files):05d}.arrow"
        try:
            os.link(f, folder / name)
        except OSError:
            shutil.copyfile(f, folder / name)
        names.append({"filename": name})
    Dataset.from_file(str(folder / names[0]["filename"])).info.write_to_directory(str(folder))
    state = {"_data_files": names, "_fingerprint": os.urandom(8).hex(), "_format_columns": None, "_format_kwargs": {},
             "_format_type": None, "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2))


__all__ = ["MergeStep", "PackStep", "shard_folder", "tokenize_documents"]
