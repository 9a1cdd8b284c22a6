"""Packed rows as documents: which document each token belongs to, its position within it, and
the attention that keeps documents apart.

Pretraining packs documents into rows joined with EOS (`llada.data.pretrain.pack`), so a row
holds the tail of one document, whole documents, and the head of another. With document masking
(as in LLaMA 3's and LLaDA 2.x's pretraining), no token attends to another document and rotary
positions restart at each document's first token: each document is trained as if it were alone.

    input_ids      a  b  EOS  BOS c  d  EOS  BOS e
    document_ids   0  0  0    1   1  1  1    2   2      a new document starts after each EOS
    positions      0  1  2    0   1  2  3    0   1

Pure functions of tensors, vectorised over the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from llada.diffusion import LogitsFn


def document_ids(input_ids: Tensor, eos_id: int) -> Tensor:
    """(B, L) long: the index of each token's document within its row, counted from 0; a new
    document starts after each `eos_id` (the EOS itself ends the one before)."""
    eos = (input_ids == eos_id).long()
    return eos.cumsum(dim=1) - eos


def document_positions(document_ids: Tensor) -> Tensor:
    """(B, L) long: each token's position within its document (0 at the document's first token)."""
    B, L = document_ids.shape
    index = torch.arange(L, device=document_ids.device).expand(B, L)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, 0).cummax(dim=1).values  # index of the document's first token
    return index - first


def same_document(document_ids: Tensor) -> Tensor:
    """(B, 1, L, L) bool: query i sees key j only within its own document, the 4-D attention mask
    `LLaDAModel.forward` takes (a causal model adds its own causal mask)."""
    return (document_ids[:, :, None] == document_ids[:, None, :])[:, None]


def continues_document(document_ids: Tensor) -> Tensor:
    """(B, L) bool: the token belongs to the document of the token before it (False at position 0
    and at each document's first token): the next-token targets that stay within a document."""
    out = torch.zeros_like(document_ids, dtype=torch.bool)
    out[:, 1:] = document_ids[:, 1:] == document_ids[:, :-1]
    return out


def within_documents(model: LogitsFn, document_ids: Tensor) -> LogitsFn:
    """`model` with every call attending within the documents of `document_ids` (B, L), positions
    restarting at each (`same_document`, `document_positions`); a call giving its own
    attention_mask is a ValueError (there is one mask)."""
    mask, positions = same_document(document_ids), document_positions(document_ids)

    def run(input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        if attention_mask is not None:
            raise ValueError("a model attending within documents takes no other attention_mask")
        return model(input_ids, attention_mask=mask, position_ids=positions, **kwargs)

    return run
