"""Every shipped config file loads: the training presets into `TrainConfig`, the accelerate
launch configs through accelerate's own parser, each with a backend the trainer supports."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from conftest import ROOT

from llada.data.world import WorldConfig
from llada.training.config import TrainConfig

CONFIGS = ROOT / "configs"


# what Trainer is built and tested for: DDP (one process per GPU) and FSDP (sharded); DeepSpeed
# would need its own engine handling (backward, clipping, accumulation), so no DeepSpeed config ships
SUPPORTED = {"MULTI_GPU", "FSDP", "NO", "MULTI_CPU"}


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_training_config_loads(path):
    data = yaml.safe_load(path.read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(data) <= fields, f"{path.name}: unknown keys {sorted(set(data) - fields)}"
    assert "stage" not in data, "the command (llada train / llada sft) sets the stage"
    if "world" in data:
        data["world"] = WorldConfig(**data["world"])
    TrainConfig(**data)  # validated in __post_init__


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_loads_with_a_supported_backend(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type.value in SUPPORTED, f"{path.name}: {config.distributed_type}"
