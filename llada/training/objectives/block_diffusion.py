"""The block diffusion objective (BD3-LM; LLaDA 2.x): masked diffusion within blocks of
cfg.block_size tokens, one t per block, each block conditioned on the clean blocks before it, all
blocks trained in one pass over [x_t | x_0] (`llada.block_diffusion`).

    PretrainBlockDiffusion  PackedText       Σ_masked CE / t_block over the micro-batch / (B · L)
    SFTBlockDiffusion       Conversations    per sequence / its answer length, then the mean; each
                                             batch EOS-padded to whole blocks (the response ends on
                                             a block boundary, as block-causal sampling decodes it)

The block size of each step is cfg.block_size, or with cfg.block_size_schedule the schedule's
size at that step (`at_step`, `llada.training.schedules`: LLaDA 2.0's warmup-stable-decay).
The model it saves samples as block diffusion: generation_config.json says block_causal and
block_length = the last block size trained (`sampler_options`). Complementary masking, t_max and
document masks work as for Eq. 3 / Eq. 5 (masked_diffusion.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from llada import block_diffusion, diffusion
from llada.config import ModelConfig
from llada.errors import UserError
from llada.families import family_for
from llada.sampling.options import SamplerOptions
from llada.training import schedules
from llada.training.config import TrainConfig
from llada.training.data import Batch, Conversations
from llada.training.objectives.masked_diffusion import MaskedDiffusion, PretrainDiffusion, SFTDiffusion


class BlockDiffusion(MaskedDiffusion):
    """One t per block (`block_forward_process`), the mask predictor run on [x_t | x_0].

    `schedule` is the run's block size by step (`schedules.block_size_schedule`: one pair without
    cfg.block_size_schedule); `block_size` that of the step `at_step` set."""

    shifted = False  # the model's shifted_prediction, read by `check_model`
    family_preset: str | None = None  # the model family's sampler preset, read by `check_model`

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.schedule = schedules.block_size_schedule(cfg.block_size_schedule, cfg.block_size, cfg.seq_len,
                                                      cfg.max_steps)
        self.block_size = schedules.block_size_at(self.schedule, 0)

    def at_step(self, step: int) -> dict[str, float]:
        """The schedule's block size of `step`, logged as `block_size` when there is a schedule."""
        self.block_size = schedules.block_size_at(self.schedule, step)
        logged = super().at_step(step)
        if self.cfg.block_size_schedule is not None:
            logged["block_size"] = self.block_size
        return logged

    def _forward_process(self, batch: Batch, mask_id: int, maskable: Tensor | None,
                         generator: torch.Generator) -> diffusion.NoisedBatch:
        cfg = self.cfg
        return block_diffusion.block_forward_process(
            batch["input_ids"], mask_id, self.block_size, maskable=maskable, document_ids=batch.get("document_ids"),
            eps=cfg.eps, t_max=cfg.t_max, antithetic=cfg.antithetic, generator=generator)

    def _logits(self, model: Callable[..., Tensor], noisy_ids: Tensor, x0: Tensor,
                documents: Tensor | None) -> Tensor:
        return block_diffusion.block_diffusion_logits(model, noisy_ids, x0, self.block_size, documents,
                                                      shifted=self.shifted)

    def check_model(self, config: ModelConfig) -> None:
        """A causal model never lets the noisy half see the clean half after it: block diffusion
        refuses it. A model with shifted prediction (converted from an AR model) predicts each
        block's first token from the clean token before it (`block_diffusion.shifted_sources`)."""
        if config.causal:
            raise UserError(f"--objective block_diffusion trains a mask predictor with bidirectional attention; "
                            f"--model {self.cfg.model} has causal attention (convert it with `llada convert` and "
                            f"the default --causal false)")
        self.shifted = config.shifted_prediction
        self.family_preset = family_for(config).sampler_preset

    def sampler_options(self) -> SamplerOptions:
        """Block-causal sampling with blocks of the last size trained (cfg.block_size without a
        schedule): the attention the model was trained with last; the rest as its family recommends
        (a LLaDA 2.x model keeps the llada2 preset's threshold and cache), else the defaults."""
        preset = self.family_preset
        base = SamplerOptions.from_dict({"preset": preset}) if preset else SamplerOptions()
        return dataclasses.replace(base, block_causal=True, block_length=self.schedule[-1][1])


class PretrainBlockDiffusion(BlockDiffusion, PretrainDiffusion):
    """Block diffusion on packed text, normalised as Eq. 3."""


class SFTBlockDiffusion(BlockDiffusion, SFTDiffusion):
    """Block diffusion on conversations, normalised as Eq. 5; only response tokens are masked."""

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)  # batches padded to whole blocks of every size the schedule trains
        self.data = Conversations(cfg, multiple_of=math.lcm(*(size for _, size in self.schedule)))
