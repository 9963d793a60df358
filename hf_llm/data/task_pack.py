"""The executor's last two stages as datatrove steps: pack (per task) and merge (the prepared folder).

`PackStep` runs the in-process emission pass (emit.py) over one task's documents; `MergeStep` publishes the tasks'
shards as one prepared folder and builds the data card from the tasks' statistics. See hf_llm/data/executor.py.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .batches import iter_batches
from .selection import KEPT_CODE, Keys
from .task_steps import CHUNK, HfLlmStep, load, save, task_output


# ----------------------------------------------------------------------------------------------------- pack


class PackStep(HfLlmStep):
    """Tokenise this task's kept documents and run emit.py's pass over them: rejects/ rows (reason, detail),
    documents/, packed train and validation blocks, and the statistics the data card adds up."""

    name = "pack"

    def work(self, rank: int, world: int) -> None:
        from datasets import Dataset

        from .emit import Emitted, RowWriter, Sinks, _first_pass, _union_features
        from .pack import BlockWriter, make_packer, packer_dtypes
        from .pipeline import tokenize_documents
        from .selection import Selection
        from .tokenizer import BatchEncoder, adds_bos, load_tokenizer
        from .batches import token_ids

        # One process per task: a datatrove worker is daemonic and may not start datasets.map workers of its own.
        data = replace(self.cfg.data, num_proc=1)
        tp = load(self.out("select") / f"task-{rank:05d}.pkl")
        tokenizer = load_tokenizer(str(self.out("select") / "tokenizer"))
        bos = tokenizer.bos_token_id if adds_bos(tokenizer) else None
        encoder = BatchEncoder(tokenizer)
        lengths = [len(st) for st in tp["status"]]
        selection = Selection(tp["status"], tp["validation"], tp["representative"],
                            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), {})
        keys = Keys(reasons=tp["reasons"], chars_out=tp["chars_out"])
        vocab = len(tokenizer)
        with task_output(self.out("pack") / f"{rank:05d}") as tmp:
            packers = {s: make_packer(data.packing, data.seq_len, vocab, tokenizer.pad_token_id, data.best_fit_window)
                       for s in ("train", "validation")}
            sinks = Sinks(packers=packers,
                          blocks={s: BlockWriter(tmp / f"{s}.arrow", data.seq_len, packer_dtypes(p))
                                  for s, p in packers.items()},
                          rejects=RowWriter(tmp / "rejects.arrow", _union_features(self.specs, rejects=True)),
                          documents=RowWriter(tmp / "documents.arrow", _union_features(self.specs, rejects=False))
                          if data.save_documents else None)
            e = Emitted(vocab)
            e.representative_origins = dict(tp["origins"])
            is_rep = np.zeros(int(selection.offsets[-1]), dtype=bool)  # origins come from the selection, not from this pass
            for i, spec in enumerate(self.specs):
                drawn = np.zeros(3, dtype=np.int64)
                e.tokens_by_code.append(np.zeros(len(keys.reasons), dtype=np.int64))
                cleaned = Dataset.from_file(str(self.clean_dir(rank) / CHUNK.format(s=i)))
                if len(cleaned):  # a task may hold no file of a source
                    ds = tokenize_documents(cleaned, encoder, selection.kept(i), tokenizer, bos, data, spec.label)
                    _first_pass(i, ds, spec, selection, tp["passes"][i], keys, is_rep, sinks, e, drawn)
                for rows in tp["passes"][i][1:] if len(cleaned) else []:  # upsampled: further passes, as emit() does
                    for idx, b in iter_batches(ds, ["input_ids"], rows):
                        flat, n = token_ids(b["input_ids"], vocab)
                        sinks.pack("train", flat, n, e)
                        drawn += (len(flat), len(idx), int(keys.chars_out[i][idx].sum()))
                e.drawn_tokens.append(int(drawn[0]))
                e.drawn_documents.append(int(drawn[1]))
                e.drawn_characters.append(int(drawn[2]))
            for split, packer in packers.items():
                sinks.blocks[split].write(packer.finish())
                sinks.blocks[split].writer.finalize()
            e.train_stats, e.validation_stats = dict(packers["train"].stats), dict(packers["validation"].stats)
            e.kept_lengths = np.concatenate(e.kept_lengths) if e.kept_lengths else np.zeros(0, np.int64)
            e.rejects = sinks.rejects.rows
            sinks.rejects.writer.finalize()
            if sinks.documents is not None:
                e.documents_saved = sinks.documents.rows
                sinks.documents.writer.finalize()
            read, kept = sum(lengths), int(sum((st == KEPT_CODE).sum() for st in tp["status"]))
            if kept + e.rejects != read:  # every document read is kept or in rejects/, never lost
                raise DataError(f"task {rank}: {read} documents read but {kept} kept + {e.rejects} rejected")
            save({"emitted": e, "read": read, "kept": kept, "rejected": e.rejects}, tmp / "stats.pkl")
        self.stat_update("documents_read", value=read)
        self.stat_update("documents_kept", value=kept)
        self.stat_update("documents_rejected", value=e.rejects)


# ---------------------------------------------------------------------------------------------------- merge


class MergeStep(HfLlmStep):
    """The prepared folder, published whole: the pack tasks' shards as datasets, the tokenizer, the data card."""

    name = "merge"

    def work(self, rank: int, world: int) -> None:
        import json

        from ..config import config_to_yaml
        from ..io import publishing
        from .card import CardInputs, build_card, write_card_pages
        from .pipeline import data_fingerprint
        from .tokenizer import adds_bos, load_tokenizer

        data, tasks = self.cfg.data, self.tasks["pack"]
        p = load(self.out("select") / "selection.pkl")
        stats = [load(self.out("pack") / f"{r:05d}" / "stats.pkl") for r in range(tasks)]
        e = merge_emitted([s["emitted"] for s in stats], len(self.specs))
        e.representative_origins = p["origins"]
        blocks = {s: sum(getattr(x["emitted"], f"{s}_stats")["blocks"] for x in stats) for s in ("train", "validation")}
        if not blocks["train"] or not blocks["validation"]:
            raise DataError(f"too little text for data.seq_len={data.seq_len}: {blocks['train']} training and "
                            f"{blocks['validation']} validation blocks; add documents or lower data.seq_len")
        tokenizer = load_tokenizer(str(self.out("select") / "tokenizer"))
        from .decontam import build_index_from_config

        eval_names = build_index_from_config(data.decontam).names if data.decontam.enabled else []
        card = build_card(CardInputs(data=data, tok_cfg=self.cfg.tokenizer, specs=self.specs, keys=p["keys"],
                                     selection=p["selection"], passes=p["passes"], tokenizer=tokenizer,
                                     adds_bos=adds_bos(tokenizer), emitted=e, timings=stage_timings(self.root),
                                     eval_names=eval_names, fingerprint=data_fingerprint(data, self.cfg.tokenizer)))
        card["executor"] = {"kind": self.cfg.executor.kind, "tasks": self.tasks,
                            "per_task": [{k: s[k] for k in ("read", "kept", "rejected")} for s in stats]}
        parts = ["train", "validation", "rejects"] + (["documents"] if data.save_documents else [])
        with publishing(Path(self.cfg.output_dir)) as out:
            for part in parts:
                shard_folder([self.out("pack") / f"{r:05d}" / f"{part}.arrow" for r in range(tasks)], out / part)
            tokenizer.save_pretrained(str(out / "tokenizer"))
            (out / "data_card.json").write_text(json.dumps(card, indent=2))
            write_card_pages(card, out)
            (out / "data_config.yaml").write_text(config_to_yaml(self.cfg))


def merge_emitted(parts: list, n_sources: int):
    """The tasks' `Emitted` as one: counts added, lengths joined, the first examples of each reason kept."""
    from .emit import REJECT_EXAMPLES, Emitted

    e = Emitted(parts[0].vocab)
    width = max(len(t) for p in parts for t in p.tokens_by_code)
    e.tokens_by_code = [sum(np.pad(p.tokens_by_code[i], (0, width - len(p.tokens_by_code[i]))) for p in parts)
                        for i in range(n_sources)]
    for name in ("drawn_tokens", "drawn_documents", "drawn_characters"):
        setattr(e, name, [int(sum(getattr(p, name)[i] for p in parts)) for i in range(n_sources)])
    e.validation_characters = sum(p.validation_characters for p in parts)
    for p in parts:
        for lang, n in p.tokens_by_language.items():
            e.tokens_by_language[lang] = e.tokens_by_language.get(lang, 0) + n
    e.kept_lengths = np.concatenate([p.kept_lengths for p in parts])
    e.train_unigram = sum(p.train_unigram for p in parts)
    e.validation_unigram = sum(p.validation_unigram for p in parts)
    e.rejects = sum(p.rejects for p in parts)
    e.documents_saved = sum(p.documents_saved for p in parts)
    for split in ("train_stats", "validation_stats"):
        merged: dict = {}
        for p in parts:
            for k, v in getattr(p, split).items():
                merged[k] = v if k == "seq_len" else merged.get(k, 0) + v
        setattr(e, split, merged)
    for p in parts:
        for reason, rows in p.reject_examples.items():
            have = e.reject_examples.setdefault(reason, [])
            have.extend(rows[: REJECT_EXAMPLES - len(have)])
        for name, rows in p.decontam_examples.items():
            have = e.decontam_examples.setdefault(name, [])
            have.extend(rows[: 5 - len(have)])
    return e


def shard_folder(files: list[Path], folder: Path) -> None:
    """A `load_from_disk` folder over the tasks' Arrow files, hard-linked (copied across file systems)."""
    import json

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


def stage_timings(root: Path) -> dict[str, float]:
    """Seconds each stage's tasks spent in our step, summed over tasks (datatrove's per-task stats)."""
    import json

    out: dict[str, float] = {}
    for stage in ("clean", "exact", "near", "select", "pack"):
        total = 0.0
        for f in sorted((root / "logs" / stage / "stats").glob("*.json")):
            for step in json.loads(f.read_text()):
                total += float(step.get("time_stats", {}).get("total", 0.0) or 0.0)
        out[f"{stage}_task_seconds"] = round(total, 3)
    return out


__all__ = ["MergeStep", "PackStep", "merge_emitted", "shard_folder"]
