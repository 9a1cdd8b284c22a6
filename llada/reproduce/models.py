"""The models the claims measure: trained once per (size, seed) and shared, or given by flag.

The models, by name:

    diffusion, ar                      SFT models: the diffusion model and its autoregressive baseline
    diffusion-pretrain, ar-pretrain    the pretrained models they were fine-tuned from
    diffusion-task                     a diffusion model fine-tuned from scratch on the recipe's reasoning
                                       task (`Recipe.task`), under OUT-TASK/ beside the world's OUT/
    diffusion-planning, ar-planning    one model per planning task of the recipe (`Recipe.planning`), each
                                       objective on the same budget, under OUT-TASK/OBJECTIVE;
                                       `Models.task_model` finds them
    diffusion-semi-ar                  two diffusion models on the recipe's semi-ar task (`Recipe.semi_ar`),
                                       its responses padded with EOS to seq_len, and one EOS each
    diffusion-text, ar-text            a diffusion and an AR model pretrained on the recipe's any-order task
                                       as text (`Recipe.any_order`), under OUT-TASK/OBJECTIVE-text
    conversion                         the four models of the recipe's conversion task (`Recipe.conversion`):
                                       an AR model, it converted and trained on as block diffusion
                                       (OUT-TASK/conversion), and a diffusion and an AR model from scratch
                                       for the same total steps; `Models.conversion_models` finds them

A task's models are shared by every claim that names the same task with the same padding (the
one-EOS sudoku model of semi-ar is planning's), so those claims give it the same `TaskRecipe`; the
conversion claim's models from scratch are shared so too, and kept apart (OUT-TASK/conversion/OBJECTIVE)
where another claim trains that task with another budget.

The diffusion model and its baseline have equal budgets (same world, data, model shape, steps and
learning rates: only the loss and the attention mask differ; `llada.recipe.train_recipe`).
`Models.ensure(*names)` makes models ready — training the ones neither given nor trained yet, each
stage reused when already finished on disk — and `Models.directory` / `Models.load` only look them up.
`--diffusion` / `--ar` give SFT model directories trained elsewhere; `check_given_dirs` refuses, before
anything is trained, a directory the claims cannot use or that does not load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from llada.checkpoint import load
from llada.checkpoint.layout import CONFIG_NAME, TRAINING_CONFIG_NAME, read_config, read_json
from llada.errors import UserError
from llada.recipe import Recipe, TaskRecipe, train_converted, train_recipe, train_task_recipe
from llada.training.config import trained_world
from llada.training.integrity import entries_problem, model_dir_problem

ModelName = Literal["diffusion", "ar", "diffusion-pretrain", "ar-pretrain", "diffusion-task", "diffusion-planning",
                    "ar-planning", "diffusion-semi-ar", "diffusion-text", "ar-text", "conversion"]
Objective = Literal["diffusion", "ar"]

CONVERSION_MODELS = ("ar-source", "converted", "diffusion", "ar")
"""The conversion claim's models: the AR model before conversion, it converted and trained on, and a
diffusion and an AR model trained from scratch for the total steps."""


@dataclass
class Models:
    """The models of one (size, seed) under `out`: ready once `ensure`d, then shared by the claims."""

    out: Path
    recipe: Recipe
    seed: int
    device: str
    given: dict[str, str] = field(default_factory=dict)
    """objective ("diffusion" / "ar") -> an SFT model directory given by flag"""
    progress: bool = True
    _dirs: dict[str, Path] = field(default_factory=dict)
    _ready: set[str] = field(default_factory=set)
    """Names of groups of task models made ready (their models are in `_dirs` by task key)."""
    _loaded: dict[str, Any] = field(default_factory=dict)

    def ensure(self, *names: ModelName) -> None:
        """Make each of `names` ready: a given directory, the pretrained model a given one was
        fine-tuned from, or trained now under `out` (with what it starts from).

        Raises UserError when a given model's pretrained starting point cannot be found.
        """
        for name in names:
            if name in self._dirs or name in self._ready:
                continue
            objective = cast(Objective, "ar" if name.startswith("ar") else "diffusion")
            if name in self.given:
                self._dirs[name] = Path(self.given[name])
            elif name.endswith("-pretrain") and objective in self.given:
                self._dirs[name] = tuned_from(Path(self.given[objective]), f"--{objective}")
            elif name == "conversion":
                self.conversion_models()
                self._ready.add(name)
            elif (tasks := self.task_models_of(name, objective)) is not None:
                dirs = [self.task_model(o, t) for o, t in tasks]
                if name in _ONE_TASK_MODEL:  # loaded by its name; a group's models are found by `task_model`
                    self._dirs[name] = dirs[0]
                else:
                    self._ready.add(name)
            else:
                self.train(objective)

    def train(self, objective: Objective) -> None:
        """Pretrain and fine-tune the `objective` model under out/OBJECTIVE (`objective` and
        `objective`-pretrain)."""
        pretrained, tuned = train_recipe(self.recipe, self.out / objective, objective=objective, seed=self.seed,
                                         progress=self.progress, keep_evaluated=True)
        self._dirs[objective], self._dirs[f"{objective}-pretrain"] = tuned, pretrained

    def task_models_of(self, name: str, objective: Objective) -> list[tuple[Objective, TaskRecipe]] | None:
        """The (objective, task recipe) of each task model `name` stands for; None for the world's
        models. Raises UserError when the recipe has no task for it."""
        r = self.recipe
        if name == "diffusion-task":
            return [("diffusion", _required(r.task, "task"))]
        if name.endswith("-planning"):
            return [(objective, t) for t in r.planning]
        if name.endswith("-text"):
            return [(objective, _required(r.any_order, "any_order"))]
        if name == "diffusion-semi-ar":
            return [("diffusion", t) for t in semi_ar_recipes(r.semi_ar).values()]
        return None

    def task_model(self, objective: Objective, task: TaskRecipe) -> Path:
        """The `objective` model fine-tuned from scratch on `task` (`llada.recipe.train_task_recipe`),
        trained now unless already finished, under OUT-TASK/OBJECTIVE (OUT-sudoku/ar next to OUT/:
        the task's models apart from the world's)."""
        key = _task_key(objective, task)
        if key not in self._dirs:
            self._dirs[key] = train_task_recipe(task, self.task_out(task) / key.split(":")[0], objective=objective,
                                                seed=self.seed, progress=self.progress)
        return self._dirs[key]

    def load_task(self, objective: Objective, task: TaskRecipe) -> Any:
        """The loaded bundle of `task_model(objective, task)` (trained first when it is not yet)."""
        key = _task_key(objective, task)
        if key not in self._loaded:
            self._loaded[key] = load(self.task_model(objective, task), device=self.device)  # type: ignore[arg-type]
        return self._loaded[key]

    def conversion_models(self) -> dict[str, Path]:
        """The models of `Recipe.conversion` by name (`CONVERSION_MODELS`), trained now unless already
        finished: the AR model and it converted and trained on (`llada.recipe.train_converted`, under
        OUT-TASK/conversion), then the models from scratch for the total steps, the task models
        (`task_model`) unless another claim trains that task with another budget (they would retrain
        one directory in turn): then under OUT-TASK/conversion/OBJECTIVE. UserError when the recipe
        has no conversion task."""
        recipe = _required(self.recipe.conversion, "conversion")
        keys = {name: f"conversion/{name}" for name in CONVERSION_MODELS}
        if not all(key in self._dirs for key in keys.values()):
            out = self.task_out(recipe.task) / "conversion"
            made = dict(zip(("ar-source", "converted"), train_converted(recipe, out, seed=self.seed,
                                                                        progress=self.progress), strict=True))
            for objective in ("diffusion", "ar"):
                made[objective] = (self.task_model(objective, recipe.task) if self._shareable(objective, recipe.task)
                                   else train_task_recipe(recipe.task, out / objective, objective=objective,
                                                          seed=self.seed, progress=self.progress))
            self._dirs.update({keys[name]: path for name, path in made.items()})
        return {name: self._dirs[key] for name, key in keys.items()}

    def load_conversion(self, name: str) -> Any:
        """The loaded bundle of the conversion model `name` (one of `CONVERSION_MODELS`)."""
        key = f"conversion/{name}"
        if key not in self._loaded:
            self._loaded[key] = load(self.conversion_models()[name], device=self.device)  # type: ignore[arg-type]
        return self._loaded[key]

    def _shareable(self, objective: Objective, task: TaskRecipe) -> bool:
        """Whether `task_model(objective, task)` is free of other claims' settings: no task model group
        of the recipe trains the same directory with another `TaskRecipe`."""
        key = _task_key(objective, task)
        for group in _TASK_GROUPS:
            try:
                pairs = self.task_models_of(group, cast(Objective, group.split("-")[0])) or []
            except UserError:  # the recipe has no task for that group
                continue
            if any(_task_key(o, t) == key and t != task for o, t in pairs):
                return False
        return True

    def task_out(self, task: TaskRecipe) -> Path:
        """Where `task`'s models go: OUT-TASK beside OUT (models/default-seed0-addition)."""
        return self.out.with_name(f"{self.out.name}-{task.task}")

    def directory(self, name: ModelName) -> Path:
        """The directory of `name`; RuntimeError when it was not `ensure`d first."""
        if name not in self._dirs:
            raise RuntimeError(f"model {name!r} is not ready: call Models.ensure({name!r}) first")
        return self._dirs[name]

    def load(self, name: ModelName) -> Any:
        """The loaded `llada.checkpoint.Bundle` of `name`, loaded once (see `directory`)."""
        if name not in self._loaded:  # a given model's kind was checked up front (check_given_dirs)
            self._loaded[name] = load(self.directory(name), device=self.device)  # type: ignore[arg-type]
        return self._loaded[name]


def semi_ar_recipes(recipe: TaskRecipe | None) -> dict[str, TaskRecipe]:
    """The two task recipes of the claim by model name: EOS-padded to seq_len, and one EOS per
    answer; UserError when the recipe has no semi-ar task."""
    recipe = _required(recipe, "semi_ar")
    return {"eos-padded": dataclasses.replace(recipe, padding="max_length"),
            "one-eos": dataclasses.replace(recipe, padding="longest")}


# the task-model names that stand for one model, loaded by that name (`Models.load`)
_ONE_TASK_MODEL = ("diffusion-task", "diffusion-text", "ar-text")
# every name that stands for task models `Models.task_model` trains (`Models.task_models_of`)
_TASK_GROUPS = ("diffusion-task", "diffusion-planning", "ar-planning", "diffusion-semi-ar", "diffusion-text", "ar-text")


def _required(task: TaskRecipe | None, field_name: str) -> TaskRecipe:
    """`task`, or a UserError saying the recipe has none (`Recipe.<field_name>` is None)."""
    if task is None:
        what = "reasoning" if field_name == "task" else field_name.replace("_", "-")
        raise UserError(f"this recipe has no {what} task (Recipe.{field_name} is None)")
    return task


def _task_key(objective: Objective, task: TaskRecipe) -> str:
    """OBJECTIVE[-eos][-text]:TASK: a task model's name among the models (and, before the colon, its
    directory under OUT-TASK): -eos when its SFT rows were padded with EOS to seq_len, -text when
    it was pretrained on the task's text instead of fine-tuned on its conversations."""
    return (f"{objective}{'-eos' if task.padding == 'max_length' else ''}{'-text' if task.stage == 'pretrain' else ''}"
            f":{task.task}")


def tuned_from(model_dir: Path, flag: str) -> Path:
    """The pretrained model directory an SFT model directory (given by `flag`) was fine-tuned from,
    as its training_config.json records; UserError when it does not name a directory that exists."""
    saved = model_dir / TRAINING_CONFIG_NAME
    record = read_json(saved) if saved.is_file() else None
    start = record.get("model") if isinstance(record, dict) else None
    if not isinstance(start, str) or not Path(start).is_dir():
        raise UserError(f"{flag} {model_dir}: cannot tell which pretrained model it was fine-tuned from "
                        f"(no {TRAINING_CONFIG_NAME} naming a directory that exists); this claim needs the pretrained "
                        "model too")
    return Path(start)


def check_given_dirs(given: dict[str, str], needs: Iterable[ModelName], seed: int, size: str,
                     recipe: Recipe) -> None:
    """Refuse, before anything is trained, a --diffusion / --ar directory that models `needs` cannot
    use: not a model directory, a model of the other kind, not fine-tuned on the built-in world of
    (`seed`, `recipe.world`) by llada (a report on a model never taught these facts would only say
    the claim "did not hold"), or, where its pretrained model is needed too, no record of it."""
    needed = set(needs)
    for objective, path in given.items():
        flag, root = f"--{objective}", Path(path)
        if objective not in needed and f"{objective}-pretrain" not in needed:  # the SFT model, or what it was tuned from
            raise UserError(f"{flag} {path}: none of the claims asked for measures a {objective} model trained on "
                            "the world (remasking and planning train their own, on reasoning tasks); drop the flag")
        _check_model_kind(flag, root, "autoregressive" if objective == "ar" else "diffusion")
        _check_training_record(flag, root, seed, size, recipe)
        _check_loads(flag, root, root)
        if f"{objective}-pretrain" in needed:
            _check_loads(flag, root, tuned_from(root, flag))


def _check_loads(flag: str, given: Path, root: Path) -> None:
    """Refuse model directory `root` (the one `flag` gives, or the model it was fine-tuned from)
    unless it is whole, as a checkpoint resumed from is: its files regular and inside it, config,
    weights whose headers cover their files, and a tokenizer that loads."""
    problem = entries_problem(root) or model_dir_problem(root)
    if problem is not None:
        what = "" if root == given else f" was fine-tuned from {root}, which"
        raise UserError(f"{flag} {given}{what} does not load ({problem}); nothing was trained")


def _check_model_kind(flag: str, root: Path, want: str) -> None:
    if not root.is_dir():
        raise UserError(f"{flag} {root} is not a model directory (no such directory)")
    if not (root / CONFIG_NAME).is_file():
        raise UserError(f"{flag} {root} is not a model directory (no {CONFIG_NAME})")
    kind = read_config(root).kind
    if kind != want:
        raise UserError(f"{flag} {root} is {'an' if kind[0] == 'a' else 'a'} {kind} model; "
                        f"{flag} needs {'an' if want[0] == 'a' else 'a'} {want} one")


def _check_training_record(flag: str, root: Path, seed: int, size: str, recipe: Recipe) -> None:
    path = root / TRAINING_CONFIG_NAME
    if not path.is_file():
        raise UserError(f"{flag} {root} has no {TRAINING_CONFIG_NAME}, so nothing says it was fine-tuned on the "
                        f"built-in world these claims ask about; give a model directory llada sft wrote, or leave "
                        f"{flag} out to train one")
    record = read_json(path)
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected a JSON object")
    if record.get("data") is not None:
        raise UserError(f"{flag} {root} was trained on --data {record['data']}, not the built-in world these "
                        "claims ask about")
    if record.get("stage") != "sft":
        raise UserError(f"{flag} {root} is a {record.get('stage')} model; {flag} takes a model fine-tuned "
                        "by llada sft (the claims ask it questions)")
    try:
        trained = trained_world(root)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: its seed and world cannot be read ({e})") from None
    if trained != (seed, recipe.world):
        raise UserError(f"{flag} {root} was trained on the world (seed {trained[0]}, {trained[1]}), but --size "
                        f"{size} --seed {seed} evaluates on (seed {seed}, {recipe.world})")
