"""The autoregressive baseline: the same model with a causal mask, next-token cross-entropy on the
clean text (no noise), averaged over the predicted tokens that are learned. With document ids
(cfg.document_mask) the model attends within documents and a document's first token is no target
(nothing before it in its document predicts it)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from llada import diffusion
from llada.documents import continues_document, within_documents
from llada.training.data import Batch, Conversations, PackedText
from llada.training.objectives.base import Objective


class NextToken(Objective):
    """Next-token prediction under a causal mask (`llada.diffusion.ar_loss`)."""

    causal = True

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        x0, learned = self._targets(batch, rows, device)
        documents = self._documents(batch, rows, device)
        if documents is None:
            return diffusion.ar_loss(model, x0, loss_mask=learned)
        within = continues_document(documents)
        return diffusion.ar_loss(within_documents(model, documents), x0,
                                 loss_mask=within if learned is None else within & learned)


class PretrainAR(NextToken):
    """Next-token pretraining on packed text: every token after the first is a target."""

    data_class = PackedText


class SFTAR(NextToken):
    """Next-token SFT on conversations: only response tokens are targets."""

    data_class = Conversations
