"""Training recipes on the built-in world: a world, a model size and a budget, chosen together.

A recipe is what `llada quickstart` and `llada reproduce` train: pretraining (Eq. 3, or the AR
baseline's loss) on the world's text, then SFT (Eq. 5) on its questions. How the named recipes
were found, and what each scores, is in BENCHMARKS.md ("The quickstart recipe"). A recipe of
`llada reproduce` also carries a `TaskRecipe`: SFT from scratch on a built-in reasoning task
(`--data task:NAME`), for the claims where the order of decoding matters; its budget comes from
BENCHMARKS.md ("Steps to learn a reasoning task").

    from llada.recipe import RECIPES, train_recipe
    pretrained, finetuned = train_recipe(RECIPES["quickstart"], "runs/qs", objective="diffusion")
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llada.checkpoint.layout import TRAINING_CONFIG_NAME
from llada.data.world import WorldConfig
from llada.sampling.options import SamplerOptions
from llada.training.config import TrainConfig


@dataclass(frozen=True)
class TaskRecipe:
    """SFT from scratch (no pretraining) on a built-in reasoning task, and how many of its held-out
    problems a claim measures; step counts are optimizer steps."""

    task: str = "addition"
    sizes: str = ""
    """The task's size knobs as knob=value,knob=value (`max_digits=3`); empty: its defaults."""
    items: int = 5000
    """Training problems (the source's n=)."""
    preset: str = "tiny"
    steps: int = 4000
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 1e-3
    warmup: int = 50
    eval_items: int = 300
    """Held-out problems (`task.items("test", eval_items, seed)`) a claim measures."""

    @property
    def source(self) -> str:
        """The data source `llada sft --data` reads: task:NAME:knob=value,...,n=ITEMS."""
        return f"task:{self.task}:" + ",".join(filter(None, (self.sizes, f"n={self.items}")))


@dataclass(frozen=True)
class Recipe:
    """A world and a training budget for it; every step count is in optimizer steps."""

    world: WorldConfig = field(default_factory=WorldConfig)
    preset: str = "tiny"
    pretrain_steps: int = 1500
    sft_steps: int = 600
    batch_size: int = 16
    seq_len: int = 128
    """Pretraining sequence length (documents are packed)."""
    sft_seq_len: int = 96
    vocab_size: int = 1024
    pretrain_lr: float = 3e-3
    sft_lr: float = 1e-3
    pretrain_warmup: int = 50
    sft_warmup: int = 20
    task: TaskRecipe | None = None
    """The reasoning-task model `llada reproduce` trains beside the world's (None: none)."""

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


# Twelve people's biographies, each a document naming its person in every sentence; no stories or sums.
# (How this was chosen, and what larger worlds and other formats gave: BENCHMARKS.md.)
_SMALL_WORLD = WorldConfig(n_people=12, n_cities=8, n_countries=4, n_stories=0, n_sums=0, sft_sums=0)

RECIPES: dict[str, Recipe] = {
    # seconds: for the test suite (answers nothing, exercises every stage)
    "test": Recipe(world=WorldConfig(n_people=8, n_cities=4, n_countries=2, n_stories=0, n_sums=0, sft_sums=0),
                   preset="debug", pretrain_steps=30, sft_steps=20, batch_size=8, seq_len=64, sft_seq_len=64,
                   vocab_size=300, task=TaskRecipe(items=200, preset="debug", steps=10, batch_size=8, warmup=2,
                                                   eval_items=16)),
    # about four minutes of training on 2 CPU cores, with a margin under five; SFT at 2e-3 memorises
    # the taught answers better than 1e-3 in the same steps (BENCHMARKS.md)
    "quickstart": Recipe(world=_SMALL_WORLD, pretrain_steps=1400, sft_steps=500, sft_lr=2e-3),
    # `llada reproduce`'s default: the same world and pretraining, so that each claim fits 15 minutes on
    # 2 CPU cores (its reports under docs/ were made with SFT at 1e-3); 2-digit addition on the budget
    # at which the tiny preset reached 92.7% (diffusion) in BENCHMARKS.md, about 4-8 minutes on 2 cores
    "reproduce": Recipe(world=_SMALL_WORLD, task=TaskRecipe()),
    # `llada reproduce --size large`: a world of 200 people and a 17M-parameter model, for a GPU
    "large": Recipe(world=dataclasses.replace(_SMALL_WORLD, n_people=200, n_cities=20), preset="small",
                    pretrain_steps=6000, sft_steps=2000, batch_size=64, pretrain_lr=1e-3, sft_lr=5e-4,
                    # 3-digit addition (10^6 pairs, 50,000 taught): sized from the 2-digit runs, not yet run
                    task=TaskRecipe(sizes="max_digits=3", items=50000, preset="small", steps=12000, batch_size=64,
                                    lr=5e-4, warmup=200)),
}

# The sampler settings the world's questions are answered with: the reverse process with the
# paper's low-confidence remasking, one token per step, in two semi-autoregressive blocks.
SAMPLER = SamplerOptions(gen_length=32, block_length=16)


def _done(model_dir: Path, cfg: TrainConfig) -> bool:
    """Whether model_dir is the finished result of training with exactly `cfg`."""
    saved = model_dir / TRAINING_CONFIG_NAME
    return saved.is_file() and json.loads(saved.read_text()) == json.loads(json.dumps(dataclasses.asdict(cfg)))


def train_recipe(recipe: Recipe, out_dir: str | Path, *, objective: Literal["diffusion", "ar"] = "diffusion",
                 seed: int = 0, sft: dict[str, Any] | None = None, pretrained: Path | None = None,
                 progress: bool = True) -> tuple[Path, Path]:
    """Pretrain and fine-tune one model with `recipe`; returns (pretrained, fine-tuned) model dirs.

    out_dir/pretrain and out_dir/sft hold the two runs. A stage whose model directory was already
    trained with the same settings is reused, not retrained (so several claims can share models);
    `pretrained` skips pretraining and fine-tunes that model directory instead. `sft` overrides
    fields of the SFT stage's TrainConfig (for example padding="max_length").
    """
    from llada.training import trainer  # accelerate and datasets (the train extra): only when training

    out = Path(out_dir)
    common = dict(batch_size=recipe.batch_size, seed=seed, objective=objective, world=recipe.world,
                  eval_every=max(1, recipe.pretrain_steps // 10), save_every=0, keep_last=1, log_every=10,
                  progress=progress, tensorboard=False)
    pt_cfg = TrainConfig(model=recipe.preset, out_dir=str(out / "pretrain"), stage="pretrain", seq_len=recipe.seq_len,
                         max_steps=recipe.pretrain_steps, lr=recipe.pretrain_lr, warmup_steps=recipe.pretrain_warmup,
                         vocab_size=recipe.vocab_size, **common)
    if pretrained is None:
        pretrained = out / "pretrain" / "model"
        if not _done(pretrained, pt_cfg):
            pretrained = trainer.run(pt_cfg)
    common["eval_every"] = max(1, recipe.sft_steps // 5)
    sft_cfg = TrainConfig(model=str(pretrained), out_dir=str(out / "sft"), stage="sft", seq_len=recipe.sft_seq_len,
                          max_steps=recipe.sft_steps, lr=recipe.sft_lr, warmup_steps=recipe.sft_warmup,
                          **{**common, **(sft or {})})
    finetuned = out / "sft" / "model"
    if not _done(finetuned, sft_cfg):
        finetuned = trainer.run(sft_cfg)
    return pretrained, finetuned


def train_task_recipe(recipe: TaskRecipe, out_dir: str | Path, *, objective: Literal["diffusion", "ar"] = "diffusion",
                      seed: int = 0, progress: bool = True) -> Path:
    """Fine-tune a fresh `recipe.preset` model (its tokenizer trained on the task's text) on the
    task's training split with the chat template, Eq. 5 or the AR loss; returns out_dir/model,
    reused when already trained with the same settings."""
    from llada.training import trainer  # accelerate and datasets (the train extra): only when training

    cfg = TrainConfig(model=recipe.preset, data=recipe.source, stage="sft", objective=objective, out_dir=str(out_dir),
                      max_steps=recipe.steps, batch_size=recipe.batch_size, seq_len=recipe.seq_len, lr=recipe.lr,
                      warmup_steps=recipe.warmup, eval_every=0, save_every=0, keep_last=1, log_every=50, seed=seed,
                      progress=progress, tensorboard=False)
    model = Path(out_dir) / "model"
    return model if _done(model, cfg) else trainer.run(cfg)
