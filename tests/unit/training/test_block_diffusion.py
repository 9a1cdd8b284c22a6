"""Block diffusion (llada.block_diffusion, objectives/block_diffusion.py) against independent
references: the [x_t | x_0] mask built by loops, Eq. 3 at one block, next-token prediction at blocks
of one, a model run block by block, and the trainer end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from support.block_diffusion import documents_of, per_block_logits
from support.train import _cfg, _stopped_at_step_2

import llada
from llada import diffusion
from llada.block_diffusion import (
    block_diffusion_logits,
    block_diffusion_loss,
    block_diffusion_mask,
    block_forward_process,
    block_t,
)
from llada.data.sft import SFTCollator
from llada.data.world import WorldConfig
from llada.documents import document_ids
from llada.errors import UserError
from llada.model import LLaDAModel
from llada.training.config import TrainConfig
from llada.training.objectives.block_diffusion import PretrainBlockDiffusion
from llada.training.objectives.masked_diffusion import PretrainDiffusion
from llada.training.trainer import Trainer

EOS, MASK = 62, 63


def _model(config) -> LLaDAModel:
    return LLaDAModel(config).eval()


def _reference_mask(L: int, block_size: int, ids: list[int] | None = None) -> torch.Tensor:
    """(2L, 2L) by nested loops over (query, key), from the rules in words."""
    docs, pos = documents_of(ids, EOS) if ids is not None else ([0] * L, list(range(L)))
    out = torch.zeros(2 * L, 2 * L, dtype=torch.bool)
    for q in range(2 * L):
        for k in range(2 * L):
            i, j = q % L, k % L
            if docs[i] != docs[j]:
                continue
            bq, bk = pos[i] // block_size, pos[j] // block_size
            if q < L:  # a noisy query: its own noisy block, the clean blocks before it
                out[q, k] = bk == bq if k < L else bk < bq
            else:  # a clean query: clean blocks up to its own
                out[q, k] = k >= L and bk <= bq
    return out


@pytest.mark.parametrize("L,block_size", [(8, 4), (7, 3), (6, 1), (5, 5)])
def test_the_mask_is_the_one_built_by_loops(L, block_size):
    assert torch.equal(block_diffusion_mask(L, block_size)[0, 0], _reference_mask(L, block_size))


def test_the_mask_with_documents_is_the_one_built_by_loops():
    rows = [[7, 8, EOS, 9, 10, 11, 12, EOS, 13, 14], [7, 8, 9, 10, 11, EOS, 12, 13, 14, 15]]
    mask = block_diffusion_mask(10, 3, document_ids(torch.tensor(rows), EOS))
    assert mask.shape == (2, 1, 20, 20)
    for b, row in enumerate(rows):
        assert torch.equal(mask[b, 0], _reference_mask(10, 3, row))


def test_a_block_size_that_is_not_a_positive_int_is_refused():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="block_size must be a positive int"):
            block_diffusion_mask(8, bad)


def test_one_t_per_block_stratified_over_every_block_of_the_batch():
    ids = torch.randint(0, 60, (3, 12))
    t = block_t(ids, 4, eps=0.1, antithetic=True, generator=torch.Generator().manual_seed(0))
    blocks = t.view(3, 3, 4)
    assert torch.equal(blocks, blocks[..., :1].expand(3, 3, 4))  # constant within a block
    u = ((blocks[..., 0].flatten() - 0.1) / 0.9).sort().values  # the 9 blocks' u: one per stratum of 1/9
    assert torch.equal((u * 9).floor(), torch.arange(9.0))


def test_block_size_L_is_eq3_with_the_same_noise(config):
    """One block: the same draws as Eq. 3's forward process, the noisy half's logits those of the
    plain bidirectional model on x_t, and the loss llada.diffusion's Eq. 3."""
    model = _model(config)
    x0 = torch.randint(0, 60, (3, 8))
    ours = block_forward_process(x0, MASK, 8, eps=0.05, antithetic=True, generator=torch.Generator().manual_seed(3))
    eq3 = diffusion.forward_process(x0, MASK, eps=0.05, antithetic=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours.masked, eq3.masked) and torch.equal(ours.noisy_ids, eq3.noisy_ids)
    assert torch.equal(ours.t, eq3.t[:, None].expand(3, 8))
    with torch.no_grad():
        plain = model(eq3.noisy_ids)
        assert torch.allclose(block_diffusion_logits(model, ours.noisy_ids, x0, 8), plain, atol=1e-5)
        expected = diffusion.pretrain_loss_from_logits(plain, x0, eq3).loss
        assert torch.allclose(block_diffusion_loss(model, x0, ours, 8).loss, expected, atol=1e-6)


def test_blocks_of_one_are_next_token_prediction(config):
    """Every position masked at t = 1: each position's CE is that of predicting its token from the
    clean prefix, computed by a causal copy of the same weights run on [prefix, MASK]; the loss is
    their mean (Eq. 3's 1/t is 1)."""
    model = _model(config)
    causal = LLaDAModel(config.replace(causal=True)).eval()
    causal.load_state_dict(model.state_dict())
    x0 = torch.randint(0, 60, (2, 6))
    noised = diffusion.NoisedBatch(torch.full_like(x0, MASK), torch.ones_like(x0, dtype=torch.bool),
                                   torch.ones(2, 6))
    with torch.no_grad():
        ours = F.cross_entropy(block_diffusion_logits(model, noised.noisy_ids, x0, 1).transpose(1, 2), x0,
                               reduction="none")
        reference = torch.stack([F.cross_entropy(causal(torch.cat([x0[:, :i], noised.noisy_ids[:, i:i + 1]], 1))[:, -1],
                                                 x0[:, i], reduction="none") for i in range(6)], dim=1)
        assert torch.allclose(ours, reference, atol=1e-5)
        assert torch.allclose(block_diffusion_loss(model, x0, noised, 1).loss, reference.mean(), atol=1e-6)


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("L,block_size", [(12, 4), (10, 4)])
def test_the_loss_is_the_sum_over_blocks_run_one_at_a_time(config, L, block_size, shifted):
    """Σ_masked CE / t_block / (B·L), the logits of each block from the model run alone on the clean
    blocks before it and that noisy block (a last block cut short included). With shifted prediction
    (a converted AR model) the run alone predicts a block's first token from the clean token before
    it, and the one pass over [x_t | x_0] must too."""
    model = _model(config.replace(shifted_prediction=shifted))
    x0 = torch.randint(0, 60, (2, L))
    noised = block_forward_process(x0, MASK, block_size, eps=0.2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        total = 0.0
        for b in range(2):
            logits = per_block_logits(model, x0[b], noised.noisy_ids[b], block_size)
            ce = F.cross_entropy(logits, x0[b], reduction="none")
            total += float((ce / noised.t[b])[noised.masked[b]].sum())
            ours = block_diffusion_logits(model, noised.noisy_ids[b:b + 1], x0[b:b + 1], block_size,
                                          shifted=shifted)[0]
            assert torch.allclose(ours, logits, atol=1e-5)
        assert noised.masked.any()
        loss = block_diffusion_loss(model, x0, noised, block_size, shifted=shifted).loss
        assert loss.item() == pytest.approx(total / (2 * L), rel=1e-5)


def test_the_sft_loss_masks_only_the_response_normalised_per_answer(config):
    model = _model(config)
    x0 = torch.randint(0, 60, (2, 8))
    response = torch.zeros(2, 8, dtype=torch.bool)
    response[0, 3:], response[1, 5:] = True, True
    noised = block_forward_process(x0, MASK, 4, maskable=response, eps=0.5, generator=torch.Generator().manual_seed(0))
    assert not (noised.masked & ~response).any() and noised.masked.any()
    with torch.no_grad():
        logits = block_diffusion_logits(model, noised.noisy_ids, x0, 4)
        ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none") * noised.masked / noised.t
        expected = (ce.sum(1) / response.sum(1)).mean()
        assert torch.allclose(block_diffusion_loss(model, x0, noised, 4, response_mask=response).loss, expected,
                              atol=1e-6)


def test_sft_batches_are_padded_to_whole_blocks():
    rows = [{"input_ids": [5] * 11, "response_mask": [False] * 4 + [True] * 7},
            {"input_ids": [6] * 5, "response_mask": [False] * 2 + [True] * 3}]
    batch = SFTCollator(EOS, 32, multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 16)  # the longest, 11, rounded up to whole blocks of 8
    assert batch["response_mask"][:, 11:].all() and (batch["input_ids"][0, 11:] == EOS).all()
    assert SFTCollator(EOS, 12, multiple_of=4)([{"input_ids": [5] * 30, "response_mask": [True] * 30}])[
        "input_ids"].shape == (1, 12)  # capped at seq_len
    assert SFTCollator(EOS, 32, padding="max_length", multiple_of=8)(rows)["input_ids"].shape == (2, 32)


def test_complementary_masking_masks_every_maskable_token_once_per_pair():
    x0 = torch.randint(0, 60, (4, 16))
    maskable = torch.rand(4, 16) < 0.7
    noised = diffusion.forward_process(x0, MASK, maskable=maskable, eps=0.1, t_max=0.9,
                                       generator=torch.Generator().manual_seed(0))
    pair = diffusion.complementary(noised, x0, MASK, maskable, eps=0.1)
    first, second = pair.masked[:4], pair.masked[4:]
    assert torch.equal(first | second, maskable) and not (first & second).any()
    assert torch.equal(pair.noisy_ids[4:], torch.where(second, MASK, x0))
    assert torch.allclose(pair.t[4:], (1 - noised.t).clamp(min=0.1))


def test_complementary_masking_trains_each_row_and_its_complement(config):
    """Eq. 3 with complementary masking on rows 1..2 of a global batch of 4: the model sees those
    rows masked as drawn and then masked where they were kept (at 1 - t), and the loss is the mean
    of the two Eq. 3 losses, computed here by hand."""
    model = _model(config)
    x0 = torch.randint(0, 60, (4, 8))
    objective = PretrainDiffusion(TrainConfig(model="debug", complementary_masking=True, eps=0.1))
    noised = objective.noise({"input_ids": x0}, MASK, torch.Generator().manual_seed(5))
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        loss = objective.loss(model, {"input_ids": x0}, noised, slice(1, 3), "cpu").loss
        drawn = diffusion.forward_process(x0, MASK, eps=0.1, antithetic=True, generator=torch.Generator().manual_seed(5))
        halves = []
        for masked, t in ((drawn.masked[1:3], drawn.t[1:3]), (~drawn.masked[1:3], (1 - drawn.t[1:3]).clamp(min=0.1))):
            noisy = torch.where(masked, MASK, x0[1:3])
            ce = F.cross_entropy(model(noisy).transpose(1, 2), x0[1:3], reduction="none")
            halves.append((ce * masked / t[:, None]).sum() / ce.numel())
    assert seen[0].shape == (4, 8)  # two rows, then their complements
    assert torch.equal(seen[0][:2], drawn.noisy_ids[1:3])
    assert torch.allclose(loss, (halves[0] + halves[1]) / 2, atol=1e-6)


def test_t_max_is_respected():
    t = diffusion.sample_t(4000, eps=0.3, t_max=0.8, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0.3 and t.max() <= 0.8 and t.max() > 0.79 and t.min() < 0.31
    tb = block_t(torch.zeros(50, 64, dtype=torch.long), 4, eps=0.3, t_max=0.8, antithetic=True)
    assert tb.min() >= 0.3 and tb.max() <= 0.8
    with pytest.raises(ValueError, match="0 <= eps < t_max <= 1"):
        diffusion.sample_t(3, eps=0.5, t_max=0.5)


@pytest.mark.parametrize("kw,message", [
    (dict(block_size=0), "--block_size must be positive, got 0"),
    (dict(objective="block_diffusion", seq_len=30, block_size=8), "--seq_len 30 must be a multiple of --block_size 8"),
    (dict(eps=0.3, t_max=0.2), "--eps and --t_max must satisfy 0 <= eps < t_max <= 1"),
    (dict(t_max=1.5), "--eps and --t_max must satisfy"),
    (dict(objective="ar", complementary_masking=True), "--complementary_masking applies to the diffusion"),
    (dict(stage="sft", document_mask=True), "--document_mask applies to pretraining"),
])
def test_options_out_of_range_are_one_line_user_errors(kw, message):
    with pytest.raises(UserError, match=message) as e:
        TrainConfig(model="debug", **kw)
    assert len(str(e.value).splitlines()) == 1


def test_a_causal_model_is_refused_and_a_shifted_one_predicts_from_the_clean_token_before(config):
    objective = PretrainBlockDiffusion(TrainConfig(model="debug", objective="block_diffusion"))
    objective.check_model(config)  # the bidirectional mask predictor
    assert not objective.shifted
    objective.check_model(config.replace(shifted_prediction=True))  # converted from an AR model
    assert objective.shifted
    for change in (dict(causal=True), dict(causal=True, shifted_prediction=True)):
        with pytest.raises(UserError, match="--objective block_diffusion trains a mask predictor with bidirectional"):
            objective.check_model(config.replace(**change))


# ----------------------------------------------------------------------------------- the trainer


def _world_cfg(tmp_path, stage: str, **kw) -> TrainConfig:
    """A few steps of --objective block_diffusion on the built-in world (data None), debug preset."""
    base = dict(data=None, world=WorldConfig(n_people=30, n_stories=60, n_sums=400), stage=stage,
                objective="block_diffusion", block_size=8, seq_len=64 if stage == "sft" else 32, max_steps=3)
    return _cfg(tmp_path, None, **{**base, **kw})


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_a_block_diffusion_run_saves_a_model_that_samples_block_causally(tmp_path, stage):
    trainer = Trainer(_world_cfg(tmp_path, stage))
    batch = trainer._global_batch(0)
    L = batch["input_ids"].shape[1]
    noised = trainer._noised(batch, torch.Generator().manual_seed(0))
    assert noised.t.shape == (4, L) and torch.equal(noised.t.view(4, -1, 8)[..., :1].expand(4, -1, 8),
                                                     noised.t.view(4, -1, 8))  # one t per block of 8
    if stage == "sft":
        assert L % 8 == 0 and not (noised.masked & ~batch["response_mask"]).any()
    final = trainer.fit()
    gen = json.loads((final / "generation_config.json").read_text())
    assert gen["block_causal"] is True and gen["block_length"] == 8
    bundle = llada.load(final)
    assert bundle.options.block_causal and bundle.options.block_size == 8
    prompt = torch.tensor([bundle.tokenizer("the", add_special_tokens=False)["input_ids"]])
    blocks: list[int | None] = []
    bundle.model.register_forward_pre_hook(lambda m, a, k: blocks.append(k.get("block_size")), with_kwargs=True)
    out = llada.sample(bundle.model, prompt, bundle.options.replace(gen_length=16, steps=16))
    assert out.sequences.shape == (1, prompt.shape[1] + 16)
    assert not (out.sequences == bundle.config.mask_token_id).any()
    assert blocks and set(blocks) == {8}  # every forward pass of the sampler attends block-causally


@pytest.mark.parametrize("stage,kw", [("pretrain", dict(document_mask=True, complementary_masking=True)),
                                      ("sft", dict(t_max=0.8, eps=0.2))])
def test_a_killed_block_diffusion_run_resumes_exactly(tmp_path, stage, kw):
    """Stopped after step 2 and resumed: the losses of steps 3 and 4 and the final weights are the
    uninterrupted run's."""
    whole = Trainer(_world_cfg(tmp_path / "whole", stage, max_steps=4, **kw)).fit()
    cfg = _world_cfg(tmp_path / "cut", stage, max_steps=4, **kw)
    _stopped_at_step_2(cfg)
    resumed = Trainer(cfg)
    assert resumed.step == 2
    final = resumed.fit()

    def losses(model_dir):
        rows = (model_dir.parent / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, rows) if "loss" in r]

    assert losses(final) == losses(whole)[2:] and len(losses(final)) == 2  # steps 3 and 4, as the whole run's
    a, b = load_file(whole / "model.safetensors"), load_file(final / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_saved_sampler_is_block_causal_on_the_family_preset(config):
    """A LLaDA 2.x model fine-tuned with block diffusion keeps its family's preset (threshold, cache)
    with the trained block; a LLaDA-layout model gets the defaults with the trained block."""
    from support.moe_families import TINY_LLADA2

    from llada.families import config_from_json
    from llada.sampling.options import preset

    objective = PretrainBlockDiffusion(TrainConfig(model="debug", objective="block_diffusion", block_size=8, seq_len=32))
    objective.check_model(config)
    plain = objective.sampler_options()
    assert (plain.block_causal, plain.block_length, plain.threshold) == (True, 8, None)
    objective.check_model(config_from_json(TINY_LLADA2))
    tuned, family = objective.sampler_options(), preset("llada2")
    assert (tuned.block_causal, tuned.block_length) == (True, 8)
    assert (tuned.threshold, tuned.cache, tuned.temperature) == (family.threshold, family.cache, family.temperature)
