"""One run's checkpoints, owned by one class, `Checkpoints`: written atomically, found, checked, set
aside, pruned, and resumed from.

    out_dir/checkpoints/step-000200/   a model directory (config.json, safetensors, tokenizer; with
                                       LoRA also adapter/), plus
        trainer/                       optimizer, scheduler, scaler and RNG states, as data (state.py),
                                       and state.json (step, config, CPU threads), written last
    out_dir/model/                     the final model directory

What a resume does, in order:
  1. `Checkpoints(...)` removes what a killed run left half written or half removed (.tmp-*);
  2. `resume_dir()` picks the checkpoint: --resume auto the latest whole one (`checkpoint_problem`
     reads headers, not tensors: integrity.py), setting later damaged ones aside as damaged-step-N,
     and stops when none is whole; a --resume path is checked the same way; --resume none refuses
     an out_dir that holds checkpoints;
  3. `check_compatible(ckpt)` refuses one made with other settings;
  4. the model is built from it (llada.training.build), so its weights are read once;
  5. `load(ckpt, trained)` reads the optimizer, schedule, scaler and this process's RNG states back
     as data (state.load: a file holding a Python object is refused, never unpickled; each value
     is checked against the object it is for), takes the CPU thread count it was written with, and
     sets checkpoints past its step aside as superseded-step-N: they belong to the run being redone.
     A trainer state that does not load is an `UnusableCheckpoint`: with --resume auto the Trainer
     sets it aside (`fall_back`) and builds again from the checkpoint before.

Every directory is written whole or not at all (`publish`: a temporary beside it, fsync, rename),
the last `keep_last` checkpoints are kept, and an older one is renamed to a temporary before it is
removed, so none is ever half written or half removed.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llada.checkpoint import adapter, layout, saving
from llada.config import ModelConfig
from llada.errors import CheckpointError, UserError
from llada.families import family_for
from llada.runtime import base_model, merge_lora_state
from llada.sampling.options import SamplerOptions
from llada.training import state
from llada.training.config import TrainConfig
from llada.training.integrity import checkpoint_problem, step_of

logger = logging.getLogger(__name__)

# the settings a checkpoint must share with the run that resumes it
_MUST_MATCH = ("model", "revision", "stage", "objective", "seq_len", "seed", "data", "world", "lora_r", "vocab_size",
               "overrides", "chat_template", "block_size", "document_mask", "block_size_schedule",
               "attention_anneal_steps")


class UnusableCheckpoint(CheckpointError):
    """The trainer state of checkpoint `ckpt` does not load (`problem` says why, in one line)."""

    def __init__(self, message: str, ckpt: Path, problem: str):
        super().__init__(message)
        self.ckpt, self.problem = ckpt, problem


class CheckpointWriteError(UserError, OSError):
    """A checkpoint, the final model or the tokenizer could not be written (a full disk, say); the
    partial copy is removed and what was written before is left whole."""


@dataclass
class Trained:
    """What a checkpoint holds the state of: the objects the Trainer trains."""

    module: torch.nn.Module
    """The module as accelerate prepared it (DDP, FSDP; --compile wraps it later)."""
    optimizer: Any
    """accelerate's wrapper of the AdamW optimizer."""
    scheduler: Any
    """The LR schedule (not prepared by accelerate)."""
    config: ModelConfig
    tokenizer: Any
    sampler: SamplerOptions | None = None
    """How the trained model samples, written as its generation_config.json (`Objective.sampler_options`;
    None: the model family's recommended settings)."""


class Checkpoints:
    """The checkpoints of the run in `cfg.out_dir`, on every process of `acc` (an accelerate
    Accelerator): the main process writes, renames and removes; every process takes part in a
    save and reads its own RNG state. `global_batch` is saved with each, to warn when it changes."""

    def __init__(self, cfg: TrainConfig, acc: Any, global_batch: int):
        self.cfg, self.acc, self.global_batch = cfg, acc, global_batch
        self.out = Path(cfg.out_dir)
        self.root = self.out / "checkpoints"
        self._clean_temporaries()

    def saved(self) -> list[Path]:
        """The checkpoints (step-N) with a trainer/state.json, oldest first."""
        return [p for p in self._step_dirs() if (p / "trainer" / "state.json").exists()]

    def _step_dirs(self) -> list[Path]:
        """The directories named step-N, by N; other names ('step-4 (copy)') are not checkpoints."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if step_of(p) is not None and p.is_dir()), key=step_of)

    def note(self, message: str) -> None:
        """A warning the user should read, once (from the main process)."""
        if self.acc.is_main_process:
            logger.warning(message)

    # ---------------------------------------------------------------------------------- resuming
    def resume_dir(self) -> Path | None:
        """The checkpoint this run resumes from (None: it starts afresh), as cfg.resume says."""
        if self.cfg.resume is None:
            if self._step_dirs():
                raise UserError(f"{self.out} already holds checkpoints; use --resume auto to continue "
                                "or choose another --out_dir")
            return None
        if self.cfg.resume == "auto":
            return self._latest_whole()
        path = Path(self.cfg.resume)
        if not (path / "trainer" / "state.json").exists():
            raise UserError(f"--resume {path}: not a checkpoint (no trainer/state.json)")
        problem = checkpoint_problem(path)
        if problem is not None:
            raise CheckpointError(f"--resume {path}: the checkpoint is damaged ({problem})")
        return path

    def check_compatible(self, ckpt: Path) -> None:
        """Refuse checkpoint `ckpt` when it was made with other settings (`_MUST_MATCH`); warn when
        the global batch changed (the data order then differs from the original run's)."""
        saved = layout.read_json(ckpt / "trainer" / "state.json")["config"]
        now = dataclasses.asdict(self.cfg)
        diff = {k: (saved.get(k), now[k]) for k in _MUST_MATCH if saved.get(k, now[k]) != now[k]}
        if diff:
            shown = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"cannot resume from {ckpt}: it was made with different settings ({shown}). "
                                  "Use the same settings, another --out_dir, or --resume with a matching checkpoint; "
                                  "the checkpoint is left as it is")
        if self.global_batch != saved.get("_global_batch", self.global_batch):
            logger.warning("the global batch changed since %s; the data order will differ from the original run", ckpt)

    def load(self, ckpt: Path, trained: Trained) -> int:
        """Restore the trainer state of checkpoint `ckpt` into `trained` and return its step. The
        model already holds its weights (llada.training.build), and trainer/ holds none.

        Raises UnusableCheckpoint, one line, when the trainer state does not load."""
        try:
            state.load(ckpt / "trainer", self.acc, trained.module, trained.optimizer, trained.scheduler)
        except Exception as e:  # noqa: BLE001 - damage `checkpoint_problem` cannot see without reading it all
            first = state.first_line(e)
            why = first if isinstance(e, UserError) else f"its trainer state does not load ({type(e).__name__}: {first})"
            raise UnusableCheckpoint(f"cannot resume from {ckpt}: {why}; --resume an earlier checkpoint, "
                                     "or move it away", ckpt, why) from None
        saved = layout.read_json(ckpt / "trainer" / "state.json")  # its values checked by checkpoint_problem
        self._match_threads(saved.get("threads"), ckpt)
        self._set_aside_later(saved["step"], ckpt)
        logger.info("resumed from %s at step %d", ckpt, saved["step"])
        return saved["step"]

    def fall_back(self, error: UnusableCheckpoint) -> bool:
        """With --resume auto, set checkpoint `error.ckpt`, whose trainer state did not load, aside
        as damaged-step-N, saying so, when a checkpoint before it is left to resume from (the
        Trainer then builds again from that one); whether it did."""
        if self.cfg.resume != "auto" or not any(step_of(c) < step_of(error.ckpt) for c in self.saved()):
            return False
        self.acc.wait_for_everyone()  # every process failed on it before any moves it
        aside = self._put_aside(error.ckpt, "damaged")
        self.note(f"{error.ckpt} is damaged ({error.problem}); it is kept as {aside.name}, and the run resumes "
                  "from the latest whole checkpoint before it")
        self.acc.wait_for_everyone()
        return True

    def _latest_whole(self) -> Path | None:
        """The latest checkpoint that is whole. Later ones that are damaged (a file cut short by a
        full disk, a state.json that does not parse) are set aside as damaged-step-N, saying so, and
        the run falls back to the one before; with none whole (step-N directories without a
        trainer/state.json included), it stops rather than start afresh, moving nothing."""
        found = self.saved()
        damaged = []
        for ckpt in reversed(found):
            problem = checkpoint_problem(ckpt)
            if problem is None:
                break
            damaged.append((ckpt, problem))
        else:
            damaged += [(c, "no trainer/state.json") for c in self._step_dirs() if c not in found]
            if damaged:
                shown = "; ".join(f"{c.name}: {p}" for c, p in damaged)
                raise CheckpointError(f"no checkpoint in {self.root} is whole ({shown}); move them away "
                                      "to start afresh, or --resume a copy you trust")
            return None
        self.acc.wait_for_everyone()  # every process chose the same one before any is moved
        for bad, problem in damaged:
            aside = self._put_aside(bad, "damaged")
            self.note(f"{bad} is damaged ({problem}); resuming from {ckpt.name}, the latest whole checkpoint "
                      f"(the damaged one is kept as {aside.name})")
        self.acc.wait_for_everyone()
        return ckpt

    def _set_aside_later(self, step: int, resume_dir: Path) -> None:
        """A resume from step `step` (an explicit --resume of an older checkpoint) starts the run
        anew from there: checkpoints of this out_dir past that step (or at it, when the resume is
        from another directory, such as a superseded one) belong to the run it replaces, and a later
        `--resume auto` must never pick one up. Each is kept, renamed superseded-step-N, saying so."""
        later = [c for c in self.saved()
                 if step_of(c) > step or (step_of(c) == step and c.resolve() != resume_dir.resolve())]
        self.acc.wait_for_everyone()  # every process has seen the same list before any is moved
        for old in later:
            aside = self._put_aside(old, "superseded")
            self.note(f"{old.name} is not part of the run resumed from {resume_dir.name}: it belongs to the run "
                      f"being redone, so it is kept as {aside.name}, where --resume auto will not pick it up")
        self.acc.wait_for_everyone()

    def _match_threads(self, threads: int | None, ckpt: Path) -> None:
        """Train on with the CPU thread count the checkpoint was written with.

        CPU kernels split work over more than ATen's grain size (32,768 elements: the gradient of a
        large weight, its norm) into one chunk per thread and sum the chunks, so another thread count
        changes the last bits of the gradients and their norm, and the resumed run no longer
        retraces the loss curve. A process's default count follows the CPU affinity it starts with
        (taskset, a container's or a scheduler's CPU set) or OMP_NUM_THREADS, which a resumed job
        need not share with the one it continues. A count above this machine's CPUs (a checkpoint
        written on a larger machine, or a damaged value) is not taken: the run trains on with its
        own, saying the curve may then differ in its last bits."""
        now, cpus = torch.get_num_threads(), os.cpu_count() or 1
        if not threads or threads == now or self.acc.device.type != "cpu":
            return
        if threads > cpus:
            self.note(f"{ckpt.name} was written with {threads} CPU threads, but this machine has {cpus}; training "
                      f"on with {now}, so the loss curve may differ from the original run's in its last bits")
        else:
            torch.set_num_threads(threads)
            self.note(f"resuming with {threads} CPU threads, as {ckpt.name} was written (this process "
                      f"started with {now}): a reduction split another way would change the last bits "
                      "of the gradients, and the run would not retrace its loss curve")

    # ----------------------------------------------------------------------------------- writing
    def save(self, step: int, trained: Trained) -> Path:
        """Write checkpoints/step-N whole (`publish`), then prune those before it past keep_last."""
        final = self.root / f"step-{step:06d}"

        def write(tmp: Path) -> None:
            # optimizer, scheduler, RNG: no weights (the model directory beside trainer/ holds them)
            state.save(tmp / "trainer", self.acc, trained.module, trained.optimizer, trained.scheduler)
            self._write_model_dir(tmp, trained)
            self.acc.wait_for_everyone()  # every process has written its share (its RNG state)
            if self.acc.is_main_process:  # last: what makes a checkpoint whole (`saved`)
                record = {"step": step, "config": {**dataclasses.asdict(self.cfg), "_global_batch": self.global_batch},
                          "time": time.time(), "threads": torch.get_num_threads()}  # see _match_threads
                (tmp / "trainer" / "state.json").write_text(json.dumps(record, indent=2))

        self.publish(final, f"checkpoint {final}", write)
        if self.acc.is_main_process:
            # prune only what is older: a checkpoint past this step is another run's future
            done = [c for c in self.saved() if step_of(c) <= step]
            for old in done[: -self.cfg.keep_last]:
                _remove_dir(old)
        self.acc.wait_for_everyone()
        return final

    def save_model(self, trained: Trained) -> Path:
        """Write the final model directory, out_dir/model, whole; returns it."""
        final = self.out / "model"
        self.publish(final, f"the model to {final}", lambda tmp: self._write_model_dir(tmp, trained))
        return final

    def publish(self, final: Path, what: str, write: Callable[[Path], None]) -> None:
        """Write directory `final` whole or not at all. Every process calls this and `write(tmp)`,
        which fills a temporary directory beside `final`; the main process then fsyncs it and
        renames it into place, replacing what was there. An OSError while writing `what` (a full
        disk) is one CheckpointWriteError, and the temporary is removed at once."""
        tmp = final.with_name(f".tmp-{final.name}")
        main = self.acc.is_main_process
        self.acc.wait_for_everyone()  # every process has read what `final` replaces
        with self._writing(tmp, what):
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.acc.wait_for_everyone()
            write(tmp)
            self.acc.wait_for_everyone()
            if main:
                saving.fsync_tree(tmp)
                _replace_dir(tmp, final)
        self.acc.wait_for_everyone()

    @contextmanager
    def _writing(self, tmp: Path, what: str) -> Iterator[None]:
        """An OSError while writing `what` into `tmp` (a full disk) becomes one line, and the partial
        `tmp` is removed at once; what was written before (earlier checkpoints) is left whole."""
        try:
            yield
        except OSError as e:
            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            found = self.saved()
            then = f"rerun to continue from {found[-1].name}" if found else "rerun"
            space = e.errno in (errno.ENOSPC, errno.EDQUOT)
            err = CheckpointWriteError(f"could not write {what}: {e.strerror or e}"
                                       f"{f' ({e.filename})' if e.filename else ''}; nothing written before was "
                                       f"touched: {'free some space and ' if space else ''}{then}")
            err.errno = e.errno
            raise err from None

    def _write_model_dir(self, path: Path, trained: Trained) -> None:
        """The model directory of the weights being trained: a checkpoint's (beside trainer/, which
        holds no weights) or the final one. With LoRA it holds the merged weights, and adapter/ the
        adapters alone as peft writes them (what a resume reads back, build.restore_adapters); both
        come from one state dict, gathered from every process's shards under FSDP (written by the
        main process). training_config.json and adapter/ go in first, so that the model card
        describes them."""
        unwrapped = self.acc.unwrap_model(trained.module)  # its names are the model's own
        full = self.acc.get_state_dict(trained.module)  # every process calls it: under FSDP it gathers the shards
        if not self.acc.is_main_process:
            return
        merged = merge_lora_state(full, unwrapped) if self.cfg.lora_r else full
        prefix = _common_prefix(merged, base_model(unwrapped))
        weights = {k[len(prefix):]: v.detach().cpu() for k, v in merged.items()}
        weights = family_for(trained.config).to_checkpoint(weights)  # in the keys of the model's family
        path.mkdir(parents=True, exist_ok=True)
        (path / layout.TRAINING_CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2) + "\n")
        if self.cfg.lora_r:
            adapter.save_lora_adapter(unwrapped, path / layout.ADAPTER_DIR, base=self.cfg.model, state=full)
        saving.save_state_dict(path, weights, trained.config, trained.tokenizer, options=trained.sampler)

    # -------------------------------------------------------------------- what a killed run left
    def _clean_temporaries(self) -> None:
        """Remove what a killed run left half written or half removed: .tmp-* in out_dir and in
        checkpoints/ (`_remove_dir`), and `_half_removed` checkpoints."""
        if not self.acc.is_main_process:
            return
        for tmp in [*self.out.glob(".tmp-*"), *self.root.glob(".tmp-*")]:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        self._half_removed()

    def _half_removed(self) -> None:
        """A step-N without trainer/state.json is what an earlier llada left when it was killed while
        pruning it (it removed files in place): nothing resumes from it. One older than the latest
        checkpoint is removed, as the pruning meant to; a later one is not pruning's, and is set
        aside as damaged-step-N. Each says so. With no checkpoint at all, none is touched: the run
        stops (`resume_dir`). (The main process calls this.)"""
        whole = self.saved()
        if not whole:
            return
        for ckpt in (p for p in self._step_dirs() if p not in whole):
            if step_of(ckpt) < step_of(whole[-1]):
                _remove_dir(ckpt)
                self.note(f"removed {ckpt}: a checkpoint half removed (it has no trainer/state.json) when a run "
                          "was killed while pruning it")
            else:
                aside = self._put_aside(ckpt, "damaged")
                self.note(f"{ckpt} has no trainer/state.json, so nothing resumes from it; it is kept as {aside.name}")

    def _put_aside(self, ckpt: Path, label: str) -> Path:
        """Rename checkpoint `ckpt` to `label`-<its name> (the first free name; the main process
        renames) and return the new path. Callers wait for every process before and after."""
        aside = _unused(self.root / f"{label}-{ckpt.name}")
        if self.acc.is_main_process:
            os.replace(ckpt, aside)
        return aside


def _common_prefix(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> str:
    """The prefix wrappers (compile, peft, DDP) put before the LLaDAModel's own parameter names."""
    own = next(iter(model.state_dict()))
    for key in weights:
        if key.endswith(own):
            return key[: len(key) - len(own)]
    return ""


def _remove_dir(path: Path) -> None:
    """Remove directory `path`, in effect at once: it is renamed to .tmp-removed-<name> first, so that
    a kill during the removal leaves a temporary, which the next run removes (`_clean_temporaries`),
    never a half-removed `path`."""
    trash = _unused(path.with_name(f".tmp-removed-{path.name}"))
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename directory `tmp` to `final`, replacing what is there: the old one is renamed aside
    first (a rename cannot replace a directory that has files) and removed last."""
    if final.exists():
        old = _unused(final.with_name(f".tmp-old-{final.name}"))
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _unused(path: Path) -> Path:
    """`path`, or path.1, path.2, ... whichever does not exist yet."""
    n, out = 0, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}.{n}")
    return out
