"""An independent, minimal masked-diffusion step in plain PyTorch, checked against a real Trainer step.

The loop below is written from the paper's definitions, not from llada.diffusion:

    t = (1 - eps) u + eps, u ~ U[0, 1) per sequence     (antithetic: u_i = (u_0 + i / B) mod 1)
    x_t: each maskable token of x0 replaced by [MASK] independently with probability t
    Eq. 3 (pretraining)  Σ_{b,i masked} -log p(x0_bi | x_t) / t_b, divided by the real tokens (B · L)
    Eq. 5 (SFT)          per sequence Σ_{i masked} -log p(x0_bi | x_t) / t_b / |answer_b|, then the mean

The SFT maskable positions (the answer: every assistant turn's content and closing <|eot_id|>, and
the EOS that ends and pads the sequence) are found here from the tokens themselves. The noise is
the Trainer's: its step's generator (`step_generator(seed, step)`, the run's seeding contract),
drawn in the order "u for the rows, then one uniform per position". A real step must then agree
with this loop on the noise it drew, the loss it reported, the gradient it stepped with and the
weights it left.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from support.train import _cfg
from torch import Tensor

from llada.training.data import step_generator
from llada.training.optimizer import lr_at
from llada.training.trainer import Trainer

# ------------------------------------------------------------------------------ the minimal loop


def draw_noise(B: int, L: int, gen: torch.Generator, eps: float, antithetic: bool) -> tuple[Tensor, Tensor]:
    """t (B,) = (1 - eps) u + eps and the (B, L) uniforms that decide masking (mask where < t)."""
    if antithetic:  # one u_0, the rest spread evenly over [0, 1): each u_i is still U[0, 1)
        u = (torch.rand(1, generator=gen) + torch.arange(B) / B) % 1.0
    else:
        u = torch.rand(B, generator=gen)
    t = (1 - eps) * u + eps
    return t, torch.rand(B, L, generator=gen)


def masked_nll_over_t(model, x0: Tensor, masked: Tensor, t: Tensor, mask_id: int) -> Tensor:
    """(B, L): -log p(x0 | x_t) / t on the masked positions, 0 elsewhere."""
    xt = torch.where(masked, mask_id, x0)
    logp = F.log_softmax(model(xt).float(), dim=-1)  # (B, L, V)
    nll = -logp.gather(-1, x0[..., None])[..., 0]  # (B, L)
    return torch.where(masked, nll, 0.0) / t[:, None]


def pretrain_step_loss(model, x0: Tensor, mask_id: int, t: Tensor, uniforms: Tensor, weighted: bool = True,
                       real: Tensor | None = None) -> Tensor:
    """Eq. 3: every real token maskable; the sum over the batch divided by the number of real tokens."""
    real = torch.ones_like(x0, dtype=torch.bool) if real is None else real
    masked = (uniforms < t[:, None]) & real
    loss = masked_nll_over_t(model, x0, masked, t if weighted else torch.ones_like(t), mask_id)
    return loss.sum() / real.sum()


def sft_step_loss(model, x0: Tensor, answer: Tensor, mask_id: int, t: Tensor, uniforms: Tensor,
                  weighted: bool = True) -> Tensor:
    """Eq. 5: only answer tokens maskable; per sequence divided by its answer length, then the mean."""
    masked = (uniforms < t[:, None]) & answer
    loss = masked_nll_over_t(model, x0, masked, t if weighted else torch.ones_like(t), mask_id)
    return (loss.sum(dim=1) / answer.sum(dim=1)).mean()


def answer_positions(ids: Tensor, tokenizer) -> Tensor:
    """(B, L) bool: the positions of each assistant turn after its header (content and <|eot_id|>),
    and every EOS (the one that ends the conversation and the padding after it)."""
    tok = tokenizer.convert_tokens_to_ids
    start, end, eot = tok("<|start_header_id|>"), tok("<|end_header_id|>"), tok("<|eot_id|>")
    assistant = tokenizer("assistant", add_special_tokens=False)["input_ids"]
    out = torch.zeros_like(ids, dtype=torch.bool)
    for b, row in enumerate(ids.tolist()):
        inside, header_blank, role = False, False, []
        for i, x in enumerate(row):
            if x == start:
                inside, role = False, []
            elif x == end:
                inside, header_blank = role == assistant, True
            elif inside and header_blank and tokenizer.decode([x]).strip() == "":
                pass  # the blank line closing the header is prompt
            elif inside:
                header_blank = False
                out[b, i] = True
                inside = x != eot
            else:
                role.append(x)
            out[b, i] |= x == tokenizer.eos_token_id
    return out


# --------------------------------------------------------------------- checked against a real step


def _one_trainer_step(trainer: Trainer) -> dict:
    """Step 0 of `trainer`: its batch, noise, the ids the model saw, its loss, its (clipped) gradient
    and the weights before and after."""
    seen: dict = {"before": copy.deepcopy(trainer.base)}
    noise = trainer.objective.noise

    def recorded_noise(batch, mask_id, gen):
        seen["batch"], seen["noised"] = batch, noise(batch, mask_id, gen)
        return seen["noised"]

    trainer.objective.noise = recorded_noise
    hook = trainer.base.register_forward_pre_hook(lambda m, args: seen.setdefault("fed", args[0].clone()))
    step = trainer.opt.step

    def recorded_step(*a, **k):
        seen["grads"] = {n: p.grad.clone() for n, p in trainer.base.named_parameters()}
        return step(*a, **k)

    trainer.opt.step = recorded_step
    seen["loss"] = trainer.train_step()["loss"]
    hook.remove()
    return seen


def _check_step(trainer: Trainer, seen: dict, maskable: Tensor, loss_fn) -> dict[str, float]:
    """The minimal loop from the same weights and noise: the same mask, loss, gradient and AdamW step.
    `loss_fn(model, x0, mask_id, t, uniforms, weighted)` is the stage's loss."""
    cfg, model = trainer.cfg, seen["before"]
    x0 = seen["batch"]["input_ids"]
    mask_id = model.config.mask_token_id
    t, uniforms = draw_noise(*x0.shape, step_generator(cfg.seed, 0), cfg.eps, cfg.antithetic)
    masked = (uniforms < t[:, None]) & maskable
    assert torch.equal(seen["noised"].t, t)  # (1) the same t and the same mask, as drawn and as fed
    assert torch.equal(seen["noised"].masked, masked)
    assert torch.equal(seen["fed"], torch.where(masked, mask_id, x0))
    assert masked.any() and (maskable & ~masked).any()

    loss = loss_fn(model, x0, mask_id, t, uniforms, True)  # (2) the same loss
    value = float(loss.detach())
    assert seen["loss"] == pytest.approx(value, rel=1e-5)
    with torch.no_grad():
        unweighted = float(loss_fn(model, x0, mask_id, t, uniforms, False))
    assert abs(unweighted - value) > 1e-2 * abs(value)  # the check can fail: 1/t matters

    loss.backward()  # (3) the same clipped gradient, and the same AdamW update
    params = dict(model.named_parameters())
    torch.nn.utils.clip_grad_norm_(params.values(), cfg.max_grad_norm)
    grad_diff = max(float((params[n].grad - g).abs().max()) for n, g in seen["grads"].items())
    assert grad_diff < 1e-5
    decay = [p for p in params.values() if p.ndim >= 2]
    rest = [p for p in params.values() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr_at(0, cfg), betas=(cfg.beta1, cfg.beta2))
    opt.step()
    after = dict(trainer.base.named_parameters())
    weight_diff = max(float((p.detach() - after[n].detach()).abs().max()) for n, p in params.items())
    assert weight_diff < 1e-5
    return {"trainer": seen["loss"], "loop": value, "unweighted": unweighted, "grad": grad_diff, "weight": weight_diff}


def test_pretrain_step_matches_the_minimal_loop(tmp_path, corpus):
    """Eq. 3 on packed text with antithetic t: the trainer's step is the minimal loop's step."""
    trainer = Trainer(_cfg(tmp_path, corpus))
    assert trainer.cfg.antithetic
    seen = _one_trainer_step(trainer)
    x0 = seen["batch"]["input_ids"]
    _check_step(trainer, seen, torch.ones_like(x0, dtype=torch.bool), pretrain_step_loss)


def test_sft_step_matches_the_minimal_loop(tmp_path, chats):
    """Eq. 5 on EOS-padded conversations with independent t: the prompt is never masked, the answer
    (EOS padding included) is, and the trainer's step is the minimal loop's step."""
    trainer = Trainer(_cfg(tmp_path, chats, stage="sft", seq_len=64, antithetic=False))
    seen = _one_trainer_step(trainer)
    answer = answer_positions(seen["batch"]["input_ids"], trainer.tokenizer)
    assert torch.equal(seen["batch"]["response_mask"], answer)
    assert (~answer).any() and (seen["batch"]["input_ids"][answer] == trainer.tokenizer.eos_token_id).any()

    def loss(model, x0, mask_id, t, uniforms, weighted):
        return sft_step_loss(model, x0, answer, mask_id, t, uniforms, weighted)

    # Eq. 3's normalisation on the same batch and noise is another number: Eq. 5 is what is checked
    model, x0 = seen["before"], seen["batch"]["input_ids"]
    t, uniforms = draw_noise(*x0.shape, step_generator(trainer.cfg.seed, 0), trainer.cfg.eps, False)
    with torch.no_grad():
        eq3 = float(pretrain_step_loss(model, x0, model.config.mask_token_id, t, uniforms, real=answer))
    assert eq3 != pytest.approx(seen["loss"], rel=1e-2)
    _check_step(trainer, seen, answer, loss)
