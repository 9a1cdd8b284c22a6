"""The trainer: pretraining (Eq. 3) and SFT (Eq. 5), from a laptop to a GPU cluster, on accelerate.

    llada train --model tiny --out_dir runs/pt                     # from scratch on the built-in world
    llada sft   --model runs/pt/model --out_dir runs/sft           # fine-tune on the built-in SFT set
    llada train --config configs/train/100m.yaml --data corpus.jsonl
    accelerate launch --config_file configs/accelerate/ddp.yaml -m llada train --config ...
    # several nodes: the same command on every node with --num_machines N --machine_rank i
    #   --main_process_ip HOST --main_process_port PORT (or those keys in the accelerate YAML)

What differs between pretraining and SFT, diffusion and the AR baseline (the data rows, the noise,
the loss) is an `Objective` of llada/objectives.py, looked up once from (stage, objective); the
Trainer itself is the same for all four.

Reproducibility is by construction: the data order of epoch e is a permutation seeded by
(seed, e), and the noise of optimizer step s is drawn from a generator seeded by (seed, s) for the
whole global batch, each process keeping its rows. So the state to resume is just the weights,
the optimizer, the scheduler and the step (and, on a CPU, the thread count, see `_match_threads`);
a run killed at any moment and resumed from its last checkpoint retraces the same loss curve, and
2 processes compute what 1 process does with the same global batch. A resumed run builds its model
once, from the checkpoint (with LoRA: the frozen base from its source, the adapters from the
checkpoint), so it needs no more memory than a fresh one.

Layout of `out_dir`:
    checkpoints/step-000200/   a model directory (config.json, safetensors, tokenizer) plus
        trainer/               optimizer, scheduler and RNG states, as data (llada/trainer_state.py),
                               and state.json (step, config)
    model/                     the final model directory
    metrics.jsonl, tb/, curves.png
Checkpoints are written to a temporary directory and renamed into place, so one is never half
written; the last `keep_last` are kept, and an older one is renamed to a temporary name before it
is removed, so one is never half removed either. Resuming reads no pickle that could run code.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from llada import diffusion, trainer_state
from llada.checkpoint import fsync_tree
from llada.config import PRESETS, ModelConfig, preset
from llada.data.world import WorldConfig
from llada.errors import CheckpointError, UserError
from llada.families import family_for
from llada.objectives import objective_for

if TYPE_CHECKING:
    from llada.model import LLaDAModel

logger = logging.getLogger(__name__)


TRAINING_CONFIG = "training_config.json"
"""The TrainConfig a model directory was trained with, saved beside its weights."""


def trained_world(model_dir: str | Path) -> tuple[int, WorldConfig] | None:
    """(seed, world) of the built-in world a model directory was trained on, or None when it was
    trained on other data or elsewhere (no training_config.json)."""
    path = Path(model_dir) / TRAINING_CONFIG
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("data") is not None:
        return None
    return int(saved.get("seed", 0)), WorldConfig(**saved.get("world", {}))


def refuse_ambiguous_model(model: str) -> None:
    """A UserError when `model` names both a preset and a model directory in the current directory
    (`tiny` beside a ./tiny holding config.json): either guess would train something not asked for."""
    if model in PRESETS and (Path(model) / "config.json").is_file():
        raise UserError(f"--model {model} names both the preset {model} and the model directory ./{model}; "
                        f"write --model ./{model} to start from the directory, or run from another directory "
                        f"to train a fresh {model} model")


# fp16: consecutive steps the GradScaler may skip (each halves the scale) before it is divergence.
MAX_SKIPPED_STEPS = 25


class TrainingDiverged(UserError):
    """The loss or gradient became NaN or infinite."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint, the final model or the tokenizer could not be written (a full disk, say); the
    partial copy is removed and what was written before is left whole."""


TOKENIZER_RECIPE = "llada_tokenizer.json"
"""Written last into out_dir/tokenizer: the settings its BPE was trained with (see `_earlier_tokenizer`)."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved with every checkpoint."""

    model: str = "tiny"
    """A preset name (debug, tiny, small, 100m, 1b, llada-8b) to start from scratch, or a model directory or Hub id.
    A name that is both a preset and a model directory here (./tiny with a config.json) is refused: write ./tiny."""
    revision: str | None = None
    """A branch, tag or commit when --model is a Hugging Face Hub id (None: main)."""
    data: str | None = None
    """Training data: a .txt/.jsonl/.parquet file, directory or glob, or a Hub dataset; None = the built-in world."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """The built-in world's size and mix when --data is None: --world.n_people 24 (its seed is --seed)."""
    out_dir: str = "runs/train"
    """Where checkpoints, metrics and the final model go."""
    stage: Literal["pretrain", "sft"] = "pretrain"
    """pretrain: Eq. 3 on packed text; sft: Eq. 5 on chat conversations."""
    objective: Literal["diffusion", "ar"] = "diffusion"
    """diffusion: the masked diffusion loss; ar: the autoregressive baseline (same model with a causal mask)."""
    seq_len: int = 128
    """Tokens per training sequence (pretraining blocks; the SFT length cap)."""
    batch_size: int = 16
    """Sequences per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int = 1000
    """Optimizer steps."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decay ends at lr * min_lr_ratio."""
    warmup_steps: int = 50
    """Linear warmup from 0 to lr."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (norms and biases are not decayed)."""
    beta1: float = 0.9
    """AdamW's first-moment decay."""
    beta2: float = 0.95
    """AdamW's second-moment decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 disables)."""
    eps: float = 1e-3
    """t = (1 - eps) u + eps: the smallest masking probability."""
    antithetic: bool = True
    """Stratify t across the global batch (lower-variance loss)."""
    variable_length_prob: float = 0.01
    """Fraction of pretraining steps cropped to a random length in 1..seq_len (LLaDA: 1%)."""
    eval_every: int = 100
    """Steps between held-out evaluations (0 disables)."""
    eval_batches: int = 4
    """Held-out batches per evaluation (fixed batches and noise, so evaluations compare)."""
    save_every: int = 200
    """Steps between checkpoints (0: only the final model)."""
    keep_last: int = 2
    """Checkpoints kept on disk."""
    log_every: int = 10
    """Steps between lines in metrics.jsonl (and the progress bar's loss)."""
    seed: int = 0
    """Seeds the model's initialisation, the data order, the noise and the built-in world."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on a GPU that supports it, full precision otherwise."""
    compile: bool = False
    """torch.compile the model before training."""
    activation_checkpointing: bool = False
    """Recompute each block in the backward pass: less memory, about a third more compute."""
    lora_r: int = 0
    """LoRA rank for fine-tuning a large checkpoint (0: train all weights)."""
    vocab_size: int = 4096
    """BPE vocabulary when a tokenizer is trained from scratch (a preset model)."""
    truncation: Literal["truncate", "error"] = "truncate"
    """SFT conversations longer than seq_len: cut them (counted) or stop with an error."""
    padding: Literal["longest", "max_length"] = "longest"
    """SFT: pad each batch with EOS to its longest conversation (LLaDA), or every one to seq_len."""
    resume: str | None = "auto"
    """auto: continue from the latest checkpoint in out_dir if there is one; a path; or None to refuse to reuse out_dir."""
    tensorboard: bool = True
    """Write TensorBoard logs to out_dir/tb (when tensorboard is installed)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs wandb installed and logged in)."""
    progress: bool = True
    """Show a progress bar."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Model config fields to override on a preset, e.g. {"n_layers": 2}."""

    def __post_init__(self) -> None:
        positive = ("seq_len", "batch_size", "grad_accum", "max_steps", "keep_last", "log_every", "vocab_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise UserError("--lr must be positive and --min_lr_ratio in [0, 1]")
        if not 0 <= self.variable_length_prob <= 1:
            raise UserError(f"--variable_length_prob must be in [0, 1], got {self.variable_length_prob}")
        if not 0 <= self.eps < 1:
            raise UserError(f"--eps must be in [0, 1), got {self.eps}")
        if self.warmup_steps < 0 or self.eval_every < 0 or self.save_every < 0:
            raise UserError("--warmup_steps, --eval_every and --save_every must be >= 0")
        refuse_ambiguous_model(self.model)
        if self.model not in PRESETS and not Path(self.model).expanduser().is_dir() and "/" not in self.model:
            raise UserError(f"--model {self.model!r} is neither a preset ({', '.join(PRESETS)}) nor a directory")
        if self.revision is not None and (self.from_scratch or Path(self.model).expanduser().is_dir()):
            raise UserError(f"--revision applies to a Hugging Face Hub id; --model {self.model!r} is a "
                            f"{'preset' if self.from_scratch else 'local directory'}")

    @property
    def from_scratch(self) -> bool:
        return self.model in PRESETS


# ------------------------------------------------------------------------------------------ schedule


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def step_generator(seed: int, step: int, micro: int = 0, salt: int = 0) -> torch.Generator:
    """The noise generator of optimizer step `step`, micro-batch `micro`: a pure function of its inputs."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1_009 + micro * 17 + salt) % (2**63))


# -------------------------------------------------------------------------------------------- data


class BatchPlan:
    """Which examples form each micro-batch: a deterministic function of (seed, step).

    The stream of example indices is the concatenation of per-epoch permutations seeded by
    (seed, epoch); optimizer step s consumes positions [s*G, (s+1)*G) with G the global batch
    (batch_size * grad_accum * processes); process r's micro-batch m takes its own slice.
    """

    def __init__(self, n_examples: int, global_batch: int, seed: int):
        if n_examples == 0:
            raise UserError("the training set is empty after packing/rendering; provide more data or lower --seq_len")
        self.n, self.global_batch, self.seed = n_examples, global_batch, seed
        self._perm: dict[int, torch.Tensor] = {}

    def _epoch(self, e: int) -> torch.Tensor:
        if e not in self._perm:
            self._perm = {e: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + e))}
        return self._perm[e]

    def global_indices(self, step: int) -> list[int]:
        start = step * self.global_batch
        out = []
        for pos in range(start, start + self.global_batch):
            out.append(int(self._epoch(pos // self.n)[pos % self.n]))
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.n


# --------------------------------------------------------------------------------------- the trainer


class Trainer:
    """Runs a TrainConfig: builds model, tokenizer and data, trains, evaluates, checkpoints.

    `objective` (llada.objectives) supplies the stage's data (`data`), the noise and the loss;
    the Trainer owns the seeding, the batch plan, accumulation, processes and checkpoints.
    """

    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator

        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        self.acc = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        self.world = self.acc.num_processes
        self.rank = self.acc.process_index
        self.global_batch = cfg.batch_size * cfg.grad_accum * self.world
        self.step = 0
        self.skipped_in_a_row = 0  # fp16 steps skipped by the GradScaler since the last update
        self._clean_temporaries()
        self._build()

    # --------------------------------------------------------------------------------- building
    def _build(self) -> None:
        cfg = self.cfg
        resume_dir = self._find_resume()
        self.objective = objective_for(cfg)
        self.data = self.objective.data
        with _datasets_progress(cfg.progress):
            self.data.load()
        if resume_dir is not None:
            self._check_compatible(resume_dir)
        model = self._build_model(resume_dir)
        self.model_config: ModelConfig = model.config
        if cfg.seq_len > self.model_config.max_sequence_length:
            logger.warning("seq_len %d exceeds the model's max_sequence_length %d", cfg.seq_len,
                           self.model_config.max_sequence_length)
        self.base = model.train()
        with _datasets_progress(cfg.progress):
            self.data.prepare(self.tokenizer, self.acc.main_process_first)
        self.plan = BatchPlan(len(self.data.train), self.global_batch, cfg.seed)
        self._prepare_optimization(resume_dir)
        if resume_dir is not None:
            self._load_trainer_state(resume_dir)

    def _build_model(self, resume_dir: Path | None) -> LLaDAModel:
        """The model to train, built once, and `self.tokenizer`.

        Resuming without LoRA, the checkpoint's model directory holds exactly the weights being
        trained, so the model is built from it and from nothing else. With LoRA it holds merged
        weights, which cannot give the frozen base back: that is built from its source as a fresh
        run builds it, and the adapters come from the checkpoint's adapter/ (`restore_adapters`).
        """
        cfg = self.cfg
        if resume_dir is not None and not cfg.lora_r:
            model = self._load_dir(resume_dir)
        elif cfg.from_scratch:
            model = self._fresh_model(resume_dir)
        else:
            model = self._load_dir(cfg.model, cfg.revision)
        if self.objective.causal != model.config.causal:
            raise UserError(f"--objective {cfg.objective} does not match {cfg.model} "
                            f"(causal={model.config.causal})")
        return model

    def _load_dir(self, path: str | Path, revision: str | None = None) -> LLaDAModel:
        """The model of a directory, to train: in float32 when all of it is trained (the optimizer's
        master weights; bf16/fp16 is accelerate's autocast, --mixed_precision), as stored when only
        LoRA adapters are (the frozen base keeps its dtype and memory)."""
        from llada.checkpoint import load

        bundle = load(path, dtype=None if self.cfg.lora_r else "float32", revision=revision)  # streamed once
        self.tokenizer = bundle.tokenizer
        return bundle.model

    def _fresh_model(self, resume_dir: Path | None) -> LLaDAModel:
        """A preset's shape with the tokenizer's ids, its weights drawn from cfg.seed."""
        from llada.model import LLaDAModel
        from llada.tokenizer import config_ids

        cfg = self.cfg
        self.tokenizer = self._scratch_tokenizer(resume_dir)
        overrides = {**config_ids(self.tokenizer), "max_sequence_length": max(cfg.seq_len, 256),
                     "causal": self.objective.causal, **cfg.overrides}
        model_config = preset(cfg.model, **overrides)
        torch.manual_seed(cfg.seed)
        return LLaDAModel(model_config)

    def _scratch_tokenizer(self, resume_dir: Path | None) -> Any:
        """The checkpoint's tokenizer when resuming, out_dir/tokenizer when an earlier run of these
        settings trained one, else a BPE trained now on the stage's texts (and saved there, atomically)."""
        from transformers import AutoTokenizer

        tok_dir = self.out / "tokenizer"
        if resume_dir is not None:
            return AutoTokenizer.from_pretrained(resume_dir)
        earlier = self._earlier_tokenizer(tok_dir)
        if earlier is not None:
            return earlier
        from llada.tokenizer import train_tokenizer

        tokenizer = train_tokenizer(self.texts_for_tokenizer(), vocab_size=self.cfg.vocab_size)
        self.acc.wait_for_everyone()  # every process has looked at the earlier one before it is replaced
        if self.acc.is_main_process:
            tmp = self.out / ".tmp-tokenizer"
            with self._writing(tmp, f"the tokenizer to {tok_dir}"):
                shutil.rmtree(tmp, ignore_errors=True)
                tokenizer.save_pretrained(tmp)
                (tmp / TOKENIZER_RECIPE).write_text(json.dumps(self._tokenizer_recipe(), indent=2) + "\n")
                fsync_tree(tmp)
                _replace_dir(tmp, tok_dir)
        return tokenizer

    def _tokenizer_recipe(self) -> dict[str, Any]:
        """What a scratch tokenizer depends on: the vocabulary size and the texts it is trained on."""
        now = dataclasses.asdict(self.cfg)
        return {k: now[k] for k in ("vocab_size", "stage", "data", "world", "seed")}

    def _earlier_tokenizer(self, tok_dir: Path) -> Any | None:
        """out_dir/tokenizer if an earlier run trained it with these settings, else None, saying why.

        It is only there when no checkpoint is (a resume reads the checkpoint's own tokenizer), so
        nothing was trained with it: one that is damaged, half written (no recipe file, which goes in
        last) or trained for other settings (--vocab_size, --data) is replaced by a new one."""
        from transformers import AutoTokenizer

        from llada.tokenizer import config_ids

        if not tok_dir.exists():
            return None
        try:
            saved = json.loads((tok_dir / TOKENIZER_RECIPE).read_text())
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
            config_ids(tokenizer)  # it has the mask and EOS tokens
        except Exception as e:  # noqa: BLE001 - a damaged directory fails in many ways
            why = f"it has no {TOKENIZER_RECIPE}, which is written last" if isinstance(e, FileNotFoundError) \
                else f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            self._note(f"{tok_dir} is damaged or unfinished ({why}); training a new tokenizer in its place")
            return None
        recipe = json.loads(json.dumps(self._tokenizer_recipe()))
        changed = [f"--{k} {saved.get(k)!r}, now {v!r}" for k, v in recipe.items() if saved.get(k) != v]
        if changed:
            self._note(f"{tok_dir} was trained for other settings ({'; '.join(changed)}); no checkpoint uses it, "
                       "so a new tokenizer is trained in its place")
            return None
        return tokenizer

    def _note(self, message: str) -> None:
        """A warning the user should read, once (from the main process)."""
        if self.acc.is_main_process:
            logger.warning(message)

    def texts_for_tokenizer(self) -> list[str]:
        """What a fresh tokenizer is trained on: the stage's training texts."""
        return self.data.tokenizer_texts()

    def _prepare_optimization(self, resume_dir: Path | None) -> None:
        """The runtime-prepared module (LoRA, checkpointing, compile), AdamW and its schedule. A
        resumed LoRA run copies the checkpoint's adapters in before accelerate's prepare, so that
        under FSDP they are sharded like every other weight."""
        from llada.runtime import compile_model, prepare_model

        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):  # LoRA's initial adapters: drawn from cfg.seed, not the process's history
            torch.manual_seed(cfg.seed)
            module = prepare_model(self.base, lora_r=cfg.lora_r,
                                   activation_checkpointing=cfg.activation_checkpointing)
        if resume_dir is not None and cfg.lora_r:
            restore_adapters(module, resume_dir, base=cfg.model)
        params = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        fused = torch.cuda.is_available()
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)
        # The scheduler is not passed through prepare(): accelerate would advance it once per process
        # per step. It follows the optimizer step count here and is checkpointed alongside.
        self.prepared, self.opt = self.acc.prepare(module, opt)  # the module accelerate wrapped
        # compiled last: it traces the module as accelerate wrapped it (DDP, FSDP, autocast)
        self.module = compile_model(self.prepared) if cfg.compile else self.prepared
        self.sched = sched

    def _load_trainer_state(self, resume_dir: Path) -> None:
        """Optimizer, scheduler, RNG and step from checkpoints/step-N/trainer, read as data
        (`trainer_state.load`: a file holding a Python object is refused, never unpickled). The
        model already holds its weights (`_build_model`; a LoRA run's adapters too,
        `_prepare_optimization`), and trainer/ holds none."""
        try:
            trainer_state.load(resume_dir / "trainer", self.acc, self.prepared, self.opt, self.sched)
        except Exception as e:  # noqa: BLE001 - damage `checkpoint_problem` cannot see without reading it all
            first = trainer_state.first_line(e)
            why = first if isinstance(e, UserError) else f"its trainer state does not load ({type(e).__name__}: {first})"
            raise CheckpointError(f"cannot resume from {resume_dir}: {why}; --resume an earlier checkpoint, "
                                  "or move it away") from None
        state = json.loads((resume_dir / "trainer" / "state.json").read_text())
        self.step = state["step"]
        self._match_threads(state.get("threads"), resume_dir)
        self._set_aside_later(self.step, resume_dir)
        logger.info("resumed from %s at step %d", resume_dir, self.step)

    def _set_aside_later(self, step: int, resume_dir: Path) -> None:
        """A resume from step `step` (an explicit --resume of an older checkpoint) starts the run
        anew from there: checkpoints of this out_dir past that step (or at it, when the resume is
        from another directory, such as a superseded one) belong to the run it replaces,
        and a later `--resume auto` must never pick one up. Each is kept, renamed superseded-step-N,
        and the log says so."""
        later = [c for c in self.checkpoints()
                 if _step_of(c) > step or (_step_of(c) == step and c.resolve() != resume_dir.resolve())]
        self.acc.wait_for_everyone()  # every process has seen the same list before any is moved
        for old in later:
            aside = self._put_aside(old, "superseded")
            self._note(f"{old.name} is not part of the run resumed from {resume_dir.name}: it belongs to the run "
                       f"being redone, so it is kept as {aside.name}, where --resume auto will not pick it up")
        self.acc.wait_for_everyone()

    def _put_aside(self, ckpt: Path, label: str) -> Path:
        """Rename checkpoint `ckpt` to `label`-<its name> (the first free name; the main process
        renames) and return the new path. Callers wait for every process before and after."""
        aside = _unused(self.ckpt_root / f"{label}-{ckpt.name}")
        if self.acc.is_main_process:
            os.replace(ckpt, aside)
        return aside

    def _match_threads(self, threads: int | None, ckpt: Path) -> None:
        """Train on with the CPU thread count the checkpoint was written with.

        CPU kernels split work over more than ATen's grain size (32,768 elements: the gradient of a
        large weight, its norm) into one chunk per thread and sum the chunks, so another thread count
        changes the last bits of the gradients and their norm, and the resumed run no longer
        retraces the loss curve. A process's default count follows the CPU affinity it starts with
        (taskset, a container's or a scheduler's CPU set) or OMP_NUM_THREADS, which a resumed job
        need not share with the one it continues."""
        now = torch.get_num_threads()
        if threads and threads != now and self.acc.device.type == "cpu":
            torch.set_num_threads(threads)
            self._note(f"resuming with {threads} CPU threads, as {ckpt.name} was written (this process "
                       f"started with {now}): a reduction split another way would change the last bits "
                       "of the gradients, and the run would not retrace its loss curve")

    # ------------------------------------------------------------------------------------- loss
    def _noised(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> diffusion.NoisedBatch | None:
        """Noise the whole global batch of a step at once, so that the noise of every example is
        the same whatever the number of processes and micro-batches it is split into."""
        return self.objective.noise(batch, self.model_config.mask_token_id, gen)

    def _loss(self, batch: dict[str, torch.Tensor], noised: diffusion.NoisedBatch | None,
              rows: slice) -> diffusion.LossOutput:
        """The loss of rows `rows` of the global batch (this process's share of one micro-batch)."""
        return self.objective.loss(self.module, batch, noised, rows, self.acc.device)

    def _global_batch(self, step: int) -> dict[str, torch.Tensor]:
        """Step `step`'s global batch as it is trained on (pretraining crops 1% of them; the crop is
        one draw per step, the same on every process)."""
        batch = self.data.batch(self.plan.global_indices(step))
        return self.data.crop(batch, step_generator(self.cfg.seed, step, salt=1))

    def train_step(self) -> dict[str, float]:
        """One optimizer step over grad_accum micro-batches; returns host-side metrics."""
        cfg, B = self.cfg, self.cfg.batch_size
        batch = self._global_batch(self.step)
        noised = self._noised(batch, step_generator(cfg.seed, self.step))
        total = torch.zeros((), device=self.acc.device)
        for micro in range(cfg.grad_accum):
            first = (micro * self.world + self.rank) * B  # this process's rows of this micro-batch
            last = micro == cfg.grad_accum - 1
            with (nullcontext() if last else self.acc.no_sync(self.module)), self.acc.autocast():
                out = self._loss(batch, noised, slice(first, first + B))
                self.acc.backward(out.loss / cfg.grad_accum)
            total += out.loss.detach() / cfg.grad_accum
        grad_norm = self.acc.clip_grad_norm_(self.module.parameters(), cfg.max_grad_norm) \
            if cfg.max_grad_norm > 0 else _grad_norm(self.module)
        finite_loss, finite_grad = bool(torch.isfinite(total)), bool(torch.isfinite(grad_norm))
        # fp16's GradScaler (accelerate's, on the optimizer) skips a step whose scaled gradient overflowed
        # and lowers the scale: that is routine, not divergence, unless it goes on and on
        overflow = finite_loss and not finite_grad and getattr(self.opt, "scaler", None) is not None
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if overflow else 0
        if not (finite_loss and finite_grad) and not overflow or self.skipped_in_a_row > MAX_SKIPPED_STEPS:
            why = (f"the fp16 gradient overflowed {self.skipped_in_a_row} steps in a row" if overflow else
                   f"the loss or gradient is {float(total):.3g}/{float(grad_norm):.3g} (not finite)")
            raise TrainingDiverged(
                f"step {self.step}: {why}; the last checkpoint is intact. Lower --lr, raise --warmup_steps, "
                "set --max_grad_norm, or train in full precision (--mixed_precision no)")
        self.opt.step()  # (with a GradScaler and an overflow: skipped, the scale lowered)
        if not overflow:
            self.sched.step()  # the schedule follows the updates made
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        loss = self.acc.reduce(total, reduction="mean")
        return {"loss": float(loss), "grad_norm": float(grad_norm), "lr": self.sched.get_last_lr()[0],
                "tokens": batch["input_ids"].numel(), "skipped": int(overflow)}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-out loss on fixed batches with fixed noise, so evaluations are comparable."""
        cfg, B = self.cfg, self.cfg.batch_size
        n = len(self.data.eval)
        if n == 0:
            return float("nan")
        self.module.eval()
        losses = []
        for k in range(cfg.eval_batches):
            batch = self.data.batch([(k * B * self.world + j) % n for j in range(B * self.world)], "eval")
            noised = self._noised(batch, step_generator(cfg.seed, 10**6 + k, salt=2))
            with self.acc.autocast():
                out = self._loss(batch, noised, slice(self.rank * B, (self.rank + 1) * B))
            losses.append(self.acc.reduce(out.loss.detach().float(), reduction="mean"))
        self.module.train()
        return float(torch.stack(losses).mean())

    # -------------------------------------------------------------------------------- checkpoints
    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def _clean_temporaries(self) -> None:
        """Remove what a killed run left half written or half removed: .tmp-* in out_dir and in
        checkpoints/ (`_remove_dir`), and `_half_removed` checkpoints."""
        if self.acc.is_main_process:
            for tmp in [*self.out.glob(".tmp-*"), *self.ckpt_root.glob(".tmp-*")]:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
            self._half_removed()

    def _half_removed(self) -> None:
        """A step-N without trainer/state.json is what an earlier llada left when it was killed while
        pruning it (it removed files in place): nothing resumes from it. One older than the latest
        checkpoint is removed, as the pruning meant to; a later one is not pruning's, and is set
        aside as damaged-step-N. Each says so. (The main process calls this.)"""
        if not self.ckpt_root.exists():
            return
        whole = self.checkpoints()
        for ckpt in sorted(p for p in self.ckpt_root.glob("step-*") if p.is_dir() and p not in whole):
            if whole and ckpt.name < whole[-1].name:
                _remove_dir(ckpt)
                self._note(f"removed {ckpt}: a checkpoint half removed (it has no trainer/state.json) when a run "
                           "was killed while pruning it")
            else:
                aside = self._put_aside(ckpt, "damaged")
                self._note(f"{ckpt} has no trainer/state.json, so nothing resumes from it; it is kept as {aside.name}")

    def checkpoints(self) -> list[Path]:
        if not self.ckpt_root.exists():
            return []
        return sorted(p for p in self.ckpt_root.glob("step-*") if (p / "trainer" / "state.json").exists())

    def _find_resume(self) -> Path | None:
        cfg = self.cfg
        if cfg.resume is None:
            if self.checkpoints():
                raise UserError(f"{self.out} already holds checkpoints; use --resume auto to continue "
                                "or choose another --out_dir")
            return None
        if cfg.resume == "auto":
            return self._latest_whole_checkpoint()
        path = Path(cfg.resume)
        if not (path / "trainer" / "state.json").exists():
            raise UserError(f"--resume {path}: not a checkpoint (no trainer/state.json)")
        problem = checkpoint_problem(path)
        if problem is not None:
            raise CheckpointError(f"--resume {path}: the checkpoint is damaged ({problem})")
        return path

    def _latest_whole_checkpoint(self) -> Path | None:
        """The latest checkpoint that is whole. Later ones that are damaged (a file cut short by a
        full disk, a state.json that does not parse) are set aside as damaged-step-N, saying so, and
        the run falls back to the one before; with none whole, it stops rather than start afresh."""
        found = self.checkpoints()
        damaged = []
        for ckpt in reversed(found):
            problem = checkpoint_problem(ckpt)
            if problem is None:
                break
            damaged.append((ckpt, problem))
        else:
            if found:
                shown = "; ".join(f"{c.name}: {p}" for c, p in damaged)
                raise CheckpointError(f"no checkpoint in {self.ckpt_root} is whole ({shown}); move them away "
                                      "to start afresh, or --resume a copy you trust")
            return None
        self.acc.wait_for_everyone()  # every process chose the same one before any is moved
        for bad, problem in damaged:
            aside = self._put_aside(bad, "damaged")
            self._note(f"{bad} is damaged ({problem}); resuming from {ckpt.name}, the latest whole checkpoint "
                       f"(the damaged one is kept as {aside.name})")
        self.acc.wait_for_everyone()
        return ckpt

    def _check_compatible(self, ckpt: Path) -> None:
        saved = json.loads((ckpt / "trainer" / "state.json").read_text())["config"]
        keys = ("model", "revision", "stage", "objective", "seq_len", "seed", "data", "world", "lora_r", "vocab_size",
                "overrides")
        now = dataclasses.asdict(self.cfg)
        diff = {k: (saved.get(k), now[k]) for k in keys if saved.get(k, now[k]) != now[k]}
        if diff:
            shown = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"cannot resume from {ckpt}: it was made with different settings ({shown}). "
                                  "Use the same settings, another --out_dir, or --resume with a matching checkpoint; "
                                  "the checkpoint is left as it is")
        if self.global_batch != saved.get("_global_batch", self.global_batch):
            logger.warning("the global batch changed since %s; the data order will differ from the original run", ckpt)

    def save_checkpoint(self) -> Path:
        """Write checkpoints/step-N atomically (temp dir, fsync, rename) and prune old ones."""
        final = self.ckpt_root / f"step-{self.step:06d}"
        tmp = self.ckpt_root / f".tmp-step-{self.step:06d}"
        self.acc.wait_for_everyone()
        with self._writing(tmp, f"checkpoint {final}"):
            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.acc.wait_for_everyone()
            # optimizer, scheduler, RNG: no weights (the model directory beside trainer/ holds them)
            trainer_state.save(tmp / "trainer", self.acc, self.prepared, self.opt, self.sched)
            self._save_model_dir(tmp)
            self.acc.wait_for_everyone()  # every process has written its share (its RNG state) into tmp
            if self.acc.is_main_process:
                state = {"step": self.step, "config": dataclasses.asdict(self.cfg), "time": time.time(),
                         "threads": torch.get_num_threads()}  # see _match_threads
                state["config"]["_global_batch"] = self.global_batch
                (tmp / "trainer" / "state.json").write_text(json.dumps(state, indent=2))
                fsync_tree(tmp)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            _replace_dir(tmp, final)
            # prune only what is older: a checkpoint past this step is another run's future
            done = [c for c in self.checkpoints() if c.name <= final.name]
            for old in done[: -self.cfg.keep_last]:
                _remove_dir(old)
        self.acc.wait_for_everyone()
        return final

    @contextmanager
    def _writing(self, tmp: Path, what: str) -> Iterator[None]:
        """An OSError while writing `what` into `tmp` (a full disk) becomes one line, and the partial
        `tmp` is removed at once; what was written before (earlier checkpoints) is left whole."""
        try:
            yield
        except OSError as e:
            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            found = self.checkpoints()
            then = f"rerun to continue from {found[-1].name}" if found else "rerun"
            space = e.errno in (errno.ENOSPC, errno.EDQUOT)
            err = CheckpointWriteError(f"could not write {what}: {e.strerror or e}"
                                       f"{f' ({e.filename})' if e.filename else ''}; nothing written before was "
                                       f"touched: {'free some space and ' if space else ''}{then}")
            err.errno = e.errno
            raise err from None

    def _save_model_dir(self, path: Path) -> None:
        """The model directory of the weights being trained: a checkpoint's (beside trainer/, which
        holds no weights) or the final one. With LoRA it holds the merged weights, and adapter/ the
        adapters alone as peft writes them (what a resume reads back, `restore_adapters`); both come
        from one state dict, gathered from every process's shards under FSDP (written by rank 0).
        training_config.json and adapter/ go in first, so that the model card describes them."""
        from llada import checkpoint
        from llada.runtime import base_model

        # the module accelerate prepared (--compile wraps it later): its names are the model's own
        unwrapped = self.acc.unwrap_model(self.prepared)
        full = self.acc.get_state_dict(self.prepared)  # every process calls it: under FSDP it gathers the shards
        if not self.acc.is_main_process:
            return
        if self.cfg.lora_r:
            from llada.runtime import merge_lora_state

            merged = merge_lora_state(full, unwrapped)
        else:
            merged = full
        prefix = _common_prefix(merged, base_model(unwrapped))
        state = {k[len(prefix):]: v.detach().cpu() for k, v in merged.items()}
        state = family_for(self.model_config).to_checkpoint(state)  # in the keys of the model's family
        path.mkdir(parents=True, exist_ok=True)
        (path / TRAINING_CONFIG).write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2) + "\n")
        if self.cfg.lora_r:
            checkpoint.save_lora_adapter(unwrapped, path / checkpoint.ADAPTER_DIR, base=self.cfg.model, state=full)
        checkpoint.save_state_dict(path, state, self.model_config, self.tokenizer)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after `step`: a resumed run drops what it will redo, a run started
        afresh (step 0) all of them. A line a kill cut short is dropped too, and the file is replaced
        atomically, so that a kill during this loses nothing."""
        path = self.out / "metrics.jsonl"
        if not (self.acc.is_main_process and path.exists()):
            return
        kept = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # cut short by a kill
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
        tmp = path.with_name(".tmp-metrics.jsonl")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)

    # ---------------------------------------------------------------------------------------- run
    def fit(self) -> Path:
        """Train to max_steps; returns the final model directory."""
        cfg = self.cfg
        main = self.acc.is_main_process
        self.out.mkdir(parents=True, exist_ok=True)
        self._truncate_metrics(self.step)  # a resumed run drops what it will redo; a fresh one starts clean
        writer = self._tensorboard() if main else None
        metrics = open(self.out / "metrics.jsonl", "a") if main else None  # noqa: SIM115
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (main and cfg.progress),
                   desc=f"{cfg.stage} {cfg.objective}", unit="step", dynamic_ncols=True)
        window_tokens, window_start = 0, time.perf_counter()
        try:
            while self.step < cfg.max_steps:
                try:
                    m = self.train_step()
                except torch.OutOfMemoryError:
                    raise UserError(f"out of memory at step {self.step} (micro-batch {cfg.batch_size} x "
                                    f"{cfg.seq_len} tokens): lower --batch_size and raise --grad_accum, lower "
                                    "--seq_len, set --activation_checkpointing true or --mixed_precision bf16") from None
                window_tokens += m["tokens"]
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    m["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                    m["epoch"] = self.plan.epoch_of(self.step)
                    window_tokens, window_start = 0, time.perf_counter()
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{m['tokens_per_s']:,.0f}")
                    self._log(metrics, writer, {"step": self.step, **m})
                if cfg.eval_every and self.data.has_eval and (self.step % cfg.eval_every == 0
                                                              or self.step == cfg.max_steps):
                    ev = self.evaluate()
                    self._log(metrics, writer, {"step": self.step, "eval_loss": ev})
                    bar.write(f"step {self.step}: held-out loss {ev:.4f}")
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if metrics:
                metrics.close()
            if writer:
                writer.close()
        final = self.out / "model"
        tmp = self.out / ".tmp-model"
        with self._writing(tmp, f"the model to {final}"):
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            self._save_model_dir(tmp)
            if main:
                fsync_tree(tmp)
                _replace_dir(tmp, final)
        if main:
            self.data.report()
            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
        self.acc.wait_for_everyone()
        return final

    def _tensorboard(self) -> Any:
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
            return None
        # events a killed run logged past this step are hidden (a run started afresh: all of them)
        return SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1)

    def _log(self, metrics: Any, writer: Any, record: dict[str, Any]) -> None:
        if metrics is None:
            return
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        if writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, float | int):
                    writer.add_scalar(k, v, record["step"])
        if self.cfg.wandb:
            import wandb

            if wandb.run is None:
                wandb.init(project="llada", config=dataclasses.asdict(self.cfg))
            wandb.log(record, step=record["step"])


def restore_adapters(module: torch.nn.Module, ckpt: Path, base: str = "the base model") -> None:
    """Copy the LoRA adapters of checkpoint `ckpt` (its adapter/ directory) into `module`, the
    peft-wrapped model a resumed run built on the frozen base.

    The frozen weights are not copied: the model was built with them. LoRA leaves the embedding,
    the norms and the output head as they were, so the checkpoint's model directory (merged
    weights) holds them unchanged: the first and last of them are checked against it, so that a base
    model changed since the checkpoint was made is refused rather than silently combined with
    adapters trained on another.
    """
    from llada.checkpoint import ADAPTER_DIR, load_lora_adapter, read_tensors
    from llada.runtime import base_model

    model = base_model(module)
    key = family_for(model.config).checkpoint_key
    untouched = [(n, p) for n, p in model.named_parameters()
                 if not p.requires_grad and "lora_" not in n and ".base_layer." not in n]
    check = untouched[:1] + untouched[-1:]
    stored = read_tensors(ckpt, [key(n) for n, _ in check])
    for name, p in check:
        if not torch.equal(p.detach().cpu(), stored[key(name)]):
            raise CheckpointError(f"cannot resume from {ckpt}: {base} has changed since the checkpoint was made "
                                  f"({name} differs). Restore it, or start afresh in another --out_dir")
    load_lora_adapter(module, ckpt / ADAPTER_DIR)


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why checkpoint directory `ckpt` cannot be resumed from, or None when it looks whole.

    Cheap, reading headers rather than tensors: trainer/state.json parses and names a step, the
    model directory has its config and weights, every torch file is a whole zip archive (its
    directory is at the end, so a file cut short has none), every safetensors header covers its
    file, every JSON file parses, and the tokenizer loads and fits the config (a resume needs it)."""
    from safetensors import safe_open

    from llada.checkpoint import load_tokenizer, read_config

    try:
        state = json.loads((ckpt / "trainer" / "state.json").read_text())
        if not isinstance(state["step"], int) or not isinstance(state["config"], dict):
            raise ValueError("no step and config")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"trainer/state.json: {e}"
    if not (ckpt / "config.json").is_file() or not any(ckpt.glob("model*.safetensors")):
        return "no config.json or model*.safetensors"
    for f in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        name = f.relative_to(ckpt)
        try:
            if f.suffix in (".bin", ".pkl", ".pt"):
                with zipfile.ZipFile(f):
                    pass
            elif f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt"):
                    pass
            elif f.suffix == ".json":
                json.loads(f.read_text())
        except Exception as e:  # noqa: BLE001 - each reader has its own error types
            return f"{name} is damaged or cut short: {trainer_state.first_line(e)}"
    try:
        load_tokenizer(ckpt, read_config(ckpt))
    except Exception as e:  # noqa: BLE001 - transformers and tokenizers fail in many ways
        return f"the tokenizer does not load: {trainer_state.first_line(e)}"
    return None


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


@contextmanager
def _datasets_progress(shown: bool) -> Iterator[None]:
    """--progress false also silences the datasets library's bars (loading, tokenizing) while the
    data is prepared; its setting is restored after."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    if not shown:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was and not shown:
            datasets.enable_progress_bars()


def _step_of(ckpt: Path) -> int:
    """N of a checkpoint directory named step-N."""
    return int(ckpt.name.removeprefix("step-"))


def _unused(path: Path) -> Path:
    """`path`, or path.1, path.2, ... whichever does not exist yet."""
    n, out = 0, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}.{n}")
    return out


def _grad_norm(module: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


def _common_prefix(state: dict[str, torch.Tensor], model: torch.nn.Module) -> str:
    """The prefix wrappers (compile, peft, DDP) put before the LLaDAModel's own parameter names."""
    own = next(iter(model.state_dict()))
    for key in state:
        if key.endswith(own):
            return key[: len(key) - len(own)]
    return ""


def plot_curves(metrics_path: Path, png: Path) -> None:
    """Training and held-out loss against step, as a PNG (matplotlib, no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no %s", png)
        return
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
    if held:
        ax.plot(*zip(*held, strict=True), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (Eq. 3/5 bound, nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- commands


def run(cfg: TrainConfig) -> Path:
    """Train with `cfg` and return the final model directory."""
    return Trainer(cfg).fit()


def train(cfg: TrainConfig) -> None:
    """Pretrain with the masked diffusion objective (Eq. 3), or the AR baseline with --objective ar."""
    cfg = dataclasses.replace(cfg, stage="pretrain")
    print(f"model written to {run(cfg)}")


def sft(cfg: TrainConfig) -> None:
    """Supervised fine-tuning on chat data (Eq. 5): --model is a model directory (or a preset)."""
    cfg = dataclasses.replace(cfg, stage="sft")
    print(f"model written to {run(cfg)}")


train.config_class = TrainConfig  # type: ignore[attr-defined]
sft.config_class = TrainConfig  # type: ignore[attr-defined]
