"""prepare_data as six passes, run in this process (the default) or on datatrove's executors (local, Slurm, Ray).

The passes are datatrove pipeline steps (hf_llm.data.task_steps, task_pack), each waiting for the one before
(Slurm: `afterok`). `executor.kind=process` runs each pass's one task here, in order (`prepare_here`); the other
kinds run them as datatrove executors with `executor.tasks` / `executor.dedup_tasks` tasks (`run_on_executor`):

    clean  (executor.tasks)       read a contiguous shard of every source's files; `clean_keys_batch` on each batch
                                  → cleaned rows (Arrow) + keys (`collect_keys`) + MinHash signatures, per task
    exact  (executor.dedup_tasks) exact dedup on a hash partition (`exact_partition`): copies share a hash, so they
                                  meet in one partition
    near   (executor.dedup_tasks) a group of LSH bands (`near_pairs`) over every exact survivor: candidate pairs
                                  verified by their estimated Jaccard
    select (1 task)               `dedup_decisions` (connected components of the pairs), `select_documents`
                                  (decontamination, validation held out by document), the tokenizer, `select_mixture`
    pack   (executor.tasks)       `tokenize_documents` and emit.py's emission per task: rejects/ rows with reason
                                  and detail, packed train/validation blocks, statistics
    merge  (1 task)               the prepared folder: the tasks' shards as train/ validation/ rejects/ (linked,
                                  not copied), the tokenizer, and the data card from the tasks' statistics

Documents keep one global order (source by source, file by file) through the passes, so every global decision
(the first copy is kept, the validation draw) is the same for any number of tasks: the same documents are kept and
rejected for the same reasons. Only the packed blocks differ: each task packs its own documents.

Memory stays flat in corpus size: documents flow batch by batch between Arrow files; only the global steps hold
arrays over all documents: the select pass ~150 bytes a document (keys ~40 B, held twice while the tasks' keys are
joined; selection ~11 B; dedup decisions and their connected components ~50 B; mixture indices 8 B), i.e. ~0.15 GB
per million documents, and a near task 8 bytes per document for each band of its group (0.34 GB per million at the
default 42 bands on one task), plus its verified pairs. MinHash signatures stay on disk, memory-mapped, read
65,536 rows at a time.

On an executor everything between passes lives under `executor.work_dir` (default OUTPUT_DIR.executor): logs/PASS/
is datatrove's logging folder (completions/, logs/, stats/), work/PASS/ the tasks' outputs. A task writes into a
temporary folder swapped into place when complete (`hf_llm.io.publishing`), and datatrove marks it complete after
that: a pass killed midway and run again with the same command redoes only its unfinished tasks. In process, the
work folder is a hidden sibling of OUTPUT_DIR, removed at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import ExecutorConfig, PrepareDataConfig, config_to_yaml
from ..errors import ConfigError
from .card import data_fingerprint
from .task_steps import PASSES

logger = logging.getLogger(__name__)

def summary_line(card: dict, path: Path) -> str:
    read = card["steps"][0]["documents_in"]
    kept = card["split"]["train_documents"] + card["split"]["validation_documents"]
    t, v = card["train"], card["validation"]
    return (f"prepared {path}: {read:,} documents read, {kept:,} kept ({read - kept:,} in rejects/); "
            f"train {t['blocks']:,} blocks / {t['tokens']:,} tokens, validation {v['blocks']:,} blocks / "
            f"{v['tokens']:,} tokens; see {path / 'DATA_CARD.md'}")


def work_root(cfg: PrepareDataConfig) -> Path:
    return Path(cfg.executor.work_dir or f"{cfg.output_dir.rstrip('/')}.executor")


def pass_tasks(cfg: PrepareDataConfig) -> dict[str, int]:
    """Tasks per pass: one each in process; on an executor, `executor.tasks` to read and pack, `dedup_tasks` for the
    hash partitions and band groups (no more groups than bands)."""
    if cfg.executor.kind == "process":
        return dict.fromkeys(PASSES, 1)
    ex = cfg.executor
    n_bands = cfg.data.dedup.near.bands if cfg.data.dedup.near.enabled else 1
    return {"clean": ex.tasks, "exact": ex.dedup_tasks, "near": max(1, min(ex.dedup_tasks, n_bands)), "select": 1,
            "pack": ex.tasks, "merge": 1}


def check_work_dir(cfg: PrepareDataConfig, root: Path) -> None:
    """A work folder belongs to one recipe and one task count: completed tasks of another would be skipped."""
    ident = {"fingerprint": data_fingerprint(cfg.data, cfg.tokenizer), "tasks": cfg.executor.tasks,
             "dedup_tasks": cfg.executor.dedup_tasks, "output_dir": str(Path(cfg.output_dir).resolve())}
    marker = root / "recipe.json"
    if marker.is_file():
        found = json.loads(marker.read_text())
        if found != ident:
            raise ConfigError(f"{root} holds the passes of another recipe or task count ({found}); remove it to start "
                              f"over, or set executor.work_dir to a new folder")
        return
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(ident, indent=2))
    (root / "prepare_config.yaml").write_text(config_to_yaml(cfg))


def build_passes(cfg: PrepareDataConfig, root: Path) -> list:
    """The six pass objects (datatrove pipeline steps) over the recipe's sources, their work under `root`."""
    from .sources import open_source
    from .task_pack import MergeStep, PackStep
    from .task_steps import CleanStep, ExactStep, NearStep, SelectStep

    # path, format and column errors before any pass starts
    specs = [open_source(src, cfg.data.max_document_bytes) for src in cfg.data.sources]
    tasks = pass_tasks(cfg)
    return [step(cfg, specs, str(root), tasks) for step in (CleanStep, ExactStep, NearStep, SelectStep, PackStep,
                                                             MergeStep)]


def build_executors(cfg: PrepareDataConfig) -> list:
    """One datatrove executor per pass, each depending on the one before; running the last runs (or, on Slurm,
    submits) them all."""
    root = work_root(cfg)
    passes = build_passes(cfg, root)
    check_work_dir(cfg, root)
    executors: list = []
    for step in passes:
        prev = executors[-1] if executors else None
        executors.append(_executor(cfg.executor, step.name, step, step.tasks[step.name], root, prev))
    return executors


def _executor(ex: ExecutorConfig, name: str, step, tasks: int, root: Path, depends):
    logging_dir = str(root / "logs" / name)
    workers = ex.workers if ex.workers == -1 else min(ex.workers, tasks)
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor([step], tasks=tasks, workers=workers if workers != -1 else tasks,
                                     logging_dir=logging_dir, depends=depends)
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            [step], tasks=tasks, workers=workers, time=ex.time, partition=ex.partition,
            cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=ex.mem_per_cpu_gb, qos=ex.qos or "",
            job_name=f"{ex.job_name}-{name}", env_command=ex.env_command, sbatch_args=dict(ex.sbatch_args),
            logging_dir=logging_dir, depends=depends,
            depends_job_id=ex.depends_job_id if depends is None else None)
    if ex.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends,
                                   cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=ex.mem_per_cpu_gb)
    raise ConfigError(f"executor.kind={ex.kind!r} runs in this process (prepare_here), not on an executor")


def prepare_data(cfg: PrepareDataConfig) -> dict[str, Any]:
    """`scripts/prepare_data.py`: the passes in this process (`executor.kind=process`), or on datatrove's executors.
    Returns the data card (or, on Slurm, where the jobs will write it)."""
    if cfg.executor.kind != "process":
        return run_on_executor(cfg)
    started = time.perf_counter()
    prepare_here(cfg)
    out = Path(cfg.output_dir)
    card = json.loads((out / "data_card.json").read_text())
    print(summary_line(card, out) + f" ({time.perf_counter() - started:.1f} s)")
    return card


def prepare_here(cfg: PrepareDataConfig) -> None:
    """Every pass's one task, in order, in this process; the work folder (a hidden sibling of the output) is
    removed at the end, whatever happens."""
    from .sources import unwrap_generation_errors

    out = Path(cfg.output_dir)
    root = out.parent / f".{out.name}.passes-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        with unwrap_generation_errors():
            for i, step in enumerate(build_passes(cfg, root), start=1):
                logger.info("pass %d/%d %s", i, len(PASSES), step.name)
                step.run(rank=0, world_size=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_on_executor(cfg: PrepareDataConfig) -> dict[str, Any]:
    """`scripts/prepare_data.py executor.kind=...`: run (local, ray) or submit (slurm) every pass. Returns the data
    card when the passes ran here, else where the jobs will write it."""
    started = time.perf_counter()
    executors = build_executors(cfg)
    executors[-1].run()
    root = work_root(cfg)
    if cfg.executor.kind == "slurm":
        print(f"submitted {len(executors)} Slurm passes ({', '.join(PASSES)}); logs and completions in "
              f"{root / 'logs'}; the prepared folder appears at {cfg.output_dir} when the merge job ends")
        return {"submitted": [getattr(e, "job_id", None) for e in executors], "work_dir": str(root)}
    out = Path(cfg.output_dir)
    card_path = out / "data_card.json"
    if not card_path.is_file():
        raise ConfigError(f"the passes ended without writing {card_path}; see the task logs in {root / 'logs'}")
    card = json.loads(card_path.read_text())
    print(summary_line(card, out) + f" ({cfg.executor.kind} executor, {cfg.executor.tasks} tasks, "
                                    f"{time.perf_counter() - started:.1f} s)")
    return card


__all__ = ["PASSES", "build_executors", "build_passes", "pass_tasks", "prepare_data", "prepare_here",
           "run_on_executor", "work_root"]
