"""The trainer: schedule, accumulation, what a run writes, divergence, fp16 overflow, SFT and LoRA,
the autoregressive baseline and progress bars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from support.train import _cfg

import llada
from llada.training.config import TrainConfig
from llada.training.optimizer import lr_at
from llada.training.trainer import Trainer, TrainingDiverged


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, progress=False)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(35, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_gradient_accumulation_equals_one_big_batch(tmp_path, corpus):
    a = Trainer(_cfg(tmp_path / "a", corpus, batch_size=2, grad_accum=2, max_steps=2))
    b = Trainer(_cfg(tmp_path / "b", corpus, batch_size=4, grad_accum=1, max_steps=2))
    ma, mb = a.train_step(), b.train_step()
    assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-5)
    for (n, p), q in zip(a.base.named_parameters(), b.base.parameters(), strict=True):
        # float32 sums in another order differ by ~1e-7 and Adam's first step rescales them; a wrong
        # accumulation moves weights by ~lr (3e-3)
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=n)


def test_pretrain_writes_everything(tmp_path, corpus):
    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=2, keep_last=2, eval_every=3, tensorboard=True)
    final = Trainer(cfg).fit()
    run = Path(cfg.out_dir)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert (run / "curves.png").stat().st_size > 1000 and any((run / "tb").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
    bundle = llada.load(final)
    ids = bundle.tokenizer("Zeryth lives in", return_tensors="pt").input_ids
    assert bundle.model(ids).shape[-1] == bundle.config.embedding_size
    assert bundle.config.mask_token_id == bundle.tokenizer.mask_token_id  # ids come from the tokenizer


def test_divergence_stops_and_keeps_the_last_checkpoint(tmp_path, corpus, monkeypatch):
    cfg = _cfg(tmp_path, corpus, max_steps=10, save_every=2)
    trainer = Trainer(cfg)
    original = Trainer._loss

    def poisoned(self, batch, noised, rows):
        out = original(self, batch, noised, rows)
        return out._replace(loss=out.loss * float("nan")) if self.step == 5 else out

    monkeypatch.setattr(Trainer, "_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="step 5: the loss or gradient is nan/nan \\(not finite\\); the last checkpoint is intact"):
        trainer.fit()
    ckpts = sorted(p.name for p in (Path(cfg.out_dir) / "checkpoints").iterdir())
    assert ckpts == ["step-000002", "step-000004"]
    assert llada.load(Path(cfg.out_dir) / "checkpoints" / "step-000004").model is not None


def test_an_fp16_overflow_is_skipped_not_fatal(tmp_path, corpus, monkeypatch):
    """With fp16's GradScaler (torch's own, handed to accelerate as its fp16 runs on a GPU do, at
    scale 1 so the CPU's unscaled gradients are right), an overflowing gradient skips that update
    and the schedule, as GradScaler means it to, and training goes on."""
    import accelerate

    class WithScaler(accelerate.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)

    monkeypatch.setattr(accelerate, "Accelerator", WithScaler)
    trainer = Trainer(_cfg(tmp_path, corpus, max_steps=4))
    scaler = trainer.opt.scaler
    assert scaler is trainer.acc.scaler is not None
    weight = trainer.base.transformer.wte.weight
    overflow = {"left": 1}

    def poison(grad):
        if overflow["left"] and trainer.step == 1:
            overflow["left"] -= 1
            return grad * float("inf")
        return grad

    weight.register_hook(poison)
    m0 = trainer.train_step()
    before = {n: p.detach().clone() for n, p in trainer.base.named_parameters()}
    lr_before = trainer.sched.get_last_lr()[0]
    m1 = trainer.train_step()  # step 1: overflow
    assert (m0["skipped"], m1["skipped"]) == (0, 1) and trainer.step == 2
    assert all(torch.equal(p, before[n]) for n, p in trainer.base.named_parameters())  # no update
    assert trainer.sched.get_last_lr()[0] == lr_before and scaler.get_scale() < 1.0  # schedule held, scale lowered
    m2 = trainer.train_step()
    assert m2["skipped"] == 0 and not torch.equal(trainer.base.transformer.wte.weight, before["transformer.wte.weight"])


def test_sft_and_lora(tmp_path, corpus, chats):
    base = Trainer(_cfg(tmp_path / "pt", corpus, max_steps=2)).fit()
    before = llada.load(base).model.state_dict()
    cfg = _cfg(tmp_path / "sft", chats, model=str(base), stage="sft", max_steps=3, lora_r=4, lr=1e-2, seq_len=64)
    trainer = Trainer(cfg)
    trainer.fit()
    for name, p in trainer.module.named_parameters():
        if "lora_" not in name:
            assert not p.requires_grad
            assert torch.equal(p.detach(), before[name.split("base_model.model.")[-1].replace(".base_layer", "")]), name
    merged = llada.load(Path(cfg.out_dir) / "model")
    ids = torch.randint(0, 200, (1, 12))
    with torch.no_grad():
        assert torch.allclose(merged.model(ids), trainer.module(ids), atol=1e-5)
        assert not torch.allclose(merged.model(ids), llada.load(base).model(ids), atol=1e-4)


def test_autoregressive_baseline_trains(tmp_path, corpus):
    final = Trainer(_cfg(tmp_path, corpus, objective="ar", max_steps=3)).fit()
    assert llada.load(final).config.causal


def test_progress_false_silences_the_data_bars_too(tmp_path, corpus, capfd):
    """Each run reads a file of its own (datasets caches what it has prepared, and a cached file
    shows no bars): with --progress false nothing of datasets' bars reaches stderr."""
    import datasets

    text = corpus.read_text()
    for name, shown in (("quiet", False), ("loud", True)):
        data = tmp_path / f"{name}.txt"
        data.write_text(f"{name}\n\n{text}")
        Trainer(_cfg(tmp_path / name, data, max_steps=1, progress=shown))
        assert ("Map" in capfd.readouterr().err) == shown, name
        assert datasets.is_progress_bar_enabled()  # the setting is restored after
