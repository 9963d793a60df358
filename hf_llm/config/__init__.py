"""Typed, nested, strict run configuration.

A recipe is a YAML file whose keys mirror the dataclasses below; the command line adds dotted overrides
(`train.lr=3e-4 data.seq_len=512`). Parsing, merging and type checking are done by OmegaConf structured configs;
on top of that we walk the user's keys first so that every unknown key is reported at once with the closest valid
name. The resolved config is saved next to the run's outputs and loads back to an identical object.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from ..shipped import shipped_path
from .data_steps import CleanConfig, DecontamConfig, DedupConfig
from .domains import (AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, SEED, TEXT, Checked, OneOf, Range,
                      check_values)
from .presets import preset_layers, presets_resolved


@dataclass
class ModelConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "preset": TEXT, "name_or_path": TEXT, "model_type": TEXT, "revision": TEXT,
        "attn_implementation": TEXT,  # any transformers backend name, checked when the model is built
        "pad_vocab_multiple": AT_LEAST_1,
    }

    preset: Optional[str] = "tiny"  # a name in configs/models/ or a path to a preset YAML
    name_or_path: Optional[str] = None  # an existing model (local folder or Hub id): its config, or weights to fine-tune
    model_type: Optional[str] = None  # any transformers model_type (gpt2, qwen2, mistral, ...), shaped by `overrides`
    overrides: dict[str, Any] = field(default_factory=dict)  # config attributes set on top of preset/model
    revision: Optional[str] = None  # Hub revision (branch, tag or commit) for name_or_path
    trust_remote_code: bool = False  # running a repository's code is opt-in
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 ...; sdpa is fast and packing-safe
    pad_vocab_multiple: int = 64  # round the embedding up so matmuls stay aligned when we size it from a tokenizer


@dataclass
class TokenizerConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "name_or_path": TEXT, "vocab_size": Range(64), "min_frequency": NON_NEGATIVE, "eos_token": TEXT,
        "pad_token": TEXT, "max_train_documents": AT_LEAST_1,
    }

    name_or_path: Optional[str] = None  # existing tokenizer (folder or Hub id); None trains a byte-level BPE
    vocab_size: int = 8192  # for a trained tokenizer; small vocabularies suit small models and corpora
    min_frequency: int = 2  # merges seen fewer times are noise on small corpora
    eos_token: str = "<|endoftext|>"  # separates documents in packed blocks
    pad_token: str = "<|pad|>"  # distinct from EOS so padding never hides the end-of-document target
    extra_special_tokens: list[str] = field(default_factory=list)  # e.g. chat markers, kept whole by the tokenizer
    max_train_documents: Optional[int] = None  # cap the documents used to learn merges (None = all)


@dataclass
class SourceConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "path": TEXT, "format": OneOf(("auto", "txt", "jsonl", "json", "parquet", "csv", "hub")), "text_field": TEXT,
        "txt_sample_by": OneOf(("document", "paragraph", "line")), "weight": NON_NEGATIVE, "name": TEXT, "split": TEXT,
        "revision": TEXT,
    }

    path: str = "data/sample/corpus.jsonl.gz"  # file, folder, glob, or Hub dataset id (with format: hub)
    format: str = "auto"  # auto | txt | jsonl | json | parquet | csv | hub
    text_field: str = "text"  # column holding the document text
    txt_sample_by: str = "paragraph"  # txt only: document (whole file) | paragraph (blank-line block) | line
    weight: float = 1.0  # relative share of this source in the mixture
    name: Optional[str] = None  # Hub dataset config name, and the source's label in statistics
    split: str = "train"  # Hub split
    revision: Optional[str] = None  # Hub dataset revision


PACKINGS = ("concat", "best_fit")


@dataclass
class StageConfig:
    """One phase of a staged mixture (`data.stages`): its own sources, active until a step or token boundary."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "prepared": TEXT, "until_step": AT_LEAST_1, "until_tokens": AT_LEAST_1, "name": TEXT,
    }

    sources: list[SourceConfig] = field(default_factory=list)  # this stage's mixture; weights are shares within it
    prepared: Optional[str] = None  # instead of sources: a folder from scripts/prepare_data.py (the same tokenizer)
    until_step: Optional[int] = None  # the stage ends after this many optimizer steps of the run (not of the stage)
    until_tokens: Optional[int] = None  # or after this many tokens seen, rounded up to whole steps like max_tokens
    name: Optional[str] = None  # label in logs, summary and model card; None = stage-N


@dataclass
class DataConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "prepared": TEXT, "language_min_score": FRACTION, "seq_len": Range(2),
        "validation_fraction": Range(0, 1, lo_open=True, hi_open=True),
        "max_validation_documents": AT_LEAST_1, "mix_by": OneOf(("documents", "tokens")), "num_proc": AT_LEAST_1,
        "seed": SEED, "packing": OneOf(PACKINGS), "best_fit_window": AT_LEAST_1, "max_document_bytes": AT_LEAST_1,
    }

    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    # A list of mixtures run one after the other (e.g. a main phase, then an annealing phase on better sources);
    # replaces `sources`. See hf_llm/data/stages.py.
    stages: list[StageConfig] = field(default_factory=list)
    prepared: Optional[str] = None  # a folder written by scripts/prepare_data.py (train/, validation/, tokenizer/)
    seq_len: int = 256  # tokens per packed block
    validation_fraction: float = 0.02  # share of documents held out (split by document, never inside one)
    max_validation_documents: int = 200  # cap so validation stays cheap on big corpora
    mix_by: str = "documents"  # documents | tokens: what a source weight is a share of
    num_proc: int = 1  # worker processes for datasets.map
    seed: int = 1234  # shuffling, mixing and the train/validation split
    lazy_read: bool = False  # deprecated, no effect: preparation always reads sources lazily, pass by pass (flat memory)
    stream_train: bool = False  # pretrain on sources read, split by node and packed on the fly: no packed copy on disk
    strict: bool = False  # an unreadable record (bad JSON or UTF-8, wrong type, too long, a cut file) stops the run
    # A longer document (a JSON Lines record, a txt line/paragraph/file, a text value) is rejected as too_long when
    # read, before cleaning, and a JSON Lines or txt one is never held whole: memory stays bounded by the limit.
    max_document_bytes: Optional[int] = 8 * 2**20
    packing: str = "concat"  # concat (concatenate and chunk: no padding) | best_fit (whole documents, padded)
    best_fit_window: int = 1000  # documents best_fit packs together: larger wastes less padding, costs more time
    save_documents: bool = False  # also write documents/: the kept, cleaned documents with all their columns
    clean: CleanConfig = field(default_factory=CleanConfig)  # normalisation, PII, quality filters
    dedup: DedupConfig = field(default_factory=DedupConfig)  # exact and near duplicates across all sources
    decontam: DecontamConfig = field(default_factory=DecontamConfig)  # drop documents that overlap eval sets
    # Languages to keep, as ISO 639 codes of the lid.176 model (e.g. [en, de, ja]); empty keeps every language.
    # Every document's language and score are identified (hf_llm/data/language.py) and kept as columns either way.
    languages: list[str] = field(default_factory=list)
    # Documents whose language the model names with a lower probability go to rejects/ (reason `language`):
    # mixed-language pages, code, tables. 0 keeps all; FineWeb keeps English at >= 0.65.
    language_min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.packing not in PACKINGS:
            raise ConfigError(f"data.packing must be one of {PACKINGS}, got {self.packing!r}")
        if self.best_fit_window < 1:
            raise ConfigError(f"data.best_fit_window must be at least 1, got {self.best_fit_window}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"data.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.seq_len < 2:
            raise ConfigError(f"data.seq_len must be at least 2, got {self.seq_len}")
        if not 0.0 <= self.language_min_score <= 1.0:
            raise ConfigError(f"data.language_min_score must be in [0, 1], got {self.language_min_score}")
        if self.mix_by not in ("documents", "tokens"):
            raise ConfigError(f"data.mix_by must be 'documents' or 'tokens', got {self.mix_by!r}")
        if not self.sources and not self.stages and self.prepared is None:
            raise ConfigError("data.sources is empty: name at least one source, e.g. data.sources=[{path: "
                              "corpus.jsonl}], or read a prepared folder with data.prepared=PATH")
        if self.lazy_read:
            warnings.warn("data.lazy_read (formerly data.streaming) is deprecated and has no effect: data preparation "
                          "always reads the sources lazily, pass by pass, with flat memory; remove it from the recipe",
                          FutureWarning, stacklevel=2)
        if self.stages:
            check_stages(self)
            # The default corpus stands for "no sources given"; with stages the run reads only the stages' sources,
            # and the saved config says so.
            self.sources = []


def check_stages(data: DataConfig) -> None:
    """What a list of stages must satisfy before anything is read (boundaries in tokens are resolved to steps, and
    checked against the run's length, once the tokens per step are known: hf_llm.train.stages.stage_ends)."""
    if data.sources not in ([], [SourceConfig()]):
        raise ConfigError("data.stages and data.sources are both set: with stages, each stage lists its own sources "
                          "(data.stages[i].sources); remove data.sources")
    if data.prepared is not None:
        raise ConfigError("data.prepared and data.stages are both set: name each stage's prepared folder in "
                          "data.stages[i].prepared instead")
    last = len(data.stages) - 1
    ends: dict[str, list[int]] = {"until_step": [], "until_tokens": []}
    names = [stage.name for stage in data.stages if stage.name]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.stages names must be distinct, got {names}")
    for i, stage in enumerate(data.stages):
        where = f"data.stages[{i}]"
        if not stage.sources and stage.prepared is None:
            raise ConfigError(f"{where} has no sources: give it sources: [{{path: ...}}] or prepared: PATH")
        if stage.sources and stage.prepared is not None:
            raise ConfigError(f"{where} sets both sources and prepared; keep one")
        if stage.prepared is not None and data.stream_train:
            raise ConfigError(f"{where}.prepared: data.stream_train=true reads sources; give the stage sources instead")
        given = [(k, getattr(stage, k)) for k in ends if getattr(stage, k) is not None]
        if i == last:
            if given:
                raise ConfigError(f"{where} is the last stage: it runs to the end of the run (train.max_steps / "
                                  f"train.max_tokens); remove its {given[0][0]}")
            continue
        if len(given) != 1:
            raise ConfigError(f"{where} needs exactly one boundary, until_step or until_tokens (the last stage alone "
                              f"has none)")
        key, value = given[0]
        if value < 1:
            raise ConfigError(f"{where}.{key} must be at least 1, got {value}")
        if ends[key] and value <= ends[key][-1]:
            raise ConfigError(f"data.stages boundaries must increase: {where}.{key}={value} is not after the "
                              f"previous stage's {key}={ends[key][-1]}")
        ends[key].append(value)


EXECUTOR_KINDS = ("process", "local", "slurm", "ray")


@dataclass
class ExecutorConfig:
    """Where prepare_data runs its passes: in this process, or on datatrove executors (hf_llm/data/executor.py)."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "kind": OneOf(EXECUTOR_KINDS), "tasks": AT_LEAST_1, "dedup_tasks": AT_LEAST_1, "workers": Range(1, also=(-1,)),
        "work_dir": TEXT, "partition": TEXT, "time": TEXT, "cpus_per_task": AT_LEAST_1, "mem_per_cpu_gb": POSITIVE,
        "qos": TEXT, "job_name": TEXT, "env_command": TEXT, "depends_job_id": TEXT,
    }

    kind: str = "process"  # process (in this process) | local (worker processes) | slurm | ray
    tasks: int = 4  # shards of the input files, and of the packed output; a task reads whole files
    dedup_tasks: int = 4  # exact dedup: hash partitions; near dedup: groups of LSH bands
    workers: int = -1  # tasks run at once (local: processes; slurm: array throttle; ray: actors); -1 = all
    work_dir: Optional[str] = None  # shards between passes, logs and completion markers; None = OUTPUT_DIR.executor
    # Slurm (ignored elsewhere): one array job per pass, each afterok the previous
    partition: Optional[str] = None
    time: str = "04:00:00"  # wall time of each task
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0
    qos: Optional[str] = None
    job_name: str = "hf_llm-data"  # pass jobs are JOB_NAME-clean, JOB_NAME-exact, ...
    env_command: Optional[str] = None  # e.g. "source /path/.venv/bin/activate"; run at the start of each job
    sbatch_args: dict[str, Any] = field(default_factory=dict)  # more #SBATCH lines, e.g. {account: proj}
    depends_job_id: Optional[str] = None  # the first pass waits for this job (e.g. the job that downloads data)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTOR_KINDS:
            raise ConfigError(f"executor.kind must be one of {EXECUTOR_KINDS}, got {self.kind!r}")
        if self.tasks < 1 or self.dedup_tasks < 1 or self.cpus_per_task < 1:
            raise ConfigError("executor.tasks, executor.dedup_tasks and executor.cpus_per_task must be at least 1")
        if self.kind == "slurm" and not self.partition:
            raise ConfigError("executor.kind=slurm needs executor.partition (the Slurm partition to submit to)")


@dataclass
class PrepareDataConfig:
    """`scripts/prepare_data.py`: sources → cleaned, deduplicated, tokenised, packed folder (see configs/data/)."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "output_dir": TEXT,
    }

    output_dir: str = "outputs/data/sample"  # train/ validation/ rejects/ tokenizer/ data_card.json DATA_CARD.md
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # in process, or datatrove's executors

    def __post_init__(self) -> None:
        if self.data.prepared is not None:
            raise ConfigError("data.prepared names a folder to read; prepare_data writes one (set output_dir instead)")
        if self.data.stages:
            raise ConfigError("prepare_data writes one folder; prepare each stage's sources into its own folder and "
                              "name them in the training recipe's data.stages[i].prepared")


SCHEDULES = ("cosine", "wsd", "linear", "constant")
AUTO_TRUE_FALSE = ("auto", "true", "false")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TRACKERS = ("tensorboard", "wandb", "mlflow")


def resolve_report_to(report_to: Any, tensorboard_alias: Optional[bool]) -> list[str]:
    """`train.report_to` (a list, one name, or names joined by commas; None = [tensorboard]) as the trackers to
    start: known names, no repeats, `none` alone for no tracker. The deprecated `train.tensorboard` stands for
    report_to [tensorboard] (true) or [none] (false), and may not contradict an explicit report_to."""
    if report_to is None:
        return ["tensorboard"] if tensorboard_alias in (None, True) else []
    if isinstance(report_to, str):
        report_to = report_to.split(",")
    if not isinstance(report_to, (list, tuple)):
        raise ConfigError(f"train.report_to must be a list of tracker names (e.g. [tensorboard,wandb]), "
                          f"got {report_to!r}")
    names = list(dict.fromkeys(str(n).strip().lower() for n in report_to))
    if "none" in names:
        if len(names) > 1:
            raise ConfigError(f"train.report_to={list(report_to)} mixes none with trackers; give trackers or [none]")
        names = []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"train.report_to has unknown tracker(s) {unknown}; choose from {list(TRACKERS)} or [none] "
                          f"(e.g. train.report_to=[tensorboard,wandb])")
    if tensorboard_alias is not None and tensorboard_alias != ("tensorboard" in names):
        raise ConfigError(f"train.tensorboard={str(tensorboard_alias).lower()} (deprecated) contradicts "
                          f"train.report_to={names}; remove train.tensorboard and set train.report_to alone")
    return names


@dataclass
class TrainConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "micro_batch_size": AT_LEAST_1, "grad_accum_steps": AT_LEAST_1, "global_batch_size": AT_LEAST_1,
        "max_steps": AT_LEAST_1, "max_tokens": AT_LEAST_1, "lr": POSITIVE, "min_lr_ratio": FRACTION,
        "warmup_steps": NON_NEGATIVE, "schedule": OneOf(SCHEDULES), "decay_fraction": Range(0, 1, lo_open=True),
        "weight_decay": NON_NEGATIVE, "beta1": Range(0, 1, hi_open=True), "beta2": Range(0, 1, hi_open=True),
        "eps": POSITIVE, "max_grad_norm": POSITIVE, "precision": OneOf(PRECISIONS),
        "compile": OneOf(AUTO_TRUE_FALSE, fold_case=True), "fused_loss": OneOf(AUTO_TRUE_FALSE, fold_case=True),
        "seed": SEED, "log_every": AT_LEAST_1, "save_every": AT_LEAST_1, "keep_last": AT_LEAST_1, "resume_from": TEXT,
        "init_from": TEXT, "stop_after_steps": AT_LEAST_1, "dist_timeout_minutes": POSITIVE, "cpu_threads": AT_LEAST_1,
        "peak_flops": POSITIVE, "project": TEXT,
        "report_to": Checked("tensorboard, wandb, mlflow (a list) or [none]", "no-such-tracker"),
    }

    micro_batch_size: int = 16  # sequences per forward pass per process
    grad_accum_steps: int = 1  # micro-batches per optimizer step; loss is normalised by target tokens
    global_batch_size: Optional[int] = None  # sequences per optimizer step over all processes; sets grad_accum_steps
    max_steps: Optional[int] = 200  # optimizer steps; with max_tokens, whichever comes first
    max_tokens: Optional[int] = None  # token budget (global, counting every position of every block)
    lr: float = 3e-3  # peak learning rate; small models take large rates
    min_lr_ratio: float = 0.1  # final LR as a fraction of the peak
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | linear | constant
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying at the end
    weight_decay: float = 0.1
    decay_norms_biases_embeddings: bool = False  # decoupled decay on these hurts (GPT-3/Llama practice): off
    beta1: float = 0.9
    beta2: float = 0.95  # 0.95 is the LLM norm: more stable than 0.999 with large batches
    eps: float = 1e-8
    max_grad_norm: Optional[float] = 1.0  # None disables clipping
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False  # trade ~30% compute for activation memory
    # torch.compile each decoder layer in place: auto = when the run is long enough to win back the compile time
    # (see hf_llm.train.run.resolve_compile); true | false
    compile: str = "auto"
    # auto: the loss from the final hidden state in chunks, never the full (tokens x vocab) logits, wherever the
    # model's head is a plain linear layer (less memory, same numbers); true: that or an error; false: the model's own
    fused_loss: str = "auto"
    seed: int = 1234
    log_every: int = 10
    save_every: Optional[int] = 200  # steps between checkpoints; None saves only at the end
    keep_last: int = 2  # checkpoints kept on disk (oldest removed)
    resume_from: Optional[str] = None  # latest | a checkpoint folder
    # A checkpoint of another run: start from its weights and optimizer state (not its schedule or step count), e.g.
    # to decay a stable-phase WSD checkpoint over train.max_steps; its data position is kept on the same data.
    init_from: Optional[str] = None
    overwrite_output_dir: bool = False  # a fresh run into a folder holding checkpoints deletes them (else: an error)
    stop_after_steps: Optional[int] = None  # end this invocation early (a job's time slice); the schedule is kept
    dist_timeout_minutes: float = 120.0  # collective timeout: ranks wait this long while rank 0 prepares data
    cpu_threads: Optional[int] = None  # torch threads per process on CPU; None = cores / local processes
    peak_flops: Optional[float] = None  # per device FLOP/s for MFU; None = GPU table or measured CPU peak
    # Any, not list[str]: `train.report_to=wandb` must work as well as `[wandb,mlflow]` (__post_init__ checks it).
    report_to: Any = None  # trackers: a list of tensorboard, wandb, mlflow, or [none]; None = [tensorboard]
    project: str = "hf_llm"  # wandb project, MLflow experiment, TensorBoard folder in OUTPUT_DIR/logs
    tensorboard: Optional[bool] = None  # deprecated, for old recipes: true = report_to [tensorboard], false = [none]

    def __post_init__(self) -> None:
        # Checked, not rewritten: OmegaConf also builds the default instance, and an explicit report_to must stay
        # distinguishable from the default when the deprecated flag is checked against it.
        resolve_report_to(self.report_to, self.tensorboard)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("fused_loss", "compile"):
            setattr(self, name, str(getattr(self, name)).lower())  # YAML's true/false arrive as booleans
            if getattr(self, name) not in AUTO_TRUE_FALSE:
                raise ConfigError(f"train.{name} must be one of {AUTO_TRUE_FALSE}, got {getattr(self, name)!r}")
        if self.max_steps is None and self.max_tokens is None:
            raise ConfigError("set train.max_steps or train.max_tokens (or both) so the run has a budget")
        for name in ("micro_batch_size", "grad_accum_steps", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.dist_timeout_minutes <= 0:
            raise ConfigError(f"train.dist_timeout_minutes must be > 0, got {self.dist_timeout_minutes}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}")

    @property
    def trackers(self) -> list[str]:
        """The trackers to start, from `report_to` (and the deprecated `tensorboard`); [] for none."""
        return resolve_report_to(self.report_to, self.tensorboard)


TASK_KINDS = ("multiple_choice", "cloze")


@dataclass
class TaskConfig:
    """A zero-shot task in a local JSONL file, scored during training (row formats: hf_llm/downstream.py)."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "path": TEXT, "kind": OneOf(TASK_KINDS), "name": TEXT, "limit": AT_LEAST_1,
    }

    path: str = ""  # multiple_choice rows {"context", "choices", "label"}; cloze rows {"text"} (last word = target)
    kind: str = "multiple_choice"  # multiple_choice (acc, acc_norm) | cloze (acc, perplexity of the last word)
    name: Optional[str] = None  # key in logs and cards (eval/NAME/acc); None = the file name without .jsonl
    limit: Optional[int] = None  # first N items only: each evaluation pass stays cheap

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("every entry of eval.tasks needs a path (a JSONL file, see hf_llm/downstream.py)")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"eval.tasks kind must be one of {TASK_KINDS}, got {self.kind!r} ({self.path})")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"eval.tasks limit must be at least 1, got {self.limit} ({self.path})")


@dataclass
class EvalConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "every": AT_LEAST_1, "max_batches": AT_LEAST_1, "sample_max_new_tokens": AT_LEAST_1,
        "sample_temperature": POSITIVE, "harness_limit": AT_LEAST_1, "task_batch_size": AT_LEAST_1,
    }

    every: int = 100  # steps between validation passes
    max_batches: Optional[int] = 50  # cap per pass (None = the whole validation set)
    sample_prompts: list[str] = field(default_factory=lambda: ["And it came to pass", "HACKER, n."])
    sample_max_new_tokens: int = 48
    sample_temperature: float = 0.8  # for the sampled continuation; a greedy one is shown beside it
    tasks: list[TaskConfig] = field(default_factory=list)  # zero-shot tasks scored every `every` steps; off by default
    harness_tasks: list[str] = field(default_factory=list)  # lm-evaluation-harness task names (needs lm_eval installed)
    harness_limit: Optional[int] = None  # examples per harness task and pass (None = all: slow on full benchmarks)
    task_batch_size: int = 8  # (context, continuation) pairs per forward pass when scoring tasks

    def __post_init__(self) -> None:
        if self.sample_temperature <= 0:
            raise ConfigError("eval.sample_temperature must be > 0 (a greedy continuation is always shown too)")
        if self.every < 1:
            raise ConfigError(f"eval.every must be at least 1, got {self.every}")
        if self.task_batch_size < 1:
            raise ConfigError(f"eval.task_batch_size must be at least 1, got {self.task_batch_size}")
        if self.harness_limit is not None and self.harness_limit < 1:
            raise ConfigError(f"eval.harness_limit must be at least 1, got {self.harness_limit}")


@dataclass
class HubConfig:
    """Publishing to the Hugging Face Hub. The token is never a setting: it comes from HF_TOKEN or `hf auth login`,
    so it cannot end up in a saved config or a model card."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "repo_id": TEXT, "revision": TEXT, "push_every": AT_LEAST_1, "retries": NON_NEGATIVE,
        "backoff_seconds": NON_NEGATIVE, "endpoint": TEXT,
    }

    push: bool = False  # upload the final export (model/) when the run ends
    repo_id: Optional[str] = None  # "user/name" or "org/name"; required to push
    private: bool = True  # a new repository starts private: publishing is a deliberate second step (kept if it exists)
    revision: str = "main"  # branch that receives the final export
    push_every: Optional[int] = None  # steps between background pushes of a checkpoint's export to branch step-N
    retries: int = 3  # further attempts after a failed upload: a Hub outage must not cost the run
    backoff_seconds: float = 2.0  # wait before the first retry, doubled after each failure (exponential backoff)
    endpoint: Optional[str] = None  # a private Hub or mirror; None = HF_ENDPOINT or https://huggingface.co

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ConfigError("hub.push=true needs hub.repo_id (e.g. hub.repo_id=your-name/tiny-llama)")
        if self.push_every is not None and not self.push:
            raise ConfigError("hub.push_every needs hub.push=true (and hub.repo_id)")
        if self.push_every is not None and self.push_every < 1:
            raise ConfigError(f"hub.push_every must be at least 1, got {self.push_every}")
        if self.retries < 0 or self.backoff_seconds < 0:
            raise ConfigError("hub.retries and hub.backoff_seconds must not be negative")
        if self.repo_id:
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.repo_id)
            except HFValidationError as e:
                raise ConfigError(f"hub.repo_id={self.repo_id!r} is not a valid repository id: {e}") from None


GGUF_OUTTYPES = ("f32", "f16", "q8_0")


@dataclass
class ExportConfig:
    """What the final export writes beside the safetensors folder."""

    DOMAINS: ClassVar[dict] = {"gguf": OneOf(GGUF_OUTTYPES)}  # what each field may hold (hf_llm/config/domains.py)

    # f32 | f16 | q8_0: also write model-TYPE.gguf into the export, for llama.cpp, Ollama, LM Studio (hf_llm/gguf.py;
    # Llama models with byte-level BPE tokenizers, checked before training); null = none
    gguf: Optional[str] = None



@dataclass
class EvaluateConfig:
    """`scripts/evaluate.py`: perplexity and bits per byte on held-out text, plus generation samples."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "model": TEXT, "revision": TEXT, "max_documents": AT_LEAST_1, "seq_len": Range(2), "stride": AT_LEAST_1,
        "batch_size": AT_LEAST_1, "precision": OneOf(("fp32", "bf16", "fp16")), "max_new_tokens": AT_LEAST_1,
        "temperature": POSITIVE, "top_p": Range(0, 1, lo_open=True), "seed": SEED, "output": TEXT,
    }

    model: str = "runs/tiny/model"  # an exported folder or a Hub model id
    revision: Optional[str] = None  # Hub revision: a branch such as step-400, a tag or a commit
    trust_remote_code: bool = False  # running a repository's code is opt-in
    data: list[SourceConfig] = field(default_factory=list)  # held-out text: files (txt, jsonl, ...) or format: hub
    max_documents: Optional[int] = 500  # per source, so a large held-out set stays cheap (None = all)
    seq_len: Optional[int] = None  # tokens per window; None = the model's context length, at most 4096
    stride: Optional[int] = None  # new tokens scored per window (< seq_len); the rest is context. None = seq_len // 2
    batch_size: int = 8  # windows per forward pass
    precision: str = "fp32"  # fp32 | bf16 | fp16: dtype of weights and compute
    prompts: list[str] = field(default_factory=lambda: ["And it came to pass", "HACKER, n."])
    max_new_tokens: int = 48
    temperature: float = 0.8  # for the sampled continuation; a greedy one is always written too
    top_p: float = 0.95
    seed: int = 1234  # sampled continuations repeat exactly
    output: Optional[str] = None  # results JSON; None = MODEL/eval_results.json (a folder) or ./eval_results.json
    update_model_card: bool = False  # also write the results into MODEL/README.md (model-index); folders only

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"seq_len must be at least 2, got {self.seq_len}")
        if self.stride is not None and (self.stride < 1 or (self.seq_len is not None and self.stride >= self.seq_len)):
            raise ConfigError(f"stride must be in [1, seq_len), got stride={self.stride}, seq_len={self.seq_len}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass
class RunConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "output_dir": TEXT,
    }

    output_dir: str = "runs/tiny"  # checkpoints/, model/, logs/, config.yaml go here
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        every, save = self.hub.push_every, self.train.save_every
        if every is not None and (not save or every % save):
            raise ConfigError(
                f"hub.push_every={every} must be a multiple of train.save_every={save}: a push exports a checkpoint"
            )


# Renamed keys, per config class: old name → new name. Recipes written with the old name still load (with a warning
# that names the new one); giving both is an error. The saved config.yaml always has the new name.
RENAMED_KEYS: dict[type, dict[str, str]] = {
    DataConfig: {"streaming": "lazy_read"},  # "stream" means data.stream_train only
}


def rename_deprecated_keys(user: Any, schema: type, prefix: str = "") -> Any:
    """`user` (a recipe layer as plain containers) with every deprecated key of `schema`'s tree renamed (see
    RENAMED_KEYS), warning once per key; unknown keys are left for `_check_keys` to report."""
    if not isinstance(user, dict) or not dataclasses.is_dataclass(schema):
        return user
    renamed = RENAMED_KEYS.get(schema, {})
    fields = {f.name for f in dataclasses.fields(schema)}
    out: dict[Any, Any] = {}
    for key, value in user.items():
        if key in renamed:
            new = renamed[key]
            if new in user:
                raise ConfigError(f"{prefix}{key} is the deprecated name of {prefix}{new}, and both are set; keep "
                                  f"{prefix}{new} only")
            warnings.warn(f"{prefix}{key} is deprecated: it is now {prefix}{new} (same meaning); rename it in your "
                          f"recipe", FutureWarning, stacklevel=3)
            key = new
        if key in fields:
            ftype = _field_type(schema, key)
            item = _list_item_type(schema, key)
            if dataclasses.is_dataclass(ftype):
                value = rename_deprecated_keys(value, ftype, f"{prefix}{key}.")
            elif isinstance(value, list) and item is not None:
                value = [rename_deprecated_keys(v, item, f"{prefix}{key}[{i}].") for i, v in enumerate(value)]
        out[key] = value
    return out


def _check_keys(user: Any, schema: type, prefix: str, problems: list[str]) -> None:
    """Collect every key in `user` that `schema` (a dataclass) lacks, with the closest valid names."""
    if not isinstance(user, dict) or not dataclasses.is_dataclass(schema):
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in user.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""
            problems.append(f"unknown key '{prefix}{key}'{hint} (valid: {', '.join(sorted(fields))})")
            continue
        ftype = _field_type(schema, key)
        shape = _shape_problem(f"{prefix}{key}", ftype, value)
        if shape:
            problems.append(shape)
        elif dataclasses.is_dataclass(ftype):
            _check_keys(value, ftype, f"{prefix}{key}.", problems)
        elif isinstance(value, list) and _list_item_type(schema, key) is not None:
            for i, item in enumerate(value):
                _check_keys(item, _list_item_type(schema, key), f"{prefix}{key}[{i}].", problems)


def _shape_problem(key: str, ftype: Any, value: Any) -> Optional[str]:
    """Why `value` has the wrong shape for a field of type `ftype` (a section, a list, a mapping or a single
    value), or None. OmegaConf would fail on it later with a bare TypeError that names no key."""
    import typing

    if value is None:
        return None  # whether None is allowed is OmegaConf's type check, which names the key
    hint = ftype
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]
    origin = typing.get_origin(hint)
    got = "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else f"{value!r}"
    if origin is list or hint is list:
        item = (typing.get_args(hint) or [Any])[0]
        example = f"[{{{dataclasses.fields(item)[0].name}: ...}}, ...]" if dataclasses.is_dataclass(item) else "[a,b]"
        if isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
            return (f"{_first_leaf(key, value)}: a key=value override cannot change one item of a list; give "
                    f"{key} whole, {key}={example} (a list of sections is replaced whole), or edit the recipe")
        if not isinstance(value, list):
            return f"{key} expects a list, e.g. {key}={example}; got {got}"
    elif dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        if not isinstance(value, dict):
            return (f"{key} expects a mapping (a section: {key}.KEY=value, or {key}={{KEY: value}}), got {got}")
    elif hint is not Any and isinstance(value, (dict, list)):
        return f"{key} expects a single value, got {got}"
    return None


def _first_leaf(key: str, value: Any) -> str:
    while isinstance(value, dict) and value:
        k = next(iter(value))
        key, value = f"{key}.{k}", value[k]
    return key


def _field_type(schema: type, name: str) -> Any:
    import typing

    return typing.get_type_hints(schema)[name]


def _list_item_type(schema: type, name: str) -> Optional[type]:
    import typing

    hint = _field_type(schema, name)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return item if dataclasses.is_dataclass(item) else None
    return None


def _to_container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def load_config(recipe: Optional[str | Path] = None, overrides: Optional[list[str]] = None, schema: type = RunConfig):
    """Load `schema` from an optional YAML recipe plus `key=value` overrides; strict about keys and types."""
    layers = []
    if recipe is not None:
        path = Path(shipped_path(recipe))  # from the working directory, else a shipped recipe of that name
        if not path.is_file():
            raise ConfigError(f"recipe {str(recipe)!r} does not exist; pass a YAML file (see configs/recipes/)")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as e:  # yaml errors come in several types
            raise ConfigError(f"recipe {path} is not valid YAML: {e}") from e
    dotlist = []
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. train.lr=3e-4)")
        dotlist.append(item[2:] if item.startswith("--") else item)
    if dotlist:
        layers.append(OmegaConf.from_dotlist(dotlist))
    problems: list[str] = []
    for i, layer in enumerate(layers):
        if layer is not None and not isinstance(_to_container(layer), dict):
            raise ConfigError("a recipe must be a mapping of sections (model:, data:, train:, ...)")
        if layer is not None:  # unresolved: interpolations may point into other layers
            raw = OmegaConf.to_container(layer, resolve=False)
            renamed = rename_deprecated_keys(raw, schema)
            if renamed != raw:
                layers[i] = layer = OmegaConf.create(renamed)
        _check_keys(_to_container(layer) or {}, schema, "", problems)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    try:
        user = [x for x in layers if x is not None]
        # Presets (data.clean.preset, ...) sit between the defaults and the user's layers: the user's keys win.
        merged = OmegaConf.merge(OmegaConf.structured(schema), *preset_layers(schema, user), *user)
        problems = check_values(OmegaConf.to_container(merged, resolve=True), schema)
        if problems:  # before any object is built: its __post_init__ need not cope with out-of-domain values
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        with presets_resolved():  # the merged values already hold each preset, and the user's keys won over it
            return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"invalid value for {key!r}: {str(e).splitlines()[0]}") from None


def config_to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config; it loads back with `load_config(path, schema=type(cfg))`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(cfg))
    return path


def parse_cli(argv: list[str], default_recipe: Optional[str], schema: type = RunConfig):
    """`[RECIPE.yaml] [key=value ...]` → config. `--help` prints the config tree with defaults."""
    if any(a in ("-h", "--help") for a in argv):
        print("usage: [RECIPE.yaml] [section.key=value ...]\n\nconfig keys and defaults:\n")
        print(config_to_yaml(schema()))
        raise SystemExit(0)
    recipe = default_recipe
    rest = list(argv)
    if rest and rest[0].startswith("--config"):
        first = rest.pop(0)
        recipe = first.split("=", 1)[1] if "=" in first else rest.pop(0)
    elif rest and "=" not in rest[0]:
        recipe = rest.pop(0)
    return load_config(recipe, rest, schema=schema)
