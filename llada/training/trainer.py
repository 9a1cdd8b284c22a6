"""The Trainer: the training loop, from a laptop to a GPU cluster, on accelerate.

    llada train --model tiny --out_dir runs/pt                     # from scratch on the built-in world
    llada sft   --model runs/pt/model --out_dir runs/sft           # fine-tune on the built-in SFT set
    llada train --config configs/train/100m.yaml --data corpus.jsonl
    accelerate launch --config_file configs/accelerate/ddp.yaml -m llada train --config ...
    # several nodes: the same command on every node with --num_machines N --machine_rank i
    #   --main_process_ip HOST --main_process_port PORT (or those keys in the accelerate YAML)

The loop reads as a list of calls into the rooms beside it: the objective (objectives/: data rows,
noise, loss) looked up once from (stage, objective), the model built once (build.py), the
optimizer (optimizer.py), the checkpoints (checkpoints.py) and the metrics (metrics.py). The
Trainer itself owns the seeding of each step, the batch plan, accumulation and the processes, and
has no branch on the stage or the objective.

Reproducibility is by construction (data.py): the data order and each step's noise are pure
functions of (seed, step), so the state to resume is the weights, the optimizer, the scheduler,
the RNG states (dropout draws from the process's generator) and the step; a run killed at any
moment and resumed from its last checkpoint retraces the same loss curve.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import accelerate
import torch
from tqdm.auto import tqdm

from llada import diffusion
from llada.errors import UserError
from llada.runtime import compile_model
from llada.training.build import build_model, prepare_module
from llada.training.checkpoints import Checkpoints, Trained, UnusableCheckpoint
from llada.training.config import TrainConfig
from llada.training.data import Batch, BatchPlan, datasets_progress, step_generator
from llada.training.metrics import Metrics
from llada.training.objectives import objective_for
from llada.training.optimizer import build_optimizer, grad_norm

logger = logging.getLogger(__name__)

# fp16: consecutive steps the GradScaler may skip (each halves the scale) before it is divergence.
MAX_SKIPPED_STEPS = 25


class TrainingDiverged(UserError):
    """The loss or gradient became NaN or infinite."""


class Trainer:
    """Runs a TrainConfig: builds model, tokenizer and data, trains, evaluates, checkpoints.

    `objective` (llada.training.objectives) supplies the stage's data (`data`), the noise and the
    loss; `checkpoints` (llada.training.checkpoints) finds the checkpoint to resume, writes new ones
    and restores their state.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.acc = accelerate.Accelerator(mixed_precision=_mixed_precision(cfg), cpu=not torch.cuda.is_available())
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.global_batch = cfg.batch_size * cfg.grad_accum * self.world
        self.step = 0
        self.skipped_in_a_row = 0  # fp16 steps skipped by the GradScaler since the last update
        self.checkpoints = Checkpoints(cfg, self.acc, self.global_batch)  # cleans up what a killed run left
        self._build_resuming()

    def _build_resuming(self) -> None:
        """`_build` from the checkpoint `Checkpoints.resume_dir` picks. One whose trainer state turns
        out not to load (what its cheap check cannot see) is set aside under --resume auto, and the
        run is built again from the checkpoint before it (`Checkpoints.fall_back`)."""
        while True:
            try:
                return self._build(self.checkpoints.resume_dir())
            except UnusableCheckpoint as e:
                if not self.checkpoints.fall_back(e):
                    raise
                for built in ("trained", "module", "prepared", "opt", "sched", "base"):
                    vars(self).pop(built, None)
                self.acc.free_memory()  # accelerate lets go of what it prepared too

    def _build(self, resume_dir: Path | None) -> None:
        cfg = self.cfg
        self.objective = objective_for(cfg)
        self.data = self.objective.data
        with datasets_progress(cfg.progress):
            self.data.load()
        if resume_dir is not None:
            self.checkpoints.check_compatible(resume_dir)
        model, self.tokenizer = build_model(self.objective, resume_dir, self.checkpoints)
        self.objective.check_model(model.config)
        self.model_config = model.config
        if cfg.seq_len > self.model_config.max_sequence_length:
            logger.warning("seq_len %d exceeds the model's max_sequence_length %d", cfg.seq_len,
                           self.model_config.max_sequence_length)
        self.base = model.train()
        with datasets_progress(cfg.progress):
            self.data.prepare(self.tokenizer, self.acc.main_process_first)
        self.plan = BatchPlan(len(self.data.train), self.global_batch, cfg.seed)
        module = prepare_module(self.base, cfg, resume_dir)
        opt, self.sched = build_optimizer(module, cfg)
        self.prepared, self.opt = self.acc.prepare(module, opt)  # the module accelerate wrapped
        # compiled last: it traces the module as accelerate wrapped it (DDP, FSDP, autocast)
        self.module = compile_model(self.prepared) if cfg.compile else self.prepared
        self.trained = Trained(self.prepared, self.opt, self.sched, self.model_config, self.tokenizer,
                               self.objective.sampler_options())
        if resume_dir is not None:
            self.step = self.checkpoints.load(resume_dir, self.trained)

    # ---------------------------------------------------------------------------------------- run
    def fit(self) -> Path:
        """Train to max_steps; returns the final model directory."""
        cfg, main = self.cfg, self.acc.is_main_process
        metrics = Metrics(self.out, cfg, self.step, main)
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (main and cfg.progress),
                   desc=f"{cfg.stage} {cfg.objective}", unit="step", dynamic_ncols=True)
        try:
            while self.step < cfg.max_steps:
                m = self._train_step_within_memory()
                metrics.count(m["tokens"])
                bar.update(1)
                if self._due(cfg.log_every):
                    m.update(tokens_per_s=metrics.throughput(), epoch=self.plan.epoch_of(self.step))
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{m['tokens_per_s']:,.0f}")
                    metrics.log({"step": self.step, **m})
                if cfg.eval_every and self.data.has_eval and self._due(cfg.eval_every):
                    held_out = self.evaluate()
                    metrics.log({"step": self.step, "eval_loss": held_out})
                    bar.write(f"step {self.step}: held-out loss {held_out:.4f}")
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            metrics.close()
        final = self.checkpoints.save_model(self.trained)
        if main:
            self.data.report()
            metrics.plot()
        self.acc.wait_for_everyone()
        return final

    def save_checkpoint(self) -> Path:
        """checkpoints/step-N of the current step (`Checkpoints.save`)."""
        return self.checkpoints.save(self.step, self.trained)

    def _due(self, every: int) -> bool:
        """Whether an event of period `every` falls on the step just made (the last step has every one)."""
        return self.step % every == 0 or self.step == self.cfg.max_steps

    def _train_step_within_memory(self) -> dict[str, float]:
        """`train_step`, an out-of-memory error said as the flags that would avoid it."""
        try:
            return self.train_step()
        except torch.OutOfMemoryError:
            cfg = self.cfg
            raise UserError(f"out of memory at step {self.step} (micro-batch {cfg.batch_size} x {cfg.seq_len} "
                            "tokens): lower --batch_size and raise --grad_accum, lower --seq_len, set "
                            "--activation_checkpointing true or --mixed_precision bf16") from None

    # ------------------------------------------------------------------------------------- a step
    def train_step(self) -> dict[str, float]:
        """One optimizer step over grad_accum micro-batches; returns host-side metrics."""
        cfg, B = self.cfg, self.cfg.batch_size
        batch = self._global_batch(self.step)
        scheduled = self.objective.at_step(self.step)  # the objective of this step (a block-size schedule...)
        noised = self._noised(batch, step_generator(cfg.seed, self.step))
        total = torch.zeros((), device=self.acc.device)
        for micro in range(cfg.grad_accum):
            first = (micro * self.world + self.rank) * B  # this process's rows of this micro-batch
            last = micro == cfg.grad_accum - 1
            with (nullcontext() if last else self.acc.no_sync(self.module)), self.acc.autocast():
                out = self._loss(batch, noised, slice(first, first + B))
                self.acc.backward(out.loss / cfg.grad_accum)
            total += out.loss.detach() / cfg.grad_accum
        norm = self.acc.clip_grad_norm_(self.module.parameters(), cfg.max_grad_norm) \
            if cfg.max_grad_norm > 0 else grad_norm(self.module)
        overflow = self._skipped_by_the_scaler(total, norm)
        self.opt.step()  # (with a GradScaler and an overflow: skipped, the scale lowered)
        if not overflow:
            self.sched.step()  # the schedule follows the updates made
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        loss = self.acc.reduce(total, reduction="mean")
        return {"loss": float(loss), "grad_norm": float(norm), "lr": self.sched.get_last_lr()[0],
                "tokens": batch["input_ids"].numel(), "skipped": int(overflow), **scheduled}

    def _skipped_by_the_scaler(self, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        """Whether fp16's GradScaler (accelerate's, on the optimizer) will skip this step: a finite
        loss with a gradient that overflowed. That is routine, not divergence, unless it goes on past
        MAX_SKIPPED_STEPS; a loss or gradient that is not finite otherwise raises TrainingDiverged."""
        finite_loss, finite_grad = bool(torch.isfinite(loss)), bool(torch.isfinite(norm))
        overflow = finite_loss and not finite_grad and getattr(self.opt, "scaler", None) is not None
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if overflow else 0
        if not (finite_loss and finite_grad) and not overflow or self.skipped_in_a_row > MAX_SKIPPED_STEPS:
            why = (f"the fp16 gradient overflowed {self.skipped_in_a_row} steps in a row" if overflow else
                   f"the loss or gradient is {float(loss):.3g}/{float(norm):.3g} (not finite)")
            raise TrainingDiverged(
                f"step {self.step}: {why}; the last checkpoint is intact. Lower --lr, raise --warmup_steps, "
                "set --max_grad_norm, or train in full precision (--mixed_precision no)")
        return overflow

    def _global_batch(self, step: int) -> Batch:
        """Step `step`'s global batch as it is trained on (pretraining crops 1% of them; the crop is
        one draw per step, the same on every process)."""
        batch = self.data.batch(self.plan.global_indices(step))
        return self.data.crop(batch, step_generator(self.cfg.seed, step, salt=1))

    def _noised(self, batch: Batch, gen: torch.Generator) -> diffusion.NoisedBatch | None:
        """Noise the whole global batch of a step at once, so that the noise of every example is
        the same whatever the number of processes and micro-batches it is split into."""
        return self.objective.noise(batch, self.model_config.mask_token_id, gen)

    def _loss(self, batch: Batch, noised: diffusion.NoisedBatch | None, rows: slice) -> diffusion.LossOutput:
        """The loss of rows `rows` of the global batch (this process's share of one micro-batch)."""
        return self.objective.loss(self.module, batch, noised, rows, self.acc.device)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-out loss on fixed batches with fixed noise, so evaluations are comparable: with the
        objective of the end of the run (a schedule's last block size, the attention fully annealed)."""
        cfg, B = self.cfg, self.cfg.batch_size
        n = len(self.data.eval)
        if n == 0:
            return float("nan")
        self.objective.at_step(cfg.max_steps)  # the next train_step sets its own step again
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


def _mixed_precision(cfg: TrainConfig) -> str:
    """accelerate's mixed precision for cfg.mixed_precision: auto is bf16 on a GPU that supports it."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def run(cfg: TrainConfig) -> Path:
    """Train with `cfg` and return the final model directory."""
    return Trainer(cfg).fit()
