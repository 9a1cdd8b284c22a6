"""Text in, text out: chat templating, left padding, decoding up to the end of the answer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch

from llada.model import LLaDAModel
from llada.sampling.core import GenerateOutput, StepState, generate


def encode_prompts(tokenizer: Any, prompts: str | list[str] | list[list[dict[str, str]]], *,
                   chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, P) left padded with EOS, and the attention mask.

    With chat=True each prompt is a user message (or a whole list of messages) rendered with the
    tokenizer's chat template and the assistant header appended.
    """
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], dict)):
        prompts = [prompts]  # type: ignore[list-item]
    rows = []
    for p in prompts:
        if chat:
            messages = [{"role": "user", "content": p}] if isinstance(p, str) else p
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            rows.append(bos + tokenizer(p, add_special_tokens=False)["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return left_pad(rows, pad)


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


def decode_response(tokenizer: Any, ids: torch.Tensor | list[int], stop_ids: tuple[int | None, ...]) -> str:
    """Text of a response row up to its first EOS / end-of-turn token."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return tokenizer.decode(cut_at_stop(ids, stop_ids)[0], skip_special_tokens=True).strip()


def generate_text(model: LLaDAModel, tokenizer: Any, prompts: str | list[str], *, chat: bool = True,
                  **options: Any) -> list[str]:
    """Answer each prompt; `options` are `generate`'s (steps, gen_length, block_length, ...)."""
    out = generate_ids(model, tokenizer, prompts, chat=chat, **options)
    stops = (model.config.eos_token_id, model.config.eot_token_id)
    return [decode_response(tokenizer, row, stops) for row in out.responses]


def generate_ids(model: LLaDAModel, tokenizer: Any, prompts: Any, *, chat: bool = True,
                 **options: Any) -> GenerateOutput:
    ids, mask = encode_prompts(tokenizer, prompts, chat=chat)
    return generate(model, ids, mask, **options)


def render_canvas(tokenizer: Any, state: StepState, row: int = 0, mask_text: str = "░") -> str:
    """The response part of a canvas as text, masks drawn as `mask_text`."""
    mask_id = tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    pieces = []
    for i in state.canvas[row, state.prompt_length:].tolist():
        pieces.append(mask_text if i == mask_id else tokenizer.decode([i], skip_special_tokens=False))
    return "".join(pieces)


def stream_text(model: LLaDAModel, tokenizer: Any, prompt: str | list[dict[str, str]], *, chat: bool = True,
                **options: Any) -> Iterator[tuple[StepState, str]]:
    """Yield (state, canvas text with masks shown) after every step, then return.

    The sampler runs in a worker thread and hands each step over a queue, so the consumer sees the
    canvas as it changes (for a terminal trace, a chat page or a server stream).
    """
    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            generate_ids(model, tokenizer, prompt, chat=chat,
                         callback=lambda s: q.put((StepState(s.canvas.clone(), s.transferred.clone(), s.block,
                                                             s.step, s.prompt_length), None)), **options)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            failure.append(e)
        finally:
            q.put((done, None))

    threading.Thread(target=work, daemon=True).start()
    while True:
        state, _ = q.get()
        if state is done:
            break
        yield state, render_canvas(tokenizer, state)
    if failure:
        raise failure[0]
