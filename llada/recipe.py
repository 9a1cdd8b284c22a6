"""Training recipes on the built-in world: a world, a model size and a budget, chosen together.

A recipe is what `llada quickstart` and `llada reproduce` train: pretraining (Eq. 3, or the AR
baseline's loss) on the world's text, then SFT (Eq. 5) on its questions. How the named recipes
were found, and what each scores, is in BENCHMARKS.md ("The quickstart recipe"). A recipe of
`llada reproduce` also carries a `TaskRecipe`: SFT from scratch on a built-in reasoning task
(`--data task:NAME`), for the claims where the order of decoding matters; its budget comes from
BENCHMARKS.md ("Steps to learn a reasoning task"). A `ConversionRecipe` trains an AR model on such a
task, converts it into a block-diffusion model (`llada.conversion`) and trains that on, within one
total budget (`llada reproduce conversion`).

    from llada.recipe import RECIPES, train_recipe
    pretrained, finetuned = train_recipe(RECIPES["quickstart"], "runs/qs", objective="diffusion")
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
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
class ConversionRecipe:
    """An AR model trained from scratch on a task for `ar_steps`, converted into a block-diffusion
    model (bidirectional, shifted prediction, blocks of `block_size`) and trained on with the block
    diffusion loss for the rest of the total budget `task.steps`; batch, lr, warm-up and seq_len
    are the task's in both stages."""

    task: TaskRecipe
    """The task (an SFT task: conversations) and the total budget in optimizer steps (`task.steps`)."""
    ar_steps: int
    """Of the total, the steps the AR model trains before it is converted."""
    block_size: int
    """The converted model's block (tokens): it trains and samples block-causally with blocks this long."""

    def __post_init__(self) -> None:
        if self.task.stage != "sft":
            raise ValueError("a ConversionRecipe trains on conversations: its task's stage must be sft")
        if not 0 < self.ar_steps < self.task.steps:
            raise ValueError(f"ar_steps must be in 1..{self.task.steps - 1} (task.steps is the total), "
                             f"got {self.ar_steps}")
        if self.block_size < 1 or self.task.seq_len % self.block_size:
            raise ValueError(f"block_size must divide the task's seq_len {self.task.seq_len}, got {self.block_size}")

    @property
    def source(self) -> TaskRecipe:
        """The AR model's recipe: the task with `ar_steps` steps."""
        return dataclasses.replace(self.task, steps=self.ar_steps)

    @property
    def continued_steps(self) -> int:
        """The block-diffusion steps after the conversion: the total less `ar_steps`."""
        return self.task.steps - self.ar_steps

    def describe(self) -> str:
        """The two stages, for a report's Recipe line."""
        t = self.task
        return (f"{self.source.describe(' --objective ar')}; `llada convert --block_size {self.block_size}` "
                f"(bidirectional, shifted prediction), then `llada sft --model CONVERTED --data {t.source} "
                f"--objective block_diffusion --block_size {self.block_size}`, {self.continued_steps} steps with the "
                f"same batch, seq_len, lr and warm-up: {t.steps} steps in all")


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
    conversion: ConversionRecipe | None = None
    """The task `llada reproduce conversion` trains an AR model on, converts and trains on, beside a
    diffusion and an AR model trained from scratch for the same total steps (None: none)."""

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


# Twelve people's biographies, each a document naming its person in every sentence; no stories or sums.
# (How this was chosen, and what larger worlds and other formats gave: BENCHMARKS.md.)
_SMALL_WORLD = WorldConfig(n_people=12, n_cities=8, n_countries=4, n_stories=0, n_sums=0, sft_sums=0)

# a reasoning task trained for seconds (the test suite's recipe): answers nothing, exercises every step
_TEST_TASK = TaskRecipe(items=200, preset="debug", steps=10, batch_size=8, warmup=2, eval_items=16)

# 3-digit addition for a GPU (10^6 pairs, 50,000 taught): sized from the 2-digit runs, not yet run
_LARGE_ADDITION = TaskRecipe(sizes="max_digits=3", items=50000, preset="small", steps=12000, batch_size=64, lr=5e-4,
                             warmup=200)

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
                   any_order=dataclasses.replace(_TEST_TASK, stage="pretrain"),
                   conversion=ConversionRecipe(_TEST_TASK, ar_steps=5, block_size=8)),
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
                        any_order=TaskRecipe(stage="pretrain", steps=6000),
                        # conversion: 2-digit addition, 1,000 AR steps and 1,000 block-diffusion steps against
                        # 2,000 from scratch: half the 4,000 at which the diffusion model reached 92.7%, so that a head
                        # start can show
                        conversion=ConversionRecipe(TaskRecipe(steps=2000), ar_steps=1000, block_size=8)),
    # `llada reproduce --size large`: a world of 200 people and a 17M-parameter model, for a GPU
    "large": Recipe(world=dataclasses.replace(_SMALL_WORLD, n_people=200, n_cities=20), preset="small",
                    pretrain_steps=6000, sft_steps=2000, batch_size=64, pretrain_lr=1e-3, sft_lr=5e-4,
                    task=_LARGE_ADDITION,
                    # sized from the tiny runs (BENCHMARKS.md), not yet run
                    planning=(_LARGE_SUDOKU, TaskRecipe(task="countdown", items=50000, preset="small", steps=12000,
                                                        batch_size=64, lr=5e-4, warmup=200)),
                    semi_ar=_LARGE_SUDOKU,
                    any_order=TaskRecipe(sizes="max_digits=3", items=50000, stage="pretrain", preset="small",
                                         steps=12000, batch_size=64, lr=5e-4, warmup=200),
                    conversion=ConversionRecipe(_LARGE_ADDITION, ar_steps=6000, block_size=32)),
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
    """OUT/model of `cfg` (its out_dir): reused when finished with exactly `cfg`, else trained, and
    the wall time of the training written beside it (`training_seconds`). A finished run with other
    settings leaves checkpoints that a new run must not resume from: they are removed first (an
    unfinished run's are resumed, or refused when their settings differ)."""
    model = Path(cfg.out_dir) / "model"
    if _done(model, cfg):
        return model
    if (model / TRAINING_CONFIG_NAME).is_file():
        shutil.rmtree(Path(cfg.out_dir) / "checkpoints", ignore_errors=True)
    started = time.perf_counter()
    model = trainer.run(cfg)
    record = {"seconds": round(time.perf_counter() - started, 1), "training_config": dataclasses.asdict(cfg)}
    (Path(cfg.out_dir) / TRAINING_TIME_NAME).write_text(json.dumps(record, default=str) + "\n")
    return model


TRAINING_TIME_NAME = "training_time.json"
"""Beside a recipe's model directory (OUT/model): the seconds its training took and its settings."""


def training_seconds(model_dir: Path) -> float | None:
    """The wall time in seconds the training of `model_dir` (OUT/model) took, as `_trained` recorded
    it beside the model (a resumed run: its last part); None when no record was kept for exactly the
    settings the model was trained with."""
    record, saved = model_dir.parent / TRAINING_TIME_NAME, model_dir / TRAINING_CONFIG_NAME
    if not (record.is_file() and saved.is_file()):
        return None
    data = json.loads(record.read_text())
    return float(data["seconds"]) if data.get("training_config") == json.loads(saved.read_text()) else None


def train_task_recipe(recipe: TaskRecipe, out_dir: str | Path, *, objective: Literal["diffusion", "ar"] = "diffusion",
                      seed: int = 0, progress: bool = True) -> Path:
    """Train a fresh `recipe.preset` model (its tokenizer trained on the task's text) on the task's
    training split (`recipe.stage`: SFT with the chat template, or pretraining on its text), with
    the diffusion or the AR loss; returns out_dir/model, reused when already trained with the same
    settings."""
    from llada.training import trainer  # accelerate and datasets (the train extra): only when training

    return _trained(_task_config(recipe, out_dir, objective, seed, progress), trainer)


def _task_config(recipe: TaskRecipe, out_dir: str | Path, objective: str, seed: int, progress: bool,
                 **changes: Any) -> TrainConfig:
    """The TrainConfig of `recipe` on its task with `objective`, with `changes` (model, steps, ...)."""
    values: dict[str, Any] = dict(
        model=recipe.preset, data=recipe.source, stage=recipe.stage, objective=objective, out_dir=str(out_dir),
        max_steps=recipe.steps, batch_size=recipe.batch_size, seq_len=recipe.seq_len, lr=recipe.lr,
        warmup_steps=recipe.warmup, padding=recipe.padding, eval_every=0, save_every=0, keep_last=1, log_every=50,
        seed=seed, progress=progress, tensorboard=False)
    return TrainConfig(**{**values, **changes})


def train_converted(recipe: ConversionRecipe, out_dir: str | Path, *, seed: int = 0,
                    progress: bool = True) -> tuple[Path, Path]:
    """The two stages of `recipe`; returns (the AR model, the converted model trained on), each
    reused when already trained with the same settings.

    OUT/ar-source: the AR model, `recipe.source` (`train_task_recipe`); OUT/converted-source: it
    converted (`llada.conversion.convert`: bidirectional attention, shifted prediction, a
    generation_config sampling block-causally with blocks of `block_size`); OUT/converted: that
    directory fine-tuned on the task with the block diffusion loss for `continued_steps`, with the
    task's batch, seq_len, lr and warm-up (`llada sft --objective block_diffusion`).
    """
    from llada.training import trainer  # accelerate and datasets (the train extra): only when training

    out = Path(out_dir)
    source = train_task_recipe(recipe.source, out / "ar-source", objective="ar", seed=seed, progress=progress)
    start = _converted(source, out / "converted-source", recipe.block_size, continued=out / "converted")
    cfg = _task_config(recipe.task, out / "converted", "block_diffusion", seed, progress, model=str(start),
                       max_steps=recipe.continued_steps, block_size=recipe.block_size)
    return source, _trained(cfg, trainer)


def _converted(source: Path, out: Path, block_size: int, continued: Path) -> Path:
    """`source` converted into `out` (`llada.conversion.convert` with the default options and
    `block_size`), reused when OUT.json records a conversion of the same source model (its training
    settings) with the same options. A new conversion removes `continued`, the run trained on from
    the old one: its settings name the same directory, so it would pass for finished."""
    from llada.conversion import ConversionOptions, convert  # reads safetensors: only when converting

    options = ConversionOptions(block_size=block_size)
    record = {"source": json.loads((source / TRAINING_CONFIG_NAME).read_text()), "options": dataclasses.asdict(options)}
    marker = out.with_name(out.name + ".json")
    if out.is_dir() and marker.is_file() and json.loads(marker.read_text()) == record:
        return out
    marker.unlink(missing_ok=True)  # written again only once this conversion is whole
    for stale in (out, continued):
        shutil.rmtree(stale, ignore_errors=True)
    convert(source, out, options)
    marker.write_text(json.dumps(record, indent=2) + "\n")
    return out
