"""Block diffusion: the training objective of BD3-LM (Arriola et al., "Block Diffusion: Interpolating
Between Autoregressive and Diffusion Language Models", ICLR 2025, arXiv:2503.09573, Sec. 3) and of
LLaDA 2.x's continued pretraining and SFT.

A sequence of L tokens is cut into blocks of `block_size`, generated one after another; within a
block, masked diffusion. The NLL bound is a sum over blocks, each block b with its own t_b:

    L_BD(θ) = Σ_b E_{t_b, x_t^b} [ 1/t_b · Σ_{i ∈ b} 1[x_t,i = M] · -log p_θ(x0_i | x_t^b, x0^{<b}) ]

(the linear schedule α_t = 1 - t, whose weight is 1/t, as Eq. 3 of LLaDA). Every block is trained
in one forward pass over 2L tokens, the noisy sequence then the clean one, [x_t | x_0], with the
attention mask of BD3-LM's `block_diff_mask` (kuleshov-group/bd3lms, models/dit.py):

    query \\ key       x_t, block b'              x_0, block b'
    x_t, block b      b' == b (bidirectional)    b' < b     noisy block b sees its clean past
    x_0, block b      never                      b' <= b    the clean copy is block-causal

Both halves carry the rotary positions 0..L-1, so noisy token i and clean token i sit at the same
position, and only the first L logits (the noisy half's) are computed. The clean half is the key
and value cache that block-causal sampling (`SamplerOptions.block_causal`) builds as it goes; a
query of the noisy half sees what that sampler's query sees, so training and sampling agree.

With `document_ids` (B, L) (packed rows, `llada.documents`), no query sees another document, and
blocks and positions are counted from each document's first token: each document is trained as
it would be alone. block_size = L is LLaDA's Eq. 3 (one block); block_size = 1 is next-token
prediction with every token masked at its own t.

Pure functions of tensors and an optional `torch.Generator`, vectorised over the batch; the
losses are llada.diffusion's, with t given per position.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from llada.diffusion import (
    LogitsFn,
    LossOutput,
    NoisedBatch,
    forward_process,
    pretrain_loss_from_logits,
    sample_t,
    sft_loss_from_logits,
)
from llada.documents import document_positions


def _check_block_size(block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def positions(L: int, document_ids: Tensor | None = None, device: torch.device | str | None = None) -> Tensor:
    """(1, L) positions 0..L-1, or (B, L) positions within each document of `document_ids` (B, L):
    the rotary positions of each half, and what blocks are counted from."""
    if document_ids is None:
        return torch.arange(L, device=device)[None]
    return document_positions(document_ids)


def block_diffusion_mask(L: int, block_size: int, document_ids: Tensor | None = None,
                         device: torch.device | str | None = None) -> Tensor:
    """The [x_t | x_0] attention mask, bool (1, 1, 2L, 2L), or (B, 1, 2L, 2L) with document_ids
    (B, L): True where query q (row) sees key k (column); queries 0..L-1 are x_t's, L..2L-1 x_0's.

    A query of noisy block b sees the noisy keys of block b and the clean keys of blocks < b; a
    query of clean block b sees the clean keys of blocks <= b. With document_ids, blocks are
    counted from each document's first token and no query sees a key of another document.
    Raises ValueError for a block_size that is not a positive int.
    """
    _check_block_size(block_size)
    device = document_ids.device if document_ids is not None else device
    block = positions(L, document_ids, device) // block_size  # (1|B, L)
    block = torch.cat([block, block], dim=1)  # (1|B, 2L): the block of each of the 2L tokens
    clean = torch.arange(2 * L, device=device) >= L  # (2L,): x_0's half
    q, k = block[:, :, None], block[:, None, :]  # (1|B, 2L, 1), (1|B, 1, 2L)
    clean_k = clean[None, None, :]
    noisy_query = (~clean_k & (k == q)) | (clean_k & (k < q))
    clean_query = clean_k & (k <= q)
    sees = torch.where(clean[None, :, None], clean_query, noisy_query)  # (1|B, 2L, 2L)
    if document_ids is not None:
        doc = torch.cat([document_ids, document_ids], dim=1)  # (B, 2L)
        sees = sees & (doc[:, :, None] == doc[:, None, :])
    return sees[:, None]


def block_t(input_ids: Tensor, block_size: int, document_ids: Tensor | None = None, *, eps: float = 1e-3,
            t_max: float = 1.0, antithetic: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """(B, L) float32: the masking probability of each position, that of its block, one t per block
    drawn by `sample_t` over all blocks of the batch in row order (antithetic: one stratum each).

    Without document_ids the count of blocks is B · ceil(L / block_size); with them a row holds
    more (a document's first token starts a block), counted on the host (a trainer noises the
    global batch on the CPU). With block_size = L these are the draws of Eq. 3's `forward_process`.
    """
    _check_block_size(block_size)
    B, L = input_ids.shape
    starts = (positions(L, document_ids, input_ids.device) % block_size == 0).expand(B, L)  # a block's first token
    n = B * -(-L // block_size) if document_ids is None else int(starts.sum())
    t = sample_t(n, eps=eps, t_max=t_max, antithetic=antithetic, generator=generator, device=input_ids.device)
    index = starts.reshape(-1).long().cumsum(0) - 1  # (B·L,): each position's block, in row order
    return t[index].view(B, L)


def block_forward_process(input_ids: Tensor, mask_id: int, block_size: int, *, maskable: Tensor | None = None,
                          document_ids: Tensor | None = None, generator: torch.Generator | None = None,
                          **time: Any) -> NoisedBatch:
    """The forward process with one t per block (`block_t`; `time`: its eps, t_max, antithetic):
    each maskable token of `input_ids` (B, L) is masked independently with its block's
    probability. The NoisedBatch's t is (B, L)."""
    t = block_t(input_ids, block_size, document_ids, generator=generator, **time)
    return forward_process(input_ids, mask_id, t=t, maskable=maskable, generator=generator)


def shifted_sources(L: int, block_size: int, document_ids: Tensor | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """(1|B, L) long: for a model with shifted prediction (its state at j predicts token j + 1; its
    realigned output at j + 1 is that state), which of the 2L realigned outputs of [x_t | x_0]
    predicts each noisy token i:

        inside a block             i       the noisy token before it, in the same block
        a block's first token      L + i   the clean token before it, which sees every clean block
                                           before this one: what block-causal sampling's cache holds
        a document's first token   i + 1   its own state (nothing of its document precedes it),
                                           as the realignment treats position 0
    """
    pos = positions(L, document_ids, device)  # (1|B, L)
    i = torch.arange(L, device=pos.device)
    return torch.where(pos == 0, i + 1, torch.where(pos % block_size == 0, L + i, i))


def block_diffusion_logits(model: LogitsFn, noisy_ids: Tensor, input_ids: Tensor, block_size: int,
                           document_ids: Tensor | None = None, shifted: bool = False) -> Tensor:
    """The mask predictor's logits (B, L, V) on the noisy half: one forward pass over
    [noisy_ids | input_ids] (B, 2L) with `block_diffusion_mask` and the positions of each half
    (0..L-1, or restarting at each document), only the first L positions' logits computed.

    shifted: the model has `shifted_prediction` (converted from an AR model, as Dream): each noisy
    token's logits come from the output `shifted_sources` names, so a block's first token is
    predicted from the clean token before it (Fast-dLLM v2's shifted block diffusion).
    """
    B, L = input_ids.shape
    mask = block_diffusion_mask(L, block_size, document_ids, device=input_ids.device)
    pos = positions(L, document_ids, input_ids.device).expand(B, L)
    outputs: slice | tuple[Tensor, Tensor] = slice(0, L)
    if shifted:
        rows = torch.arange(B, device=input_ids.device)[:, None].expand(B, L)
        outputs = (rows.reshape(-1), shifted_sources(L, block_size, document_ids, input_ids.device).expand(B, L).reshape(-1))
    logits = model(torch.cat([noisy_ids, input_ids], dim=1), attention_mask=mask,
                   position_ids=torch.cat([pos, pos], dim=1), output_positions=outputs)
    return logits.view(B, L, -1)


def block_diffusion_loss(model: LogitsFn, input_ids: Tensor, noised: NoisedBatch, block_size: int, *,
                         response_mask: Tensor | None = None, document_ids: Tensor | None = None,
                         shifted: bool = False) -> LossOutput:
    """The block diffusion loss of `noised` (`block_forward_process` of input_ids (B, L)):
    Σ_masked CE / t_block, divided by B · L (pretraining, as Eq. 3), or with a response_mask (B, L)
    per sequence by its answer length, then the mean (SFT, as Eq. 5). `shifted`: as in
    `block_diffusion_logits`."""
    logits = block_diffusion_logits(model, noised.noisy_ids, input_ids, block_size, document_ids, shifted)
    if response_mask is None:
        return pretrain_loss_from_logits(logits, input_ids, noised)
    return sft_loss_from_logits(logits, input_ids, noised, response_mask)
