"""Slow, obviously correct references for block diffusion and packed documents."""

from __future__ import annotations

import torch


def per_block_logits(model, x0: torch.Tensor, noisy: torch.Tensor, block_size: int) -> torch.Tensor:
    """Logits (L, V) of one row's noisy tokens, a block at a time: for block b the model runs alone on
    [x0 blocks < b, noisy block b] with its ordinary block-causal attention (`block_size=`), and the
    last block's logits are kept."""
    L = len(x0)
    out = []
    for start in range(0, L, block_size):
        end = min(start + block_size, L)
        seq = torch.cat([x0[:start], noisy[start:end]])[None]
        out.append(model(seq, block_size=block_size)[0, start:end])
    return torch.cat(out)


def documents_of(ids: list[int], eos_id: int) -> tuple[list[int], list[int]]:
    """(document index, position within it) of each token of a packed row, one token at a time: a
    new document starts after each EOS."""
    doc, pos, docs, positions = 0, 0, [], []
    for token in ids:
        docs.append(doc)
        positions.append(pos)
        pos += 1
        if token == eos_id:
            doc, pos = doc + 1, 0
    return docs, positions
