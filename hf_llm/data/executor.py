"""prepare_data on datatrove's executors (local processes, Slurm, Ray): the same steps, sharded into tasks.

`executor.kind=local|slurm|ray` runs the recipe's data section as six datatrove stages, each an executor whose
pipeline is one of our steps (hf_llm.data.task_steps, task_pack); every stage waits for the one before (Slurm:
`afterok`):

    clean  (executor.tasks)       read a contiguous shard of every source's files; `clean_keys_batch` on each batch
                                  → cleaned rows (Arrow) + keys (`collect_keys`) + MinHash signatures, per task
    exact  (executor.dedup_tasks) exact dedup on a hash partition: `find_exact_duplicates` over the keys whose hash
                                  falls in it (copies share a hash, so they meet in one partition)
    near   (executor.dedup_tasks) a group of LSH bands: the band keys and buckets of `dedup.py` over every exact
                                  survivor, candidate pairs verified by their estimated Jaccard
    selection   (1 task)               connected components of the pairs, then `select_documents` (decontamination,
                                  validation held out by document), `select_mixture`, the tokenizer
    pack   (executor.tasks)       `tokenize_documents` and the emission pass of emit.py per task: rejects/ rows with
                                  reason and detail, packed train/validation blocks, statistics
    merge  (1 task)               the prepared folder: the tasks' shards as train/ validation/ rejects/ (linked,
                                  not copied), the tokenizer, and the data card from the tasks' statistics

Documents keep the in-process order (source by source, file by file) through the stages, so every global decision
(the first copy is kept, the validation draw) is the in-process one: the same documents are kept and rejected
for the same reasons. Only the packed blocks differ: each task packs its own documents.

Between stages everything lives under `executor.work_dir` (default OUTPUT_DIR.executor): logs/STAGE/ is datatrove's
logging folder (completions/, logs/, stats/), work/STAGE/ the tasks' outputs. A task writes into a temporary
folder renamed into place when complete, and datatrove marks it complete after that: a stage killed midway and
run again with the same command redoes only its unfinished tasks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import ExecutorConfig, PrepareDataConfig, config_to_yaml
from ..errors import ConfigError
from .pipeline import data_fingerprint, summary_line

STAGES = ("clean", "exact", "near", "select", "pack", "merge")


def work_root(cfg: PrepareDataConfig) -> Path:
    return Path(cfg.executor.work_dir or f"{cfg.output_dir.rstrip('/')}.executor")


def stage_tasks(cfg: PrepareDataConfig, n_bands: int) -> dict[str, int]:
    ex = cfg.executor
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
            raise ConfigError(f"{root} holds the stages of another recipe or task count ({found}); remove it to start "
                              f"over, or set executor.work_dir to a new folder")
        return
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(ident, indent=2))
    (root / "prepare_config.yaml").write_text(config_to_yaml(cfg))


def build_executors(cfg: PrepareDataConfig) -> list:
    """One datatrove executor per stage, each depending on the one before; running the last runs (or, on Slurm,
    submits) them all."""
    from .sources import open_source
    from .task_pack import MergeStep, PackStep
    from .task_steps import CleanStep, ExactStep, NearStep, SelectStep

    step_classes = {"clean": CleanStep, "exact": ExactStep, "near": NearStep, "select": SelectStep, "pack": PackStep,
                    "merge": MergeStep}

    # path, format and column errors before any job starts
    specs = [open_source(src, cfg.data.max_document_bytes) for src in cfg.data.sources]
    root = work_root(cfg)
    check_work_dir(cfg, root)
    n_bands = cfg.data.dedup.near.bands if cfg.data.dedup.near.enabled else 1
    tasks = stage_tasks(cfg, n_bands)
    executors: list = []
    for stage in STAGES:
        step = step_classes[stage](cfg, specs, str(root), tasks)
        prev = executors[-1] if executors else None
        executors.append(_executor(cfg.executor, stage, step, tasks[stage], root, prev))
    return executors


def _executor(ex: ExecutorConfig, stage: str, step, tasks: int, root: Path, depends):
    logging_dir = str(root / "logs" / stage)
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
            job_name=f"{ex.job_name}-{stage}", env_command=ex.env_command, sbatch_args=dict(ex.sbatch_args),
            logging_dir=logging_dir, depends=depends,
            depends_job_id=ex.depends_job_id if depends is None else None)
    if ex.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor([step], tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends,
                                   cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=ex.mem_per_cpu_gb)
    raise ConfigError(f"executor.kind={ex.kind!r} runs in this process (hf_llm.data.pipeline), not on an executor")


def prepare_data(cfg: PrepareDataConfig) -> dict[str, Any]:
    """`scripts/prepare_data.py`: in this process (`executor.kind=process`), or as datatrove stages."""
    if cfg.executor.kind == "process":
        from .pipeline import run_prepare_data

        return run_prepare_data(cfg)
    return run_on_executor(cfg)


def run_on_executor(cfg: PrepareDataConfig) -> dict[str, Any]:
    """`scripts/prepare_data.py executor.kind=...`: run (local, ray) or submit (slurm) every stage. Returns the data
    card when the stages ran here, else where the jobs will write it."""
    started = time.perf_counter()
    executors = build_executors(cfg)
    executors[-1].run()
    root = work_root(cfg)
    if cfg.executor.kind == "slurm":
        print(f"submitted {len(executors)} Slurm stages ({', '.join(STAGES)}); logs and completions in "
              f"{root / 'logs'}; the prepared folder appears at {cfg.output_dir} when the merge job ends")
        return {"submitted": [getattr(e, "job_id", None) for e in executors], "work_dir": str(root)}
    out = Path(cfg.output_dir)
    card_path = out / "data_card.json"
    if not card_path.is_file():
        raise ConfigError(f"the stages ended without writing {card_path}; see the task logs in {root / 'logs'}")
    card = json.loads(card_path.read_text())
    print(summary_line(card, out) + f" ({cfg.executor.kind} executor, {cfg.executor.tasks} tasks, "
                                    f"{time.perf_counter() - started:.1f} s)")
    return card


__all__ = ["STAGES", "build_executors", "prepare_data", "run_on_executor", "stage_tasks", "work_root"]
