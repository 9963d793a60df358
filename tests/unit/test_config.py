from pathlib import Path

import pytest
import yaml

from hf_llm.config import RunConfig, load_config, parse_cli, save_config
from hf_llm.errors import ConfigError
from hf_llm.model import build_model_config, list_presets
from hf_llm.config import ModelConfig

REPO = Path(__file__).resolve().parents[2]


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["train.lr=3e-4", "data.seq_len=512", "model.overrides.hidden_size=64",
                             "data.sources=[{path: a.txt, weight: 2.0}, {path: b.jsonl, text_field: body}]"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.sources[1].text_field == "body"
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg


def test_overrides_win_over_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 0.1\n  max_steps: 5\n")
    cfg = load_config(recipe, ["train.lr=0.2"])
    assert cfg.train.lr == 0.2 and cfg.train.max_steps == 5


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    from hf_llm.finetune import FinetuneRunConfig

    schema = FinetuneRunConfig if recipe.name.startswith("finetune_") else RunConfig
    cfg = load_config(recipe, schema=schema)
    assert isinstance(cfg, schema)
    if cfg.model.name_or_path is None:  # fine-tuning recipes name a model that an earlier stage writes
        build_model_config(cfg.model)


@pytest.mark.parametrize("preset", list_presets())
def test_every_model_preset_loads(preset):
    assert build_model_config(ModelConfig(preset=preset)).model_type


def test_every_shipped_yaml_parses():
    for path in (REPO / "configs").rglob("*.yaml"):
        assert yaml.safe_load(path.read_text()) is not None, path


def test_typo_names_the_right_key():
    with pytest.raises(ConfigError, match=r"train\.lrr'; did you mean train\.lr\?"):
        load_config(None, ["train.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"did you mean train\b"):
        load_config(None, ["trian.lr=1e-3"])
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.path"):
        load_config(None, ["data.sources=[{pth: x.txt}]"])


def test_typo_in_recipe_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  micro_batch: 4\n")
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(recipe)


def test_wrong_type_and_bad_values():
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(None, ["train.micro_batch_size=abc"])
    with pytest.raises(ConfigError, match="schedule"):
        load_config(None, ["train.schedule=triangle"])
    with pytest.raises(ConfigError, match="budget"):
        load_config(None, ["train.max_steps=null"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["train.lr"])


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/recipe.yaml")


def test_parse_cli_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: x\n")
    assert parse_cli([str(recipe), "train.lr=0.5"], None).train.lr == 0.5
    assert parse_cli(["--config", str(recipe)], None).output_dir == "x"
    assert parse_cli(["train.lr=0.5"], str(recipe)).output_dir == "x"


def test_a_renamed_key_loads_under_its_old_name_with_a_warning(tmp_path, monkeypatch):
    """Every RENAMED_KEYS entry: the old name (recipe or override, at any depth) sets the new field and warns; the
    saved config has the new name; both names at once is an error."""
    import dataclasses

    from hf_llm import config as config_module
    from hf_llm.config import RENAMED_KEYS, DataConfig, PrepareDataConfig

    assert RENAMED_KEYS[DataConfig] == {"streaming": "lazy_read"}
    for cls, names in RENAMED_KEYS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(names.values()) <= fields and not set(names) & fields, cls  # old names are no fields any more
    with pytest.warns(FutureWarning, match=r"data.streaming is deprecated: it is now data.lazy_read"):
        cfg = load_config(None, ["data.streaming=true"])
    assert cfg.data.lazy_read is True
    recipe = tmp_path / "old.yaml"
    recipe.write_text("data:\n  streaming: true\n  seq_len: 64\n")
    with pytest.warns(FutureWarning, match="data.streaming"):
        cfg = load_config(recipe, ["data.seq_len=32"], schema=PrepareDataConfig)
    assert cfg.data.lazy_read is True and cfg.data.seq_len == 32
    saved = yaml.safe_load(save_config(cfg, tmp_path / "saved.yaml").read_text())
    assert saved["data"]["lazy_read"] is True and "streaming" not in saved["data"]
    with pytest.raises(ConfigError, match="both are set"):
        load_config(None, ["data.streaming=true", "data.lazy_read=false"])
    # The mechanism is generic: a rename inside a list of dataclasses (data.stages[i]) works the same way.
    from hf_llm.config import StageConfig

    monkeypatch.setitem(config_module.RENAMED_KEYS, StageConfig, {"until": "until_step"})
    with pytest.warns(FutureWarning, match=r"data.stages\[0\].until is deprecated"):
        cfg = load_config(None, ["data.stages=[{sources: [{path: a.txt}], until: 3}, {sources: [{path: b.txt}]}]"])
    assert cfg.data.stages[0].until_step == 3
