"""The tiny training configuration the training tests start from."""

from __future__ import annotations

from llada.training.config import TrainConfig
from llada.training.trainer import Trainer


def _cfg(tmp_path, corpus, **kw) -> TrainConfig:
    base = dict(model="debug", data=str(corpus), out_dir=str(tmp_path / "run"), seq_len=32, batch_size=4,
                max_steps=6, warmup_steps=2, lr=3e-3, eval_every=0, save_every=0, log_every=1, vocab_size=300,
                progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _stopped_at_step_2(cfg: TrainConfig) -> Trainer:
    """A Trainer of `cfg` that made two steps and saved a checkpoint (a run killed after it)."""
    trainer = Trainer(cfg)
    trainer.train_step(), trainer.train_step()
    trainer.save_checkpoint()
    return trainer
