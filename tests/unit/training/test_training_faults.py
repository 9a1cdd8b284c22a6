"""A run's own files turned hostile or damaged: a checkpoint (FIFOs, symlinks leading out, values
of the wrong type or range, odd directory names), metrics.jsonl, the tokenizer left in out_dir, and
the machine's memory. `--resume auto` falls back to the previous whole checkpoint, an explicit
--resume is one line, and nothing hangs, reads outside the run or trains on what was misread."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from llada.data.world import World
from llada.errors import CheckpointError, UserError
from llada.training.checkpoints import checkpoint_problem
from llada.training.config import TrainConfig
from llada.training.trainer import Trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n\n".join(World(seed=0, n_people=8, n_stories=4, n_sums=40).pretrain_documents()))
    return path


def _cfg(out: Path, corpus: Path, **kw) -> TrainConfig:
    base = dict(model="debug", data=str(corpus), out_dir=str(out), seq_len=16, batch_size=2, max_steps=6,
                warmup_steps=1, lr=3e-3, eval_every=0, save_every=2, log_every=1, vocab_size=300, progress=False,
                tensorboard=False)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, corpus) -> Path:
    """A run stopped after writing checkpoints step-000002 and step-000004 (and metrics.jsonl)."""
    out = tmp_path_factory.mktemp("base") / "run"
    trainer = Trainer(_cfg(out, corpus))
    from llada.training.metrics import Metrics

    metrics = Metrics(out, trainer.cfg, 0, True)
    for _ in range(2):
        metrics.log({"step": trainer.step + 1, **trainer.train_step()})
        metrics.log({"step": trainer.step + 1, **trainer.train_step()})
        trainer.save_checkpoint()
    metrics.close()
    return out


@pytest.fixture
def run(tmp_path, base_run) -> Path:
    """A copy of `base_run` to damage."""
    shutil.copytree(base_run, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory beside the run, outside it."""
    (tmp_path / "outside").mkdir()
    return tmp_path / "outside"


@contextmanager
def _within(seconds: int) -> Iterator[None]:
    """Fail, rather than hang, when the body takes longer than `seconds` (a FIFO blocks its reader)."""
    def alarm(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _fell_back(run: Path, corpus: Path, caplog, *words: str) -> None:
    """--resume auto resumes from step 2, setting step-000004 aside with one line naming `words`."""
    with _within(120), caplog.at_level("WARNING", logger="llada"):
        resumed = Trainer(_cfg(run, corpus))
    assert resumed.step == 2
    root = run / "checkpoints"
    assert (root / "damaged-step-000004").is_dir() and not (root / "step-000004").exists()
    lines = [r.getMessage() for r in caplog.records if "step-000004" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and all(w in lines[0] for w in words), lines


def _refused(run: Path, corpus: Path, ckpt: str, *words: str) -> str:
    """An explicit --resume of checkpoint `ckpt`: one line naming `words`."""
    with _within(120), pytest.raises(CheckpointError) as refused:
        Trainer(_cfg(run, corpus, resume=str(run / "checkpoints" / ckpt)))
    message = str(refused.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


@pytest.mark.parametrize("name", ["trainer/state.json", "trainer/optimizer.bin", "trainer/scheduler.json",
                                  "model.safetensors"])
def test_a_fifo_in_a_checkpoint_is_damage_not_a_hang(run, corpus, caplog, name):
    victim = run / "checkpoints" / "step-000004" / name
    victim.unlink()
    os.mkfifo(victim)
    _fell_back(run, corpus, caplog, name, "not a regular file")


def test_a_fifo_for_metrics_is_one_line_not_a_hang(run, corpus):
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    trainer = Trainer(_cfg(run, corpus))
    with _within(60), pytest.raises(UserError, match="metrics.jsonl is not a regular file") as refused:
        trainer.fit()
    assert "\n" not in str(refused.value)


def test_a_fifo_in_the_tokenizer_left_in_out_dir_is_replaced_not_a_hang(tmp_path, corpus, caplog):
    tok_dir = tmp_path / "run" / "tokenizer"
    tok_dir.mkdir(parents=True)
    os.mkfifo(tok_dir / "llada_tokenizer.json")
    with _within(120), caplog.at_level("WARNING", logger="llada"):
        Trainer(_cfg(tmp_path / "run", corpus))
    assert "damaged or unfinished" in caplog.text and "llada_tokenizer.json" in caplog.text
    assert (tok_dir / "llada_tokenizer.json").is_file()


@pytest.mark.parametrize("name", ["trainer/optimizer.bin", "trainer/scheduler.json", "tokenizer.json"])
def test_a_checkpoint_file_leading_outside_is_never_read(run, corpus, caplog, outside, name):
    """The file moved outside the run and linked back in (same bytes: it would load): refused."""
    victim = run / "checkpoints" / "step-000004" / name
    shutil.move(victim, outside / victim.name)
    victim.symlink_to(outside / victim.name)
    _fell_back(run, corpus, caplog, name, "outside")
    _refused(run, corpus, "damaged-step-000004", name, "outside")


def test_an_adapter_leading_outside_is_named_as_such(run, outside):
    """A LoRA checkpoint's adapter/ whose weights link outside: the problem names that file, not the
    tokenizer (which loads)."""
    ckpt = run / "checkpoints" / "step-000004"
    (ckpt / "adapter").mkdir()
    shutil.copy(ckpt / "model.safetensors", outside / "adapter_model.safetensors")
    (ckpt / "adapter" / "adapter_model.safetensors").symlink_to(outside / "adapter_model.safetensors")
    problem = checkpoint_problem(ckpt)
    assert problem is not None and "adapter/adapter_model.safetensors" in problem and "outside" in problem
    assert "tokenizer" not in problem


def test_a_symlink_loop_in_a_checkpoint_is_damage(run):
    ckpt = run / "checkpoints" / "step-000004"
    (ckpt / "trainer" / "loop.bin").symlink_to(ckpt / "trainer" / "loop.bin")
    problem = checkpoint_problem(ckpt)
    assert problem is not None and "loop.bin" in problem


def test_a_sharded_checkpoint_naming_a_file_outside_is_refused(tmp_path):
    """torch.distributed.checkpoint's .metadata names each shard by a path relative to its directory:
    one leading out of it (../outside/__0_0.distcp) is refused before anything is read."""
    import warnings

    import torch.distributed.checkpoint as dcp

    from llada.training.state import read_sharded

    state = {"optimizer": {"state": {"w": {"exp_avg": torch.arange(4.0)}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=tmp_path / "shards")
    (tmp_path / "outside").mkdir()
    shutil.move(tmp_path / "shards" / "__0_0.distcp", tmp_path / "outside" / "__0_0.distcp")
    meta_path = tmp_path / "shards" / ".metadata"
    meta = pickle.loads(meta_path.read_bytes())  # the test's own file
    for info in meta.storage_data.values():
        info.relative_path = "../outside/__0_0.distcp"
    meta_path.write_bytes(pickle.dumps(meta))
    template = {"optimizer": {"state": {"w": {"exp_avg": torch.zeros(4)}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(CheckpointError, match=r"\.\./outside/__0_0\.distcp.*outside") as refused:
            read_sharded(template, tmp_path / "shards")
    assert "\n" not in str(refused.value)
    assert torch.equal(template["optimizer"]["state"]["w"]["exp_avg"], torch.zeros(4))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes", [{"step": -3}, {"step": 1e21}, {"step": 10**21}, {"step": "4"}, {"step": True},
                                     {"step": 6}, {"threads": "x"}, {"threads": -1}, {"threads": 0},
                                     {"threads": 1e20}, {"threads": 1.5}, {"threads": True}, {"config": []}],
                         ids=lambda c: json.dumps(c))
def test_state_json_values_are_checked(run, changes):
    ckpt = run / "checkpoints" / "step-000004"
    _edit_json(ckpt / "trainer" / "state.json", **changes)
    problem = checkpoint_problem(ckpt)
    assert problem is not None and "state.json" in problem and next(iter(changes)) in problem, problem
    assert "\n" not in problem


def test_a_negative_step_falls_back(run, corpus, caplog):
    """The probe's case: "step": -3 resumed at -3; now the checkpoint is damaged, the run resumes from step 2."""
    _edit_json(run / "checkpoints" / "step-000004" / "trainer" / "state.json", step=-3)
    _fell_back(run, corpus, caplog, "state.json", "step")


def test_more_threads_than_cpus_are_not_honoured(run, corpus, caplog):
    _edit_json(run / "checkpoints" / "step-000004" / "trainer" / "state.json", threads=os.cpu_count() + 126)
    threads = torch.get_num_threads()
    try:
        with caplog.at_level("WARNING", logger="llada"):
            resumed = Trainer(_cfg(run, corpus))
        assert resumed.step == 4 and torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(threads)
    assert f"written with {os.cpu_count() + 126} CPU threads" in caplog.text and "has" in caplog.text


@pytest.mark.parametrize("base_lrs", [[math.nan, math.nan], ["a", "b"], [0.001], [0.001, -1.0], "x"],
                         ids=["NaN", "strings", "one too few", "negative", "not a list"])
def test_scheduler_values_are_checked(run, corpus, caplog, base_lrs):
    _edit_json(run / "checkpoints" / "step-000004" / "trainer" / "scheduler.json", base_lrs=base_lrs)
    _fell_back(run, corpus, caplog, "scheduler.json", "base_lrs")
    _refused(run, corpus, "damaged-step-000004", "scheduler.json", "base_lrs")


def test_a_negative_scheduler_step_is_refused(run, corpus):
    _edit_json(run / "checkpoints" / "step-000004" / "trainer" / "scheduler.json", last_epoch=-5)
    _refused(run, corpus, "step-000004", "scheduler.json", "last_epoch")


def _edit_optimizer(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def _betas(state) -> None:
    state["param_groups"][0]["betas"] = "ab"


def _shape(state) -> None:
    first = next(iter(state["state"].values()))
    first["exp_avg"] = torch.zeros(3, 5)


def _nan(state) -> None:
    next(iter(state["state"].values()))["exp_avg_sq"].fill_(math.nan)


def _lr(state) -> None:
    state["param_groups"][1]["lr"] = math.inf


def _one_group(state) -> None:
    del state["param_groups"][1]


def _unknown_parameter(state) -> None:
    state["state"][10**6] = next(iter(state["state"].values()))


@pytest.mark.parametrize("edit", [_betas, _shape, _nan, _lr, _one_group, _unknown_parameter],
                         ids=lambda f: f.__name__.strip("_"))
def test_optimizer_state_is_checked_against_the_model(run, corpus, caplog, edit):
    _edit_optimizer(run / "checkpoints" / "step-000004" / "trainer" / "optimizer.bin", edit)
    _fell_back(run, corpus, caplog, "optimizer.bin")
    _refused(run, corpus, "damaged-step-000004", "optimizer.bin")


@pytest.mark.parametrize("name", ["step-000004 (copy)", "step-xyz", "step-"])
def test_other_directories_named_step_are_left_alone(run, corpus, name):
    root = run / "checkpoints"
    shutil.copytree(root / "step-000004", root / name)
    assert Trainer(_cfg(run, corpus)).step == 4
    assert (root / name).is_dir()


def test_checkpoints_are_ordered_by_step_not_by_name(run, corpus):
    root = run / "checkpoints"
    for old, new in (("step-000002", "step-2"), ("step-000004", "step-10")):
        os.rename(root / old, root / new)
        _edit_json(root / new / "trainer" / "state.json", step=int(new.removeprefix("step-")))
    trainer = Trainer(_cfg(run, corpus, max_steps=12))
    assert trainer.step == 10


@pytest.mark.parametrize("resume", ["auto", None])
def test_no_whole_checkpoint_stops_rather_than_start_afresh(run, corpus, resume):
    root = run / "checkpoints"
    for ckpt in root.iterdir():
        (ckpt / "trainer" / "state.json").unlink()
    with pytest.raises(UserError) as refused:
        Trainer(_cfg(run, corpus, resume=resume))
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "step-000004"]  # nothing moved


def test_a_damaged_latest_with_nothing_before_it_stops_with_its_own_error(run, corpus):
    shutil.rmtree(run / "checkpoints" / "step-000002")
    _edit_json(run / "checkpoints" / "step-000004" / "trainer" / "scheduler.json", base_lrs=[math.nan, math.nan])
    with pytest.raises(CheckpointError, match="scheduler.json") as refused:
        Trainer(_cfg(run, corpus))
    assert "\n" not in str(refused.value)
    assert (run / "checkpoints" / "step-000004").is_dir()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_a_planted_object_is_named_by_the_global_refused(run, corpus, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state": _Payload(marker), "param_groups": []},
               run / "checkpoints" / "step-000004" / "trainer" / "optimizer.bin")
    message = _refused(run, corpus, "step-000004", "optimizer.bin holds a Python object (os.makedirs)")
    assert "weights_only" not in message and "Re-running" not in message
    assert not marker.exists()


def test_a_fresh_model_too_large_for_memory_is_refused_before_it_is_built(tmp_path, corpus, monkeypatch):
    import psutil

    import llada.training.build as build

    class Tiny:
        available, total = 1_000, 2_000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    monkeypatch.setattr(build, "LLaDAModel", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(UserError, match=r"needs about .* memory .* available") as refused:
        Trainer(_cfg(tmp_path / "run", corpus))
    assert "\n" not in str(refused.value)
