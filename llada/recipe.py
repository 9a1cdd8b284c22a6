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
import shutil
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
    stage: Literal["sft", "pretrain"] = "sft"
    """sft: prompt -> answer conversations with the chat template (Eq. 5, or the AR loss on the
    answer); pretrain: each problem and its answer as one document of text ("37+45=82"), packed,
    with the loss over every token (Eq. 3, or the AR loss)."""
    padding: Literal["longest", "max_length"] = "longest"
    """How the SFT rows are padded (`--padding`): to the batch's longest row (each answer ends with
    one EOS), or every response with EOS up to seq_len, as LLaDA's SFT data is."""

    def describe(self, flags: str = "") -> str:
        """The training of a model on this task, for a report's Recipe line: the command (with
        `flags` appended, e.g. " --objective diffusion|ar"), the model and the budget."""
        sft = self.stage == "sft"
        return (f"`{'llada sft' if sft else 'llada train'} --data {self.source}{flags}`, model {self.preset} from "
                f"scratch, {self.steps} steps of batch {self.batch_size}, seq_len {self.seq_len}"
                f"{'' if sft else ' (documents packed)'}, lr {self.lr:g}, {self.warmup} warm-up steps"
                f"{', chat template' if sft else ''}")

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
    """The reasoning-task model `llada reproduce remasking` trains beside the world's (None: none)."""
    planning: tuple[TaskRecipe, ...] = ()
    """The tasks `llada reproduce planning` trains a diffusion model and an AR model on, each pair
    with the same budget."""
    any_order: TaskRecipe | None = None
    """The addition text `llada reproduce any-order` pretrains a diffusion and an AR model on, to
    fill a blanked operand or sum (None: none)."""
    semi_ar: TaskRecipe | None = None
    """The task `llada reproduce semi-ar` fine-tunes two diffusion models on: its responses padded
    with EOS to seq_len, and with one EOS each (None: none)."""

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


# Twelve people's biographies, each a document naming its person in every sentence; no stories or sums.
# (How this was chosen, and what larger worlds and other formats gave: BENCHMARKS.md.)
_SMALL_WORLD = WorldConfig(n_people=12, n_cities=8, n_countries=4, n_stories=0, n_sums=0, sft_sums=0)

# a reasoning task trained for seconds (the test suite's recipe): answers nothing, exercises every step
_TEST_TASK = TaskRecipe(items=200, preset="debug", steps=10, batch_size=8, warmup=2, eval_items=16)

# 9x9 sudoku for a GPU: an 81-digit answer; seq_len 256 leaves about 80 EOS after it when padded
_LARGE_SUDOKU = TaskRecipe(task="sudoku", sizes="size=9", items=50000, preset="small", steps=12000, batch_size=64,
                           seq_len=256, lr=5e-4, warmup=200)

RECIPES: dict[str, Recipe] = {
    # seconds: for the test suite (answers nothing, exercises every stage)
    "test": Recipe(world=WorldConfig(n_people=8, n_cities=4, n_countries=2, n_stories=0, n_sums=0, sft_sums=0),
                   preset="debug", pretrain_steps=30, sft_steps=20, batch_size=8, seq_len=64, sft_seq_len=64,
                   vocab_size=300, task=_TEST_TASK,
                   planning=(dataclasses.replace(_TEST_TASK, task="sudoku"),
                             dataclasses.replace(_TEST_TASK, task="countdown")),
                   semi_ar=dataclasses.replace(_TEST_TASK, task="sudoku"),
                   any_order=dataclasses.replace(_TEST_TASK, stage="pretrain")),
    # about four minutes of training on 2 CPU cores, with a margin under five; SFT at 2e-3 memorises
    # the taught answers better than 1e-3 in the same steps (BENCHMARKS.md)
    "quickstart": Recipe(world=_SMALL_WORLD, pretrain_steps=1400, sft_steps=500, sft_lr=2e-3),
    # `llada reproduce`'s default: the same world and pretraining, so that each claim fits 15 minutes on
    # 2 CPU cores (its reports under docs/ were made with SFT at 1e-3); 2-digit addition on the budget
    # at which the tiny preset reached 92.7% (diffusion) in BENCHMARKS.md, about 4-8 minutes on 2 cores
    # planning: 4x4 sudoku and countdown on the budget of the steps-to-learn table (each model a few
    # minutes on 2 cores); semi-ar: the same sudoku budget, once more with every response padded with EOS
    "reproduce": Recipe(world=_SMALL_WORLD, task=TaskRecipe(),
                        planning=(TaskRecipe(task="sudoku"), TaskRecipe(task="countdown")),
                        semi_ar=TaskRecipe(task="sudoku"),
                        # any-order: 2-digit sums as text, packed into rows of 64 tokens; at 2,000 steps the
                        # diffusion model had not learned the sums themselves (the control: 12/300 against
                        # AR's 265/300), so 6,000
                        any_order=TaskRecipe(stage="pretrain", steps=6000)),
    # `llada reproduce --size large`: a world of 200 people and a 17M-parameter model, for a GPU
    "large": Recipe(world=dataclasses.replace(_SMALL_WORLD, n_people=200, n_cities=20), preset="small",
                    pretrain_steps=6000, sft_steps=2000, batch_size=64, pretrain_lr=1e-3, sft_lr=5e-4,
                    # 3-digit addition (10^6 pairs, 50,000 taught): sized from the 2-digit runs, not yet run
                    task=TaskRecipe(sizes="max_digits=3", items=50000, preset="small", steps=12000, batch_size=64,
                                    lr=5e-4, warmup=200),
                    # sized from the tiny runs (BENCHMARKS.md), not yet run
                    planning=(_LARGE_SUDOKU, TaskRecipe(task="countdown", items=50000, preset="small", steps=12000,
                                                        batch_size=64, lr=5e-4, warmup=200)),
                    semi_ar=_LARGE_SUDOKU,
                    any_order=TaskRecipe(sizes="max_digits=3", items=50000, stage="pretrain", preset="small",
                                         steps=12000, batch_size=64, lr=5e-4, warmup=200)),
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
                 progress: bool = True, keep_evaluated: bool = False) -> tuple[Path, Path]:
    """Pretrain and fine-tune one model with `recipe`; returns (pretrained, fine-tuned) model dirs.

    out_dir/pretrain and out_dir/sft hold the two runs. A stage whose model directory was already
    trained with the same settings is reused, not retrained (so several claims can share models);
    `pretrained` skips pretraining and fine-tunes that model directory instead. `sft` overrides
    fields of the SFT stage's TrainConfig (for example padding="max_length"). `keep_evaluated` keeps
    a pretraining checkpoint (out_dir/pretrain/checkpoints/step-N) at every held-out evaluation, so
    that a model can be measured at its best held-out step (`llada reproduce bound`).
    """
    from llada.training import trainer  # accelerate and datasets (the train extra): only when training

    out = Path(out_dir)
    common = dict(batch_size=recipe.batch_size, seed=seed, objective=objective, world=recipe.world,
                  save_every=0, keep_last=1, log_every=10,
                  progress=progress, tensorboard=False)
    evals = max(1, recipe.pretrain_steps // 10)
    kept = {"save_every": evals, "keep_last": recipe.pretrain_steps // evals + 1} if keep_evaluated else {}
    pt_cfg = TrainConfig(model=recipe.preset, out_dir=str(out / "pretrain"), stage="pretrain", seq_len=recipe.seq_len,
                         max_steps=recipe.pretrain_steps, lr=recipe.pretrain_lr, warmup_steps=recipe.pretrain_warmup,
                         vocab_size=recipe.vocab_size, **{**common, "eval_every": evals, **kept})
    if pretrained is None:
        pretrained = _trained(pt_cfg, trainer)
    common["eval_every"] = max(1, recipe.sft_steps // 5)
    sft_cfg = TrainConfig(model=str(pretrained), out_dir=str(out / "sft"), stage="sft", seq_len=recipe.sft_seq_len,
                          max_steps=recipe.sft_steps, lr=recipe.sft_lr, warmup_steps=recipe.sft_warmup,
                          **{**common, **(sft or {})})
    return pretrained, _trained(sft_cfg, trainer)


def _trained(cfg: TrainConfig, trainer: Any) -> Path:
    """OUT/model of `cfg` (its out_dir): reused when finished with exactly `cfg`, else trained. A
    finished run with other settings leaves checkpoints that a new run must not resume from: they
    are removed first (an unfinished run's are resumed, or refused when their settings differ)."""
    model = Path(cfg.out_dir) / "model"
    if _done(model, cfg):
        return model
    if (model / TRAINING_CONFIG_NAME).is_file():
        shutil.rmtree(Path(cfg.out_dir) / "checkpoints", ignore_errors=True)
    return trainer.run(cfg)


def train_task_recipe(recipe: TaskRecipe, out_dir: str | Path, *, objective: Literal["diffusion", "ar"] = "diffusion",
                      seed: int = 0, progress: bool = True) -> Path:
    """Train a fresh `recipe.preset` model (its tokenizer trained on the task's text) on the task's
    training split (`recipe.stage`: SFT with the chat template, or pretraining on its text), with
    the diffusion or the AR loss; returns out_dir/model, reused when already trained with the same
    settings."""
    from llada.training import trainer  # accelerate and datasets (the train extra): only when training

    cfg = TrainConfig(model=recipe.preset, data=recipe.source, stage=recipe.stage, objective=objective, out_dir=str(out_dir),
                      max_steps=recipe.steps, batch_size=recipe.batch_size, seq_len=recipe.seq_len, lr=recipe.lr,
                      warmup_steps=recipe.warmup, padding=recipe.padding, eval_every=0, save_every=0, keep_last=1,
                      log_every=50, seed=seed, progress=progress, tensorboard=False)
    return _trained(cfg, trainer)
