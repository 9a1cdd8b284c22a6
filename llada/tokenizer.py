"""Tokenizers for models trained here: byte-level BPE with LLaDA-8B's special tokens and chat format.

LLaDA-8B's special tokens, mirrored by name so chat data and samplers work the same on both:

    <|startoftext|>  BOS        <|endoftext|>  EOS and padding     <|mdm_mask|>  the diffusion mask
    <|start_header_id|> role <|end_header_id|>\\n\\n content <|eot_id|>     one chat turn

The ids of these tokens are read from the tokenizer (`special_token_ids`) and stored in the model
config; nothing else in the package names an id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BOS, EOS, MASK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, MASK, START_HEADER, END_HEADER, EOT]

# LLaDA-8B's chat format (Llama-3 style): BOS once, then one header + content + <|eot_id|> per
# message; the assistant header is appended when a reply is to be generated.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE on `texts` and wrap it as a transformers `PreTrainedTokenizerFast`.

    The special tokens take the first ids (0..5); decoding inverts encoding for any text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} for a byte-level BPE, "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS, mask_token=MASK,
        additional_special_tokens=[START_HEADER, END_HEADER, EOT], clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def special_token_ids(tokenizer: Any) -> dict[str, int | None]:
    """mask, eos, pad, bos and eot ids by token string (mask falls back to `<|mdm_mask|>` when the
    tokenizer declares none, as LLaDA-8B's does)."""
    vocab = tokenizer.get_vocab()
    mask = tokenizer.mask_token_id if tokenizer.mask_token is not None else vocab.get(MASK)
    eos = tokenizer.eos_token_id if tokenizer.eos_token is not None else vocab.get(EOS)
    pad = tokenizer.pad_token_id if tokenizer.pad_token is not None else eos
    bos = tokenizer.bos_token_id if tokenizer.bos_token is not None else vocab.get(BOS)
    return {"mask": mask, "eos": eos, "pad": pad, "bos": bos, "eot": vocab.get(EOT)}


def config_ids(tokenizer: Any) -> dict[str, int | None]:
    """The ModelConfig fields for a tokenizer: vocab_size and the special ids (no magic numbers)."""
    ids = special_token_ids(tokenizer)
    if ids["mask"] is None or ids["eos"] is None:
        raise ValueError(f"the tokenizer has no {MASK} or {EOS} token; a diffusion model needs both")
    return {"vocab_size": max(tokenizer.get_vocab().values()) + 1, "mask_token_id": ids["mask"],
            "eos_token_id": ids["eos"], "pad_token_id": ids["pad"], "bos_token_id": ids["bos"],
            "eot_token_id": ids["eot"]}
