"""Tokenizers for models trained here: byte-level BPE with LLaDA-8B's special tokens and chat format.

LLaDA-8B's special tokens, mirrored by name so chat data and samplers work the same on both:

    <|startoftext|>  BOS        <|endoftext|>  EOS and padding     <|mdm_mask|>  the diffusion mask
    <|start_header_id|> role <|end_header_id|>\\n\\n content <|eot_id|>     one chat turn

The ids of these tokens are read from the tokenizer (`special_token_ids`) and stored in the model
config; nothing else in the package names an id.

`save_tokenizer` writes a tokenizer so that every transformers version the project allows opens it
(see its docstring), padding on the left and knowing the model's length.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llada.errors import CheckpointError

BOS, EOS, MASK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, MASK, START_HEADER, END_HEADER, EOT]
# The role names the chat template writes between the headers: one token each in every tokenizer
# trained here, as in LLaDA-8B's (a BPE trained on little chat text spells them out letter by letter).
CHAT_ROLES = ("system", "user", "assistant")

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


# A chat template is code from the model directory: jinja's sandbox keeps it from reaching Python
# objects, and `render_chat` holds it to a budget (llada/template_sandbox.py): Python steps (trace
# events), far above what a real template spends (about 500 for a one-message conversation with the
# template above, 12,000 for a hundred messages), and characters: any one value it builds, and its
# output, at most TEMPLATE_CHARS plus twice the conversation's own text, and TEMPLATE_TOTAL times
# that built over the whole render (so a render holds at most a few tens of MB at once).
TEMPLATE_STEPS = 5_000_000
TEMPLATE_CHARS = 1_000_000  # what a template may add around the messages (system prompts, tool schemas)
TEMPLATE_TOTAL = 16
SAMPLE_CHAT = [{"role": "user", "content": "Hello"}]  # what `check_chat_template` renders


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                steps: int = TEMPLATE_STEPS) -> str:
    """`tokenizer.apply_chat_template(messages, tokenize=False, ...)` within the budget above. A
    template that raises, runs past `steps` or builds past the characters allowed is one
    CheckpointError saying which; so is a transformers version whose rendering the budget cannot
    reach (refused rather than rendered unbounded)."""
    from llada.template_sandbox import OverBudget, bounded, install, size

    install()
    limit = TEMPLATE_CHARS + 2 * size(messages)
    try:
        with bounded(steps, limit, TEMPLATE_TOTAL * limit) as budget:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except OverBudget as e:
        raise CheckpointError(f"the chat template {e}") from None
    except Exception as e:  # noqa: BLE001 - a template raises whatever its code raises
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"the chat template fails ({type(e).__name__}: {reason})") from None
    if not budget.bounded:
        raise CheckpointError("the chat template was rendered outside llada's bounded sandbox (this transformers "
                              "version compiles templates in a way llada does not know); no template is rendered "
                              "unbounded: use a transformers version pyproject.toml allows")
    return text


def encode(tokenizer: Any, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """`tokenizer(text, add_special_tokens=...)["input_ids"]`. A tokenizer that fails on the text (a
    normalizer or pre-tokenizer regex that gives up panics in Rust: a BaseException, no Exception)
    is one CheckpointError naming the reason."""
    try:
        return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"the tokenizer fails on this text ({reason}); its tokenizer.json "
                              "(normalizer or pre-tokenizer) needs fixing") from None


def check_chat_template(tokenizer: Any, source: str = "tokenizer") -> None:
    """Render a one-message conversation with the tokenizer's chat template, if it has one, and
    encode the result (or the message alone): a template that fails or runs away, or a tokenizer
    that fails on plain text, is refused once, where the model is opened, and not by every chat
    request after it (CheckpointError naming `source`)."""
    try:
        text = render_chat(tokenizer, SAMPLE_CHAT) if getattr(tokenizer, "chat_template", None) else "Hello"
        encode(tokenizer, text)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e} on a one-message conversation; fix or remove it") from None


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE on `texts` and wrap it as a transformers `PreTrainedTokenizerFast`.

    The special tokens take the first ids (0..5); decoding inverts encoding for any text. Digits are
    split one per token before the BPE (as LLaMA's tokenizer does), so a number is written digit by
    digit whatever numbers the texts hold; each of CHAT_ROLES is one token (`_whole_words`) when
    vocab_size leaves room for the merges that make them (16 beyond the 262 minimum). At most
    `vocab_size` tokens. Raises ValueError for a vocab_size below the byte alphabet plus the specials.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} for a byte-level BPE, "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_whole_words(tok, CHAT_ROLES, vocab_size), bos_token=BOS, eos_token=EOS, pad_token=EOS,
        mask_token=MASK, additional_special_tokens=[START_HEADER, END_HEADER, EOT], clean_up_tokenization_spaces=False,
        padding_side="left",  # a prompt's pad slots go before it, never between it and the answer
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _whole_words(tok: Any, words: tuple[str, ...], vocab_size: int) -> Any:
    """`tok` (a trained byte-level BPE) with merges appended so that each of `words`, standing alone,
    is one token: the pieces the trained merges leave are joined left to right, each join a new
    merge of the lowest priority (so no other text tokenizes differently, except where the same
    pieces meet). When the vocabulary is full, the last-learned merges (the rarest) make room; with
    none left to drop, the joins that do not fit are left out."""
    from tokenizers import Tokenizer

    def joins(t: Any) -> list[tuple[str, str]]:
        out = []
        for word in words:
            pieces = [p.value for p in t.model.tokenize(word)]
            for piece in pieces[1:]:
                out.append((pieces[0], piece))
                pieces[0] += piece
        return list(dict.fromkeys(out))

    data = json.loads(tok.to_str())
    vocab, merges = data["model"]["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
                                            for m in data["model"]["merges"]]
    room = vocab_size - len(vocab)
    needed = len(joins(tok))
    drop = min(needed - room, len(merges))
    if drop > 0:  # drop the last merges, whose tokens have the highest ids and build no other
        for a, b in merges[-drop:]:
            vocab.pop(a + b, None)
        merges = merges[:-drop]
        data["model"]["merges"] = [list(m) for m in merges]
        tok = Tokenizer.from_str(json.dumps(data))
    for a, b in joins(tok):
        if a + b not in vocab and len(vocab) >= vocab_size:
            break
        merges.append((a, b))
        vocab.setdefault(a + b, max(vocab.values()) + 1)
    data["model"]["merges"] = [list(m) for m in merges]
    return Tokenizer.from_str(json.dumps(data))


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


# tokenizer_config.json's class names for a `tokenizers`-backed tokenizer: transformers 5 writes
# TokenizersBackend, which 4.x does not know; PreTrainedTokenizerFast is its name in both.
_FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
PORTABLE_CLASS = "PreTrainedTokenizerFast"


def save_tokenizer(tokenizer: Any, path: str | Path, *, model_max_length: int | None = None) -> None:
    """`tokenizer.save_pretrained(path)`, then tokenizer_config.json made to open the same on every
    transformers version from 4.46 (the lowest pyproject.toml allows) to 5.x:

    - `tokenizer_class` PreTrainedTokenizerFast instead of 5.x's TokenizersBackend (4.x has no such class);
    - the chat template inside tokenizer_config.json, where 4.x looks, not in chat_template.jinja (5.x reads both);
    - `additional_special_tokens`, 4.x's name for 5.x's list of `extra_special_tokens`;
    - `padding_side: "left"`: right padding would put pad slots between a prompt and its answer;
    - `model_max_length` from the model (`max_sequence_length`), where transformers writes 1e30 for "unknown".
    """
    root = Path(path)
    tokenizer.save_pretrained(root)
    config_path = root / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") in _FAST_CLASSES:
        config["tokenizer_class"] = PORTABLE_CLASS
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):  # a dict there names model-specific tokens (4.47+); a list is 4.x's additional
        additional = list(config.get("additional_special_tokens") or [])
        config["additional_special_tokens"] = additional + [t for t in extra if t not in additional]
        del config["extra_special_tokens"]
    template = root / "chat_template.jinja"
    if template.is_file():
        config["chat_template"] = template.read_text(encoding="utf-8")
        template.unlink()
    config["padding_side"] = "left"
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
