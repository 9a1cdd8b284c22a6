"""The masked diffusion objective: Eq. 3 on packed text (pretraining), Eq. 5 on conversations (SFT).

Every learned token of x0 is masked with its sequence's probability t = (t_max - eps) u + eps
(antithetic u across the global batch when cfg.antithetic); the mask predictor sees x_t and is
scored on the masked tokens, weighted by 1/t. The losses themselves are llada.diffusion's.

With cfg.complementary_masking each sequence is trained twice per step, with the mask drawn and
with its complement (`diffusion.complementary`): the model sees 2B rows and the loss is the mean
of the pair's. With cfg.document_mask (packed rows carry `document_ids`) the model attends within
documents (`llada.documents`).

With cfg.attention_anneal_steps = N (a model converted from an AR one), the attention starts causal
and is relaxed step by step: at step s < N each key after a query is visible with probability s/N,
one pattern per step drawn after the noise from the step's generator and shared by the rows
(`schedules.annealed_mask`), combined with the document mask when there is one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from llada import diffusion
from llada.config import ModelConfig
from llada.documents import within_documents
from llada.errors import UserError
from llada.training import schedules
from llada.training.config import TrainConfig
from llada.training.data import Batch, Conversations, PackedText
from llada.training.objectives.base import Objective


class MaskedDiffusion(Objective):
    """The forward process on the learned tokens, and the mask predictor's loss on x_t.

    `step` is the optimizer step `at_step` set; `visible` the annealed attention mask (1, 1, L, L)
    of the batch noised last, None when every key is visible."""

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.step = 0
        self.visible: Tensor | None = None

    def at_step(self, step: int) -> dict[str, float]:
        """Logs `attention_anneal`, the fraction of the keys after a query that are visible (s/N), when annealing."""
        self.step = step
        N = self.cfg.attention_anneal_steps
        return {"attention_anneal": min(step / N, 1.0)} if N else {}

    def noise(self, batch: Batch, mask_id: int, generator: torch.Generator) -> diffusion.NoisedBatch:
        maskable = self.data.learned(batch)
        noised = self._forward_process(batch, mask_id, maskable, generator)
        if self.cfg.complementary_masking:  # 2G rows: the global batch's G, then their complements
            noised = diffusion.complementary(noised, batch["input_ids"], mask_id, maskable, eps=self.cfg.eps)
        N = self.cfg.attention_anneal_steps  # drawn after the noise, which is then the same as without annealing
        L = batch["input_ids"].shape[1]
        self.visible = schedules.annealed_mask(L, self.step, N, generator) if self.step < N else None
        return noised

    def check_model(self, config: ModelConfig) -> None:
        """Attention annealing relaxes the mask of a bidirectional model; a causal one never sees ahead."""
        if self.cfg.attention_anneal_steps and config.causal:
            raise UserError(f"--attention_anneal_steps relaxes a causal mask to bidirectional attention, but --model "
                            f"{self.cfg.model} has causal attention itself (convert it with `llada convert` and the "
                            f"default --causal false)")

    def _forward_process(self, batch: Batch, mask_id: int, maskable: Tensor | None,
                         generator: torch.Generator) -> diffusion.NoisedBatch:
        cfg = self.cfg
        return diffusion.forward_process(batch["input_ids"], mask_id, maskable=maskable, eps=cfg.eps, t_max=cfg.t_max,
                                         antithetic=cfg.antithetic, generator=generator)

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        assert noised is not None, "the diffusion loss needs the noised batch"
        x0, learned = self._targets(batch, rows, device)
        documents = self._documents(batch, rows, device)
        G = len(batch["input_ids"])
        index = torch.arange(G)[rows]
        if self.cfg.complementary_masking:  # noised holds 2G rows: these rows, then their complements
            index = torch.cat([index, index + G])
            x0, learned, documents = (None if x is None else x.repeat(2, 1) for x in (x0, learned, documents))
        local = diffusion.NoisedBatch(*(x[index].to(device) for x in noised))
        logits = self._logits(model, local.noisy_ids, x0, documents)  # (B, L, V)
        return self._from_logits(logits, x0, local, learned)

    def _logits(self, model: Callable[..., Tensor], noisy_ids: Tensor, x0: Tensor,
                documents: Tensor | None) -> Tensor:
        """The mask predictor's logits (B, L, V) on x_t (within documents when they are given, under the
        annealed attention mask while it anneals)."""
        if self.visible is not None:
            model = schedules.attending(model, self.visible.to(noisy_ids.device))
        return model(noisy_ids) if documents is None else within_documents(model, documents)(noisy_ids)

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
