"""Byte-level BPE with LLaDA's special tokens and chat format."""

from __future__ import annotations

import pytest

from llada.tokenizer import config_ids, special_token_ids, train_tokenizer

CORPUS = ["the cat sat on the mat", "Ünïcödé text ☃ and emoji 🙂", "numbers 12 + 30 = 42"] * 50


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.mark.parametrize("text", ["hello  world\n\tx", "Ünïcödé ☃ 🙂 — never seen: ЖЖЖ", " leading space", ""])
def test_round_trip(tok, text):
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_special_ids_and_config(tok):
    ids = special_token_ids(tok)
    assert tok.convert_ids_to_tokens(ids["mask"]) == "<|mdm_mask|>"
    assert tok.convert_ids_to_tokens(ids["eot"]) == "<|eot_id|>"
    assert ids["pad"] == ids["eos"] == tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = config_ids(tok)
    assert cfg["vocab_size"] == max(tok.get_vocab().values()) + 1 <= 300
    # special tokens are atomic: text containing them encodes them as single ids
    assert tok("<|eot_id|>", add_special_tokens=False).input_ids == [ids["eot"]]


def test_chat_template_is_llada_format(tok):
    messages = [{"role": "user", "content": " hi there "}, {"role": "assistant", "content": "hello"}]
    expected = ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi there<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>")
    assert tok.apply_chat_template(messages, tokenize=False) == expected
    assert tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_save_and_reload_keeps_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.chat_template == tok.chat_template
    assert special_token_ids(again) == special_token_ids(tok)


def test_too_small_vocab():
    with pytest.raises(ValueError, match="at least 262"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_saved_tokenizer_config_opens_on_every_allowed_transformers(tok, tmp_path):
    """save_tokenizer writes what transformers 4.46 (the lowest pyproject.toml allows) reads as well
    as 5.x: the class by a name both have, the chat template inside tokenizer_config.json, 4.x's
    name for the extra special tokens; and it pads on the left and knows the model's length.
    (tests/test_hf.py opens such a directory in an actual 4.46 install: pytest -m slow.)"""
    import json

    from transformers import PreTrainedTokenizerFast

    from llada.tokenizer import CHAT_TEMPLATE, save_tokenizer

    save_tokenizer(tok, tmp_path, model_max_length=256)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert saved["padding_side"] == "left" and saved["model_max_length"] == 256
    assert saved["chat_template"] == CHAT_TEMPLATE and not (tmp_path / "chat_template.jinja").exists()
    assert saved["additional_special_tokens"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert not isinstance(saved.get("extra_special_tokens"), list)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)  # the class named, loaded directly
    assert special_token_ids(again) == special_token_ids(tok)
    assert again.chat_template == CHAT_TEMPLATE and again.model_max_length == 256
    batch = again(["the cat", "the cat sat on the mat"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1  # pads on the left


def test_fresh_tokenizer_pads_on_the_left(tok):
    assert tok.padding_side == "left"
