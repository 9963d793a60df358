"""prepare_data's passes in process and on datatrove's executors: the same kept documents and rejects for any
number of tasks, restartable passes, Slurm job scripts (without a cluster), and Ray when it is installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hf_llm.config import PrepareDataConfig, load_config
from hf_llm.data import executor as ex
from hf_llm.data import task_pack, task_steps
from hf_llm.data.pipeline import load_prepared

from ..conftest import sample_documents
from benchmarks.corpora import edit_words
from .test_language import JA, SAMPLES, _edit_chars



def write_corpus(root: Path, n: int = 140, files: int = 6) -> Path:
    """Real documents spread over `files` files, plus exact copies (case and spacing changed), near copies (5% of
    words edited), documents the filters reject and a malformed line: every step has something to drop."""
    rng = np.random.default_rng(0)
    docs = [d["text"] for d in sample_documents(n)]
    vocab = " ".join(docs[:20]).split()
    rows = [{"text": t, "id": i} for i, t in enumerate(docs)]
    rows += [{"text": "  " + docs[i].upper() + "\n", "id": 1000 + i} for i in range(0, 30, 3)]
    rows += [{"text": edit_words(docs[i], 0.05, rng, vocab), "id": 2000 + i} for i in range(1, 40, 4)]
    rows += [{"text": "buy now " * 40, "id": 3000}, {"text": "short", "id": 3001}]
    # other languages (the recipes below keep en and ja): a Japanese page, its copy with 5% of characters edited,
    # a German page (reason "language")
    rows += [{"text": JA, "id": 4000}, {"text": _edit_chars(JA, 0.05, seed=1), "id": 4001},
             {"text": SAMPLES["de"] * 6, "id": 4002}]
    order = rng.permutation(len(rows))
    lines = [json.dumps(rows[k]) for k in order] + ["{not json"]
    folder = root / "corpus"
    folder.mkdir()
    for f in range(files):
        (folder / f"part-{f}.jsonl").write_text("\n".join(lines[f::files]) + "\n")
    return folder


def prepare_config(corpus: Path, out: Path, *extra: str) -> PrepareDataConfig:
    return load_config(None, [f"output_dir={out}", f"data.sources=[{{path: '{corpus}'}}]", "data.seq_len=64",
                              "data.save_documents=true", "tokenizer.vocab_size=400", "data.languages=[en,ja]", *extra],
                       schema=PrepareDataConfig)


LOCAL = ("executor.kind=local", "executor.tasks=4", "executor.workers=2", "executor.dedup_tasks=2")


def rows(folder: Path, part: str, columns: tuple[str, ...]) -> list[tuple]:
    from datasets import load_from_disk

    ds = load_from_disk(str(folder / part))
    return sorted(zip(*(ds[c] for c in columns)))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The same corpus prepared in process (the default: one task per pass) and on the local executor with 1 and 4
    tasks (2 worker processes)."""
    root = tmp_path_factory.mktemp("executor")
    corpus = write_corpus(root)
    ex.prepare_data(prepare_config(corpus, root / "inproc"))
    for tasks in (1, 4):
        ex.prepare_data(prepare_config(corpus, root / f"local{tasks}", "executor.kind=local", f"executor.tasks={tasks}",
                                       "executor.workers=2", "executor.dedup_tasks=2"))
    return root, corpus


@pytest.mark.parametrize("tasks", [1, 4])
def test_any_number_of_tasks_keeps_and_rejects_what_the_default_does(prepared, tasks):
    root, _ = prepared
    a, b = root / "inproc", root / f"local{tasks}"
    docs = ("origin", "text", "split", "language", "language_score")
    rejects = ("origin", "reason", "detail", "text", "language", "language_score")
    assert rows(b, "documents", docs) == rows(a, "documents", docs)  # same documents, same validation hold-out
    assert rows(b, "rejects", rejects) == rows(a, "rejects", rejects)  # same reasons, same "duplicate of ..."
    reasons = {r[1] for r in rows(b, "rejects", rejects)}
    assert {"exact_dup", "near_dup", "malformed", "language"} <= reasons
    assert reasons - {"exact_dup", "near_dup", "malformed", "language"}
    card, ref = (json.loads((p / "data_card.json").read_text()) for p in (b, a))
    assert card["languages"]["ja"]["documents_out"] == 1 and card["languages"]["de"]["documents_out"] == 0
    en = card["languages"]["en"]  # fertility of the trained tokenizer: tokens per character and per word
    assert 0 < en["tokens_per_character"] < 1 < en["tokens_per_word"] and en["tokens_out"] > 0
    assert "executor" not in ref
    per_task = card.pop("executor")["per_task"]
    assert len(per_task) == tasks and all(t["read"] == t["kept"] + t["rejected"] for t in per_task)
    assert sum(t["read"] for t in per_task) == card["steps"][0]["documents_in"]
    assert sum(t["rejected"] for t in per_task) == card["rejected_documents"] == card["rejects_rows"]
    volatile = ("timings_seconds", "config")  # seconds; output_dir
    if tasks == 1:  # one task packs every document as the default does: the same blocks, the same card
        from datasets import load_from_disk

        for split in ("train", "validation"):
            assert load_from_disk(str(b / split))[:] == load_from_disk(str(a / split))[:], split
        assert {k: v for k, v in card.items() if k not in volatile} == \
            {k: v for k, v in ref.items() if k not in volatile}
        return
    for key in ("rejections", "split", "duplicate_clusters", "filters", "sources", "token_length_histogram",
                "languages"):
        assert card[key] == ref[key], key
    # every document's tokens are packed exactly once: only the tails cut at each task's end differ
    for split in ("train", "validation"):
        assert card[split]["tokens"] == ref[split]["tokens"]


def test_clean_workers_change_nothing(prepared, tmp_path, monkeypatch):
    """data.num_proc=2: the clean pass cleans batches in 2 worker processes and writes them in order."""
    from datasets import load_from_disk

    root, corpus = prepared
    monkeypatch.setattr(task_steps, "BATCH", 16)  # ~10 batches: windows of 4, so order across windows matters
    ex.prepare_data(prepare_config(corpus, tmp_path / "np2", "data.num_proc=2"))
    for part in ("documents", "rejects", "train", "validation"):
        assert load_from_disk(str(tmp_path / "np2" / part))[:] == load_from_disk(str(root / "inproc" / part))[:], part


def test_executor_output_is_a_prepared_folder_of_shards(prepared):
    root, _ = prepared
    prep = load_prepared(root / "local4")
    assert len(prep.train) == json.loads((root / "local4" / "data_card.json").read_text())["train"]["blocks"]
    assert len(list((root / "local4" / "train").glob("data-*-of-00004.arrow"))) == 4
    assert len(prep.train[0]["input_ids"]) == 64 and len(prep.validation) > 0
    assert prep.tokenizer.get_vocab() == load_prepared(root / "inproc").tokenizer.get_vocab()


def test_killed_pass_reruns_only_its_unfinished_tasks(tmp_path, monkeypatch, prepared):
    _, corpus = prepared
    cfg = prepare_config(corpus, tmp_path / "out", "executor.kind=local", "executor.tasks=4", "executor.workers=1",
                         "executor.dedup_tasks=2")
    original = task_pack.PackStep.work

    def killed(self, rank, world):
        if rank == 2:  # dies midway: after tokenising, while its shard files are half written
            original_finish = task_pack.save
            monkeypatch.setattr(task_pack, "save", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
            try:
                return original(self, rank, world)
            finally:
                monkeypatch.setattr(task_pack, "save", original_finish)
        return original(self, rank, world)

    monkeypatch.setattr(task_pack.PackStep, "work", killed)
    with pytest.raises(RuntimeError, match="killed"):
        ex.prepare_data(cfg)
    work = ex.work_root(cfg)
    done = sorted(p.name for p in (work / "logs" / "pack" / "completions").iterdir())
    assert done == ["00000", "00001"]
    assert not (work / "work" / "pack" / "00002").exists() and not (tmp_path / "out").exists()
    assert not list((work / "work" / "pack").glob(".00002.tmp-*"))  # the half-written output is removed
    first = {p: p.stat().st_mtime_ns for p in (work / "work" / "clean").glob("*/keys.pkl")}
    kept = (work / "work" / "pack" / "00000" / "stats.pkl").stat().st_mtime_ns

    monkeypatch.setattr(task_pack.PackStep, "work", original)
    card = ex.prepare_data(cfg)  # the same command again
    assert {p: p.stat().st_mtime_ns for p in first} == first  # completed passes were skipped
    assert (work / "work" / "pack" / "00000" / "stats.pkl").stat().st_mtime_ns == kept  # so were finished tasks
    assert not list((work / "work" / "pack").glob(".*.tmp-*"))
    docs = rows(tmp_path / "out", "documents", ("origin", "text", "split"))
    assert len({d[0] for d in docs}) == len(docs)  # no document twice
    assert docs == rows(prepared[0] / "local4", "documents", ("origin", "text", "split"))
    assert card["steps"][0]["documents_in"] == len(docs) + card["rejected_documents"]


def test_work_dir_of_another_recipe_is_refused(tmp_path, prepared):
    _, corpus = prepared
    ex.check_work_dir(prepare_config(corpus, tmp_path / "out", *LOCAL), tmp_path / "w")
    with pytest.raises(Exception, match="another recipe"):
        ex.check_work_dir(prepare_config(corpus, tmp_path / "out", *LOCAL, "data.seq_len=32"), tmp_path / "w")


def test_slurm_passes_are_array_jobs_each_after_the_previous(tmp_path, monkeypatch, prepared):
    import dill
    from datatrove.executor import slurm

    _, corpus = prepared
    submitted: list[tuple[str, tuple]] = []

    def sbatch(contents, retriever, *args):
        submitted.append((contents, args))
        return str(1000 + len(submitted))

    monkeypatch.setattr(slurm, "launch_slurm_job", sbatch)
    cfg = prepare_config(corpus, tmp_path / "out", "executor.kind=slurm", "executor.partition=cpu",
                         "executor.tasks=8", "executor.workers=3", "executor.cpus_per_task=4", "executor.time=02:00:00",
                         "executor.mem_per_cpu_gb=3", "executor.job_name=prep", "executor.sbatch_args={account: proj}",
                         "executor.env_command='source /opt/venv/bin/activate'", "executor.depends_job_id=77")
    result = ex.prepare_data(cfg)
    jobs = [(c, a, str(1001 + i)) for i, (c, a) in enumerate(submitted) if "launch_pickled_pipeline" in c]
    assert [next(l for l in c.splitlines() if "--job-name" in l).split("=")[1] for c, _, _ in jobs] == \
        [f"prep-{s}" for s in ex.PASSES]
    previous = "77"
    for (contents, args, job_id), name in zip(jobs, ex.PASSES):
        tasks = {"clean": 8, "pack": 8, "exact": 4, "near": 4}.get(name, 1)
        for line in ("--partition=cpu", "--cpus-per-task=4", "--time=02:00:00", "--mem-per-cpu=3.0G",
                     "--account=proj", f"--array=0-{tasks - 1}%{min(3, tasks)}"):
            assert f"#SBATCH {line}" in contents, (name, line)
        assert "source /opt/venv/bin/activate" in contents
        assert f"--dependency=afterok:{previous}" in args, (name, args)
        previous = job_id
    assert result["work_dir"] == str(ex.work_root(cfg))
    with open(ex.work_root(cfg) / "logs" / "clean" / "executor.pik", "rb") as f:  # what each array task unpickles
        step = dill.load(f).pipeline[0]
    assert isinstance(step, task_steps.CleanStep) and step.cfg.data == cfg.data


@pytest.mark.slow
def test_ray_executor_matches_the_local_one(tmp_path, prepared):
    ray = pytest.importorskip("ray")  # not in the CI install (a ~80 MB wheel); the README gives the command
    root, corpus = prepared
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ex.prepare_data(prepare_config(corpus, tmp_path / "ray", "executor.kind=ray", "executor.tasks=4",
                                       "executor.workers=2", "executor.dedup_tasks=2", "executor.mem_per_cpu_gb=0.5"))
    finally:
        ray.shutdown()
    docs = ("origin", "text", "split")
    assert rows(tmp_path / "ray", "documents", docs) == rows(root / "local4", "documents", docs)


def test_executor_config_is_checked():
    with pytest.raises(Exception, match="executor.kind"):
        load_config(None, ["executor.kind=spark"], schema=PrepareDataConfig)
    with pytest.raises(Exception, match="partition"):
        load_config(None, ["executor.kind=slurm"], schema=PrepareDataConfig)


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[2] / "configs" / "data").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_data_recipes_load_and_move_to_a_cluster_unchanged(recipe):
    from hf_llm.data.pipeline import data_fingerprint

    here = load_config(recipe, schema=PrepareDataConfig)
    there = load_config(recipe, ["executor.kind=slurm", "executor.partition=cpu", "executor.tasks=512"],
                        schema=PrepareDataConfig)
    assert data_fingerprint(here.data, here.tokenizer) == data_fingerprint(there.data, there.tokenizer)


def test_weighted_sources_with_tasks_that_hold_no_file_of_one(tmp_path, prepared):
    """Two sources of one file each on 2 tasks: each task has an empty chunk; the upsampled mixture is as in process."""
    _, corpus = prepared
    sources = f"data.sources=[{{path: '{corpus}/part-0.jsonl'}}, {{path: '{corpus}/part-1.jsonl', weight: 2}}]"
    cards = [ex.prepare_data(prepare_config(corpus, tmp_path / name, sources, *extra)) for name, extra in
             (("inproc", ()), ("local", ("executor.kind=local", "executor.tasks=2", "executor.workers=1",
                                         "executor.dedup_tasks=1")))]
    assert cards[1]["mixture"] == cards[0]["mixture"]
    assert cards[0]["mixture"]["sources"]["part-1"]["mixture_passes"] == 2
    docs = ("origin", "text", "split")
    assert rows(tmp_path / "local", "documents", docs) == rows(tmp_path / "inproc", "documents", docs)


def test_slurm_resubmission_runs_only_unfinished_tasks(tmp_path, monkeypatch, prepared):
    from datatrove.executor import slurm

    _, corpus = prepared
    submitted: list[str] = []
    monkeypatch.setattr(slurm, "launch_slurm_job", lambda contents, *a: submitted.append(contents) or "1")
    cfg = prepare_config(corpus, tmp_path / "out", "executor.kind=slurm", "executor.partition=cpu", "executor.tasks=8")
    done = ex.work_root(cfg) / "logs" / "clean" / "completions"
    done.mkdir(parents=True)
    for rank in (0, 1, 5):  # what a first submission finished before its jobs were cancelled
        (done / f"{rank:05d}").touch()
    ex.prepare_data(cfg)
    clean = next(c for c in submitted if "--job-name=hf_llm-data-clean" in c)
    assert "#SBATCH --array=0-4" in clean
    ranks = json.loads((ex.work_root(cfg) / "logs" / "clean" / "ranks_to_run.json").read_text())
    assert ranks == [2, 3, 4, 6, 7]

