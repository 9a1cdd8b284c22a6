"""`llada reproduce` refuses what it cannot run before it trains anything."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("device", ["foo", "cuda:3"])
def test_reproduce_refuses_a_device_before_training(tmp_path, capsys, device, monkeypatch):
    """--device this machine lacks: one line, and no model trained (nothing under out_dir/models)."""
    from llada.cli import main

    if device.startswith("cuda"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["reproduce", "remasking", "--size", "test", "--device", device, "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llada reproduce: error: --device") and device in err[0]
    assert not (tmp_path / "models").exists()


def test_a_model_given_to_claims_that_do_not_use_it_is_refused(tmp_path, capsys):
    """remasking trains its own model on addition: --diffusion would be checked and then ignored."""
    from llada.cli import main

    assert main(["reproduce", "remasking", "--size", "test", "--diffusion", str(tmp_path / "m"),
                 "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the claims asked for measures a diffusion model" in err[0], err
    assert not (tmp_path / "models").exists()
