"""The `llada train` and `llada sft` commands. Their flags are the fields of `TrainConfig`
(`config_class`; llada/cli.py builds the config, with `--config file.yaml`), and the command is
the stage: `--stage` is not one of them."""

from __future__ import annotations

import dataclasses

from llada.training import trainer
from llada.training.config import TrainConfig


def train(cfg: TrainConfig) -> None:
    """Pretrain with the masked diffusion objective (Eq. 3), or the AR baseline with --objective ar."""
    cfg = dataclasses.replace(cfg, stage="pretrain")
    print(f"model written to {trainer.run(cfg)}")


def sft(cfg: TrainConfig) -> None:
    """Supervised fine-tuning on chat data (Eq. 5): --model is a model directory (or a preset)."""
    cfg = dataclasses.replace(cfg, stage="sft")
    print(f"model written to {trainer.run(cfg)}")


train.config_class = TrainConfig  # type: ignore[attr-defined]
sft.config_class = TrainConfig  # type: ignore[attr-defined]
