"""The forward (noising) process and the training objectives of a masked diffusion LM.

Forward process (paper Sec. 2.1): every token of x0 is independently replaced by [MASK] with
probability t, t ~ U(0, 1] drawn per sequence; the model predicts all masked tokens at once.

    Eq. 3  (pretraining)   L(θ) = -E_{t, x0, xt} [ 1/t · Σ_i 1[xt_i = M] · log p_θ(x0_i | xt) ]
    Eq. 5  (SFT)           the same with only response tokens maskable; the prompt stays clean

Both are upper bounds on the negative log-likelihood. Following the LLaDA guidelines, t is drawn
as (1 - eps) · u + eps (never 0), the pretraining loss is summed over the batch and divided by
B · L, and the SFT loss is normalised per sequence by its answer length, then averaged. Drawn in
[eps, t_max] with t_max < 1 (dFactory's LLaDA 2.x recipe: eps 0.3, t_max 0.8), the loss is no
longer a bound on the NLL: high noise levels are never trained.

Everything here is a pure function of tensors and an optional `torch.Generator`, vectorised over
the batch, with no host synchronisation, so a trainer can make runs exactly reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

LogitsFn = Callable[..., Tensor]  # model(input_ids, attention_mask=...) -> (B, L, V) logits


class NoisedBatch(NamedTuple):
    noisy_ids: Tensor  # (B, L) input with masked positions replaced by the mask id
    masked: Tensor  # (B, L) bool, True where a token was masked
    t: Tensor  # (B,) float32 masking probability of each sequence; (B, L) of each position (block diffusion)


class LossOutput(NamedTuple):
    loss: Tensor  # scalar, differentiable: what the optimiser minimises
    token_nll: Tensor  # scalar, detached: mean cross-entropy over the masked (or predicted) tokens
    num_tokens: Tensor  # scalar, detached: how many tokens the loss was computed on
    num_masked: Tensor  # scalar, detached: how many tokens were masked (== num_tokens here)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    # Draw on the generator's device, then move: keeps a CPU generator usable for CUDA batches,
    # and makes the noise identical across devices for the same seed.
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def sample_t(batch_size: int, *, eps: float = 1e-3, t_max: float = 1.0, antithetic: bool = False,
             generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """Masking probabilities t = (t_max - eps) · u + eps, u ~ U(0, 1), shape (B,); t_max = 1 is the
    paper's (1 - eps) u + eps. Raises ValueError unless 0 <= eps < t_max <= 1.

    antithetic: low-discrepancy sampling: one u0 and u_i = (u0 + i / B) mod 1, so the batch covers
    [0, 1) evenly (one draw per stratum of width 1/B). Each u_i is still uniform, so the loss stays
    unbiased, with lower variance across batches.
    """
    if not 0.0 <= eps < t_max <= 1.0:
        raise ValueError(f"eps and t_max must satisfy 0 <= eps < t_max <= 1, got eps {eps}, t_max {t_max}")
    if antithetic:
        u0 = _rand((1,), generator, device)
        u = (u0 + torch.arange(batch_size, device=u0.device) / batch_size) % 1.0
    else:
        u = _rand((batch_size,), generator, device)
    return (t_max - eps) * u + eps


def forward_process(input_ids: Tensor, mask_id: int, *, t: Tensor | None = None, maskable: Tensor | None = None,
                    eps: float = 1e-3, t_max: float = 1.0, antithetic: bool = False,
                    generator: torch.Generator | None = None) -> NoisedBatch:
    """Mask each maskable token of `input_ids` (B, L) independently with probability t: its
    sequence's (t (B,), drawn by `sample_t` when None) or its own (t (B, L): block diffusion)."""
    B, L = input_ids.shape
    if t is None:
        t = sample_t(B, eps=eps, t_max=t_max, antithetic=antithetic, generator=generator, device=input_ids.device)
    masked = _rand((B, L), generator, input_ids.device) < per_position(t)  # (B, L)
    if maskable is not None:
        masked = masked & maskable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return NoisedBatch(noisy, masked, t)


def per_position(t: Tensor) -> Tensor:
    """t (B,) of each sequence as (B, 1), or t (B, L) of each position as it is: what broadcasts
    against a (B, L) tensor."""
    return t.reshape(t.shape[0], -1)


def complementary(noised: NoisedBatch, input_ids: Tensor, mask_id: int, maskable: Tensor | None = None,
                  eps: float = 1e-3) -> NoisedBatch:
    """`noised` followed by its complement (2B rows): each sequence again, its maskable tokens
    masked exactly where they were kept, at probability 1 - t clamped at eps, so over the pair every
    maskable token is masked once (complementary masking, as LLaDA 2.x's training recipe uses).
    Each half is a forward process at its own t, so each half's loss keeps its meaning; a loss
    over the 2B rows is the mean of the pair's."""
    can = torch.ones_like(noised.masked) if maskable is None else maskable.bool()
    masked = can & ~noised.masked
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    other = NoisedBatch(noisy, masked, (1 - noised.t).clamp(min=eps))
    return NoisedBatch(*(torch.cat(pair) for pair in zip(noised, other, strict=True)))


# float32 elements of logits upcast at once by `masked_cross_entropy` (128 MiB): bounds its memory
_CE_CHUNK_ELEMENTS = 1 << 25


def _at_least_float32(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


class _RowCrossEntropy(torch.autograd.Function):
    """Cross-entropy of each row of logits (N, V) against targets (N,), in float32 (float64 for
    float64 logits), a chunk of rows at a time. It keeps only each row's log-sum-exp (N floats) for
    the backward pass, which recomputes softmax - one_hot chunk by chunk into the gradient: memory
    beyond the logits and their gradient is one float32 chunk, where `F.cross_entropy` on the upcast
    rows keeps an (N, V) float32 log-softmax until the backward pass."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        rows = max(1, _CE_CHUNK_ELEMENTS // logits.shape[-1])
        lse = torch.empty(logits.shape[0], dtype=_at_least_float32(logits), device=logits.device)
        ce = torch.empty_like(lse)
        for i in range(0, logits.shape[0], rows):
            x = logits[i:i + rows].to(lse.dtype)
            lse[i:i + rows] = torch.logsumexp(x, dim=-1)
            ce[i:i + rows] = lse[i:i + rows] - x.gather(-1, targets[i:i + rows, None]).squeeze(-1)
        ctx.save_for_backward(logits, targets, lse)
        return ce

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        rows = max(1, _CE_CHUNK_ELEMENTS // logits.shape[-1])
        out = torch.empty_like(logits)
        for i in range(0, logits.shape[0], rows):
            p = (logits[i:i + rows].to(lse.dtype) - lse[i:i + rows, None]).exp_()  # softmax
            p.scatter_add_(-1, targets[i:i + rows, None], p.new_full((p.shape[0], 1), -1.0))
            out[i:i + rows] = p.mul_(grad[i:i + rows, None])
        return out, None


def masked_cross_entropy(logits: Tensor, targets: Tensor, masked: Tensor) -> Tensor:
    """Per-position cross-entropy (B, L) in float32 (float64 for float64 logits), zero where
    `masked` (B, L) is False.

    logits (B, L, V) in any dtype; targets (B, L) ids. Without a host synchronisation: selecting
    the masked rows (`logits[masked]`, as LLaDA's guidelines do) makes the host wait for their
    count every micro-batch. Every row is scored instead (`_RowCrossEntropy`: float32, a chunk at a
    time) and the unmasked ones zeroed, which makes their gradient exactly zero.
    """
    B, L, V = logits.shape
    ce = _RowCrossEntropy.apply(logits.reshape(B * L, V), targets.reshape(B * L))
    return torch.where(masked, ce.view(B, L), 0.0)


def pretrain_loss(model: LogitsFn, input_ids: Tensor, mask_id: int, *, attention_mask: Tensor | None = None,
                  eps: float = 1e-3, antithetic: bool = False, generator: torch.Generator | None = None,
                  t: Tensor | None = None) -> LossOutput:
    """Eq. 3: Σ_{masked} CE / t over the batch, divided by B · L (the LLaDA guideline normalisation).

    With an attention_mask (padding), padded positions are never masked and L counts only real
    tokens, summed over the batch: loss = Σ CE/t / Σ real tokens (equal to B · L without padding).
    """
    maskable = attention_mask.bool() if attention_mask is not None else None
    noised = forward_process(input_ids, mask_id, t=t, maskable=maskable, eps=eps, antithetic=antithetic,
                             generator=generator)
    logits = model(noised.noisy_ids, attention_mask=attention_mask)
    return pretrain_loss_from_logits(logits, input_ids, noised, attention_mask)


def pretrain_loss_from_logits(logits: Tensor, input_ids: Tensor, noised: NoisedBatch,
                              attention_mask: Tensor | None = None) -> LossOutput:
    """The Eq. 3 loss given the model's logits on `noised.noisy_ids` (for trainers that noise the
    global batch once and run each process on its rows)."""
    ce = masked_cross_entropy(logits, input_ids, noised.masked)  # (B, L)
    denominator = attention_mask.sum() if attention_mask is not None else input_ids.numel()
    loss = (ce / per_position(noised.t)).sum() / denominator
    return _output(loss, ce, noised.masked)


def sft_loss(model: LogitsFn, input_ids: Tensor, response_mask: Tensor, mask_id: int, *,
             attention_mask: Tensor | None = None, **noise: Any) -> LossOutput:
    """Eq. 5: only response tokens are maskable; the prompt stays clean.

    response_mask (B, L) marks every assistant turn (and the EOS padding after the last one, which
    is learned and stays visible). Per sequence: Σ_{masked} CE / t divided by its answer length
    (response tokens, EOS padding included); then the mean over the batch. A sequence without
    response tokens contributes 0 (its denominator is clamped to 1); the data layer refuses such
    conversations, so this only guards against a division by zero. `noise` are the keyword
    arguments of `forward_process` (t, eps, antithetic, generator), as `pretrain_loss` takes them.
    """
    noised = forward_process(input_ids, mask_id, maskable=response_mask.bool(), **noise)
    logits = model(noised.noisy_ids, attention_mask=attention_mask)
    return sft_loss_from_logits(logits, input_ids, noised, response_mask)


def sft_loss_from_logits(logits: Tensor, input_ids: Tensor, noised: NoisedBatch, response_mask: Tensor) -> LossOutput:
    """The Eq. 5 loss given the model's logits on `noised.noisy_ids`."""
    ce = masked_cross_entropy(logits, input_ids, noised.masked)  # (B, L)
    answer_len = response_mask.sum(dim=1).clamp(min=1)  # (B,)
    per_seq = (ce / per_position(noised.t)).sum(dim=1) / answer_len
    return _output(per_seq.mean(), ce, noised.masked)


def ar_loss(model: LogitsFn, input_ids: Tensor, *, attention_mask: Tensor | None = None,
            loss_mask: Tensor | None = None) -> LossOutput:
    """Next-token cross-entropy for the autoregressive baseline (a model with `causal=True`).

    Position i predicts token i + 1; the mean is over predicted tokens. loss_mask (B, L) marks
    which tokens count as targets (SFT: the response; padding: the attention mask).
    """
    logits = model(input_ids, attention_mask=attention_mask)[:, :-1]  # (B, L-1, V)
    targets = input_ids[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool)
    if loss_mask is not None:
        keep = keep & loss_mask[:, 1:].bool()
    if attention_mask is not None:
        keep = keep & attention_mask[:, 1:].bool()
    ce = masked_cross_entropy(logits, targets, keep)
    return _output(ce.sum() / keep.sum().clamp(min=1), ce, keep)


def _output(loss: Tensor, ce: Tensor, counted: Tensor) -> LossOutput:
    n = counted.sum().detach()
    return LossOutput(loss, (ce.sum() / n.clamp(min=1)).detach(), n, n)


def crop_length(seq_len: int, prob: float, generator: torch.Generator | None = None) -> int:
    """The length of a variable-length batch: seq_len, or with probability `prob` one ~ U{1..seq_len}."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"variable-length probability must be in [0, 1], got {prob}")
    draw = torch.rand((), generator=generator).item()
    length = int(torch.randint(1, seq_len + 1, (), generator=generator).item())  # always drawn: keeps RNG in step
    return length if draw < prob else seq_len
