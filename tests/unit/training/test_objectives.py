"""Each objective's loss computed on what the model sees."""

from __future__ import annotations

import pytest
import torch
from support.train import _cfg

from llada.training.config import TrainConfig
from llada.training.trainer import Trainer


def _reference_batch(cfg: TrainConfig, tokenizer, step: int) -> dict[str, torch.Tensor]:
    """Step `step`'s global batch built from the data layer alone: epoch 0 of the order seeded by
    `seed`, the SFT collator or packed rows, and the variable-length crop drawn with salt 1."""
    from llada import diffusion
    from llada.data.pretrain import load_texts, pack
    from llada.data.sft import SFTCollator, load_conversations, render_all
    from llada.training.data import step_generator

    if cfg.stage == "sft":
        rows = render_all(tokenizer, load_conversations(cfg.data, split="train", seed=cfg.seed))
    else:
        rows = pack(tokenizer, load_texts(cfg.data, split="train", seed=cfg.seed), cfg.seq_len)["input_ids"]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed * 7919)).tolist()
    picked = [rows[i] for i in order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
    if cfg.stage == "sft":
        return SFTCollator(tokenizer.eos_token_id, cfg.seq_len)(picked)
    length = diffusion.crop_length(cfg.seq_len, cfg.variable_length_prob, step_generator(cfg.seed, step, salt=1))
    return {"input_ids": torch.tensor(picked)[:, :length]}


def _reference_loss(model, cfg: TrainConfig, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
    """Eq. 3, Eq. 5 or the next-token loss of llada.diffusion on `batch`, with step `step`'s noise."""
    from llada import diffusion
    from llada.training.data import step_generator

    ids, response = batch["input_ids"], batch.get("response_mask")
    if cfg.objective == "ar":
        return diffusion.ar_loss(model, ids, loss_mask=response).loss
    gen = step_generator(cfg.seed, step)
    mask_id = model.config.mask_token_id
    if cfg.stage == "sft":
        return diffusion.sft_loss(model, ids, response, mask_id, eps=cfg.eps, antithetic=cfg.antithetic,
                                  generator=gen).loss
    return diffusion.pretrain_loss(model, ids, mask_id, eps=cfg.eps, antithetic=cfg.antithetic, generator=gen).loss


@pytest.mark.parametrize("stage,objective", [("pretrain", "diffusion"), ("sft", "diffusion"),
                                             ("pretrain", "ar"), ("sft", "ar")])
def test_trainer_step_computes_the_papers_loss_on_what_the_model_sees(tmp_path, corpus, chats, stage, objective):
    """A real Trainer step feeds the model the noised batch of llada.diffusion (SFT: never a masked
    prompt token; AR: the clean text) and reports Eq. 3 / Eq. 5 / the next-token loss, each computed
    here independently from the data layer and the step's seeded noise."""
    import copy

    data = chats if stage == "sft" else corpus
    cfg = _cfg(tmp_path, data, stage=stage, objective=objective, seq_len=64 if stage == "sft" else 32,
               variable_length_prob=0.5, max_steps=3)
    trainer = Trainer(cfg)
    mask_id = trainer.base.config.mask_token_id
    fed: list[torch.Tensor] = []
    trainer.base.register_forward_pre_hook(lambda module, args: fed.append(args[0].detach().clone()))
    masked_somewhere = False
    for step in range(3):
        batch = _reference_batch(cfg, trainer.tokenizer, step)
        reference = copy.deepcopy(trainer.base)  # the weights this step starts from
        fed.clear()
        loss = trainer.train_step()["loss"]
        assert len(fed) == 1
        seen = fed[0]
        assert seen.shape == batch["input_ids"].shape
        is_mask = seen == mask_id
        assert torch.equal(seen[~is_mask], batch["input_ids"][~is_mask])  # everything else is the clean text
        if objective == "ar":
            assert not is_mask.any()
        elif stage == "sft":
            assert not (is_mask & ~batch["response_mask"]).any(), "a prompt token was masked"
            assert (~batch["response_mask"]).any()
        masked_somewhere |= bool(is_mask.any())
        with torch.no_grad():
            expected = float(_reference_loss(reference, cfg, batch, step))
        assert loss == pytest.approx(expected, rel=1e-5, abs=1e-7), f"step {step}"
    assert masked_somewhere == (objective == "diffusion")
