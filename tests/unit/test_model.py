import pytest

from hf_llm.config import ModelConfig
from hf_llm.errors import ConfigError
from hf_llm.estimate import parameter_counts as analytic_count
from hf_llm.estimate import shape_from_config
from hf_llm.model import build_model, build_model_config, count_parameters, list_presets


@pytest.mark.parametrize("preset", list_presets())
def test_preset_parameter_count_matches_transformers(preset):
    config = build_model_config(ModelConfig(preset=preset))
    reported = count_parameters(config)
    assert reported == analytic_count(shape_from_config(config))["total"]


def test_7b_preset_is_llama2_7b():
    assert count_parameters(build_model_config(ModelConfig(preset="7b"))) == 6_738_415_616


def test_vocab_from_tokenizer_is_rounded_up():
    config = build_model_config(ModelConfig(preset="tiny"), vocab_size=1000, special_token_ids={"eos_token_id": 3})
    assert config.vocab_size == 1024 and config.eos_token_id == 3


def test_other_model_types_by_name():
    config = build_model_config(ModelConfig(preset=None, model_type="gpt2", overrides={"n_layer": 2, "n_embd": 64, "n_head": 2}))
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config)


def test_bad_model_choices():
    with pytest.raises(ConfigError, match="not found"):
        build_model_config(ModelConfig(preset="42t"))
    with pytest.raises(ConfigError, match="unknown model_type"):
        build_model_config(ModelConfig(preset=None, model_type="notamodel"))
    with pytest.raises(ConfigError, match="did you mean num_hidden_layers"):
        build_model_config(ModelConfig(preset="tiny", overrides={"num_hidden_layer": 2}))
