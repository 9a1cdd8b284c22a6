"""A checkpoint's trainer state is data: every file a resume reads back is JSON, safetensors or a
torch file that loads with weights_only=True, and a planted Python object is refused, never run."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TESTS
from safetensors.torch import load_file
from support.train import _stopped_at_step_2

from llada.data.world import World
from llada.errors import CheckpointError
from llada.training.config import TrainConfig
from llada.training.trainer import Trainer


class Payload:
    """Unpickled, it creates the file `marker`: what a crafted checkpoint file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n\n".join(World(seed=0, n_people=8, n_stories=4, n_sums=40).pretrain_documents()))
    return path


@pytest.fixture
def with_scaler(monkeypatch) -> None:
    """fp16's GradScaler on the CPU (at scale 1, as in test_trainer.py's overflow test), so that its state
    is saved and read back too."""
    import accelerate

    class WithScaler(accelerate.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)

    monkeypatch.setattr(accelerate, "Accelerator", WithScaler)


def _cfg(tmp_path: Path, corpus: Path, **kw) -> TrainConfig:
    base = dict(model="debug", data=str(corpus), out_dir=str(tmp_path / "run"), seq_len=16, batch_size=2,
                max_steps=4, warmup_steps=1, lr=3e-3, eval_every=0, save_every=0, log_every=1, vocab_size=300,
                progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _as_the_previous_version_wrote_it(trainer: Trainer, trainer_dir: Path) -> None:
    """Rewrite a checkpoint's trainer/ as llada wrote it with accelerate's save_state: the optimizer,
    the registered scheduler (custom_checkpoint_0.pkl), the RNG states and the scaler as pickles."""
    from accelerate.checkpointing import save_accelerator_state, save_custom_state

    for f in trainer_dir.iterdir():
        if f.name != "state.json":
            f.unlink()
    save_accelerator_state(str(trainer_dir), [], [trainer.opt], [], [], 0, 0, scaler=trainer.acc.scaler)
    save_custom_state(trainer.sched, str(trainer_dir), 0)


def _is_data(path: Path) -> bool:
    """Whether `path` reads back without unpickling: safetensors, JSON, text, or a torch file that
    loads with weights_only=True and torch's own allow-list alone."""
    from safetensors import safe_open

    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt"):
            return True
    if path.suffix == ".json":
        json.loads(path.read_text())
        return True
    if path.suffix in (".md", ".txt", ".jinja"):
        path.read_text(encoding="utf-8")
        return True
    added = torch.serialization.get_safe_globals()  # what libraries (torchao) allow-listed on import
    torch.serialization.clear_safe_globals()
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return False
    finally:
        torch.serialization.add_safe_globals(added)
    return True


def test_the_planted_payload_runs_when_unpickled(tmp_path):
    """The payload the tests below plant is live: unpickled without restrictions, it makes its file."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_every_file_of_a_checkpoint_is_data(tmp_path, corpus, with_scaler):
    _stopped_at_step_2(_cfg(tmp_path, corpus))
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    files = sorted(p for p in ckpt.rglob("*") if p.is_file())
    assert {"optimizer.bin", "state.json"} <= {p.name for p in files if p.parent.name == "trainer"}
    assert [p.relative_to(ckpt) for p in files if not _is_data(p)] == []


@pytest.mark.parametrize("victim", ["optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl", "scaler.pt"])
def test_a_planted_object_is_refused_not_run(tmp_path, corpus, with_scaler, victim):
    """Each file a resume reads that can hold a pickle, in today's layout (optimizer.bin) and in the
    previous version's (accelerate's pickles), replaced by a torch file holding a payload: the resume
    stops with one line naming the file, and the payload never ran."""
    cfg = _cfg(tmp_path, corpus)
    trainer = _stopped_at_step_2(cfg)
    trainer_dir = tmp_path / "run" / "checkpoints" / "step-000002" / "trainer"
    if victim != "optimizer.bin":
        _as_the_previous_version_wrote_it(trainer, trainer_dir)
    marker = tmp_path / "ran"
    torch.save({"state": Payload(marker), "param_groups": []}, trainer_dir / victim)
    with pytest.raises(CheckpointError) as refused:
        Trainer(cfg)
    message = str(refused.value)
    assert not marker.exists()
    assert "\n" not in message and f"{victim} holds" in message and "not loaded" in message, message
    assert message.startswith(f"cannot resume from {trainer_dir.parent}: ")


def test_the_command_line_refuses_a_planted_scheduler_state(tmp_path, corpus, capsys):
    """The reported case: `llada train --resume auto` over a checkpoint whose
    trainer/custom_checkpoint_0.pkl holds a payload made its file before the run failed."""
    from llada.cli import main

    cfg = _cfg(tmp_path, corpus)
    trainer = _stopped_at_step_2(cfg)
    trainer_dir = tmp_path / "run" / "checkpoints" / "step-000002" / "trainer"
    _as_the_previous_version_wrote_it(trainer, trainer_dir)
    marker = tmp_path / "ran"
    torch.save(Payload(marker), trainer_dir / "custom_checkpoint_0.pkl")
    args = ["train", "--model", "debug", "--data", str(corpus), "--out_dir", cfg.out_dir, "--seq_len", "16",
            "--batch_size", "2", "--max_steps", "4", "--warmup_steps", "1", "--lr", "3e-3", "--eval_every", "0",
            "--save_every", "0", "--log_every", "1", "--vocab_size", "300", "--progress", "false",
            "--tensorboard", "false", "--resume", "auto"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert len(err.splitlines()) == 1 and "custom_checkpoint_0.pkl holds" in err, err


@pytest.mark.parametrize("layout", ["today", "previous version"])
def test_a_resume_restores_the_state_and_retraces_the_run(tmp_path, corpus, with_scaler, layout):
    """Resumed from step 2, in today's layout or as the previous version wrote it: the Python, numpy
    and torch generators are those of the moment of the save, the schedule and the scaler continue,
    and the run ends with the uninterrupted run's weights, bit for bit."""
    whole = Trainer(_cfg(tmp_path / "whole", corpus)).fit()
    cfg = _cfg(tmp_path, corpus)
    trainer = _stopped_at_step_2(cfg)
    trainer_dir = tmp_path / "run" / "checkpoints" / "step-000002" / "trainer"
    if layout == "previous version":
        _as_the_previous_version_wrote_it(trainer, trainer_dir)
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    lr, scale = trainer.sched.get_last_lr(), trainer.acc.scaler.get_scale()
    del trainer
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    resumed = Trainer(cfg)
    assert resumed.step == 2
    assert random.getstate() == saved[0]
    now = np.random.get_state()
    assert now[0] == saved[1][0] and np.array_equal(now[1], saved[1][1]) and now[2:] == saved[1][2:]
    assert torch.equal(torch.get_rng_state(), saved[2])
    assert resumed.sched.get_last_lr() == lr and resumed.sched.last_epoch == 2
    assert resumed.acc.scaler.get_scale() == scale
    a, b = load_file(whole / "model.safetensors"), load_file(resumed.fit() / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_dropout_draws_the_uninterrupted_runs_dropout_masks(tmp_path, corpus):
    """Dropout draws from the process's torch generator, which no seed of the trainer's resets (the
    noise has its own generators): only the generator state a checkpoint restores makes steps 3 and
    4 of a run resumed in another process (here: a generator seeded otherwise) drop what the
    uninterrupted run dropped, and end with its weights, bit for bit."""
    dropout = {"attention_dropout": 0.1, "residual_dropout": 0.1, "embedding_dropout": 0.1}
    whole = Trainer(_cfg(tmp_path / "whole", corpus, overrides=dropout)).fit()
    cfg = _cfg(tmp_path, corpus, overrides=dropout)
    _stopped_at_step_2(cfg)
    torch.manual_seed(1)  # the history of another process
    resumed = Trainer(cfg)
    assert resumed.step == 2 and resumed.base.training
    assert [getattr(resumed.model_config, k) for k in dropout] == [0.1, 0.1, 0.1]  # read back from the checkpoint
    a, b = load_file(whole / "model.safetensors"), load_file(resumed.fit() / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sharded_checkpoint(directory: Path, leaf: object = 0.1) -> dict:
    """A torch.distributed.checkpoint directory as FSDP's optimizer state is written (one process):
    tensors, and plain values stored as pickled bytes."""
    import torch.distributed.checkpoint as dcp

    state = {"optimizer": {"state": {"w": {"exp_avg": torch.arange(4.0)}},
                           "param_groups": [{"lr": leaf, "betas": (0.9, 0.95), "params": ["w"]}]}}
    with pytest.warns(UserWarning, match="single process"):
        dcp.save(state, checkpoint_id=directory)
    return {"optimizer": {"state": {"w": {"exp_avg": torch.zeros(4)}},
                          "param_groups": [{"lr": 0.0, "betas": (0.0, 0.0), "params": ["w"]}]}}


def test_a_sharded_checkpoint_is_read_as_data(tmp_path):
    """What torch.distributed.checkpoint unpickles (its .metadata, and each value that is not a
    tensor) is read through an allow-list first: a whole checkpoint loads, a planted object in
    either place is refused in one line naming the file, and never runs."""
    import warnings

    from llada.training.state import read_sharded

    marker = tmp_path / "ran"
    good = _sharded_checkpoint(tmp_path / "good")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        read_sharded(good, tmp_path / "good")
        assert torch.equal(good["optimizer"]["state"]["w"]["exp_avg"], torch.arange(4.0))
        assert good["optimizer"]["param_groups"] == [{"lr": 0.1, "betas": (0.9, 0.95), "params": ["w"]}]

        template = _sharded_checkpoint(tmp_path / "value", leaf=Payload(marker))  # a value stored as a pickle
        with pytest.raises(CheckpointError, match="holds a Python object") as refused:
            read_sharded(template, tmp_path / "value")
        assert "\n" not in str(refused.value) and "__0_0.distcp" in str(refused.value)

        template = _sharded_checkpoint(tmp_path / "meta")
        (tmp_path / "meta" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
        with pytest.raises(CheckpointError, match=r"\.metadata holds a Python object \(pathlib\.Path\.touch\)"):
            read_sharded(template, tmp_path / "meta")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.integration  # two processes; beside the tests whose `corpus` it shares
def test_an_fsdp_resume_refuses_a_planted_sharded_checkpoint(tmp_path, corpus):
    """The FSDP path end to end (two processes, `fsdp_on_cpu.py`): a payload in the sharded
    optimizer's .metadata stops `--resume auto` with one line from each process, and never runs."""
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(TESTS / "integration" / "fsdp_on_cpu.py"), "train", "--model", "debug", "--data", str(corpus),
            "--seq_len", "16", "--batch_size", "2", "--save_every", "2", "--eval_every", "0", "--vocab_size", "300",
            "--progress", "false", "--tensorboard", "false", "--out_dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*args, "--max_steps", "3"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    marker = tmp_path / "ran"
    sharded = tmp_path / "run" / "checkpoints" / "step-000002" / "trainer" / "optimizer_0"
    (sharded / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    resumed = subprocess.run([*args, "--max_steps", "4"], env=env, capture_output=True, text=True)
    assert resumed.returncode != 0 and not marker.exists()
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("llada train: error:")]
    assert len(errors) == 2 and all("trainer/optimizer_0/.metadata holds a Python object" in e for e in errors), \
        resumed.stderr[-3000:]
