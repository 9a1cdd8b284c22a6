"""The masked diffusion objective: Eq. 3 on packed text (pretraining), Eq. 5 on conversations (SFT).

Every learned token of x0 is masked with its sequence's probability t = (1 - eps) u + eps
(antithetic u across the global batch when cfg.antithetic); the mask predictor sees x_t and is
scored on the masked tokens, weighted by 1/t. The losses themselves are llada.diffusion's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from llada import diffusion
from llada.training.data import Batch, Conversations, PackedText
from llada.training.objectives.base import Objective


class MaskedDiffusion(Objective):
    """The forward process on the learned tokens, and the mask predictor's loss on x_t."""

    def noise(self, batch: Batch, mask_id: int, generator: torch.Generator) -> diffusion.NoisedBatch:
        return diffusion.forward_process(batch["input_ids"], mask_id, maskable=self.data.learned(batch),
                                         eps=self.cfg.eps, antithetic=self.cfg.antithetic, generator=generator)

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        assert noised is not None, "the diffusion loss needs the noised batch"
        x0, learned = self._targets(batch, rows, device)
        local = diffusion.NoisedBatch(*(x[rows].to(device) for x in noised))
        logits = model(local.noisy_ids)  # (B, L, V)
        return self._from_logits(logits, x0, local, learned)

    def _from_logits(self, logits: Tensor, x0: Tensor, noised: diffusion.NoisedBatch,
                     learned: Tensor | None) -> diffusion.LossOutput:
        raise NotImplementedError


class PretrainDiffusion(MaskedDiffusion):
    """Eq. 3 on packed text: Σ_masked CE / t over the micro-batch, divided by B · L."""

    data_class = PackedText

    def _from_logits(self, logits: Tensor, x0: Tensor, noised: diffusion.NoisedBatch,
                     learned: Tensor | None) -> diffusion.LossOutput:
        return diffusion.pretrain_loss_from_logits(logits, x0, noised)


class SFTDiffusion(MaskedDiffusion):
    """Eq. 5 on conversations: only response tokens are masked (the prompt stays clean); per
    sequence Σ_masked CE / t divided by its answer length, then the mean over the micro-batch."""

    data_class = Conversations

    def _from_logits(self, logits: Tensor, x0: Tensor, noised: diffusion.NoisedBatch,
                     learned: Tensor | None) -> diffusion.LossOutput:
        assert learned is not None
        return diffusion.sft_loss_from_logits(logits, x0, noised, learned)
