"""A run's checkpoints: resume, fall back from damage, set aside, prune, survive kills."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.train import _cfg

import llada
from llada.data.world import World
from llada.errors import CheckpointError, UserError
from llada.training.config import TrainConfig
from llada.training.metrics import Metrics
from llada.training.trainer import Trainer


class _Killed(BaseException):
    """A simulated SIGKILL: not an Exception, so nothing in the trainer catches it."""


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
