"""Fine-tuning end to end on CPU, the way a user goes: pretrain the tiny model, LoRA-tune the exported folder on the
chat sample, then check the adapter, the merged model and the full fine-tuning path; plus the clear errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_llm.config import load_config
from hf_llm.errors import ConfigError
from hf_llm.errors import DataError
from hf_llm.finetune import FinetuneRunConfig, check_qlora_available, run_finetuning
from hf_llm.sft import DEFAULT_CHAT_TEMPLATE, build_sft_datasets
from hf_llm.train.collate import PaddingCollator

from ..conftest import REPO, reset_accelerate_state

RECIPE = REPO / "configs" / "recipes" / "finetune_lora_tiny.yaml"
CHAT = REPO / "tests" / "data" / "chat_sample.jsonl"


@pytest.fixture(scope="module")
def base_model(tiny_base_model) -> Path:
    """The session's tiny pretrained model (conftest: 12 steps at a high LR, so its embeddings leave their initial
    scale)."""
    return tiny_base_model


def _overrides(out: Path, base: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={out}", f"model.name_or_path={base}", f"data.sources=[{{path: '{CHAT}'}}]",
        "sft.max_length=128", "train.micro_batch_size=8", "train.max_steps=40", "train.lr=2e-2",
        "train.warmup_steps=10", "train.save_every=null", "train.log_every=10", "eval.every=40",
        "train.tensorboard=false", "train.precision=fp32", *extra,
    ]


def _finetune(out: Path, base: Path, *extra: str) -> dict:
    return run_finetuning(load_config(RECIPE, _overrides(out, base, *extra), schema=FinetuneRunConfig))


@pytest.fixture(scope="module")
def lora_run(base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "lora"
    cfg = load_config(RECIPE, _overrides(out, base_model), schema=FinetuneRunConfig)
    assert cfg.adapter.method == "lora" and cfg.adapter.merge  # what the shipped recipe asks for
    summary = run_finetuning(cfg)
    reset_accelerate_state()
    return cfg, summary, out


def _eval_losses(cfg, tokenizer_dir: Path, model) -> dict[str, float]:
    """evaluate_loss (the loop's own) on the run's train and validation examples."""
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from hf_llm.train.loop import evaluate_loss
    from hf_llm.train.stages import build_eval_loader

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    data = build_sft_datasets(cfg.data, cfg.sft, tok)
    acc = Accelerator(cpu=True)
    collate = PaddingCollator(tok.pad_token_id)
    return {split: evaluate_loss(acc, model, build_eval_loader(getattr(data, split), 8, collate))[0]
            for split in ("train", "validation")}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


def test_lora_lowers_the_loss_and_trains_only_the_adapter(lora_run, base_model):
    from peft import PeftModel

    cfg, summary, out = lora_run
    adapter = out / "adapter"
    before = _eval_losses(cfg, adapter, _load(base_model))
    after = _eval_losses(cfg, adapter, PeftModel.from_pretrained(_load(base_model), str(adapter)).eval())
    print(f"\neval loss before {before}, after {after}")
    assert after["validation"] < before["validation"] - 0.1, (before, after)
    assert after["train"] < before["train"] - 0.1, (before, after)
    assert summary["final_val_loss"] == pytest.approx(after["validation"], abs=1e-4)

    # The base weights inside the trained model (its last checkpoint) are bit-identical to the pretrained export.
    base = load_file(str(base_model / "model.safetensors"))
    trained = load_file(str(out / "checkpoints" / f"step-{summary['steps']}" / "model.safetensors"))
    lora = {k: v for k, v in trained.items() if ".lora_" in k}
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in trained.items() if k not in lora}
    assert frozen.keys() == base.keys()
    for name, tensor in base.items():
        assert torch.equal(frozen[name], tensor), f"{name} changed"
    assert any(k.endswith("lora_B.default.weight") and v.abs().sum() > 0 for k, v in lora.items())  # B starts at 0

    # Trainable parameters: reported, and exactly the adapter's tensors.
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    n_adapter = sum(v.numel() for v in saved.values())
    assert summary["trainable_parameters"] == n_adapter == sum(v.numel() for v in lora.values())
    assert summary["total_parameters"] == n_adapter + sum(v.numel() for v in base.values())
    assert 0 < summary["trainable_fraction"] < 1


def test_outputs_name_base_data_and_template(lora_run, base_model):
    from transformers import AutoTokenizer

    _, summary, out = lora_run
    adapter = out / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_model)
    card = (adapter / "README.md").read_text()
    assert f"base_model: {base_model}" in card and "chat_sample" in card
    assert "sft.chat_template (the tokenizer had none)" in card and "AutoPeftModelForCausalLM" in card
    # The merged folder is a plain model (its logits equal the live adapted model's: tests/matrix/test_export_matrix).
    merged_dir = Path(summary["merged_dir"])
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "model.safetensors").is_file()
    assert "AutoPeftModelForCausalLM" not in (merged_dir / "README.md").read_text()
    # Both jobs name the hardware alike (fine-tuning's card once said "CPU" where pretraining's named the CPU).
    pretrained = (base_model / "README.md").read_text().splitlines()
    (hardware,) = [line for line in pretrained if line.startswith("| hardware")]
    assert hardware in card.splitlines()
    tok = AutoTokenizer.from_pretrained(str(adapter))
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE  # inference renders prompts as training did
    saved = json.loads((out / "summary.json").read_text())
    assert saved["chat_template_source"] == summary["chat_template_source"] and "pad_token" in saved
    assert saved["data"]["sources"]["chat_sample"]["format"] == "messages"
    assert load_config(out / "config.yaml", schema=FinetuneRunConfig).adapter.merge


def test_full_finetuning_with_packing_exports_a_model(base_model, tmp_path):
    out = tmp_path / "full"
    summary = _finetune(out, base_model, "adapter.method=full", "adapter.merge=false", "sft.packing=true",
                        "train.max_steps=3", "eval.every=3", "train.lr=1e-3")
    assert summary["trainable_parameters"] == summary["total_parameters"]
    assert summary["data"]["train"]["rows"] < summary["data"]["train"]["examples"]  # several examples per row
    before = load_file(str(base_model / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert _load(out / "model").config.model_type == "llama"


def test_nonexistent_base_model(tmp_path):
    with pytest.raises(ConfigError, match="does not exist or has no config.json"):
        _finetune(tmp_path / "o", tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="model.name_or_path is required"):
        run_finetuning(load_config(RECIPE, ["model.name_or_path=null"], schema=FinetuneRunConfig))
    assert not (tmp_path / "o").exists()  # failed before creating anything


def test_script_exits_2_with_the_message(tmp_path, capsys):
    from hf_llm.cli import run_cli

    code = run_cli(run_finetuning, str(RECIPE), [f"model.name_or_path={tmp_path / 'nope'}"], FinetuneRunConfig)
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_qlora_without_cuda_fails_before_loading_weights(base_model, tmp_path, monkeypatch):
    import hf_llm.finetune as finetune

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(finetune, "load_pretrained", no_loading)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        _finetune(tmp_path / "q", base_model, "adapter.method=qlora")
    assert not (tmp_path / "q").exists()


def test_qlora_without_bitsandbytes(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="needs the bitsandbytes package"):
        check_qlora_available()


def test_missing_column_is_reported_with_the_columns(base_model, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(4)))
    with pytest.raises(DataError, match=r"its columns are \['question', 'answer'"):
        _finetune(tmp_path / "o", base_model, f"data.sources=[{{path: '{data}'}}]", "sft.format=prompt_completion")


@pytest.mark.parametrize("override, message", [
    ("adapter.method=prefix", "adapter.method must be one of"),
    ("adapter.target_modules=5", "target_modules must be 'all-linear' or a list"),
    ("sft.overflow=cut", "sft.overflow must be one of"),
    ("sft.format=sharegpt", "sft.format must be one of"),
    ("sft.max_lenght=64", "did you mean sft.max_length"),
])
def test_bad_settings(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RECIPE, [override], schema=FinetuneRunConfig)


def test_shipped_recipe_loads():
    cfg = load_config(RECIPE, schema=FinetuneRunConfig)
    assert cfg.model.name_or_path == "runs/tiny/model" and cfg.sft.format == "messages"
    assert cfg.sft.chat_template == DEFAULT_CHAT_TEMPLATE and cfg.adapter.target_modules == "all-linear"


def test_dora_and_listed_target_modules():
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_llm.finetune import apply_adapter, count_trainable

    cfg = load_config(RECIPE, ["adapter.use_dora=true", "adapter.target_modules=[q_proj,v_proj]", "adapter.r=4"],
                      schema=FinetuneRunConfig)
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]
    def tiny():
        return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2))

    model = tiny()
    total = sum(p.numel() for p in model.parameters())
    peft_model = apply_adapter(model, cfg.adapter)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n for n in names) and any("magnitude" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}
    trainable, all_params = count_trainable(peft_model)
    assert trainable == sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad)
    assert all_params == total + trainable
    with pytest.raises(ConfigError, match=r"linear layers are \[.*'q_proj'"):
        apply_adapter(tiny(), load_config(RECIPE, ["adapter.target_modules=[nope]"], schema=FinetuneRunConfig).adapter)
