"""Model and dataset cards: metadata that round-trips through huggingface_hub, the content both training jobs put
in them, and the pictures they reference."""

import configparser
import re

import jinja2
import pytest

from hf_llm.cards import (LEARNING_RATE, LOSS_CURVE, PICTURES, TEMPLATES, model_card_pictures, render_data_card,
                          render_model_card)

from ..conftest import REPO


def test_model_card_metadata_round_trips():
    from huggingface_hub import ModelCard

    text = render_model_card(
        "tiny", "llama", 1234, {"sources": {"web": {"documents_in": 3}}, "train": {"tokens": 10, "seq_len": 8}},
        {"tokens_seen": 10, "median_mfu": 0.01}, {"final_val_loss": 2.0}, "train:\n  lr: 0.001\n",
        repo_id="me/tiny", datasets=["HuggingFaceFW/fineweb"], pictures=["loss_curve.png"],
        metrics=[{"metric": "perplexity", "value": 7.39, "dataset": "held out", "dataset_type": "web",
                  "split": "validation"}],
    )
    card = ModelCard(text)
    assert card.data.datasets == ["HuggingFaceFW/fineweb"] and card.data.model_name == "tiny"
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("perplexity", 7.39, "validation")
    assert ModelCard(str(card)).data.to_dict() == card.data.to_dict()


def test_the_templates_ship_with_the_package():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    patterns = setup["options.package_data"]["hf_llm"].split()
    templates = sorted(p.relative_to(TEMPLATES.parent) for p in TEMPLATES.iterdir())
    assert templates and all(any(p.match(pattern) for pattern in patterns) for p in templates)


def pictures_in(markdown: str) -> set[str]:
    return set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown))


def test_a_card_shows_the_pictures_its_export_ships():
    history = [{"step": 1, "loss": 3.0, "lr": 1e-3, "tokens_seen": 64},
               {"step": 2, "loss": 2.5, "lr": 5e-4, "tokens_seen": 128},
               {"step": 2, "val_loss": 2.7}]
    for points, expected in ((history, {LOSS_CURVE, LEARNING_RATE}), (history[2:], {LOSS_CURVE}), ([], set())):
        files = model_card_pictures(points)
        assert set(files) == expected and set(files) <= set(PICTURES)
        text = render_model_card("tiny", "llama", 1, {}, {"steps": 2}, {}, "a: 1", pictures=files)
        assert pictures_in(text) == expected


def test_a_data_card_missing_a_measurement_fails_rather_than_rendering_blank():
    with pytest.raises(jinja2.UndefinedError):
        render_data_card({"train": {}, "validation": {}})
