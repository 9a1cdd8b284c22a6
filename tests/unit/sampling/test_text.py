"""Text around the sampler: prompt encoding, token pieces and stop texts."""

from __future__ import annotations

import pytest


def _metaspace_tokenizer():
    """A SentencePiece-style tokenizer: decoding a lone word piece drops its leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran far"] * 10,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<m>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_token_pieces_keep_characters_and_spaces_whole():
    from llada.sampling.text import token_pieces
    from llada.tokenizer import train_tokenizer

    byte_level = train_tokenizer(["the cat sat on the mat", "a dog ran far"] * 10, vocab_size=300)
    text = " café au lait, 中文 ok"
    ids = byte_level(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # the accented and CJK letters are split across byte tokens
    pieces = token_pieces(byte_level, ids, [False] * len(ids))
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert [p for p in pieces if p and not p.isascii()] == ["é", "中", "文"]  # each on the token completing it

    # Masks between the bytes of a character: nothing is shown for it until it is whole.
    first = ids.index(byte_level("é", add_special_tokens=False)["input_ids"][0])
    hidden = [i == first + 1 for i in range(len(ids))]
    pieces = token_pieces(byte_level, ids, hidden)
    assert pieces[first] == pieces[first + 1] == "" and "\ufffd" not in "".join(pieces)  # é is two tokens
    assert "".join(pieces[:first]) == text[: text.index("é")]
    assert "".join(pieces[first + 2:]) == text[text.index("é") + 1:]
    lead = ids[first]  # the first byte of é alone: waits before a mask, is final before a special token or the end
    eos = byte_level.eos_token_id
    assert token_pieces(byte_level, [lead, 0], [False, True]) == ["", ""]
    assert token_pieces(byte_level, [lead, eos], [False, False], {eos}) == ["\ufffd", byte_level.eos_token]
    assert token_pieces(byte_level, [lead], [False]) == ["\ufffd"]

    sp = _metaspace_tokenizer()
    ids = sp("the cat sat on a mat", add_special_tokens=False)["input_ids"]
    assert sp.decode(ids[1:2]) != sp.decode(ids[:2])[len(sp.decode(ids[:1])):]  # alone, a piece loses its space
    pieces = token_pieces(sp, ids, [False] * len(ids))
    assert "".join(pieces) == sp.decode(ids) == "the cat sat on a mat"
    # a special token (here the mask-like "<m>") shows its name and starts a new run
    m = sp.convert_tokens_to_ids("<m>")
    pieces = token_pieces(sp, ids[:2] + [m] + ids[2:], [False] * (len(ids) + 1), special={m})
    assert pieces[2] == "<m>" and "".join(pieces[:2]) == sp.decode(ids[:2])


def test_cut_at_stop_texts_takes_the_earliest():
    from llada.sampling.text import cut_at_stop_texts

    assert cut_at_stop_texts("a. b\n\nc", ["\n\n", "."]) == ("a", True)
    assert cut_at_stop_texts("abc", ["", "x"]) == ("abc", False)


def test_encode_prompts_renders_within_the_template_budget_and_names_a_failing_tokenizer():
    """encode_prompts (generate, chat, sample_text, the built-in evaluation) used apply_chat_template
    unbounded and let a tokenizer's Rust panic (a BaseException) through."""
    from tokenizers import Regex, normalizers

    from llada.errors import CheckpointError
    from llada.sampling.text import encode_prompts
    from llada.tokenizer import CHAT_TEMPLATE, train_tokenizer

    tok = train_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300)
    tok.chat_template = "{% if messages[0]['content'] != 'Hello' %}{{ 'x' * 1500000 }}{% endif %}" + CHAT_TEMPLATE
    assert encode_prompts(tok, "Hello", pad_id=0)[0].shape[0] == 1
    with pytest.raises(CheckpointError, match="the chat template builds a value of about 1,500,000 characters"):
        encode_prompts(tok, "hi", pad_id=0)
    tok.chat_template = CHAT_TEMPLATE
    tok.backend_tokenizer.normalizer = normalizers.Replace(Regex("(a|aa)+$"), "b")
    for chat in (True, False):
        with pytest.raises(CheckpointError, match="the tokenizer fails on this text") as info:
            encode_prompts(tok, "a" * 40 + "!", pad_id=0, chat=chat)
        assert "\n" not in str(info.value)
