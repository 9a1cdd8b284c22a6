"""The trainer: schedule, accumulation, exact resume after SIGKILL, DDP, divergence, atomic checkpoints."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llada
from llada.data.world import World
from llada.errors import CheckpointError, UserError
from llada.training.config import TrainConfig
from llada.training.metrics import Metrics
from llada.training.optimizer import lr_at
from llada.training.trainer import Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    w = World(seed=0, n_people=30, n_stories=60, n_sums=400)
    path.write_text("\n\n".join(w.pretrain_documents()))
    return path


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    w = World(seed=0, n_people=30, n_stories=10, n_sums=100)
    path.write_text("\n".join(json.dumps(c) for c in w.sft_conversations()))
    return path


class _Killed(BaseException):
    """A simulated SIGKILL: not an Exception, so nothing in the trainer catches it."""


def _cfg(tmp_path, corpus, **kw) -> TrainConfig:
    base = dict(model="debug", data=str(corpus), out_dir=str(tmp_path / "run"), seq_len=32, batch_size=4,
                max_steps=6, warmup_steps=2, lr=3e-3, eval_every=0, save_every=0, log_every=1, vocab_size=300,
                progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _losses(out_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


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


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "llada", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_inside_checkpoint_writes_then_resume_retraces_the_loss_curve(tmp_path, corpus):
    """Real processes and real SIGKILLs, each landing while a checkpoint is being written (its
    temporary directory exists), with --keep_last 2: the resumed run logs the uninterrupted run's
    losses and gradient norms step for step, and ends with its weights, bit for bit. The in-process
    test_killed_anywhere_then_resumed_ends_with_the_uninterrupted_weights covers every kill point."""
    args = ["train", "--model", "debug", "--data", str(corpus), "--seq_len", "32", "--batch_size", "4",
            "--max_steps", "40", "--save_every", "4", "--keep_last", "2", "--log_every", "1", "--eval_every", "0",
            "--vocab_size", "300", "--progress", "false", "--tensorboard", "false", "--variable_length_prob", "0.2"]
    ref = _run_cli([*args, "--out_dir", str(tmp_path / "ref")])
    for writing, delay in (("step-000008", 0.0), ("step-000020", 0.02), ("step-000028", 0.05)):
        killed = _run_cli([*args, "--out_dir", str(tmp_path / "killed")])
        tmp = tmp_path / "killed" / "checkpoints" / f".tmp-{writing}"
        deadline = time.time() + 300
        while not tmp.exists() and killed.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = _run_cli([*args, "--out_dir", str(tmp_path / "killed")])
    assert resumed.wait() == 0, resumed.stderr.read()
    assert ref.wait() == 0, ref.stderr.read()
    rows = {d: [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("killed", "ref")}
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in rows["killed"]] == \
           [(r["step"], r["loss"], r["grad_norm"]) for r in rows["ref"]]  # exactly, step for step
    a = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    b = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_ddp_matches_one_process(tmp_path, corpus):
    common = ["train", "--model", "debug", "--data", str(corpus), "--seq_len", "32", "--max_steps", "3",
              "--log_every", "1", "--eval_every", "0", "--save_every", "0", "--vocab_size", "300",
              "--progress", "false", "--tensorboard", "false", "--warmup_steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llada",
                          *common, "--batch_size", "2", "--out_dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "llada", *common, "--batch_size", "4", "--out_dir",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert l1 == pytest.approx(l2, rel=1e-5)
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in a:  # equal up to the order in which the all-reduce sums
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)


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


def test_a_bfloat16_checkpoint_is_fully_fine_tuned_in_float32(tmp_path, corpus):
    """Full fine-tuning keeps float32 master weights whatever the checkpoint's dtype (bf16 compute is
    --mixed_precision's autocast); LoRA leaves the frozen base as stored."""
    base = Trainer(_cfg(tmp_path / "pt", corpus, max_steps=1)).fit()
    bf16 = tmp_path / "bf16"
    bundle = llada.load(base)
    llada.save(bf16, bundle.model, bundle.tokenizer, dtype="bfloat16")
    full = Trainer(_cfg(tmp_path / "full", corpus, model=str(bf16), max_steps=1))
    assert {p.dtype for p in full.base.parameters()} == {torch.float32}
    assert math.isfinite(full.train_step()["loss"])
    lora = Trainer(_cfg(tmp_path / "lora", corpus, model=str(bf16), max_steps=1, lora_r=2))
    frozen = {p.dtype for n, p in lora.module.named_parameters() if "lora_" not in n}
    assert frozen == {torch.bfloat16}
    assert math.isfinite(lora.train_step()["loss"])


def test_compile_wraps_the_prepared_module_with_static_shapes(tmp_path, corpus, monkeypatch):
    """--compile: torch.compile (its eager backend here, to keep the test fast) runs after
    accelerate's prepare, with dynamic=False; the run trains and saves the same keys as uncompiled."""
    calls = []
    real = torch.compile

    def recording(module, **kwargs):
        calls.append((type(module).__name__, kwargs))
        return real(module, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    trainer = Trainer(_cfg(tmp_path / "c", corpus, max_steps=2, compile=True))
    assert calls == [("LLaDAModel", {"dynamic": False})]  # (on the CPU prepare leaves the model unwrapped)
    assert hasattr(trainer.module, "_orig_mod")
    final = trainer.fit()
    plain = Trainer(_cfg(tmp_path / "p", corpus, max_steps=2)).fit()
    # a compiled run resumes from its checkpoint and ends where an uninterrupted one does
    for lora_r in (0, 2):
        whole = Trainer(_cfg(tmp_path / f"w{lora_r}", corpus, max_steps=4, compile=True, lora_r=lora_r)).fit()
        cfg = _cfg(tmp_path / f"r{lora_r}", corpus, max_steps=4, save_every=2, compile=True, lora_r=lora_r)
        first = Trainer(cfg)
        first.train_step(), first.train_step()
        first.save_checkpoint()
        del first
        resumed = Trainer(cfg)
        assert resumed.step == 2
        a, b = load_file(whole / "model.safetensors"), load_file(resumed.fit() / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lora_r
    from safetensors import safe_open
    with safe_open(str(Path(final) / "model.safetensors"), "pt") as a, \
            safe_open(str(Path(plain) / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())


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


def test_crash_during_save_leaves_previous_checkpoints_whole(tmp_path, corpus, monkeypatch):
    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=2)
    import llada.checkpoint.saving as ck

    calls = {"n": 0}
    real = ck.save_state_dict

    def flaky(path, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise OSError("disk full")
        return real(path, *a, **kw)

    monkeypatch.setattr(ck, "save_state_dict", flaky)
    with pytest.raises(OSError, match="disk full"):
        Trainer(cfg).fit()
    root = Path(cfg.out_dir) / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000002"]  # the half-written one is removed at once
    monkeypatch.setattr(ck, "save_state_dict", real)
    assert Trainer(cfg).step == 2


def test_incompatible_resume_is_refused(tmp_path, corpus):
    Trainer(_cfg(tmp_path, corpus, max_steps=2, save_every=1)).fit()
    with pytest.raises(CheckpointError, match="different settings \\(seq_len: checkpoint 32 vs now 64\\)"):
        Trainer(_cfg(tmp_path, corpus, max_steps=4, seq_len=64))
    assert (tmp_path / "run" / "checkpoints" / "step-000001").exists()
    with pytest.raises(UserError, match="already holds checkpoints"):
        Trainer(_cfg(tmp_path, corpus, max_steps=4, resume=None))


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


def test_bad_config_messages(tmp_path):
    with pytest.raises(UserError, match="--batch_size must be positive"):
        TrainConfig(batch_size=0)
    with pytest.raises(UserError, match="neither a preset"):
        TrainConfig(model="no-such-preset")
    with pytest.raises(UserError, match="the file is empty"):
        empty = tmp_path / "e.txt"
        empty.write_text("")
        Trainer(TrainConfig(model="debug", data=str(empty), out_dir=str(tmp_path / "r"), progress=False))


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs" / "train").glob("*.yaml")),
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


# ------------------------------------------------ the trainer's step against the paper's losses, computed apart


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


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus) -> Path:
    return Trainer(_cfg(tmp_path_factory.mktemp("pretrained"), corpus, max_steps=2)).fit()


def test_lora_adapters_are_drawn_from_the_seed(tmp_path, chats, pretrained):
    """Two LoRA runs with the same settings start from the same adapters, whatever the process drew before."""
    def cfg(out):
        return _cfg(out, chats, model=str(pretrained), stage="sft", seq_len=64, lora_r=4)

    a = Trainer(cfg(tmp_path / "a"))
    torch.rand(1000)
    b = Trainer(cfg(tmp_path / "b"))
    for (name, p), q in zip(a.module.named_parameters(), b.module.parameters(), strict=True):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------------- resume builds the model once


def _resume_cfg(tmp_path, corpus, chats, pretrained, kind: str, **kw) -> TrainConfig:
    if kind == "pretrain":
        return _cfg(tmp_path, corpus, **kw)
    return _cfg(tmp_path, chats, model=str(pretrained), stage="sft", seq_len=64, lr=1e-2,
                lora_r=4 if kind == "sft-lora" else 0, **kw)


@pytest.mark.parametrize("kind", ["pretrain", "sft", "sft-lora"])
def test_resume_builds_the_model_once_and_continues_exactly(tmp_path, corpus, chats, pretrained, monkeypatch,
                                                            kind):
    """Resuming constructs one LLaDAModel (from the checkpoint; with LoRA the frozen base from its
    source), accelerate does not read the weights a second time, and the resumed run ends with the
    weights of an uninterrupted one."""
    import accelerate.checkpointing

    from llada.model import LLaDAModel

    whole = Trainer(_resume_cfg(tmp_path / "whole", corpus, chats, pretrained, kind, max_steps=4)).fit()
    cfg = _resume_cfg(tmp_path / "cut", corpus, chats, pretrained, kind, max_steps=4, save_every=2)
    first = Trainer(cfg)
    first.train_step(), first.train_step()
    first.save_checkpoint()
    del first

    built, reloaded = [], []
    init = LLaDAModel.__init__
    monkeypatch.setattr(LLaDAModel, "__init__", lambda self, *a, **k: (built.append(1), init(self, *a, **k))[1])
    monkeypatch.setattr(accelerate.checkpointing, "load_model", lambda *a, **k: reloaded.append(a[1]))
    resumed = Trainer(cfg)
    assert resumed.step == 2
    assert len(built) == 1 and reloaded == []
    monkeypatch.undo()
    final = resumed.fit()
    a, b = load_file(whole / "model.safetensors"), load_file(final / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_resume_refuses_a_changed_base(tmp_path, chats, pretrained):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(pretrained, base)
    cfg = _cfg(tmp_path, chats, model=str(base), stage="sft", seq_len=64, lora_r=4, max_steps=4)
    first = Trainer(cfg)
    first.train_step()
    first.save_checkpoint()
    bundle = llada.load(base)
    with torch.no_grad():
        for p in bundle.model.parameters():
            p.add_(0.01)
    bundle.save(base)  # the base was retrained since
    with pytest.raises(CheckpointError, match="has changed since the checkpoint was made") as refused:
        Trainer(cfg)
    assert "does not load" not in str(refused.value)  # said as it is, not as a damaged trainer state


# ------------------------------------------------------------------ data too small or with nothing to learn


def _notes(n: int) -> list[str]:
    return [f"Note {i}: the lamp in room {i} is {'red' if i % 2 else 'blue'}." for i in range(n)]


def test_a_small_corpus_trains_with_a_note_instead_of_a_held_out_loss(tmp_path, caplog):
    """40 short documents: the one held out packs to no seq_len block. The run trains, says there is
    no held-out loss, and logs none (no NaN)."""
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in _notes(40)))
    cfg = _cfg(tmp_path, path, max_steps=2, eval_every=1)
    with caplog.at_level("WARNING", logger="llada"):
        Trainer(cfg).fit()
    assert "reports no held-out loss" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and not any("eval_loss" in r for r in rows)


def test_a_corpus_shorter_than_one_block_says_how_much_is_needed(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(_notes(2)))
    with pytest.raises(UserError, match=r"too short for one --seq_len 32 block: 1 document\(s\), \d+ tokens, "
                                        r"and at least 32 tokens are needed"):
        Trainer(_cfg(tmp_path, path))


def _chat(prompt_words: int, i: int) -> dict:
    prompt = " ".join(["tell me about the lamp"] * prompt_words)
    return {"messages": [{"role": "user", "content": f"{i}: {prompt}"},
                         {"role": "assistant", "content": f"lamp {i} is red"}]}


def test_sft_refuses_prompts_that_fill_seq_len(tmp_path):
    """Every prompt longer than seq_len: no response token is left, which used to train at loss 0."""
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(_chat(20, i)) + "\n" for i in range(12)))
    with pytest.raises(UserError, match=r"every training conversation's prompt fills --seq_len 32 \(the shortest "
                                        r"prompt has \d+ tokens\), so no response token is left to learn"):
        Trainer(_cfg(tmp_path, path, stage="sft"))


def test_sft_drops_the_conversations_with_nothing_to_learn_and_counts_them(tmp_path, caplog):
    from llada.data.sft import load_conversations

    path = tmp_path / "chat.jsonl"
    chats = [_chat(20 if i % 3 == 0 else 1, i) for i in range(30)]
    path.write_text("".join(json.dumps(c) + "\n" for c in chats))
    train = load_conversations(str(path), split="train")
    long = sum(len(c[0]["content"]) > 100 for c in train)
    with caplog.at_level("WARNING", logger="llada"):
        trainer = Trainer(_cfg(tmp_path, path, stage="sft", seq_len=32))
    assert f"dropped {long} of {len(train)} training conversation(s) whose prompt fills --seq_len 32" in caplog.text
    assert len(trainer.data.train) == len(train) - long
    m = trainer.train_step()
    assert m["loss"] > 0 and m["grad_norm"] > 0


# ------------------------------------------------------------------ what an earlier run left in out_dir


def test_a_tokenizer_left_in_out_dir_is_reused_only_when_whole_and_trained_for_these_settings(tmp_path, corpus,
                                                                                             caplog, monkeypatch):
    """A failed run leaves out_dir/tokenizer (and no checkpoint). The next run reuses it for the same
    settings, trains a new one when --vocab_size changed or it is damaged (saying which), and a kill
    while it is saved leaves no half-written tokenizer behind."""
    from transformers import PreTrainedTokenizerFast

    tok_dir = tmp_path / "run" / "tokenizer"
    first = Trainer(_cfg(tmp_path, corpus)).tokenizer
    with caplog.at_level("WARNING", logger="llada"):
        assert Trainer(_cfg(tmp_path, corpus)).tokenizer.get_vocab() == first.get_vocab()
        assert "tokenizer" not in caplog.text
        bigger = Trainer(_cfg(tmp_path, corpus, vocab_size=400)).tokenizer
    assert "was trained for other settings (--vocab_size 300, now 400); no checkpoint uses it, so a new " \
           "tokenizer is trained in its place" in caplog.text
    assert len(bigger) == 400 and len(first) == 300
    text = (tok_dir / "tokenizer.json").read_text()
    (tok_dir / "tokenizer.json").write_text(text[: len(text) // 2])  # cut short
    caplog.clear()
    with caplog.at_level("WARNING", logger="llada"):
        again = Trainer(_cfg(tmp_path, corpus, vocab_size=400)).tokenizer
    assert f"{tok_dir} is damaged or unfinished (" in caplog.text
    assert again.get_vocab() == bigger.get_vocab()

    def killed(self, path, *a, **kw):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "tokenizer_config.json").write_text("{")
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tmp_path, corpus, vocab_size=350))
    assert (tok_dir / "tokenizer.json").read_text() == text  # the whole one it was replacing is untouched


def test_metrics_of_killed_runs_are_not_repeated(tmp_path, corpus, monkeypatch):
    """Runs killed before their first checkpoint, after it, and in the middle of writing a line:
    metrics.jsonl ends with each step once (a line cut short used to make every rerun crash)."""
    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=4)
    metrics = tmp_path / "run" / "metrics.jsonl"
    train_step = Trainer.train_step

    def run_until(step: int) -> None:
        def dying(self):
            if self.step == step:
                raise _Killed
            return train_step(self)

        monkeypatch.setattr(Trainer, "train_step", dying)
        with pytest.raises(_Killed):
            Trainer(cfg).fit()
        monkeypatch.setattr(Trainer, "train_step", train_step)

    for step, cut in [(3, False), (3, True), (5, True), (5, False)]:
        run_until(step)
        if cut:
            with open(metrics, "a") as f:
                f.write(f'{{"step": {step + 1}, "lo')  # the kill fell in the middle of a line
    Trainer(cfg).fit()
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------ damaged checkpoints and a full disk


@pytest.mark.parametrize("damage", ["optimizer.bin cut short", "state.json cut short"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, corpus, caplog, damage):
    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=2)
    first = Trainer(cfg)
    for _ in range(2):
        first.train_step(), first.train_step()
        first.save_checkpoint()
    root = tmp_path / "run" / "checkpoints"
    victim = root / "step-000004" / "trainer" / damage.split()[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="llada"):
        resumed = Trainer(cfg)
    assert resumed.step == 2
    lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"{root / 'step-000004'} is damaged (")
    assert lines[0].endswith("resuming from step-000002, the latest whole checkpoint (the damaged one is "
                             "kept as damaged-step-000004)")
    resumed.fit()  # writes step 4 again
    assert sorted(p.name for p in root.iterdir()) == ["damaged-step-000004", "step-000002", "step-000004"]


def _two_checkpoints(cfg: TrainConfig) -> Path:
    """Steps 2 and 4 of `cfg` saved; returns the checkpoints directory."""
    first = Trainer(cfg)
    for _ in range(2):
        first.train_step(), first.train_step()
        first.save_checkpoint()
    return Path(cfg.out_dir) / "checkpoints"


@pytest.mark.parametrize("damage", ["missing", "not a tokenizer"])
def test_a_checkpoint_whose_tokenizer_does_not_load_falls_back_to_the_one_before(tmp_path, corpus, caplog, damage):
    """The latest checkpoint's tokenizer.json missing, or JSON that is no tokenizer: --resume auto
    sets it aside and resumes from the one before, as for any damaged file; --resume of it is one line."""
    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=2)
    root = _two_checkpoints(cfg)
    tokenizer = root / "step-000004" / "tokenizer.json"
    if damage == "missing":
        tokenizer.unlink()
    else:
        tokenizer.write_text(json.dumps({"version": "1.0", "model": {"type": "none"}}))
    with caplog.at_level("WARNING", logger="llada"):
        resumed = Trainer(cfg)
    assert resumed.step == 2
    lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "tokenizer" in lines[0], lines
    assert sorted(p.name for p in root.iterdir()) == ["damaged-step-000004", "step-000002"]
    with pytest.raises(CheckpointError, match="the checkpoint is damaged \\(the tokenizer does not load") as refused:
        Trainer(_cfg(tmp_path, corpus, max_steps=6, resume=str(root / "damaged-step-000004")))
    assert "\n" not in str(refused.value)


def test_a_kill_while_pruning_never_leaves_a_half_removed_checkpoint(tmp_path, corpus, monkeypatch):
    """Killed while the pruning of step 2 had removed its trainer/ but not yet its weights: what is
    left is a temporary the next run removes, not a step-000002 that nothing resumes from or cleans up."""
    import shutil

    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=2, keep_last=1)
    rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        path = Path(path)
        if (path / "trainer").is_dir() and (path / "model.safetensors").is_file():  # a checkpoint
            rmtree(path / "trainer")
            (path / "trainer").mkdir()
            raise _Killed
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(_Killed):
        Trainer(cfg).fit()
    monkeypatch.undo()
    root = tmp_path / "run" / "checkpoints"
    assert Trainer(cfg).step == 4
    assert sorted(p.name for p in root.iterdir()) == ["step-000004"]


def test_a_half_removed_checkpoint_left_by_an_earlier_version_is_cleaned_up(tmp_path, corpus, caplog):
    """step-N with its weights but an empty trainer/ (an earlier version pruned in place): one older
    than the latest checkpoint is removed, one past it set aside as damaged, each saying so."""
    import shutil

    cfg = _cfg(tmp_path, corpus, max_steps=8, save_every=2, keep_last=2)
    root = _two_checkpoints(cfg)
    shutil.copytree(root / "step-000004", root / "step-000006")
    for half in (root / "step-000002", root / "step-000006"):
        shutil.rmtree(half / "trainer")
        (half / "trainer").mkdir()
    with caplog.at_level("WARNING", logger="llada"):
        assert Trainer(cfg).step == 4
    assert sorted(p.name for p in root.iterdir()) == ["damaged-step-000006", "step-000004"]
    assert f"removed {root / 'step-000002'}: a checkpoint half removed" in caplog.text
    assert "it is kept as damaged-step-000006" in caplog.text


def test_a_full_disk_while_saving_is_one_line_and_leaves_the_earlier_checkpoints(tmp_path, corpus, monkeypatch):
    import errno

    from llada.training.checkpoints import checkpoint_problem

    cfg = _cfg(tmp_path, corpus, max_steps=6, save_every=2)
    save = torch.save

    def full_disk(obj, f, *a, **kw):
        if "step-000004" in str(f):
            Path(f).write_bytes(b"\0" * 64)  # what fitted
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError) as failed:
        Trainer(cfg).fit()
    message = str(failed.value)
    assert "\n" not in message and isinstance(failed.value, OSError) and failed.value.errno == errno.ENOSPC
    assert message.startswith(f"could not write checkpoint {tmp_path / 'run' / 'checkpoints' / 'step-000004'}: "
                              "No space left on device (")
    assert message.endswith("; nothing written before was touched: free some space and rerun to continue from "
                            "step-000002")
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000002"]  # nothing half-written, not even a temporary
    assert checkpoint_problem(root / "step-000002") is None
    monkeypatch.undo()
    assert Trainer(cfg).step == 2


# ------------------------------------------------------------------ killed anywhere, resumed exactly


class _KillSwitch:
    """Kills the run (raises _Killed) at the k-th of the events it counts, leaving on disk what a
    SIGKILL at that moment would: a file cut short, half a metrics line, a directory half removed.

    Events: a training step, a metrics line, and every file write, rename and removal under `root`
    (torch.save, the safetensors writes, Path.write_text, os.replace, shutil.rmtree)."""

    def __init__(self, monkeypatch, root: Path):
        import shutil

        import llada.checkpoint.saving as ck

        self.root, self.at, self.count = str(root), None, 0

        def wrap(owner, name, before_kill=None, path_arg: int | None = 0):
            real = getattr(owner, name)

            def patched(*a, **kw):
                if path_arg is None or str(a[path_arg] if len(a) > path_arg else "").startswith(self.root):
                    self.count += 1
                    if self.count == self.at:
                        if before_kill is not None:
                            before_kill(real, *a, **kw)
                        raise _Killed
                return real(*a, **kw)

            monkeypatch.setattr(owner, name, patched)

        def cut_short(real, obj, f, *a, **kw):  # the file is half written
            real(obj, f, *a, **kw)
            Path(f).write_bytes(Path(f).read_bytes()[: Path(f).stat().st_size // 2])

        def half_text(real, path, data, *a, **kw):
            real(path, data[: len(data) // 2], *a, **kw)

        def half_removed(real, path, *a, **kw):
            files = sorted(p for p in Path(path).rglob("*") if p.is_file())
            for p in files[: len(files) // 2]:
                p.unlink()

        def half_line(real, metrics, record):
            if metrics.file is not None:
                metrics.file.write(json.dumps(record)[:12])
                metrics.file.flush()

        wrap(Trainer, "train_step", path_arg=None)
        wrap(Metrics, "log", half_line, path_arg=None)
        wrap(torch, "save", cut_short, path_arg=1)
        wrap(ck, "save_file", cut_short, path_arg=1)
        wrap(Path, "write_text", half_text)
        wrap(os, "replace")
        wrap(shutil, "rmtree", half_removed)

    def run(self, cfg: TrainConfig, at: int | None) -> bool:
        """Run `cfg` to the end, or until the `at`-th event; True when it was killed."""
        self.at, self.count = at, 0
        try:
            Trainer(cfg).fit()
        except _Killed:
            return True
        return False


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n\n".join(World(seed=0, n_people=8, n_stories=4, n_sums=40).pretrain_documents()))
    return path


def test_a_resume_uses_the_thread_count_its_checkpoint_was_written_with(tmp_path, small_corpus, caplog):
    """The one kill-and-resume in six that ended with other weights, its first difference the last
    bit of a gradient norm: a CPU reduction past ATen's grain size (here the 64 x 1024 MLP weights'
    gradients) sums one chunk per thread, and a resumed process's default thread count follows the
    CPU affinity it starts with. A resume now trains on with the checkpoint's count, saying so."""
    def cfg(out: Path) -> TrainConfig:
        return _cfg(out, small_corpus, seq_len=16, batch_size=2, max_steps=4, save_every=2,
                    overrides={"d_model": 64, "mlp_hidden_size": 1024})

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        whole = Trainer(cfg(tmp_path / "whole")).fit()
        first = Trainer(cfg(tmp_path / "cut"))
        first.train_step(), first.train_step()
        first.save_checkpoint()
        torch.set_num_threads(1)  # the resumed process was started on one CPU (taskset -c 0)
        with caplog.at_level("WARNING", logger="llada"):
            resumed = Trainer(cfg(tmp_path / "cut"))
        assert torch.get_num_threads() == 2
        assert "resuming with 2 CPU threads, as step-000002 was written (this process started with 1)" in caplog.text
        final = resumed.fit()
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(whole / "model.safetensors"), load_file(final / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_anywhere_then_resumed_ends_with_the_uninterrupted_weights(tmp_path, small_corpus, monkeypatch):
    """Kill a run at every event (`_KillSwitch`) of a step-and-checkpoint cycle, in each phase of a
    run (before its first checkpoint, resuming with a checkpoint to prune, writing the final model),
    resuming after each kill in the same out_dir: the losses, gradient norms and final weights are
    those of the uninterrupted run, bit for bit, and each step is logged once."""
    import shutil

    def cfg(out: Path) -> TrainConfig:
        return _cfg(out, small_corpus, seq_len=16, batch_size=2, max_steps=6, save_every=2, keep_last=1,
                    variable_length_prob=0.3)

    def latest(out: Path) -> int:
        return max((int(p.name[5:]) for p in (out / "run" / "checkpoints").glob("step-*")
                    if (p / "trainer" / "state.json").exists()), default=0)

    reference = Trainer(cfg(tmp_path / "ref")).fit()
    out = tmp_path / "killed"
    # the tokenizer a first run trains and saves is shared, to save time (test_a_tokenizer_left_in_out_dir...
    # kills its write)
    shutil.copytree(reference.parent / "tokenizer", out / "run" / "tokenizer")
    switch = _KillSwitch(monkeypatch, out)
    kills = 0
    # phases: no checkpoint yet; resuming from step 2 (the next save prunes it); from step 4 (the next
    # write is the final model). In each, die at the 1st, 2nd, ... event of the resumed run until one
    # gets past the phase
    for phase_end in (2, 4, 6):
        for at in range(1, 60):
            if not switch.run(cfg(out), at):
                break
            kills += 1
            if latest(out) >= phase_end:
                break
    switch.run(cfg(out), None)
    assert kills > 40
    monkeypatch.undo()
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (tmp_path / "ref" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in rows] == \
           [(r["step"], r["loss"], r["grad_norm"]) for r in ref_rows]
    a, b = load_file(reference / "model.safetensors"), load_file(out / "run" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lora_r", [4, 0], ids=["lora", "full"])
def test_fsdp_matches_one_process_and_resumes_exactly(tmp_path, corpus, lora_r):
    """Two processes under accelerate's FSDP2 (each Transformer block sharded, `fsdp_on_cpu.py`):
    the saved model, gathered from the shards (LoRA: merged), equals a one-process run with the same
    global batch up to the order of the reductions; a run stopped at its step-2 checkpoint and resumed
    from the sharded optimizer state ends with the uninterrupted run's weights, bit for bit. The
    checkpoint holds the weights once (its model directory), not again as shards in trainer/."""
    common = ["train", "--model", "debug", "--data", str(corpus), "--seq_len", "32", "--log_every", "1",
              "--eval_every", "0", "--save_every", "2", "--vocab_size", "300", "--progress", "false",
              "--tensorboard", "false", "--lora_r", str(lora_r)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fsdp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            str(Path(__file__).with_name("fsdp_on_cpu.py")), *common, "--batch_size", "2"]
    runs = {"whole": ["--max_steps", "4"], "stopped": ["--max_steps", "2"],
            "resumed": ["--max_steps", "4", "--resume", "auto"]}
    for name, extra in runs.items():
        out = tmp_path / ("resumed" if name == "stopped" else name)
        done = subprocess.run([*fsdp, *extra, "--out_dir", str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "llada", *common, "--batch_size", "4", "--max_steps", "4",
                          "--out_dir", str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    trainer_files = {p.name for p in (tmp_path / "resumed" / "checkpoints" / "step-000002" / "trainer").iterdir()}
    assert "optimizer_0" in trainer_files and not any("model" in f for f in trainer_files), trainer_files  # weights once
    a, b, c = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "one", "resumed"))
    assert set(a) == set(b) and not any(".lora_" in k or "base_layer" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
        assert torch.equal(a[k], c[k]), k
    assert _losses(tmp_path / "whole") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "whole")
    if lora_r:  # the adapters are whole too, not one process's shard
        adapters = load_file(tmp_path / "whole" / "model" / "adapter" / "adapter_model.safetensors")
        want = load_file(tmp_path / "one" / "model" / "adapter" / "adapter_model.safetensors")
        assert {k: v.shape for k, v in adapters.items()} == {k: v.shape for k, v in want.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_merged_from_a_state_dict_equals_peft_merge(dtype):
    """`merge_lora_state` (what a FSDP run's gathered state dict is merged with) gives peft's
    merge_and_unload weights: bit for bit in float32; in bfloat16 within one rounding (peft rounds
    the update before adding it)."""
    import copy

    from llada.config import preset
    from llada.model import LLaDAModel
    from llada.runtime import apply_lora, merge_lora_state

    torch.manual_seed(0)
    adapted = apply_lora(LLaDAModel(preset("debug")).to(dtype), 4)
    with torch.no_grad():  # peft starts B at zero: a merge of that would change nothing
        for name, p in adapted.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    got = merge_lora_state(adapted.state_dict(), adapted)
    want = copy.deepcopy(adapted).merge_and_unload().state_dict()
    got = {k.removeprefix("base_model.model."): v for k, v in got.items()}
    assert got.keys() == want.keys()
    before = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
              for k, v in adapted.state_dict().items() if ".lora_" not in k}
    changed = [k for k in want if not torch.equal(want[k], before[k])]
    assert len(changed) == 2 * 7  # every adapted Linear of the debug model's blocks
    for k in want:
        if dtype == torch.float32:
            assert torch.equal(got[k], want[k]), k
        else:
            torch.testing.assert_close(got[k].float(), want[k].float(), atol=0, rtol=2**-7, msg=k)


def test_resuming_an_older_checkpoint_sets_the_later_ones_aside(tmp_path, corpus, caplog):
    """--resume of step 2 while steps 4 and 6 exist redoes the run from step 2: 4 and 6 are kept
    as superseded-step-N, so that a later --resume auto picks the new run's checkpoints, and the
    redone run ends with the weights of the uninterrupted one."""
    whole = Trainer(_cfg(tmp_path, corpus, max_steps=7, save_every=2, keep_last=3)).fit()
    root = tmp_path / "run" / "checkpoints"
    want = load_file(whole / "model.safetensors")
    with caplog.at_level("WARNING", logger="llada"):
        redo = Trainer(_cfg(tmp_path, corpus, max_steps=3, save_every=2, keep_last=3,
                            resume=str(root / "step-000002")))
    assert redo.step == 2
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "superseded-step-000004",
                                                      "superseded-step-000006"]
    assert "step-000004 is not part of the run resumed from step-000002" in caplog.text
    redo.fit()
    again = Trainer(_cfg(tmp_path, corpus, max_steps=7, save_every=2, keep_last=3, resume="auto"))
    assert again.step == 2  # not the old run's step 6
    got = load_file(again.fit() / "model.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)
    # resuming the old run again, from its set-aside step 4: the new run's step 4 and 6 go aside too
    Trainer(_cfg(tmp_path, corpus, max_steps=7, save_every=2, keep_last=3, resume=str(root / "superseded-step-000004")))
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "superseded-step-000004", "superseded-step-000004.1",
                                                      "superseded-step-000006", "superseded-step-000006.1"]


def test_revision_reaches_the_hub_download_and_is_refused_elsewhere(tmp_path, corpus, monkeypatch):
    """--revision picks the branch, tag or commit of a Hub --model (as on llada generate); for a preset
    or a local directory it is one line saying why not."""
    base = Trainer(_cfg(tmp_path / "pt", corpus, max_steps=1)).fit()
    import llada.checkpoint

    asked = []

    def download(repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return str(base)

    monkeypatch.setattr("huggingface_hub.snapshot_download", download)
    trainer = Trainer(_cfg(tmp_path / "hub", corpus, model="someone/tiny-llada", revision="v1.0", max_steps=1))
    assert asked and asked[0] == ("someone/tiny-llada", "v1.0")
    assert trainer.model_config.d_model == llada.checkpoint.read_config(base).d_model
    for model in ("tiny", str(base)):
        with pytest.raises(UserError, match="--revision applies to a Hugging Face Hub id"):
            _cfg(tmp_path / "x", corpus, model=model, revision="v1.0")


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
