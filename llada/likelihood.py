"""Likelihoods of a masked diffusion model: Monte-Carlo estimates with standard errors.

Conditional (Eq. 6). For a response r of length L after a prompt p:

    log p(r | p)  >=  E_l E_S [ (L / l) * sum_{i in S} log p(r_i | p, r with S masked) ]

with l uniform on 1..L and S a uniformly random set of exactly l response positions. Each draw
of (l, S) is one Monte-Carlo sample; the l of the `mc_num` samples are stratified (one random
offset, then evenly spaced, so every l in 1..L is covered about equally). The same bound written
with Bernoulli masking (t ~ U(0, 1], each token masked with probability t, weight 1/t; the form
of the Eq. 3 loss) has the same expectation and a much larger variance: `masking="bernoulli"`.

Infilling: with a `suffix` after the response, the model sees both sides and the estimate bounds
log p(r | p, suffix); the suffix, like the prompt, is never masked. (A causal model cannot condition
on what follows: score r + suffix given p instead.)

Unconditional (Eq. 4): the same estimate with an empty prompt bounds -log p(x) from above;
`nll_bound` reports it as nats, perplexity and bits per byte.

For the autoregressive baseline (`config.kind`: causal, unshifted) the log-likelihood is exact
(teacher forcing): the same calls return it with a zero standard error, so the two model kinds
compare side by side.

Samples from many (prompt, response) pairs are packed into forward passes of `batch_size` rows,
so `mc_num` need not be a multiple of `batch_size`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from llada.errors import UserError
from llada.model import LLaDAModel

Masking = Literal["exact_count", "bernoulli"]


class LikelihoodError(UserError, ValueError):
    """Bad input to a likelihood estimate."""


@dataclass
class Estimate:
    """A Monte-Carlo estimate of log p(response | prompt) in nats, per pair."""

    value: float  # the mean of `samples` (a lower bound on log p in expectation)
    stderr: float  # standard error of the mean (0 for an exact, autoregressive value)
    samples: Tensor  # (n,) one value per Monte-Carlo draw
    tokens: int  # response length L


@dataclass
class BoundReport:
    """An upper bound on the negative log-likelihood of held-out text (Eq. 4)."""

    nll: float  # nats, summed over all texts
    stderr: float
    tokens: int
    bytes: int

    @property
    def nll_per_token(self) -> float:
        return self.nll / max(1, self.tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / max(1, self.bytes)


# ---------------------------------------------------------------------------------- masking
def stratified_counts(length: int, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n mask counts l in 1..length: l_j = floor((j + u) * length / n) + 1 with one u ~ U[0, 1).

    Each l_j alone is uniform on 1..length; together they cover the range evenly.
    """
    u = torch.rand((), generator=generator).item()
    j = torch.arange(n, dtype=torch.float64)
    return (((j + u) * length / n).floor().long() % length) + 1


def mask_exactly(counts: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, length) bool: row j masks a uniformly random set of exactly counts[j] positions."""
    keys = torch.rand(counts.shape[0], length, generator=generator)
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def mask_bernoulli(n: int, length: int, eps: float = 1e-3,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(n, length) bool masks with per-row rate t = (1 - eps) u + eps, and the weights 1 / t."""
    t = (1 - eps) * torch.rand(n, generator=generator, dtype=torch.float64) + eps
    masks = torch.rand(n, length, generator=generator, dtype=torch.float64) < t[:, None]
    return masks, 1 / t


# ---------------------------------------------------------------------------------- estimates
def _check_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int,
                 suffixes: Sequence[Sequence[int]] | None = None) -> None:
    if suffixes is not None and len(suffixes) != len(pairs):
        raise LikelihoodError(f"{len(suffixes)} suffixes for {len(pairs)} pairs; give one (possibly empty) per pair")
    for i, (prompt, response) in enumerate(pairs):
        after = len(suffixes[i]) if suffixes is not None else 0
        if len(response) == 0:
            raise LikelihoodError(f"pair {i}: the response is empty; a likelihood needs at least one token")
        if len(prompt) + len(response) + after > max_length:
            extra = f" + suffix ({after})" if after else ""
            raise LikelihoodError(f"pair {i}: prompt ({len(prompt)}) + response ({len(response)}){extra} tokens "
                                  f"exceed the model's max_sequence_length {max_length}; shorten the context")


def _check_ids(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], vocab_size: int,
               suffixes: Sequence[Sequence[int]] | None = None) -> None:
    """Every pair is (prompt ids, response ids) and every id an integer in [0, vocab_size): a
    LikelihoodError that names the argument otherwise (a float id would be truncated, a negative
    or too large one would index past the embedding)."""
    if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__len__"):
        raise LikelihoodError(f"pairs must be a list of (prompt ids, response ids) pairs, got {type(pairs).__name__}")
    if suffixes is not None and (isinstance(suffixes, (str, bytes, dict)) or not hasattr(suffixes, "__len__")):
        raise LikelihoodError(f"suffixes must be a list with one list of token ids per pair, got "
                              f"{type(suffixes).__name__}")
    if len(pairs) == 0:
        raise LikelihoodError("pairs is empty; give at least one (prompt ids, response ids) pair")
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes, dict)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise LikelihoodError(f"pair {i} must be (prompt ids, response ids), got {pair!r:.80}")
        _check_token_ids(pair[0], f"pair {i}: the prompt", vocab_size)
        _check_token_ids(pair[1], f"pair {i}: the response", vocab_size)
        if suffixes is not None and i < len(suffixes):
            _check_token_ids(suffixes[i], f"pair {i}: the suffix", vocab_size)


def _check_token_ids(ids: Sequence[int], what: str, vocab_size: int) -> None:
    if isinstance(ids, Tensor):
        if ids.dim() != 1 or ids.dtype in (torch.bool, torch.complex64, torch.complex128) or ids.is_floating_point():
            raise LikelihoodError(f"{what} must be token ids (integers), got a {ids.dtype} tensor of shape "
                                  f"{tuple(ids.shape)}")
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)):
        raise LikelihoodError(f"{what} must be token ids, not text: encode it with the tokenizer first")
    if isinstance(ids, dict) or not hasattr(ids, "__len__") or not hasattr(ids, "__iter__"):
        raise LikelihoodError(f"{what} must be a list of token ids (or a 1-D tensor), got {type(ids).__name__}")
    for t in ids:
        if not isinstance(t, numbers.Integral) or isinstance(t, bool):
            raise LikelihoodError(f"{what} must be token ids (integers), got {t!r} ({type(t).__name__})")
        if not 0 <= t < vocab_size:
            raise LikelihoodError(f"{what} holds token id {t}, outside the model's vocabulary 0..{vocab_size - 1}")


def _pad(rows: list[Tensor], pad_id: int) -> tuple[Tensor, Tensor | None]:
    width = max(r.shape[0] for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    am = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : r.shape[0]] = r
        am[i, : r.shape[0]] = 1
    return ids, (None if bool(am.all()) else am)


@torch.no_grad()
def log_likelihoods(model: LLaDAModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                    mc_num: int = 128, batch_size: int = 32, cfg_scale: float = 0.0,
                    masking: Masking = "exact_count", generator: torch.Generator | None = None,
                    suffixes: Sequence[Sequence[int]] | None = None) -> list[Estimate]:
    """Estimate log p(response | prompt) for each (prompt ids, response ids) pair (Eq. 6).

    mc_num: Monte-Carlo samples per pair (ignored for an autoregressive model: exact).
    batch_size: rows per forward pass; samples of all pairs are packed together.
    cfg_scale: unsupervised classifier-free guidance, the unconditional pass masking the prompt (and suffix).
    masking: "exact_count" (Eq. 6) or "bernoulli" (the Eq. 3 form; for comparison).
    suffixes: per pair, token ids that follow the response and stay visible (infilling:
        log p(response | prompt, suffix)); diffusion models only.
    Raises LikelihoodError for input it cannot score, naming the argument.
    """
    cfg = model.config
    _check_values(mc_num, batch_size, cfg_scale, masking, generator)
    _check_ids(pairs, cfg.vocab_size, suffixes)
    _check_pairs(pairs, cfg.max_sequence_length, suffixes)
    if cfg.kind == "autoregressive":
        if suffixes is not None and any(len(s) for s in suffixes):
            raise LikelihoodError("an autoregressive model cannot condition on tokens after the response; "
                                  "score response + suffix after the prompt instead")
        return _autoregressive(model, pairs, batch_size)
    draws = _draw(pairs, suffixes, mc_num, masking, generator, cfg.mask_token_id)
    values = _masked_logp_sums(model, draws, batch_size, cfg_scale).double().cpu() * torch.cat(draws.weight)
    rows = torch.as_tensor(draws.owner)
    return [_estimate(values[rows == i], len(pairs[i][1])) for i in range(len(pairs))]


def _check_values(mc_num: int, batch_size: int, cfg_scale: float, masking: str,
                  generator: torch.Generator | None) -> None:
    for name, value in (("mc_num", mc_num), ("batch_size", batch_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise LikelihoodError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(cfg_scale, numbers.Real) or not math.isfinite(cfg_scale) or cfg_scale < 0:
        raise LikelihoodError(f"cfg_scale must be a finite number >= 0, got {cfg_scale!r}")
    if masking not in ("exact_count", "bernoulli"):
        raise LikelihoodError(f"masking must be 'exact_count' or 'bernoulli', got {masking!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise LikelihoodError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


@dataclass
class _Draws:
    """The Monte-Carlo samples of every pair, one row each, drawn before any forward pass."""

    owner: list[int] = field(default_factory=list)  # the pair each row belongs to
    weight: list[Tensor] = field(default_factory=list)  # per pair, (mc_num,) float64: L / l, or 1 / t
    clean: list[Tensor] = field(default_factory=list)  # (T,) prompt, response, suffix
    noised: list[Tensor] = field(default_factory=list)  # (T,) the same with the sample's positions masked
    target: list[Tensor] = field(default_factory=list)  # (T,) bool: the masked positions
    in_context: list[Tensor] = field(default_factory=list)  # (T,) bool: what the unconditional pass hides


def _draw(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], suffixes: Sequence[Sequence[int]] | None,
          mc_num: int, masking: Masking, generator: torch.Generator | None, mask_id: int) -> _Draws:
    """mc_num masked copies of each pair's response: exactly l of its L tokens with l stratified
    (Eq. 6), or each with probability t (Eq. 3's form); prompt and suffix never masked."""
    draws = _Draws()
    for i, (prompt, response) in enumerate(pairs):
        p = torch.as_tensor(list(prompt), dtype=torch.long)
        r = torch.as_tensor(list(response), dtype=torch.long)
        s = torch.as_tensor(list(suffixes[i]) if suffixes is not None else [], dtype=torch.long)
        L = r.shape[0]
        if masking == "exact_count":
            counts = stratified_counts(L, mc_num, generator)
            masks, weights = mask_exactly(counts, L, generator), (L / counts.double())
        else:
            masks, weights = mask_bernoulli(mc_num, L, generator=generator)
        seq = torch.cat([p, r, s])
        position = torch.arange(seq.shape[0])
        is_context = (position < p.shape[0]) | (position >= p.shape[0] + L)
        for m in masks:
            draws.clean.append(seq)
            draws.in_context.append(is_context)
            draws.noised.append(torch.cat([p, torch.where(m, mask_id, r), s]))
            draws.target.append(torch.cat([torch.zeros_like(p, dtype=torch.bool), m,
                                           torch.zeros_like(s, dtype=torch.bool)]))
        draws.owner += [i] * mc_num
        draws.weight.append(weights)
    return draws


def _masked_logp_sums(model: LLaDAModel, draws: _Draws, batch_size: int, cfg_scale: float) -> Tensor:
    """(rows,) on the model's device: each row's sum of log p(clean token | noised row) over its
    masked positions, `batch_size` rows per forward pass (with CFG, twice that)."""
    cfg, device = model.config, model.device
    mask_id, pad_id = cfg.mask_token_id, cfg.roles.pad
    sums = []  # kept on the device until the end
    for lo in range(0, len(draws.noised), batch_size):
        hi = lo + batch_size
        ids, am = _pad(draws.noised[lo:hi], pad_id)
        targets, _ = _pad(draws.clean[lo:hi], pad_id)
        where, _ = _pad(draws.target[lo:hi], 0)
        b = ids.shape[0]
        rows, cols = where.bool().nonzero(as_tuple=True)  # (N,) each, found on the host: no device sync
        context = _pad(draws.in_context[lo:hi], 0)[0].bool() if cfg_scale > 0 else None
        ids, targets, rows, cols, am, context = _to_device(device, ids, targets, rows, cols, am, context)
        # Only the masked positions reach the output head and the float32 log-softmax, as in the
        # reference's logits[mask_index]: (N, V) for the N masked tokens, never (b, T, V).
        if cfg_scale > 0:  # the unconditional rows mask the context (prompt and suffix)
            uncond = ids.masked_fill(context, mask_id)
            logits = _up(model(torch.cat([ids, uncond]), None if am is None else torch.cat([am, am]),
                               output_positions=(torch.cat([rows, rows + b]), torch.cat([cols, cols]))))
            cond, unc = logits.chunk(2)  # the conditional rows' tokens come first
            logits = unc + (cfg_scale + 1) * (cond - unc)
        else:
            logits = _up(model(ids, am, output_positions=(rows, cols)))  # (N, V)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[rows, cols][:, None])[:, 0]  # (N,)
        sums.append(torch.zeros(b, dtype=logp.dtype, device=device).index_add_(0, rows, logp))
    return torch.cat(sums)


def _to_device(device: torch.device, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Host tensors (None kept) onto `device`. On CUDA through pinned memory without blocking: a
    plain copy from pageable memory waits for the GPU to finish its queue, so the host could not
    prepare the next batch while the GPU runs this one."""
    if device.type != "cuda":
        return tuple(None if t is None else t.to(device) for t in tensors)
    return tuple(None if t is None else t.pin_memory().to(device, non_blocking=True) for t in tensors)


def _up(logits: Tensor) -> Tensor:
    """Logits in at least float32 (bfloat16 models), float64 kept."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _estimate(samples: Tensor, tokens: int) -> Estimate:
    n = samples.shape[0]
    stderr = samples.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return Estimate(samples.mean().item(), stderr, samples, tokens)


def _autoregressive(model: LLaDAModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                    batch_size: int) -> list[Estimate]:
    """Exact log p(response | prompt) by teacher forcing (the causal baseline)."""
    cfg = model.config
    pad_id = cfg.roles.pad
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else cfg.eos_token_id
    out: list[Estimate] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        # An empty prompt is conditioned on BOS so the first response token has a predictor.
        seqs = [torch.as_tensor(list(p) if len(p) else [bos], dtype=torch.long) for p, _ in chunk]
        full = [torch.cat([s, torch.as_tensor(list(r), dtype=torch.long)]) for s, (_, r) in zip(seqs, chunk, strict=True)]
        ids, am = _pad(full, pad_id)
        logp = torch.log_softmax(_up(model(ids.to(model.device), None if am is None else am.to(model.device))), -1)
        for row, (s, (_, r)) in enumerate(zip(seqs, chunk, strict=True)):
            P, L = s.shape[0], len(r)
            pred = logp[row, P - 1: P - 1 + L].cpu()
            value = pred.gather(-1, torch.as_tensor(list(r))[:, None])[:, 0].double().sum()
            out.append(Estimate(value.item(), 0.0, value.reshape(1), L))
    return out


def log_likelihood(model: LLaDAModel, prompt: Sequence[int], response: Sequence[int], **kw) -> Estimate:
    """`log_likelihoods` for one pair."""
    return log_likelihoods(model, [(prompt, response)], **kw)[0]


def nll_bound(model: LLaDAModel, texts: Sequence[Sequence[int]], *, bytes_total: int | None = None,
              prefix: Sequence[int] = (), **kw) -> BoundReport:
    """Upper bound on -log p of each token sequence (Eq. 4), summed; `prefix` (e.g. BOS) is given."""
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__") or len(texts) == 0:
        raise LikelihoodError("texts must be a non-empty list of token id sequences")
    estimates = log_likelihoods(model, [(prefix, t) for t in texts], **kw)
    nll = -sum(e.value for e in estimates)
    stderr = math.sqrt(sum(e.stderr**2 for e in estimates if not math.isnan(e.stderr)))
    tokens = sum(len(t) for t in texts)
    return BoundReport(nll, stderr, tokens, bytes_total if bytes_total is not None else tokens)


# ---------------------------------------------------------------------------------- uses
@dataclass
class Choice:
    index: int  # the option with the highest estimate
    scores: list[float]  # log-likelihood estimate of each option
    stderrs: list[float]


def choose(model: LLaDAModel, prompt: Sequence[int], options: Sequence[Sequence[int]],
           suffix: Sequence[int] = (), **kw) -> Choice:
    """Multiple choice: the option with the highest estimated log p(option | prompt[, suffix]).

    A non-empty `suffix` is the text after the gap (diffusion models only): the options fill the middle.
    """
    if not options:
        raise LikelihoodError("no options to choose from")
    for k, o in enumerate(options):
        if len(o) == 0:
            raise LikelihoodError(f"option {k} is empty")
    est = log_likelihoods(model, [(prompt, o) for o in options], suffixes=[suffix] * len(options) if suffix else None,
                          **kw)
    scores = [e.value for e in est]
    return Choice(max(range(len(scores)), key=scores.__getitem__), scores, [e.stderr for e in est])


@torch.no_grad()
def is_greedy(model: LLaDAModel, prompt: Sequence[int], response: Sequence[int]) -> bool:
    """Would deterministic decoding produce `response` after `prompt`?

    Diffusion: the reverse process with one token per step over exactly len(response) masks,
    temperature 0, low-confidence remasking. Autoregressive: greedy next-token decoding.
    """
    L = len(response)
    _check_ids([(prompt, response)], model.config.vocab_size)
    _check_pairs([(prompt, response)], model.config.max_sequence_length)
    if model.config.kind == "autoregressive":
        bos = model.config.bos_token_id if model.config.bos_token_id is not None else model.config.eos_token_id
        seq = torch.as_tensor((list(prompt) or [bos]) + list(response), device=model.device)[None]
        P = seq.shape[1] - L
        pred = model(seq).argmax(-1)[0, P - 1: P - 1 + L]
        return bool((pred == seq[0, P:]).all())
    from llada.sampling import sample

    ids = torch.as_tensor(list(prompt), dtype=torch.long)[None]
    out = sample(model, ids, gen_length=L, steps=L, block_length=None)
    return out.responses[0].tolist() == list(response)


@torch.no_grad()
def next_token_logprobs(model: LLaDAModel, ids: Sequence[int], start: int = 1, batch_size: int = 32) -> Tensor:
    """(len(ids) - start, vocab_size) float32: row j is log p(. | ids[:start + j]), the model's
    prediction for position start + j from the tokens before it alone: one mask appended to them
    (diffusion; exactly Eq. 6 for a one-token response) or the next-token distribution
    (autoregressive). Its argmax is what left-to-right decoding one token at a time would pick."""
    cfg = model.config
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise LikelihoodError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_token_ids(ids, "ids", cfg.vocab_size)
    if not isinstance(start, numbers.Integral) or isinstance(start, bool) or not 1 <= start <= len(ids):
        raise LikelihoodError(f"start must be an integer in 1..{len(ids)}, got {start!r}")
    if len(ids) > cfg.max_sequence_length:
        raise LikelihoodError(f"{len(ids)} tokens exceed the model's max_sequence_length {cfg.max_sequence_length}")
    seq = torch.as_tensor(list(ids), dtype=torch.long, device=model.device)
    if cfg.kind == "autoregressive":
        logits = model(seq[None], output_positions=slice(start - 1, len(ids) - 1))[0]
        return torch.log_softmax(_up(logits), -1)[:, : cfg.vocab_size].float().cpu()
    rows = []
    for lo in range(start, len(ids), batch_size):  # rows ids[:i] + [mask], left padded: the mask is last
        ends = range(lo, min(lo + batch_size, len(ids)))
        width = ends[-1] + 1
        batch = torch.full((len(ends), width), cfg.roles.pad, dtype=torch.long, device=model.device)
        am = torch.zeros_like(batch)
        for r, i in enumerate(ends):
            batch[r, width - i - 1:] = torch.cat([seq[:i], seq.new_tensor([cfg.mask_token_id])])
            am[r, width - i - 1:] = 1
        logits = model(batch, am, output_positions=slice(-1, None))[:, 0]
        rows.append(torch.log_softmax(_up(logits), -1)[:, : cfg.vocab_size].float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, cfg.vocab_size)


__all__ = ["BoundReport", "Choice", "Estimate", "LikelihoodError", "choose", "is_greedy", "log_likelihood",
           "log_likelihoods", "mask_bernoulli", "mask_exactly", "next_token_logprobs", "nll_bound",
           "stratified_counts"]
