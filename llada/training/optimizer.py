"""The optimizer and its schedule: AdamW with decay on matrices only, linear warmup then cosine decay.

The scheduler follows the optimizer's step count (`Trainer.train_step` steps it once per update
made) and is checkpointed with it (llada.training.state); it is not passed through accelerate's
prepare, which would advance it once per process per step.
"""

from __future__ import annotations

import math

import torch

from llada.training.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def build_optimizer(module: torch.nn.Module,
                    cfg: TrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `module`'s trained parameters (weight decay on those of 2 or more dimensions; norms
    and biases are not decayed; fused on a GPU) and its `lr_at` schedule."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    fused = torch.cuda.is_available()
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)
    return opt, sched


def grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """The global L2 norm of `module`'s gradients (what clipping would report, without clipping)."""
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())
