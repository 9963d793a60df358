"""Model and dataset cards: metadata that round-trips through huggingface_hub, the content both training jobs put
in them, and the pictures they reference."""

from hf_llm.cards import render_model_card


def test_model_card_metadata_round_trips():
    from huggingface_hub import ModelCard

    text = render_model_card(
        "tiny", "llama", 1234, {"sources": {"web": {"documents_in": 3}}, "train": {"tokens": 10, "seq_len": 8}},
        {"tokens_seen": 10, "median_mfu": 0.01}, {"final_val_loss": 2.0}, "train:\n  lr: 0.001\n",
        repo_id="me/tiny", datasets=["HuggingFaceFW/fineweb"], loss_curve="loss_curve.png",
        metrics=[{"metric": "perplexity", "value": 7.39, "dataset": "held out", "dataset_type": "web",
                  "split": "validation"}],
    )
    card = ModelCard(text)
    assert card.data.datasets == ["HuggingFaceFW/fineweb"] and card.data.model_name == "tiny"
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("perplexity", 7.39, "validation")
    assert ModelCard(str(card)).data.to_dict() == card.data.to_dict()
