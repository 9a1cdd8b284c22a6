"""Log-probabilities of the server's answers: Eq. 6 estimates per token, in OpenAI's two formats.

/v1/completions' "logprobs": k (with "echo" for the prompt's) is the legacy format
(`completion_logprobs`: tokens, token_logprobs, top_logprobs, text_offset); /v1/chat/completions'
"logprobs": true with "top_logprobs": k is chat's (`chat_logprobs`: content, one entry per answer
token). Both read the same `Scores`, which `scoring` computes in the batcher's worker thread.

The values are Monte-Carlo estimates of Eq. 6 (llada.likelihood), `Estimator.mc_num` samples each,
seeded by the request's seed (else 0). A masked diffusion model has no left-to-right factorisation,
so a token's value is a difference of sequence-level estimates: token i's logprob is E(i) - E(i+1),
where E(k) is the Eq. 6 estimate of log p(x[k:end] | x[:k]), end being the end of the prompt for
prompt tokens and of the completion for completion tokens (E(end) = 0). The values from any token k
to the end of the prompt thus add up to the estimate of that part given what precedes it (what
lm-eval's loglikelihood reads, whatever its split), and the completion's add up to the estimate of
the completion given the prompt. A prompt of n tokens costs n - 1 estimates.

top_logprobs[i] lists the token and the k likeliest tokens of the model's prediction for position i
from the tokens before it (one mask appended; `llada.likelihood.next_token_logprobs`), on the
token's own scale: token_logprobs[i] plus each one's log-probability gap to the token. So the token
is the largest entry exactly when left-to-right decoding one token at a time would have picked it:
that is the "is_greedy" lm-eval reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from llada.likelihood import log_likelihood, next_token_logprobs
from llada.sampling.text import token_pieces


@dataclass(frozen=True)
class Estimator:
    """How the Eq. 6 estimates are taken: Monte-Carlo samples each, rows per forward pass, the seed."""

    mc_num: int
    batch_size: int
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        """What a response reports under llada.logprobs."""
        return {"estimator": "Eq. 6 Monte-Carlo", "mc_num": self.mc_num, "seed": self.seed}


@dataclass
class Scores:
    """Per position of prompt + completion: its value (None where none is reported), and the
    top-k alternatives' ids and log-probability gaps to the token (None where none are reported)."""

    values: list[float | None]
    alternatives: list[tuple[list[int], list[float]] | None]


def scoring(model: Any, prompt: list[int], completion: list[int], echo: bool, top: int,
            estimator: Estimator) -> Callable[[threading.Event], Scores | None]:
    """The batcher's work (`Job.work`) for one answer's scores: the completion's tokens, and the
    prompt's from its second on with `echo`. The work returns None once `cancelled` is set."""
    seq, P = prompt + completion, len(prompt)
    parts = ([(1, P)] if echo else []) + ([(P, len(seq))] if completion else [])
    first = 1 if echo else P

    def work(cancelled: threading.Event) -> Scores | None:
        values = _eq6_values(model, seq, parts, estimator, cancelled)
        if values is None:
            return None
        return Scores(values, [None] * first + _alternatives(model, seq, first, top, estimator.batch_size))

    return work


def _eq6_values(model: Any, seq: list[int], parts: list[tuple[int, int]], estimator: Estimator,
                cancelled: threading.Event) -> list[float | None] | None:
    """Token k's value E(k) - E(k + 1) for k in each [begin, end) of `parts` (E(end) = 0), from the
    last token back; None when cancelled."""
    values: list[float | None] = [None] * len(seq)
    for begin, end in parts:
        after = 0.0  # E(k + 1)
        for k in range(end - 1, begin - 1, -1):
            if cancelled.is_set():
                return None
            estimate = log_likelihood(model, seq[:k], seq[k:end], mc_num=estimator.mc_num,
                                      batch_size=estimator.batch_size,
                                      generator=torch.Generator().manual_seed(estimator.seed)).value
            values[k], after = estimate - after, estimate
    return values


def _alternatives(model: Any, seq: list[int], first: int, top: int,
                  batch_size: int) -> list[tuple[list[int], list[float]]]:
    """For each position from `first` on: the `top` likeliest ids of the one-mask prediction from
    the tokens before it and their log-probability gaps to the token there (empty for top 0)."""
    lp = next_token_logprobs(model, seq, start=first, batch_size=batch_size)  # (len(seq) - first, V)
    if not top:
        return [([], []) for _ in range(lp.shape[0])]
    own = lp.gather(1, torch.as_tensor(seq[first:], dtype=torch.long)[:, None])[:, 0]
    best = lp.topk(min(top, lp.shape[1]), dim=-1)
    return [(best.indices[j].tolist(), (best.values[j] - own[j]).tolist()) for j in range(lp.shape[0])]


def completion_logprobs(tok: Any, special_ids: set[int], prompt: list[int], completion: list[int],
                        scores: Scores, echo_text: str | None) -> dict[str, Any]:
    """OpenAI's legacy logprobs of one answer: tokens, token_logprobs, top_logprobs, text_offset,
    for the completion's tokens, the prompt's first with `echo_text` (the prompt as echoed)."""
    seq, P = prompt + completion, len(prompt)
    pieces = token_pieces(tok, seq, [False] * len(seq), special_ids)
    special = [t in special_ids for t in seq]
    shown = range(0 if echo_text is not None else P, len(seq))
    offsets = _text_offsets(pieces, special, P, None if echo_text is None else len(echo_text))
    values, alts = scores.values, scores.alternatives
    tops: list[dict[str, float] | None] = []
    for i in shown:
        if alts[i] is None:
            tops.append(None)
            continue
        entry = {tok.decode([t]): values[i] + gap for t, gap in zip(*alts[i], strict=True) if t != seq[i]}
        entry.pop(pieces[i], None)  # another token that reads the same is not a better choice
        tops.append({**entry, pieces[i]: values[i]})  # the token itself, at its own value
    return {"tokens": [pieces[i] for i in shown], "token_logprobs": [values[i] for i in shown],
            "top_logprobs": tops, "text_offset": [offsets[i] for i in shown]}


def _text_offsets(pieces: list[str], special: list[bool], P: int, echoed: int | None) -> list[int]:
    """Where each token's text starts in the choice's text (special tokens have none). The prompt's
    tokens count from 0. With echo, the text is the echoed prompt (`echoed` characters) then the
    answer as its tokens read; without, the text is the answer with its leading whitespace dropped,
    so the tokens that hold that whitespace sit at 0 and the rest move back by its length."""
    if echoed is None:
        raw = "".join(p for p, s in zip(pieces[P:], special[P:], strict=True) if not s)
        start = len(raw.lstrip()) - len(raw)
    else:
        start = echoed
    offsets, at = [], 0
    for i in range(len(pieces)):
        if i == P:
            at = start
        offsets.append(max(at, 0))
        at += 0 if special[i] else len(pieces[i])
    return offsets


def chat_logprobs(tok: Any, special_ids: set[int], prompt: list[int], completion: list[int],
                  scores: Scores, top: int) -> dict[str, Any]:
    """Chat's logprobs of one answer: per answer token, its text, value, UTF-8 bytes and the `top`
    likeliest (the token among them at its own value when it is one of them), highest first. The
    values are those of `completion_logprobs`: they add up to the Eq. 6 estimate of the whole
    answer given the prompt. The tokens join into the message's content (whose leading whitespace
    is dropped; with a stop string, the last one may hold part of it)."""
    seq, P = prompt + completion, len(prompt)
    pieces = token_pieces(tok, seq, [False] * len(seq), special_ids)
    values, alts = scores.values, scores.alternatives
    content, leading = [], True
    for i in range(P, len(seq)):
        if seq[i] in special_ids:
            continue
        ranked = {tok.decode([t]): values[i] + gap for t, gap in zip(*alts[i], strict=True) if t != seq[i]}
        ranked[pieces[i]] = values[i]
        best = sorted(ranked.items(), key=lambda kv: -kv[1])[:top]
        shown = pieces[i].lstrip() if leading else pieces[i]  # the content's leading space is dropped: so here
        leading = leading and not shown
        content.append({**_chat_item(shown, values[i]), "top_logprobs": [_chat_item(t, v) for t, v in best]})
    return {"content": content, "refusal": None}


def _chat_item(text: str, value: float) -> dict[str, Any]:
    return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}
