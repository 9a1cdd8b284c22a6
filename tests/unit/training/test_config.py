"""TrainConfig: its messages and the shipped training configs."""

from __future__ import annotations

import pytest
from conftest import ROOT

from llada.errors import UserError
from llada.training.config import TrainConfig
from llada.training.trainer import Trainer


def test_bad_config_messages(tmp_path):
    with pytest.raises(UserError, match="--batch_size must be positive"):
        TrainConfig(batch_size=0)
    with pytest.raises(UserError, match="neither a preset"):
        TrainConfig(model="no-such-preset")
    with pytest.raises(UserError, match="the file is empty"):
        empty = tmp_path / "e.txt"
        empty.write_text("")
        Trainer(TrainConfig(model="debug", data=str(empty), out_dir=str(tmp_path / "r"), progress=False))


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_train_configs_parse(path):
    """Every YAML in configs/train is accepted by the `llada train`/`sft` parser as written."""
    import yaml
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(TrainConfig, nested_key=None, fail_untyped=False)
    ns = parser.parse_args(["--config", str(path)])
    cfg = TrainConfig(**{k: v for k, v in vars(ns).items() if k != "config" and not k.startswith("__")})
    for key, value in yaml.safe_load(path.read_text()).items():
        assert getattr(cfg, key) == value, key
