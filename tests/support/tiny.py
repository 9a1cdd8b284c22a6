"""Tiny configs and a tiny word-level tokenizer with LLaDA's special tokens (re-exported by conftest.py)."""

from __future__ import annotations

from llada.config import ModelConfig, preset

SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]


def tiny_config(**overrides) -> ModelConfig:
    """The debug preset with a 64-token vocabulary whose last ids are the special tokens."""
    ids = dict(vocab_size=64, mask_token_id=63, eos_token_id=62, pad_token_id=62, bos_token_id=61,
               eot_token_id=60)
    return preset("debug", **{**ids, **overrides})


def make_word_tokenizer(words: list[str], vocab_size: int = 64):
    """A word-level tokenizer: ids 0..n-1 for words, the special tokens at the top of the range."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    vocab["[UNK]"] = len(vocab)
    # LLaDA's order, placed at the end: bos, eos, mask... mapped to 61, 62, 63 like tiny_config.
    top = {"<|eot_id|>": vocab_size - 4, "<|startoftext|>": vocab_size - 3, "<|endoftext|>": vocab_size - 2,
           "<|mdm_mask|>": vocab_size - 1, "<|start_header_id|>": vocab_size - 6,
           "<|end_header_id|>": vocab_size - 5}
    assert len(vocab) <= vocab_size - len(top)
    vocab.update(top)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="[UNK]")
    fast.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>",
                                                           "<|eot_id|>"]})
    return fast
