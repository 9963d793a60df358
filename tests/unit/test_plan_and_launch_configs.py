import json
from pathlib import Path

import pytest
import yaml

from hf_llm.config import ModelConfig, TrainConfig, load_config
from hf_llm.errors import ConfigError
from hf_llm.planner import PlanConfig, make_plan, run_plan
from hf_llm.train.run import resolve_accumulation

REPO = Path(__file__).resolve().parents[2]
RECIPE_OWNED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_configs_leave_recipe_values_auto(path):
    ds = json.loads(path.read_text())
    for key in RECIPE_OWNED:
        assert ds[key] == "auto", f"{path.name}: {key} duplicates a recipe value"
    assert ds["bf16"]["enabled"] == "auto" and ds["fp16"]["enabled"] == "auto"
    if ds["zero_optimization"]["stage"] == 3:
        # Export gathers full weights from the shards; DeepSpeed refuses unless this is on.
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_point_at_shipped_files(path):
    cfg = yaml.safe_load(path.read_text())
    ds_file = cfg.get("deepspeed_config", {}).get("deepspeed_config_file")
    if ds_file:
        assert (REPO / ds_file).is_file()
    assert cfg["distributed_type"] in ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED")
    if cfg["distributed_type"] == "FSDP":
        assert cfg["fsdp_config"]["fsdp_version"] == 2


def test_global_batch_must_split_over_processes():
    assert resolve_accumulation(TrainConfig(micro_batch_size=4, global_batch_size=32), world=2) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_accumulation(TrainConfig(micro_batch_size=4, global_batch_size=30), world=2)


def test_plan_7b_numbers_and_recommendation():
    p = make_plan(PlanConfig(model=ModelConfig(preset="7b"), seq_len=4096, gpu="H100", gpus=16, nodes=2, hours=72))
    assert p["parameters"] == 6_738_415_616
    assert p["chinchilla_tokens_for_model"] == pytest.approx(21 * 6_738_415_616)
    assert p["training_days"] == pytest.approx(3.0)  # the budget's tokens take exactly the budget's time
    ddp = [r for r in p["memory_rows"] if r["strategy"] == "ddp"][0]
    assert not ddp["fits"]  # 16 bytes/parameter of model states alone exceed 80 GB
    assert p["recommendation"]["strategy"] != "ddp"


def test_plan_writes_a_loadable_launch(tmp_path):
    run_plan(PlanConfig(model=ModelConfig(preset="1b"), gpus=8, write_dir=str(tmp_path)))
    recipe = load_config(tmp_path / "recipe.yaml")
    assert recipe.model.preset == "1b" and recipe.train.max_tokens > 0
    launch = yaml.safe_load((tmp_path / "accelerate.yaml").read_text())
    assert launch["num_processes"] == 8


def test_plan_rejects_unknown_gpu():
    with pytest.raises(ConfigError, match="unknown GPU"):
        make_plan(PlanConfig(gpu="X100"))
