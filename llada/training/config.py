"""What a training run is given: `TrainConfig`, every option of `llada train` and `llada sft` (their
flags and --help come from its fields and the docstrings under them), validated once.

The config is saved with every checkpoint (trainer/state.json) and beside the trained weights
(training_config.json, `llada.checkpoint.layout.TRAINING_CONFIG_NAME`), where `trained_world` reads back
which built-in world a model directory was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llada.checkpoint.layout import TRAINING_CONFIG_NAME
from llada.config import PRESETS
from llada.data.world import WorldConfig
from llada.errors import UserError
from llada.training.schedules import block_size_schedule


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
    objective: Literal["diffusion", "ar", "block_diffusion"] = "diffusion"
    """diffusion: the masked diffusion loss; ar: the autoregressive baseline (same model with a causal mask);
    block_diffusion: masked diffusion within blocks of --block_size, each block conditioned on the clean
    ones before it (BD3-LM, LLaDA 2.x); its model samples block-causally (generation_config.json)."""
    block_size: int = 32
    """block_diffusion: tokens per block (LLaDA 2.x: 32); --seq_len must be a multiple of it. SFT pads each
    batch with EOS to whole blocks."""
    block_size_schedule: str | None = None
    """block_diffusion: the block size by optimizer step, as (from step):(block size) pairs, steps ascending
    from 0 and below --max_steps, each size dividing --seq_len: "0:1,200:4,400:32,600:128,1200:32" (the size of
    step s is the last pair's at or before s; --block_size is then unused); or "wsd", LLaDA 2.0's warmup,
    stable and decay phases from --max_steps: the first 10% of steps through blocks of 1, 4, 32, 64 (those below
    and dividing --seq_len), then --seq_len (plain masked diffusion) until the last 10%, then --block_size
    (llada.training.schedules.wsd_schedule). The saved model samples with the last size; SFT pads batches to
    whole blocks of every size (their least common multiple). None: --block_size throughout."""
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
    """t = (t_max - eps) u + eps: the smallest masking probability."""
    t_max: float = 1.0
    """The largest masking probability (dFactory's LLaDA 2.x recipe: --eps 0.3 --t_max 0.8). Below 1 the
    loss is no longer a bound on the NLL: the noisiest inputs are never trained."""
    complementary_masking: bool = False
    """Diffusion objectives: also train each sequence with the complement of its mask (its other maskable
    tokens, at probability 1 - t), so each is masked once per pair; the model sees twice the batch."""
    document_mask: bool = False
    """Pretraining: a token attends only within its own document of the packed row (a new one after each
    EOS), with positions restarting at each document, for every objective."""
    attention_anneal_steps: int = 0
    """diffusion, for a model converted from an AR one (`llada convert`, bidirectional): relax its causal mask
    over the first N steps; at step s < N each key after a query is visible with probability s/N (one pattern
    per step, drawn from the step's seed, shared by the batch's rows), bidirectional from step N (DiffuLLaMA,
    Gong et al. 2025). 0: bidirectional from the start."""
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
    chat_template: bool = True
    """SFT: render conversations with the tokenizer's chat template (LLaDA's SFT); false: BOS, the
    user's text, then the assistant's text and EOS as the response, for single-turn data (a leaner
    format of ours for short tasks; answer with `chat=False` / `--chat false`)."""
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
        if not 0 <= self.eps < self.t_max <= 1:
            raise UserError(f"--eps and --t_max must satisfy 0 <= eps < t_max <= 1, got {self.eps} and {self.t_max}")
        self._check_objective_options()
        if self.warmup_steps < 0 or self.eval_every < 0 or self.save_every < 0:
            raise UserError("--warmup_steps, --eval_every and --save_every must be >= 0")
        refuse_ambiguous_model(self.model)
        if self.model not in PRESETS and not Path(self.model).expanduser().is_dir() and "/" not in self.model:
            raise UserError(f"--model {self.model!r} is neither a preset ({', '.join(PRESETS)}) nor a directory")
        if self.revision is not None and (self.from_scratch or Path(self.model).expanduser().is_dir()):
            raise UserError(f"--revision applies to a Hugging Face Hub id; --model {self.model!r} is a "
                            f"{'preset' if self.from_scratch else 'local directory'}")

    def _check_objective_options(self) -> None:
        """One-line UserErrors for the options of one objective or stage given to another."""
        if self.block_size <= 0:
            raise UserError(f"--block_size must be positive, got {self.block_size}")
        if self.objective == "block_diffusion" and self.seq_len % self.block_size and self.block_size_schedule is None:
            raise UserError(f"--seq_len {self.seq_len} must be a multiple of --block_size {self.block_size} "
                            "for --objective block_diffusion")
        if self.complementary_masking and self.objective == "ar":
            raise UserError("--complementary_masking applies to the diffusion objectives, not --objective ar")
        if self.document_mask and self.stage != "pretrain":
            raise UserError("--document_mask applies to pretraining's packed rows; an SFT row holds one conversation")
        self._check_schedules()

    def _check_schedules(self) -> None:
        """One-line UserErrors for a block-size schedule or an attention annealing that does not apply
        or does not parse (`llada.training.schedules`)."""
        if self.block_size_schedule is not None:
            if self.objective != "block_diffusion":
                raise UserError(f"--block_size_schedule applies to --objective block_diffusion, not --objective "
                                f"{self.objective}")
            block_size_schedule(self.block_size_schedule, self.block_size, self.seq_len, self.max_steps)
        if self.attention_anneal_steps < 0:
            raise UserError(f"--attention_anneal_steps must be >= 0, got {self.attention_anneal_steps}")
        if self.attention_anneal_steps and self.objective != "diffusion":
            raise UserError(f"--attention_anneal_steps applies to --objective diffusion (Eq. 3 / Eq. 5), not "
                            f"--objective {self.objective}")

    @property
    def from_scratch(self) -> bool:
        return self.model in PRESETS


def trained_world(model_dir: str | Path) -> tuple[int, WorldConfig] | None:
    """(seed, world) of the built-in world a model directory was trained on, or None when it was
    trained on other data or elsewhere (no training_config.json)."""
    path = Path(model_dir) / TRAINING_CONFIG_NAME
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
