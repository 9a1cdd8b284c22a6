"""Text in, text out: chat templating, left padding, decoding up to the end of the answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling.api import sample, sample_steps
from llada.sampling.core import GenerateOutput, StepState
from llada.sampling.options import SamplerOptions
from llada.tokenizer import encode, render_chat


def encode_prompts(tokenizer: Any, prompts: str | list[str] | list[list[dict[str, str]]], *, pad_id: int,
                   chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, P) left padded with `pad_id` (the model's `config.roles.pad`), and the
    attention mask (B, P).

    With chat=True each prompt is a user message (or a whole list of messages) rendered with the
    tokenizer's chat template (within its budget: `tokenizer.render_chat`) and the assistant header
    appended; otherwise BOS + the text. A template or tokenizer that fails is a CheckpointError.
    """
    rows = []
    for p in _prompt_list(prompts, chat):
        if chat:
            messages = [{"role": "user", "content": p}] if isinstance(p, str) else p
            rows.append(encode(tokenizer, render_chat(tokenizer, messages)))
        else:
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            rows.append(bos + encode(tokenizer, p))
    return left_pad(rows, pad_id)


def _prompt_list(prompts: Any, chat: bool) -> list[str | list[dict[str, str]]]:
    """`prompts` as a list of prompts, each a text or (with chat) a list of messages; a
    GenerationError that says what `prompts` may be otherwise."""
    if isinstance(prompts, dict):
        raise GenerationError("prompts is a single message; give a list of messages, [{'role': 'user', "
                              "'content': ...}], or the text alone")
    if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], dict)):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise GenerationError(f"prompts must be a text, a list of texts or a list of conversations, got "
                              f"{'an empty list' if isinstance(prompts, (list, tuple)) else type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            continue
        if not chat:
            raise GenerationError(f"prompt {i} must be text with chat=False, got {type(p).__name__}")
        if not isinstance(p, (list, tuple)) or not p or not all(_is_message(m) for m in p):
            raise GenerationError(f"prompt {i} must be a text or a non-empty list of messages "
                                  f"{{'role': str, 'content': str}}, got {p!r:.80}")
    return list(prompts)


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as (B, P) ids left padded with `pad_id`, and the attention mask."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, P - len(r):] = 1
    return ids, mask


def cut_at_stop(ids: list[int], stop_ids: tuple[int | None, ...]) -> tuple[list[int], bool]:
    """`ids` up to the first EOS / end-of-turn token, and whether one was found."""
    for k, i in enumerate(ids):
        if i in stop_ids:
            return ids[:k], True
    return ids, False


def cut_at_stop_texts(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the earliest of the stop strings (empty ones ignored), and whether one was found."""
    cut = min((text.index(s) for s in stops if s and s in text), default=None)
    return (text, False) if cut is None else (text[:cut], True)


def decode_response(tokenizer: Any, ids: torch.Tensor | list[int], stop_ids: tuple[int | None, ...]) -> str:
    """Text of a response row up to its first EOS / end-of-turn token."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return tokenizer.decode(cut_at_stop(ids, stop_ids)[0], skip_special_tokens=True).strip()


def settled_text(tokenizer: Any, state: StepState, mask_id: int, stop_ids: tuple[int | None, ...], row: int = 0) -> str:
    """The part of a response row's text that later steps cannot change: its tokens up to the first
    one still masked (or the first EOS / end-of-turn), decoded as `decode_response` decodes them,
    less a trailing character whose bytes are not all there yet and trailing spaces (held back
    until more follows). For a terminal that prints an answer as it settles."""
    ids = state.canvas[row, state.prompt_length:].tolist()
    end = next((k for k, t in enumerate(ids) if t == mask_id or t in stop_ids), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True).rstrip("\ufffd").strip()


def sample_text(model: LLaDAModel, tokenizer: Any, prompts: str | list[str] | list[list[dict[str, str]]],
                options: SamplerOptions | None = None, *, chat: bool = True, generator: torch.Generator | None = None,
                **overrides: Any) -> list[str]:
    """`llada.sample` at the text level: the answer to each prompt, decoded up to its first
    EOS / end-of-turn. `options` and `overrides` as for `sample`."""
    out = sample_ids(model, tokenizer, prompts, options, chat=chat, generator=generator, **overrides)
    return [decode_response(tokenizer, row, model.config.roles.stops) for row in out.responses]


def sample_ids(model: LLaDAModel, tokenizer: Any, prompts: Any, options: SamplerOptions | None = None, *,
               chat: bool = True, generator: torch.Generator | None = None, **overrides: Any) -> GenerateOutput:
    """`llada.sample` on encoded prompts: the token output of `sample_text`."""
    ids, mask = encode_prompts(tokenizer, prompts, pad_id=model.config.roles.pad, chat=chat)
    return sample(model, ids, options, attention_mask=mask, generator=generator, **overrides)


def token_pieces(tokenizer: Any, ids: list[int], hidden: list[bool], special: set[int] = frozenset()) -> list[str]:
    """The text each token adds to a partly masked canvas (hidden positions give "").

    Token i's piece is the text of tokens j..i less the text of j..i-1, where j is a character
    boundary one whole token or more back: so a character whose UTF-8 bytes span several tokens
    belongs to the token that completes it (the ones before show "" where alone they would decode
    as U+FFFD), and a tokenizer that drops a leading space when decoding a lone word piece still
    gets its spaces. Tokens in `special` show their names and, like masks, start a new run. Bytes
    of a character cut short by a mask wait (""); cut short by a special token or the end of the
    canvas they can no longer complete and show as U+FFFD, as the decoded answer has them.
    """
    def text(a: int, b: int) -> str:
        return tokenizer.decode(ids[a:b], skip_special_tokens=False) if b > a else ""

    pieces: list[str] = []
    start = last = 0  # the last two positions of this run before which every character is complete
    prev = (0, "")  # (window start, text) of the previous token's window: this token's shorter text
    tail = ""  # U+FFFD held back at the end of the run so far: bytes of a character not yet whole
    for i, (t, h) in enumerate(zip(ids, hidden, strict=True)):
        if h or t in special:
            if tail and not h:  # a special token ends the run: those bytes will never complete
                pieces[-1] += tail
            pieces.append("" if h else text(i, i + 1))
            start = last = i + 1
            tail = ""
            continue
        j = start if i - start <= 8 else i - 4  # a long run of invalid bytes: a bounded window
        raw = text(j, i + 1)
        longer = raw.rstrip("\ufffd")
        shorter = (prev[1] if prev[0] == j and i > j else text(j, i)).rstrip("\ufffd")
        pieces.append(longer[len(shorter):] if longer.startswith(shorter) else text(i, i + 1).rstrip("\ufffd"))
        prev, tail = (j, raw), raw[len(longer):]
        if not tail:
            start, last = last, i + 1
    if tail:  # nothing follows: the bytes are as they will stay
        pieces[-1] += tail
    return pieces


def render_canvas(tokenizer: Any, state: StepState, mask_id: int, row: int = 0, mask_text: str = "░") -> str:
    """The response part of a canvas as text, masks (`mask_id`) drawn as `mask_text`."""
    ids = state.canvas[row, state.prompt_length:].tolist()
    hidden = [i == mask_id for i in ids]
    pieces = token_pieces(tokenizer, ids, hidden, set(tokenizer.all_special_ids))
    return "".join(mask_text if h else p for p, h in zip(pieces, hidden, strict=True))


def stream_text(model: LLaDAModel, tokenizer: Any, prompt: str | list[dict[str, str]],
                options: SamplerOptions | None = None, *, chat: bool = True, generator: torch.Generator | None = None,
                **overrides: Any) -> Iterator[tuple[StepState, str]]:
    """`llada.sample_steps` at the text level: (state, response text with masks shown) after every
    step; the last state has `final=True`. For a terminal trace, a chat page or a server stream."""
    ids, mask = encode_prompts(tokenizer, prompt, pad_id=model.config.roles.pad, chat=chat)
    mask_id = model.config.roles.mask
    for state in sample_steps(model, ids, options, attention_mask=mask, generator=generator, **overrides):
        yield state, render_canvas(tokenizer, state, mask_id)
