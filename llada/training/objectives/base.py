"""What the Trainer asks of a training objective, and nothing else: the stage's data, how a global
batch is noised, and the loss of a slice of its rows.

    objective = objective_for(cfg)            # e.g. SFTDiffusion(cfg), from the registry
    objective.data.load()                     # texts or conversations, train and validation
    objective.data.prepare(tokenizer)         # rows
    batch = objective.data.crop(objective.data.batch(indices), crop_generator)
    objective.check_model(model.config)                        # a model this objective trains
    logged = objective.at_step(step)                           # each step first: its schedules, what to log
    noised = objective.noise(batch, mask_id, generator)        # the whole global batch at once
    out = objective.loss(model, batch, noised, rows, device)   # this process's rows
    objective.sampler_options()                                # how the saved model samples (None: its family's)

Randomness comes only from the generators passed in, so the Trainer decides how every draw is
seeded (and a run is reproducible whatever the number of processes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from llada import diffusion
from llada.config import ModelConfig
from llada.sampling.options import SamplerOptions
from llada.training.config import TrainConfig
from llada.training.data import Batch, TrainingData


class Objective:
    """A training objective on a stage's data: how a global batch is noised, and a slice's loss.

    `causal` is the attention the model must have (True for the autoregressive baseline);
    `data` is the stage's `TrainingData`, built from the same config.
    """

    data_class: ClassVar[type[TrainingData]]
    causal: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.data = self.data_class(cfg)

    def at_step(self, step: int) -> dict[str, float]:
        """Set the objective to optimizer step `step` (0-based), before that step's batch is noised:
        what a schedule changes by step (`llada.training.schedules`) is a pure function of it, so a
        resumed run retraces the same losses. Returns what to log of it in metrics.jsonl (here
        nothing: the objective is the same at every step)."""
        return {}

    def noise(self, batch: Batch, mask_id: int, generator: torch.Generator) -> diffusion.NoisedBatch | None:
        """The forward process applied to the whole global batch (None: nothing is noised)."""
        return None

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        """The loss of rows `rows` of the global batch (one process's share of a micro-batch)."""
        raise NotImplementedError

    def check_model(self, config: ModelConfig) -> None:
        """Raise UserError when the model built (`config`) is not one this objective can train
        (`llada.training.build` has checked its attention against `causal`)."""

    def sampler_options(self) -> SamplerOptions | None:
        """How the model this objective trains samples, saved as its generation_config.json (None:
        the model family's recommended settings)."""
        return None

    def _targets(self, batch: Batch, rows: slice, device: torch.device | str) -> tuple[Tensor, Tensor | None]:
        """This process's clean rows (B, L) and which of their positions are learned (None: all)."""
        learned = self.data.learned(batch)
        return batch["input_ids"][rows].to(device), None if learned is None else learned[rows].to(device)

    def _documents(self, batch: Batch, rows: slice, device: torch.device | str) -> Tensor | None:
        """This process's document ids (B, L) when the rows are packed documents kept apart
        (cfg.document_mask), else None."""
        documents = batch.get("document_ids")
        return None if documents is None else documents[rows].to(device)
