"""The checks that need a CUDA GPU, in one command (<= ~8 minutes on one H100/H200), printing one JSON summary:

1. throughput: the 125m preset, bf16, packed data, through hf_llm's loop with SDPA and (if flash-attn installs)
   flash attention, and through the run_clm Trainer recipe: tokens/s, MFU against the GPU's datasheet peak, ratio
   (benchmarks/bench_train.py's machinery, fewer steps);
2. flash_packing_parity: a packed micro-batch > 1 under flash attention gives each document's logits alone;
3. ZeRO-3 and FSDP2 through the shipped accelerate configs (1 process), 20 steps: loss falls, export == live, and
   the run states the strategy it was launched with (ZeRO-3, FSDP2);
4. QLoRA (bitsandbytes) for 10 steps on a small pretrained export: loss falls, the adapter loads with PEFT;
5. FSDP2 + LoRA: 10 LoRA steps through configs/accelerate/fsdp.yaml on the same export: loss falls, the run states
   FSDP2, the adapter loads with PEFT and the merged model exports;
6. train.compile=true (regional): export == live.

    python benchmarks/gpu_check.py [--only throughput,parity,zero3,fsdp2,qlora,fsdp2_lora,compile]

It installs what it needs with pip (flash-attn, bitsandbytes, liger-kernel), never torch; a check whose package
does not install is reported as skipped with the reason. Without a GPU it stops at once with a clear message.
Nothing CUDA-only is imported at module level, so tests can import this file anywhere.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("throughput", "parity", "zero3", "fsdp2", "qlora", "fsdp2_lora", "compile")  # --only's default: all
# A token id window for export == live: logits of the live model (inside the job) and of the exported folder.
PROBE_SHAPE = (2, 32)


def flash_packing_parity(device: str = "cuda", varlen: bool = True, micro_batch: int = 4, seq_len: int = 128) -> float:
    """Max |logit difference| between each document of a packed micro-batch under flash_attention_2 and the same
    document alone.

    `varlen=True` is the batch the pretraining and SFT collators build for flash (rows plus varlen kwargs): the
    difference is bf16 noise. `varlen=False` is the batch of several rows flash used to get, where documents of a
    row attend to each other: the difference is the leak, a measure of the check's sensitivity.
    """
    import numpy as np
    import torch
    from transformers import LlamaConfig

    from hf_llm.data.pack import make_packer
    from hf_llm.model import build_model
    from hf_llm.train.collate import PackedCollator

    eos, pad, vocab = 1, 2, 1024  # ids 3.. are text, so EOS and PAD only mark boundaries
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(3, vocab, int(n)), eos) for n in rng.integers(4, seq_len // 2, 6 * micro_batch)]
    packer = make_packer("best_fit", seq_len, vocab, pad)  # documents of varied lengths and padding tails
    parts = [packer.add(np.concatenate(docs), np.array([len(d) for d in docs])), packer.finish()]
    rows = [{k: np.concatenate([p[k] for p in parts])[r].tolist() for k in parts[0]} for r in range(micro_batch)]
    batch = PackedCollator(eos, pad, varlen=varlen)(rows)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=eos, pad_token_id=pad)
    model = build_model(config, "flash_attention_2", dtype=torch.bfloat16).to(device).eval()
    worst = 0.0
    with torch.no_grad():
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits.float().reshape(micro_batch, seq_len, -1)
        for r, row in enumerate(rows):
            starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [seq_len]
            for a, b in zip(starts, starts[1:]):
                if row["input_ids"][a] == pad:
                    continue  # the padding tail
                alone = model(input_ids=torch.tensor([row["input_ids"][a:b]], device=device), use_cache=False)
                worst = max(worst, (logits[r, a:b] - alone.logits.float()[0]).abs().max().item())
    return worst


@functools.lru_cache(maxsize=None)  # one attempt per package per run: a failed build is not retried
def pip_install(module: str, spec: str, timeout: int = 150) -> str | None:
    """Import `module`, installing `spec` with pip if needed, torch held at the installed version (a resolver that
    upgraded it would pull a different CUDA build). None when importable, else why not."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return None
    import torch

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pin:
        pin.write(f"torch=={torch.__version__}\n")
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "-c", pin.name, spec]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"pip install {spec} took over {timeout} s"
    if done.returncode != 0:
        return f"pip install {spec} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    importlib.invalidate_caches()
    return None if importlib.util.find_spec(module) is not None else f"{module} not importable after pip install"


def throughput(steps: int = 30, batch: int = 8, seq_len: int = 1024) -> dict:
    """(1) hf_llm (SDPA, and flash attention when it installs) against the Trainer recipe on the 125m preset."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_train as bench

    from hf_llm.estimate import lookup_gpu_peak

    results: dict = {"gpu": torch.cuda.get_device_name()}
    peak = lookup_gpu_peak(results["gpu"], "bf16")
    results["peak_flops_bf16"] = peak
    liger = pip_install("liger_kernel", "liger-kernel")  # the chunked loss's CUDA kernel, used when it agrees
    results["liger_kernel"] = "installed" if liger is None else f"not used: {liger}"
    flash = pip_install("flash_attn", "flash-attn")
    attentions = ["sdpa"] + (["flash_attention_2"] if flash is None else [])
    if flash is not None:
        results["flash_attention_2"] = f"skipped: {flash}"
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    a = argparse.Namespace(quick=False, steps=steps, steps_d512=steps, batch=batch, seq_len=seq_len, vocab=32000,
                           precision="bf16", compile="false", held_out_bytes=60_000, extra=[], peak=peak)
    prep_dir, train_file, held = bench.prepare_corpus(a, "bundled", work)
    for attention in attentions:
        a.extra = [f"model.attn_implementation={attention}"]
        results[attention] = bench.run_case(a, "bundled", "125m", work / attention, prep_dir, train_file, held)
    return results


def launched_pretraining(out: Path, overrides: list[str]) -> None:
    """Inside `accelerate launch`: pretrain, recording the live model's logits on the object handed to the export
    (every wrapper included), then compare them with the exported folder's; results in OUT/gpu_check.json."""
    import torch

    import hf_llm.pretrain as job
    from hf_llm.config import load_config

    ids = torch.randint(3, 500, PROBE_SHAPE, generator=torch.Generator().manual_seed(0))
    seen: dict = {}
    real = job.export_model

    def export_model(accelerator, model, *args, **kwargs):
        was = model.training
        model.eval()
        with torch.no_grad():
            seen["live"] = model(input_ids=ids.to(accelerator.device), use_cache=False).logits.float().cpu()
        model.train(was)
        return real(accelerator, model, *args, **kwargs)

    job.export_model = export_model
    summary = job.run_pretraining(load_config(None, [f"output_dir={out}", *overrides]))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of this path on a CPU machine
    exported = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        logits = exported(input_ids=ids.to(device), use_cache=False).logits.float().cpu()
    losses = [p["loss"] for p in summary["history"] if "loss" in p]
    (out / "gpu_check.json").write_text(json.dumps({
        "first_loss": losses[0], "last_loss": losses[-1], "loss_falls": losses[-1] < losses[0],
        "export_vs_live_max_logit_diff": (logits - seen["live"]).abs().max().item(),
        "fused_loss": summary.get("fused_loss"), "peak_memory_bytes": summary.get("peak_memory_bytes"),
        "strategy": summary.get("strategy"),
    }))


TINY_RUN = ["train.max_steps=20", "train.micro_batch_size=8", "train.warmup_steps=4", "train.log_every=2",
            "train.save_every=null", "train.report_to=[none]", "eval.every=20", "eval.sample_prompts=[]",
            "train.precision=bf16"]
# bf16 compute on both sides of export == live: the live logits come from bf16 weights under ZeRO/FSDP mixed
# precision, the export's from its fp32 copy, so they agree to bf16 rounding, not to 1e-5.
BF16_LOGIT_TOLERANCE = 0.1


def repo_env() -> dict:
    """The environment of a launched job: this checkout first on the path, offline (nothing is downloaded)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def launch(name: str, accelerate_config: str | None, overrides: list[str], timeout: int = 240,
           tolerance: float = BF16_LOGIT_TOLERANCE, strategy: str | None = None) -> dict:
    """Pretrain under `accelerate launch` (1 process); ok when the loss falls, export == live within `tolerance`,
    and the run ran `strategy` (when given): a launch config silently replaced would otherwise pass."""
    out = Path(tempfile.mkdtemp(prefix=f"gpu_check-{name}-"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    if accelerate_config:
        cmd += ["--config_file", str(REPO / "configs" / "accelerate" / accelerate_config)]
    cmd += [__file__, "--launched", str(out), *overrides]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=repo_env())
    if done.returncode != 0 or not (out / "gpu_check.json").exists():
        return {"ok": False, "error": done.stderr.strip()[-2000:]}
    result = json.loads((out / "gpu_check.json").read_text())
    result["ok"] = (result["loss_falls"] and result["export_vs_live_max_logit_diff"] <= tolerance
                    and strategy in (None, result["strategy"]))
    return {**result, "output_dir": str(out)}


@functools.lru_cache(maxsize=None)  # one base for the QLoRA and FSDP2 + LoRA cells
def tiny_base() -> dict:
    """A tiny pretrained export (20 steps) for the adapter cells."""
    return launch("adapter-base", None, TINY_RUN)


def finetune_lora(name: str, accelerate_config: str | None, overrides: list[str], timeout: int = 300) -> dict:
    """10 adapter steps on the chat sample from `tiny_base()` (1 process, under `accelerate_config` when given):
    loss falls and the adapter loads with PEFT. Returns the result, with the summary's strategy."""
    base = tiny_base()
    if not base.get("ok"):
        return {"ok": False, "error": "pretraining the base failed", "base": base}
    base_dir = Path(base["output_dir"]) / "model"
    out = Path(tempfile.mkdtemp(prefix=f"gpu_check-{name}-"))
    head = [sys.executable]
    if accelerate_config:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--config_file",
                str(REPO / "configs" / "accelerate" / accelerate_config)]
    cmd = [*head, "scripts/finetune.py", "configs/recipes/finetune_lora_tiny.yaml", f"output_dir={out}",
           f"model.name_or_path={base_dir}", "train.max_steps=10", "train.log_every=1", "train.save_every=null",
           "eval.every=10", "train.report_to=[none]", *overrides]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=repo_env())
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr.strip()[-2000:]}
    summary = json.loads((out / "summary.json").read_text())
    losses = [p["loss"] for p in summary["history"] if "loss" in p]
    from peft import AutoPeftModelForCausalLM

    loaded = AutoPeftModelForCausalLM.from_pretrained(str(out / "adapter"))
    return {"ok": losses[-1] < losses[0], "first_loss": losses[0], "last_loss": losses[-1],
            "strategy": summary.get("strategy"), "adapter_loads_with_peft": type(loaded).__name__,
            "output_dir": str(out)}


def qlora() -> dict:
    """(4) 10 QLoRA steps on the tiny export: loss falls, the adapter loads with PEFT."""
    why = pip_install("bitsandbytes", "bitsandbytes")
    if why is not None:
        return {"ok": False, "skipped": why}
    return finetune_lora("qlora", None, ["adapter.method=qlora", "adapter.merge=false"])


def fsdp2_lora() -> dict:
    """(5) 10 LoRA steps under configs/accelerate/fsdp.yaml: loss falls, the run states FSDP2, the adapter loads
    with PEFT and the merged model (folded on the main process) loads with transformers."""
    result = finetune_lora("fsdp2-lora", "fsdp.yaml", ["adapter.method=lora", "adapter.merge=true"])
    if "output_dir" not in result:
        return result
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(Path(result["output_dir"]) / "merged"))
    result["merged_loads"] = type(merged).__name__
    result["ok"] = result["ok"] and result["strategy"] == "FSDP2"
    return result


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))  # run as a script, from anywhere
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--launched"]:
        launched_pretraining(Path(argv[1]), argv[2:])
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(CHECKS))
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"error": "benchmarks/gpu_check.py needs a CUDA GPU and none is visible "
                                   "(torch.cuda.is_available() is False); run it on a GPU machine"}))
        return 2
    started, results = time.perf_counter(), {}
    checks = {
        "throughput": throughput,
        "parity": lambda: ({"skipped": why} if (why := pip_install("flash_attn", "flash-attn")) else
                           {"flash_packing_parity": flash_packing_parity(),
                            "flash_packing_leak_without_varlen": flash_packing_parity(varlen=False)}),
        "zero3": lambda: launch("zero3", "zero3.yaml", TINY_RUN, strategy="ZeRO-3"),
        "fsdp2": lambda: launch("fsdp2", "fsdp.yaml", TINY_RUN, strategy="FSDP2"),
        "qlora": qlora,
        "fsdp2_lora": fsdp2_lora,
        # fp32 master weights on one GPU: the live logits and the export's agree to fp32 rounding.
        "compile": lambda: launch("compile", None, [*TINY_RUN, "train.compile=true"], tolerance=1e-4),
    }
    for name in a.only.split(","):
        try:
            results[name] = checks[name]()
        except Exception as e:  # one failing check must not hide the others' results
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
