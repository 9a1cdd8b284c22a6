"""The schedules of the AR -> diffusion recipes (llada.training.schedules): the block-size schedule
(LLaDA 2.0's warmup-stable-decay) and attention-mask annealing (DiffuLLaMA), against tables and
loop references, through the objective and the trainer, across a resume and on a converted model."""

from __future__ import annotations

import json

import pytest
import torch
from support.train import _cfg, _stopped_at_step_2

import llada
from llada.block_diffusion import block_diffusion_mask
from llada.cli import main
from llada.data.world import WorldConfig
from llada.documents import document_ids, same_document
from llada.errors import UserError
from llada.model import LLaDAModel
from llada.sampling.options import preset
from llada.training.config import TrainConfig
from llada.training.objectives.masked_diffusion import PretrainDiffusion
from llada.training.schedules import annealed_mask, block_size_at, block_size_schedule
from llada.training.trainer import Trainer

MASK, EOS = 63, 62


def _size_by_loop(pairs, step: int) -> int:
    """The size of the last pair whose step is at or before `step`, one pair at a time."""
    size = None
    for start, s in pairs:
        if start <= step:
            size = s
    return size


# ------------------------------------------------------------------------------ the block-size schedule


@pytest.mark.parametrize("spec,block_size,seq_len,max_steps,expected", [
    (None, 8, 32, 10, ((0, 8),)),
    ("0:1,3:8", 8, 32, 10, ((0, 1), (3, 8))),
    (" 0:1, 200:4 ,400:32,600:128,1200:32", 32, 128, 2000, ((0, 1), (200, 4), (400, 32), (600, 128), (1200, 32))),
    # wsd: a tenth of the steps warming up through 1, 4, 32, 64 (those below and dividing seq_len), the
    # whole sequence until the last tenth, then the target
    ("wsd", 32, 128, 1000, ((0, 1), (25, 4), (50, 32), (75, 64), (100, 128), (900, 32))),
    ("wsd", 8, 32, 100, ((0, 1), (5, 4), (10, 32), (90, 8))),
    ("wsd", 32, 96, 50, ((0, 1), (1, 4), (3, 32), (5, 96), (45, 32))),  # 64 does not divide 96
    ("wsd", 32, 32, 100, ((0, 1), (5, 4), (10, 32))),  # target = seq_len: no decay
    ("wsd", 32, 128, 3, ((0, 128), (2, 32))),  # no step for the warm-up; the last step at the target
    ("wsd", 8, 32, 1, ((0, 8),)),
])
def test_a_schedule_parses_to_its_pairs(spec, block_size, seq_len, max_steps, expected):
    schedule = block_size_schedule(spec, block_size, seq_len, max_steps)
    assert schedule == expected
    assert [block_size_at(schedule, s) for s in range(max_steps + 3)] == \
        [_size_by_loop(expected, s) for s in range(max_steps + 3)]


@pytest.mark.parametrize("max_steps", [1, 2, 7, 10, 20, 29, 30, 99, 333])
def test_wsd_warms_up_holds_the_whole_sequence_and_ends_at_the_target(max_steps):
    schedule = block_size_schedule("wsd", 16, 64, max_steps)
    sizes = [block_size_at(schedule, s) for s in range(max_steps)]
    assert sizes[-1] == 16 and sizes[-max(1, max_steps // 10):] == [16] * max(1, max_steps // 10)
    if max_steps >= 30:  # every phase has a step: 1, 4, 32 warming up, 64 in the middle
        assert sizes[0] == 1 and sizes[max_steps // 2] == 64
        assert sorted(set(sizes[:max_steps // 10]), key=sizes.index) == [1, 4, 32]


@pytest.mark.parametrize("kw,message", [
    (dict(block_size_schedule="0:8,6:4,3:16"), "the steps must be strictly ascending, got 0, 6, 3"),
    (dict(block_size_schedule="0:8,3:4,3:16"), "the steps must be strictly ascending"),
    (dict(block_size_schedule="0:8,3:12"), "block size 12 must be positive and divide --seq_len 32"),
    (dict(block_size_schedule="0:0"), "block size 0 must be positive and divide --seq_len 32"),
    (dict(block_size_schedule="wsd", block_size=12), "block size 12 must be positive and divide --seq_len 32"),
    (dict(block_size_schedule="2:8"), "the first pair must start at step 0, not 2"),
    (dict(block_size_schedule="0:8,10:16"), "step 10 is not below --max_steps 10"),
    (dict(block_size_schedule="0-8"), "expected 'wsd' or"),
    (dict(block_size_schedule="0:8,"), "expected 'wsd' or"),
    (dict(block_size_schedule="0:8:2"), "expected 'wsd' or"),
    (dict(block_size_schedule="WSD"), "expected 'wsd' or"),
    (dict(block_size_schedule="0:8", objective="diffusion"), "--block_size_schedule applies to --objective "
                                                             "block_diffusion, not --objective diffusion"),
    (dict(attention_anneal_steps=-1, objective="diffusion"), "--attention_anneal_steps must be >= 0"),
    (dict(attention_anneal_steps=4), "--attention_anneal_steps applies to --objective diffusion .*, not "
                                     "--objective block_diffusion"),
    (dict(attention_anneal_steps=4, objective="ar"), "--attention_anneal_steps applies to --objective diffusion"),
])
def test_bad_schedules_are_one_line_user_errors(kw, message):
    base = dict(model="debug", objective="block_diffusion", seq_len=32, block_size=8, max_steps=10)
    with pytest.raises(UserError, match=message) as e:
        TrainConfig(**{**base, **kw})
    assert len(str(e.value).splitlines()) == 1


def test_an_explicit_schedule_leaves_block_size_unused():
    """--block_size (32 by default) need not divide --seq_len when a schedule says every size."""
    TrainConfig(model="debug", objective="block_diffusion", seq_len=48, block_size_schedule="0:16,5:48,8:24")


# ------------------------------------------------------------------------------------ the trainer


def _world_cfg(tmp_path, **kw) -> TrainConfig:
    """Pretraining on the built-in world, debug preset, no crops (every batch holds 32 tokens a row)."""
    base = dict(data=None, world=WorldConfig(n_people=30, n_stories=60, n_sums=400), objective="block_diffusion",
                block_size=8, seq_len=32, max_steps=4, variable_length_prob=0.0)
    return _cfg(tmp_path, None, **{**base, **kw})


def _losses(run_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def _logged(run_dir, key: str) -> list:
    return [r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_each_step_trains_the_block_size_of_its_step(tmp_path):
    """Schedule 0:8,2:16: steps 0 and 1 draw one t per block of 8 and give the model BD3-LM's mask
    of blocks of 8, steps 2 and 3 those of 16; metrics.jsonl says the size; the model samples with 16."""
    trainer = Trainer(_world_cfg(tmp_path, block_size_schedule="0:8,2:16"))
    masks: list[torch.Tensor] = []
    trainer.base.register_forward_pre_hook(lambda m, a, k: masks.append(k["attention_mask"]), with_kwargs=True)
    for step, size in enumerate([8, 8, 16, 16]):
        trainer.objective.at_step(step)
        t = trainer._noised(trainer._global_batch(step), torch.Generator().manual_seed(step)).t  # (4, 32)
        blocks = t.view(4, 32 // size, size)
        assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))  # one t per block of `size`
        assert len(t.unique()) == 4 * 32 // size  # and a different one for every block
        trainer.train_step()
        assert torch.equal(masks[-1], block_diffusion_mask(32, size))
    final = trainer.checkpoints.save_model(trainer.trained)
    assert json.loads((final / "generation_config.json").read_text())["block_length"] == 16
    fitted = Trainer(_world_cfg(tmp_path / "fit", block_size_schedule="0:8,2:16")).fit()
    assert _logged(fitted.parent, "block_size") == [8, 8, 16, 16]


@pytest.mark.parametrize("kw", [
    dict(block_size_schedule="0:8,2:16"),  # the size changes at the first step of the resumed run
    dict(block_size_schedule="wsd", max_steps=5),  # 0:32,4:8: it changes after the resume
    dict(objective="diffusion", attention_anneal_steps=4, max_steps=5),
])
def test_a_run_resumed_across_a_schedule_change_retraces_the_same_losses(tmp_path, kw):
    whole = Trainer(_world_cfg(tmp_path / "whole", **kw)).fit()
    cfg = _world_cfg(tmp_path / "cut", **kw)
    _stopped_at_step_2(cfg)
    resumed = Trainer(cfg)
    assert resumed.step == 2
    final = resumed.fit()
    n = cfg.max_steps
    assert _losses(final.parent) == _losses(whole.parent)[2:] and len(_losses(final.parent)) == n - 2
    key = "attention_anneal" if cfg.attention_anneal_steps else "block_size"
    expected = {"0:8,2:16": [8, 8, 16, 16], "wsd": [32, 32, 32, 32, 8], None: [0, 0.25, 0.5, 0.75, 1.0]}
    assert _logged(whole.parent, key) == expected[cfg.block_size_schedule]
    assert _logged(final.parent, key) == expected[cfg.block_size_schedule][2:]


def test_a_checkpoint_with_another_schedule_is_refused(tmp_path):
    _stopped_at_step_2(_world_cfg(tmp_path, block_size_schedule="0:8,2:16"))
    with pytest.raises(UserError, match="block_size_schedule: checkpoint '0:8,2:16' vs now '0:8,3:16'"):
        Trainer(_world_cfg(tmp_path, block_size_schedule="0:8,3:16"))


# ------------------------------------------------------------------------------ attention annealing


def test_the_annealed_mask_goes_from_causal_to_bidirectional():
    L, N = 64, 8
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    assert torch.equal(annealed_mask(L, 0, N, torch.Generator().manual_seed(0))[0, 0], causal)
    for step in (N, N + 3):
        assert annealed_mask(L, step, N).shape == (1, 1, L, L) and annealed_mask(L, step, N).all()
    upper = ~causal
    for step in (1, 2, 4, 6, 7):
        mask = annealed_mask(L, step, N, torch.Generator().manual_seed(step))[0, 0]
        assert mask[causal].all()  # the past is always visible
        seen = mask[upper].float().mean().item()  # 2016 pairs: a std of at most 0.011
        assert seen == pytest.approx(step / N, abs=0.05)
        again = annealed_mask(L, step, N, torch.Generator().manual_seed(step))
        other = annealed_mask(L, step, N, torch.Generator().manual_seed(step + 100))
        assert torch.equal(again[0, 0], mask) and not torch.equal(other[0, 0], mask)


def _recording(model, calls: list[dict]):
    def run(input_ids, **kwargs):
        calls.append(kwargs)
        return model(input_ids, **kwargs)
    return run


def test_the_objective_anneals_the_attention_it_gives_the_model(config):
    """Step 0 of 4: the bidirectional model under the annealed mask computes what a causal copy of
    it computes; the noise is the one drawn without annealing; from step 4 no mask is given."""
    model = LLaDAModel(config).eval()
    causal = LLaDAModel(config.replace(causal=True)).eval()
    causal.load_state_dict(model.state_dict())
    x0 = torch.randint(0, 60, (4, 12))
    plain = PretrainDiffusion(TrainConfig(model="debug", eps=0.1))
    annealed = PretrainDiffusion(TrainConfig(model="debug", eps=0.1, attention_anneal_steps=4))
    calls: list[dict] = []
    with torch.no_grad():
        for step in (0, 2, 4):
            assert annealed.at_step(step) == {"attention_anneal": step / 4}
            noised = annealed.noise({"input_ids": x0}, MASK, torch.Generator().manual_seed(step))
            drawn = plain.noise({"input_ids": x0}, MASK, torch.Generator().manual_seed(step))
            assert all(torch.equal(a, b) for a, b in zip(noised, drawn, strict=True))
            loss = annealed.loss(_recording(model, calls), {"input_ids": x0}, noised, slice(0, 4), "cpu").loss
            if step == 0:
                assert torch.equal(calls[-1]["attention_mask"][0, 0], torch.ones(12, 12, dtype=torch.bool).tril())
                expected = plain.loss(causal, {"input_ids": x0}, drawn, slice(0, 4), "cpu").loss
                assert torch.allclose(loss, expected, atol=1e-6)
            elif step == 2:
                generator = torch.Generator().manual_seed(2)
                plain.noise({"input_ids": x0}, MASK, generator)  # the draws before the mask's
                assert torch.equal(calls[-1]["attention_mask"], annealed_mask(12, 2, 4, generator))
            else:
                assert calls[-1] == {}  # bidirectional: no mask at all
                assert torch.allclose(loss, plain.loss(model, {"input_ids": x0}, drawn, slice(0, 4), "cpu").loss)


def test_annealing_keeps_the_document_mask(config):
    rows = torch.tensor([[7, 8, EOS, 9, 10, 11, EOS, 12], [7, EOS, 8, 9, 10, 11, 12, 13]])
    objective = PretrainDiffusion(TrainConfig(model="debug", document_mask=True, attention_anneal_steps=4))
    objective.at_step(0)
    documents = document_ids(rows, EOS)
    batch = {"input_ids": rows, "document_ids": documents}
    noised = objective.noise(batch, MASK, torch.Generator().manual_seed(0))
    calls: list[dict] = []
    objective.loss(_recording(LLaDAModel(config), calls), batch, noised, slice(0, 2), "cpu")
    expected = same_document(documents) & torch.ones(8, 8, dtype=torch.bool).tril()
    assert torch.equal(calls[-1]["attention_mask"], expected)


def test_annealing_refuses_a_causal_model(config):
    objective = PretrainDiffusion(TrainConfig(model="debug", attention_anneal_steps=4))
    objective.check_model(config)
    objective.check_model(config.replace(shifted_prediction=True))
    with pytest.raises(UserError, match="--attention_anneal_steps relaxes a causal mask .* has causal attention"):
        objective.check_model(config.replace(causal=True, shifted_prediction=True))


# --------------------------------------------------------------------------------- a converted model


@pytest.mark.parametrize("kw", [
    dict(attention_anneal_steps=2),
    dict(objective="block_diffusion", block_size_schedule="0:1,2:8"),
])
def test_a_converted_ar_model_trains_with_either_schedule(dirs, corpus, tmp_path, kw):
    converted = tmp_path / "converted"
    assert main(["convert", str(dirs["ar"]), str(converted)]) == 0  # bidirectional, shifted prediction
    final = Trainer(_cfg(tmp_path, corpus, model=str(converted), max_steps=3, variable_length_prob=0.0, **kw)).fit()
    losses = [loss for _, loss in _losses(final.parent)]
    assert len(losses) == 3 and all(loss == loss and loss < 100 for loss in losses)
    bundle = llada.load(final)
    assert (bundle.config.causal, bundle.config.shifted_prediction) == (False, True)
    if "block_size_schedule" in kw:
        assert _logged(final.parent, "block_size") == [1, 1, 8] and bundle.options.block_size == 8
        # it samples through llada.sample with the llada2 preset (blocks of 32, threshold, prefix cache) as
        # it does uncached, one token per step in its own blocks of 8
        prompt = torch.tensor([bundle.tokenizer("w1 w2 w3")["input_ids"]])
        cached = llada.sample(bundle.model, prompt, preset("llada2"), gen_length=16, steps=16, threshold=None)
        uncached = llada.sample(bundle.model, prompt, preset("llada2"), gen_length=16, steps=16, threshold=None,
                                cache="none")
        assert torch.equal(cached.sequences, uncached.sequences) and cached.sequences.shape == (1, prompt.shape[1] + 16)
    else:
        assert _logged(final.parent, "attention_anneal") == [0.0, 0.5, 1.0]
