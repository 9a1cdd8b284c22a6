"""`llada train` and `llada sft`. Their flags are the fields of `TrainConfig` (`config_class`;
the dispatcher, llada/cli.py, builds the config, with `--config file.yaml`), and the command is
the stage: `--stage` is not one of their flags (`hide_stage`), a config file may repeat the
command's own stage only, and `llada sft` needs `--model` (`check_values`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from llada.errors import UserError
from llada.training import trainer
from llada.training.config import TrainConfig

# the command that trains each stage
STAGE_COMMANDS = {"pretrain": "train", "sft": "sft"}


def train(cfg: TrainConfig) -> None:
    """Pretrain with the masked diffusion objective (Eq. 3), block diffusion with --objective
    block_diffusion, or the AR baseline with --objective ar."""
    cfg = dataclasses.replace(cfg, stage="pretrain")
    print(f"model written to {trainer.run(cfg)}")


def sft(cfg: TrainConfig) -> None:
    """Supervised fine-tuning on chat data (Eq. 5): --model is a model directory (or a preset)."""
    cfg = dataclasses.replace(cfg, stage="sft")
    print(f"model written to {trainer.run(cfg)}")


def _hide_stage(stage: str):
    def prepare_parser(parser: Any, args: list[str]) -> None:
        """No --stage flag (a config file may still name the stage); sft has no default model."""
        if any(a == "--stage" or a.startswith("--stage=") for a in args):
            raise UserError("--stage is not a flag of this command: the command is the stage "
                            "(llada train pretrains, llada sft fine-tunes)")
        for action in parser._actions:
            if action.dest == "stage":
                action.help = argparse.SUPPRESS
        parser.set_defaults(stage=None, **({"model": None} if stage == "sft" else {}))
    return prepare_parser


def _check_values(stage: str):
    def check_values(values: dict[str, Any]) -> dict[str, Any]:
        """The parsed values with the command's stage; a config naming another stage, or sft
        without a model, is a UserError."""
        command = STAGE_COMMANDS[stage]
        if values.get("stage") not in (None, stage):
            raise UserError(f"the config says stage: {values['stage']}, but llada {command} trains the {stage} "
                            f"stage; use llada {STAGE_COMMANDS.get(values['stage'], 'train')}")
        if stage == "sft" and values.get("model") is None:
            raise UserError("llada sft needs --model: the pretrained model directory to fine-tune (e.g. "
                            "runs/pt/model), or a preset name (--model tiny) to fine-tune a freshly initialised model")
        return {**values, "stage": stage}
    return check_values


for _func, _stage in ((train, "pretrain"), (sft, "sft")):
    _func.config_class = TrainConfig  # type: ignore[attr-defined]
    _func.prepare_parser = _hide_stage(_stage)  # type: ignore[attr-defined]
    _func.check_values = _check_values(_stage)  # type: ignore[attr-defined]
