"""SFT data: formats, completion-only masks from rendered positions, length limits, packing, padding, grouping."""

import copy
import json
from pathlib import Path

import pytest
import torch

from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig
from hf_llm.errors import DataError
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.sft import (
    DEFAULT_CHAT_TEMPLATE, SFTConfig, alpaca_messages, build_sft_datasets, check_messages, encode_conversation,
    fit_length, pack_examples, complete_tokenizer,
)
from hf_llm.train.collate import IGNORE_INDEX, PackedCollator, PaddingCollator
from hf_llm.train.samplers import LengthGroupedSampler

CHAT = Path(__file__).resolve().parents[1] / "data" / "chat_sample.jsonl"
EOS = "<|endoftext|>"

# A template with plain-text markers: " Assistant:" after a user message tokenises unlike "Assistant:" alone.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ ' Assistant: ' + m['content'] + eos_token }}"
    "{% elif m['role'] == 'system' %}{{ m['content'] + '\n' }}{% else %}{{ 'User: ' + m['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ ' Assistant:' }}{% endif %}"
)
# The default template with {% generation %} marks around what is trained: transformers builds the mask itself.
GENERATION_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def base_tokenizer():
    """A byte-level BPE learned from the chat sample (no chat template, pad distinct from EOS)."""
    texts = [m["content"] for line in CHAT.read_text().splitlines() for m in json.loads(line)["messages"]]
    texts += [f"User: {t} Assistant: {t}" for t in texts]  # so " Assistant" (with its space) becomes one token
    return train_bpe_tokenizer(texts * 3, TokenizerConfig(vocab_size=400, min_frequency=2))


@pytest.fixture
def tok(base_tokenizer):
    t = copy.deepcopy(base_tokenizer)
    complete_tokenizer(t, DEFAULT_CHAT_TEMPLATE)
    return t


def trained_runs(tok, ids, labels) -> list[str]:
    """Decoded maximal runs of target tokens (labels equal the ids where trained)."""
    runs, current = [], []
    for i, label in zip(ids, labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == i
            current.append(i)
    if current:
        runs.append(current)
    return [tok.decode(r) for r in runs]


def test_single_turn_trains_the_answer_and_its_eos(tok):
    messages = check_messages([{"role": "user", "content": "What is two plus three?"},
                               {"role": "assistant", "content": "Two plus three is five."}])
    ids, labels = encode_conversation(tok, messages)
    assert trained_runs(tok, ids, labels) == ["Two plus three is five." + EOS]
    assert labels[-1] == tok.eos_token_id  # the model learns to stop
    assert tok.decode(ids).startswith("<|user|>\nWhat is two plus three?" + EOS + "<|assistant|>\n")


def test_multi_turn_trains_every_assistant_turn_and_nothing_else(tok):
    messages = check_messages([
        {"role": "system", "content": "Keep every answer short."},
        {"role": "user", "content": "Name a vegetable."}, {"role": "assistant", "content": "A carrot."},
        {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "A potato."},
    ])
    ids, labels = encode_conversation(tok, messages)
    assert trained_runs(tok, ids, labels) == ["A carrot." + EOS, "A potato." + EOS]
    untrained = tok.decode([i for i, label in zip(ids, labels) if label == IGNORE_INDEX])
    assert "Keep every answer short." in untrained and "Another?" in untrained


def test_system_message_is_never_a_target(tok):
    messages = check_messages([{"role": "system", "content": "You are a maths tutor."},
                               {"role": "user", "content": "Is nine prime?"},
                               {"role": "assistant", "content": "No, three divides it."}])
    ids, labels = encode_conversation(tok, messages)
    assert trained_runs(tok, ids, labels) == ["No, three divides it." + EOS]
    ids_all, labels_all = encode_conversation(tok, messages, completion_only=False)
    assert ids_all == ids and labels_all[0] == IGNORE_INDEX and all(x != IGNORE_INDEX for x in labels_all[1:])


def test_pad_equal_to_eos_keeps_the_closing_eos_a_target(base_tokenizer):
    t = copy.deepcopy(base_tokenizer)
    t.pad_token = None
    notes = complete_tokenizer(t, DEFAULT_CHAT_TEMPLATE)
    assert t.pad_token_id == t.eos_token_id and "pad = eos" in notes["pad_token"]
    assert "had none" in notes["chat_template"]
    short = encode_conversation(t, check_messages([{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello."}]))
    long = encode_conversation(t, check_messages([{"role": "user", "content": "What do bees make?"},
                                                  {"role": "assistant", "content": "Bees make honey and wax."}]))
    batch = PaddingCollator(t.pad_token_id)([{"input_ids": i, "labels": y} for i, y in (short, long)])
    n = len(short[0])
    assert batch["labels"][0, n - 1] == t.eos_token_id  # the real EOS: a target
    assert (batch["input_ids"][0, n:] == t.eos_token_id).all()  # padding with the same id ...
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (batch["attention_mask"][0, n:] == 0).all()  # ... is not
    assert batch["attention_mask"][1].all()


def test_marker_that_tokenises_differently_in_context(tok):
    tok.chat_template = PLAIN_TEMPLATE
    messages = check_messages([{"role": "user", "content": "What do bees make?"},
                               {"role": "assistant", "content": "Bees make honey and wax."},
                               {"role": "user", "content": "And wasps?"},
                               {"role": "assistant", "content": "Wasps make no honey."}])
    ids, labels = encode_conversation(tok, messages)
    marker = tok("Assistant:", add_special_tokens=False)["input_ids"]
    windows = [ids[i:i + len(marker)] for i in range(len(ids) - len(marker) + 1)]
    assert marker not in windows  # searching for the marker's ids would find no answer at all
    assert trained_runs(tok, ids, labels) == [" Bees make honey and wax." + EOS, " Wasps make no honey." + EOS]


def test_generation_marks_and_rendered_prefixes_agree(tok):
    messages = check_messages([{"role": "user", "content": "Name a big cat."},
                               {"role": "assistant", "content": "A lion."},
                               {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "A tiger."}])
    by_prefix = encode_conversation(tok, messages)
    tok.chat_template = GENERATION_TEMPLATE
    by_marks = encode_conversation(tok, messages)
    assert by_marks == by_prefix


def test_length_limits():
    ids, labels = list(range(10)), [IGNORE_INDEX] * 4 + list(range(4, 10))
    assert fit_length(ids, labels, 16, "truncate") == (ids, labels, "ok")
    assert fit_length(ids, labels, 6, "truncate") == (ids[:6], labels[:6], "truncated")
    assert fit_length(ids, labels, 6, "drop") == ([], [], "dropped")
    assert fit_length(ids, labels, 4, "truncate")[2] == "no_targets"  # the prompt alone fills max_length


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _data(path: Path) -> DataConfig:
    return DataConfig(sources=[SourceConfig(path=str(path))], validation_fraction=0.25)


def _all(data) -> list[tuple[list[int], list[int]]]:
    return [(r["input_ids"], r["labels"]) for d in (data.train, data.validation) for r in d]


def test_truncation_and_drop_are_counted(tok, tmp_path):
    long_answer = " ".join(["A banana is a yellow fruit."] * 20)
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": long_answer if i < 2 else "Short."}]} for i in range(8)]
    path = _write(tmp_path / "c.jsonl", rows)
    cut = build_sft_datasets(_data(path), SFTConfig(max_length=40, overflow="truncate"), tok)
    assert cut.stats["sources"]["c"] == {"format": "messages", "rows": 8, "examples": 8, "truncated": 2, "dropped": 0,
                                         "no_targets": 0}
    assert max(len(ids) for ids, _ in _all(cut)) == 40
    dropped = build_sft_datasets(_data(path), SFTConfig(max_length=40, overflow="drop"), tok)
    assert dropped.stats["sources"]["c"]["dropped"] == 2 and len(_all(dropped)) == 6


def test_prompt_completion_and_alpaca_map_to_turns(tok, tmp_path):
    assert alpaca_messages("Sum these.", "2 and 3", "5") == [
        {"role": "user", "content": "Sum these.\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    assert alpaca_messages("Say hi.", "", "Hi.")[0]["content"] == "Say hi."
    pc = _write(tmp_path / "pc.jsonl", [{"prompt": f"Count to {i}.", "completion": f"Up to {i}."} for i in range(4)])
    data = build_sft_datasets(_data(pc), SFTConfig(), tok)
    assert data.stats["sources"]["pc"]["format"] == "prompt_completion"
    for ids, labels in _all(data):
        text = tok.decode(ids)
        n = text.split("Count to ")[1][0]
        assert text.startswith(f"<|user|>\nCount to {n}.{EOS}<|assistant|>\n")
        assert trained_runs(tok, ids, labels) == [f"Up to {n}.{EOS}"]
    al = _write(tmp_path / "al.jsonl",
                [{"instruction": "Add.", "input": f"{i} and 1", "output": f"{i + 1}."} for i in range(4)])
    data = build_sft_datasets(_data(al), SFTConfig(), tok)
    assert data.stats["sources"]["al"]["format"] == "alpaca"
    for ids, labels in _all(data):
        i = int(tok.decode(ids).split("\n\n")[1].split(" ")[0])
        assert tok.decode(ids).startswith(f"<|user|>\nAdd.\n\n{i} and 1{EOS}")
        assert trained_runs(tok, ids, labels) == [f"{i + 1}.{EOS}"]
    txt = _write(tmp_path / "t.jsonl", [{"text": f"Plain document {i}."} for i in range(4)])
    data = build_sft_datasets(_data(txt), SFTConfig(), tok)
    assert data.stats["sources"]["t"]["format"] == "text"
    assert all(labels[1:] == ids[1:] and ids[-1] == tok.eos_token_id for ids, labels in _all(data))


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}], "unknown role 'bot'"),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}], "empty assistant message"),
    ([{"role": "user", "content": "Hi"}], "no assistant message"),
    ([{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hello"}], "starts with an assistant"),
    ([{"role": "user", "content": ["a", "b"]}, {"role": "assistant", "content": "Hi"}], "content of type list"),
    ([], "non-empty list"),
])
def test_bad_conversations(messages, message):
    with pytest.raises(DataError, match=message):
        check_messages(messages)


def test_bad_row_names_source_and_row(tok, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}] * 3
    rows.append({"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "Beep"}]})
    with pytest.raises(DataError, match=r"source 'bad', row 3: message 1 has unknown role 'robot'"):
        build_sft_datasets(_data(_write(tmp_path / "bad.jsonl", rows)), SFTConfig(), tok)


def test_missing_column_lists_the_columns(tok, tmp_path):
    path = _write(tmp_path / "x.jsonl", [{"conversation": [], "id": 1}])
    with pytest.raises(DataError, match=r"no column 'messages'; its columns are \['conversation', 'id'\]"):
        build_sft_datasets(_data(path), SFTConfig(format="messages"), tok)
    with pytest.raises(DataError, match=r"cannot tell the format.*\['conversation', 'id'\]"):
        build_sft_datasets(_data(path), SFTConfig(), tok)
    pc = _write(tmp_path / "p.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"no column 'completion'; its columns are \['prompt', 'answer'"):
        build_sft_datasets(_data(pc), SFTConfig(format="prompt_completion"), tok)


def test_packing_restarts_positions_and_keeps_examples_apart(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    pairs = [("Hi?", "Hello."), ("What do bees make?", "Honey."), ("Name a cat.", "A lion is a big cat.")]
    examples = [encode_conversation(tok, check_messages([{"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}])) for q, a in pairs]
    packed = pack_examples(examples, 64, tok.pad_token_id)
    flat = sorted(tuple(ids) for ids, _ in examples)
    found = []
    for ids, labels, pos in zip(packed["input_ids"], packed["labels"], packed["position_ids"]):
        assert len(ids) == len(labels) == len(pos) == 64
        starts = [i for i, p in enumerate(pos) if p == 0] + [64]
        found += [tuple(ids[a:b]) for a, b in zip(starts, starts[1:]) if ids[a] != tok.pad_token_id]
    assert sorted(found) == flat  # every example once, each starting at position 0
    # Same isolation as pretraining: a packed row's logits equal each example run alone.
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    rows = [{k: packed[k][r] for k in packed} for r in range(len(packed["input_ids"]))]
    batch = PackedCollator(tok.eos_token_id, tok.pad_token_id)(rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        checked = 0
        for r in range(len(batch["input_ids"])):
            pos = batch["position_ids"][r].tolist()
            starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
            for a, b in zip(starts, starts[1:]):
                ids = batch["input_ids"][r, a:b]
                if ids[0] == tok.pad_token_id:
                    continue  # the padding tail
                alone = model(input_ids=ids[None], use_cache=False).logits[0]
                assert torch.allclose(logits[r, a:b], alone, atol=1e-5)
                checked += 1
    assert checked == len(examples)


def test_padded_batch_loss_is_the_mean_over_targets(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    rows = [dict(zip(("input_ids", "labels"), encode_conversation(tok, check_messages(
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}])))) for q, a in
        [("Hi?", "Hello there."), ("What is the largest ocean on Earth?", "The Pacific.")]]
    with torch.no_grad():
        batch = PaddingCollator(tok.pad_token_id)(rows)
        summed = model(**batch, use_cache=False, num_items_in_batch=torch.tensor(1.0)).loss
        alone = [model(**PaddingCollator(tok.pad_token_id)([r]), use_cache=False,
                       num_items_in_batch=torch.tensor(1.0)).loss for r in rows]
    assert torch.allclose(summed, sum(alone), atol=1e-4)


def test_length_grouped_sampler_is_a_seeded_permutation_of_similar_lengths():
    lengths = [(i * 37) % 101 for i in range(203)]
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=3, group_batches=8)
    first = list(sampler)
    assert sorted(first) == list(range(203)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    batches = [first[i:i + 4] for i in range(0, 200, 4)]
    spread = sum(max(lengths[j] for j in b) - min(lengths[j] for j in b) for b in batches) / len(batches)
    assert spread < 15  # random batches of 4 would spread ~50
    assert len(first[200:]) == 3  # the partial batch comes last, so drop_last removes only it


def test_sources_of_different_formats_mix_by_weight(tok, tmp_path):
    chat = _write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"Hi {i}"},
                                                          {"role": "assistant", "content": f"Hello {i}."}]}
                                            for i in range(6)])
    alpaca = _write(tmp_path / "alp.jsonl", [{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(6)])
    data = DataConfig(sources=[SourceConfig(path=str(chat), weight=3.0), SourceConfig(path=str(alpaca), weight=1.0)],
                      validation_fraction=0.25)
    built = build_sft_datasets(data, SFTConfig(), tok)
    assert {k: v["format"] for k, v in built.stats["sources"].items()} == {"chat": "messages", "alp": "alpaca"}
    texts = [tok.decode(ids) for ids, _ in _all(built)]
    assert len(texts) == 12 and sum("Hello" in t for t in texts) == 9  # 3:1 of the 12 examples in all


def test_chat_data_without_any_template(base_tokenizer, tmp_path):
    t = copy.deepcopy(base_tokenizer)
    assert "none" in complete_tokenizer(t, None)["chat_template"]
    path = _write(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello."}]}] * 2)
    with pytest.raises(DataError, match="needs a chat template"):
        build_sft_datasets(_data(path), SFTConfig(chat_template=None), t)
