"""Every sampling option in one place: `SamplerOptions`, its defaults and its named presets.

    opts = SamplerOptions()                                   # the paper's settings
    opts = SamplerOptions.from_dict({"preset": "fast", "gen_length": 256})
    opts = opts.replace(temperature=0.7, seed=1)

The command line (`llada generate --steps 64 --preset fast`), the server's request fields
(`"preset": "fast", "steps": 64`), lm-eval's `--model_args` and the built-in evaluation all read
their options from this class, so one setting gives the same tokens on every surface.

Defaults follow LLaDA's reference sampler (ML-GSAI/LLaDA `generate.py`, the call in its `main`):
128 tokens, one token per step, semi-autoregressive blocks of 32, low-confidence remasking,
temperature 0 and no guidance (paper Sec. 2.4, App. B.3). An autoregressive model reads only
the options marked autoregressive (`AUTOREGRESSIVE_OPTIONS`); the rest configure the reverse process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from llada.errors import GenerationError
from llada.sampling.schedule import SCHEDULES, fit_blocks

CACHES = ("prefix", "dual")  # besides None: no key/value cache
# Token editing's steps after a block's last mask: LLaDA 2.1's generate uses 16; a block that has not
# settled after 64 times that never will (each such step is a forward pass).
MAX_POST_STEPS = 1024


def _help(text: str, autoregressive: bool = False) -> dict[str, Any]:
    """A field's metadata: its one-line help, and whether the autoregressive baseline reads it too."""
    return {"help": text, "autoregressive": autoregressive}


@dataclass(frozen=True)
class SamplerOptions:
    """The options of one sampling call, validated on construction (a `GenerationError` names the
    field and what is allowed). Immutable: derive variants with `replace`."""

    gen_length: int = field(default=128, metadata=_help("response length in tokens", autoregressive=True))
    steps: int | None = field(default=None, metadata=_help(
        "denoising steps in total, split evenly over the blocks; None: one token per step (gen_length)"))
    block_length: int | None = field(default=32, metadata=_help(
        "semi-autoregressive block length, dividing gen_length (longer or None: one block)"))
    temperature: float = field(default=0.0, metadata=_help("0 decodes greedily; > 0 samples (Gumbel-max)",
                                                             autoregressive=True))
    top_k: int | None = field(default=None, metadata=_help(
        "with temperature > 0, sample among the k most probable tokens only; None (or 0): all", autoregressive=True))
    top_p: float | None = field(default=None, metadata=_help(
        "with temperature > 0, nucleus sampling: among the most probable tokens whose probabilities sum "
        "to top_p, in (0, 1] (after top_k, as transformers applies them); None: all", autoregressive=True))
    min_p: float | None = field(default=None, metadata=_help(
        "with temperature > 0, drop the tokens less probable than min_p times the most probable one, "
        "in [0, 1] (after top_k and top_p, as transformers applies them); None: all", autoregressive=True))
    tempered_confidence: bool = field(default=False, metadata=_help(
        "rank and compare each prediction by its probability under the distribution it was sampled "
        "from (temperature, top_k, top_p), as LLaDA 2.x and Dream do; false: the plain softmax, as "
        "LLaDA's generate.py does (the same at temperature 0)"))
    cfg_scale: float = field(default=0.0, metadata=_help("unsupervised classifier-free guidance; 0 is off"))
    remasking: str = field(default="low_confidence", metadata=_help(
        "which predictions to keep at each step: low_confidence, random, margin, entropy"))
    threshold: float | None = field(default=None, metadata=_help(
        "Fast-dLLM parallel decoding: keep every prediction with confidence >= threshold, in (0, 1]"))
    factor: float | None = field(default=None, metadata=_help(
        "Fast-dLLM's factor rule for parallel decoding (> 0); exclusive with threshold"))
    cache: str | None = field(default=None, metadata=_help(
        "key/value cache refreshed at each block: none, prefix or dual"))
    logits_eos_inf: bool = field(default=False, metadata=_help("never predict EOS (LLaDA App. B.4)"))
    confidence_eos_eot_inf: bool = field(default=False, metadata=_help(
        "rank EOS and end-of-turn predictions last (LLaDA App. B.4)"))
    early_exit: bool = field(default=False, metadata=_help(
        "stop after the block in which every row has produced EOS, and fill the rest with EOS"))
    block_causal: bool = field(default=False, metadata=_help(
        "block diffusion (LLaDA 2.x): attention causal across blocks of block_length counted from the "
        "sequence start, finished blocks cached exactly, threshold keeping at least each step's quota"))
    editing_threshold: float | None = field(default=None, metadata=_help(
        "block diffusion with token editing (LLaDA 2.1): a decoded answer token of the block is replaced "
        "when the model predicts another with confidence above this, in (0, 1]; None: no editing"))
    max_post_steps: int = field(default=16, metadata=_help(
        "token editing: the most steps a block keeps editing after its last mask is decoded"))
    schedule: str = field(default="even", metadata=_help(
        "tokens unmasked per step (fixed steps): even (LLaDA: the block's masks split evenly over its "
        "steps) or dream (Dream: floor(m (1 - s/t)) of the m still masked, t from 1 to schedule_eps)"))
    schedule_eps: float = field(default=1e-3, metadata=_help("the dream schedule's last time step, in [0, 1)"))
    alg_temp: float | None = field(default=None, metadata=_help(
        "Dream's alg_temp: draw the positions to unmask from softmax(confidence / alg_temp) instead of "
        "taking the most confident (fixed steps; > 0); None: the most confident"))
    seed: int | None = field(default=None, metadata=_help(
        "random seed for temperature > 0 and random remasking; None: the caller's generator", autoregressive=True))

    def __post_init__(self) -> None:
        if self.cache == "none":
            object.__setattr__(self, "cache", None)
        if self.top_k == 0 and not isinstance(self.top_k, bool):  # transformers' (and OpenAI tools') "no top-k"
            object.__setattr__(self, "top_k", None)
        for check in (_check_types, _check_lengths, _check_sampling, _check_parallel):
            check(self)

    # ------------------------------------------------------------------------------------ derived
    @property
    def num_steps(self) -> int:
        """Total denoising steps: `steps`, or gen_length when it is None (one token per step)."""
        return self.gen_length if self.steps is None else self.steps

    @property
    def block_size(self) -> int:
        """The block length in tokens: `block_length` capped at gen_length (a block longer than the
        response is one block), or gen_length when it is None. Block diffusion keeps block_length
        as it is: it is the model's attention pattern, whatever the answer's length."""
        if self.block_length is None:
            return self.gen_length
        return self.block_length if self.block_causal else min(self.block_length, self.gen_length)

    @property
    def num_blocks(self) -> int:
        """Blocks of the answer (block diffusion: blocks the answer reaches into, counted from its start)."""
        return -(-self.gen_length // self.block_size)

    @property
    def steps_per_block(self) -> int:
        """Denoising steps of each block: steps / num_blocks; block diffusion, whose blocks are counted
        from the start of the sequence, keeps the same steps per token: steps * block / gen_length
        (at least 1)."""
        if self.block_causal:
            return max(1, self.num_steps * self.block_size // self.gen_length)
        return self.num_steps // self.num_blocks

    @property
    def fixed_steps(self) -> bool:
        """Each step unmasks a count fixed in advance: no rule compares a confidence against a number
        (threshold, factor, editing_threshold), so the step count is known before the loop."""
        return self.threshold is None and self.factor is None and self.editing_threshold is None

    @property
    def truncated(self) -> bool:
        """Tokens are drawn from a cut distribution: temperature > 0 with top_k, top_p or min_p."""
        return self.temperature > 0 and (self.top_k is not None or self.top_p is not None or self.min_p is not None)

    def canvas_length(self, prompt_length: int) -> int:
        """Positions the sampler runs after a prompt of `prompt_length` tokens: prompt + gen_length;
        block diffusion decodes whole blocks counted from the sequence start, so its canvas ends on
        the next block boundary (LLaDA 2.x `generate`: num_blocks * block_length)."""
        end = prompt_length + self.gen_length
        return -(-end // self.block_size) * self.block_size if self.block_causal else end

    def usable_positions(self, max_sequence_length: int) -> int:
        """How many of a model's `max_sequence_length` positions a canvas may fill: all of them;
        block diffusion, whole blocks only. Prompt + gen_length must not exceed it."""
        if self.block_causal:
            return max_sequence_length // self.block_size * self.block_size
        return max_sequence_length

    def check_block(self, max_sequence_length: int) -> None:
        """Refuse (GenerationError) a block diffusion block longer than the model: it would fill no
        canvas at all (the reverse process's blocks are capped at gen_length instead)."""
        if self.block_causal and self.block_size > max_sequence_length:
            raise GenerationError(f"block_length {self.block_size} exceeds the model's max_sequence_length "
                                  f"{max_sequence_length}: block diffusion runs whole blocks, so block_length "
                                  f"must be in 1..{max_sequence_length}")

    def check_room(self, prompt_length: int, max_sequence_length: int) -> None:
        """Refuse (GenerationError, one line naming the field, its value and what is allowed) a
        canvas (`canvas_length`) longer than the model's `max_sequence_length` positions, before
        anything is allocated: the one length check of `sample` (and so the CLI, lm-eval and the
        built-in evaluation) and of the server. RoPE has no hard limit, but a position past it is
        one the model was not made for (and a learned position embedding has no row for), and a
        canvas of L positions costs L * L in attention: block_length 1000000 asked for a terabyte."""
        self.check_block(max_sequence_length)
        room = self.usable_positions(max_sequence_length) - prompt_length  # the longest answer after this prompt
        if self.gen_length <= room:
            return
        allowed = f"gen_length must be in 1..{room} after this prompt" if room >= 1 else "shorten the prompt"
        end = prompt_length + self.gen_length
        if end <= max_sequence_length:  # block diffusion: the last block runs past the model
            raise GenerationError(f"prompt ({prompt_length} tokens) + gen_length ({self.gen_length}) rounded up to "
                                  f"whole blocks of {self.block_size} = {self.canvas_length(prompt_length)} exceeds "
                                  f"the model's max_sequence_length {max_sequence_length}; {allowed}")
        raise GenerationError(f"prompt ({prompt_length} tokens) + gen_length ({self.gen_length}) = {end} exceeds "
                              f"the model's max_sequence_length {max_sequence_length}; {allowed}")

    # ------------------------------------------------------------------------------- conversions
    def replace(self, **changes: Any) -> SamplerOptions:
        """A copy with `changes` applied (validated); unknown names raise GenerationError."""
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            raise GenerationError(f"unknown sampler option(s) {', '.join(unknown)}; "
                                  f"the options are {', '.join(OPTION_NAMES)}")
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})

    def fitted(self, gen_length: int | None = None, /, **changes: Any) -> SamplerOptions:
        """These options, with `changes`, for a requested response length (the server's max_tokens,
        lm-eval's max_gen_toks): the block capped at gen_length, gen_length rounded up to whole
        blocks, steps up to a multiple of the number of blocks. The answer still ends at its first
        EOS. Values the rounding cannot mend (steps 0, a negative length) raise GenerationError.
        Block diffusion (block_causal) takes any length and keeps its block: nothing is rounded.
        `gen_length` is positional, so `changes` may hold a gen_length of its own (lm-eval's
        model_args): the requested length, when given, wins over it."""
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            raise GenerationError(f"unknown sampler option(s) {', '.join(unknown)}; "
                                  f"the options are {', '.join(OPTION_NAMES)}")
        values = {**self.to_dict(), **{k: _coerce(k, v) for k, v in changes.items()}}
        if gen_length is not None:
            values["gen_length"] = _coerce("gen_length", gen_length)
        gen, block, steps = values["gen_length"], values["block_length"], values["steps"]
        if values.get("block_causal") is True:  # block diffusion takes any length; its block is the model's
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (gen, steps)):
                values["steps"] = min(steps, gen)
            return SamplerOptions(**values)
        if all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in (gen, block, steps)):
            gen, fit_block, fit_steps = fit_blocks(gen, block or gen, steps)
            values.update(gen_length=gen, block_length=None if block is None else fit_block,
                          steps=None if steps is None else fit_steps)
        return SamplerOptions(**values)

    def explicit(self) -> SamplerOptions:
        """The same options with steps and block_length as numbers (None resolved), for reports."""
        return dataclasses.replace(self, steps=self.num_steps, block_length=self.block_size)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name (JSON/YAML ready); `from_dict(to_dict())` gives the same options."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **more: Any) -> SamplerOptions:
        """Options from a mapping (YAML, JSON, a request, `--model_args`): an optional "preset"
        name first, then the other keys over it. Values given as strings ("0.9", "none", "true")
        are converted to the field's type; unknown keys raise GenerationError."""
        if data is not None and not isinstance(data, Mapping):
            raise GenerationError(f"sampler options must be a mapping of option names to values, "
                                  f"got {type(data).__name__}")
        values = {**(data or {}), **more}
        name = values.pop("preset", None)
        return preset(name).replace(**values) if name not in (None, "", "none") else cls().replace(**values)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each option's one-line description (for --help, the server's schema, the README)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


OPTION_NAMES = tuple(f.name for f in fields(SamplerOptions))
# The options the autoregressive baseline reads (the others configure the reverse process only).
AUTOREGRESSIVE_OPTIONS = tuple(f.name for f in fields(SamplerOptions) if f.metadata["autoregressive"])

# Named settings people use; each is applied over the defaults, and explicit options win.
SAMPLER_PRESETS: dict[str, dict[str, Any]] = {
    # LLaDA generate.py's own signature defaults: 128 tokens in one block, one token per step (its steps=128).
    "reference": {"gen_length": 128, "steps": None, "block_length": None},
    # Fast-dLLM: confidence-threshold parallel decoding at 0.9 with the dual key/value cache.
    "fast": {"threshold": 0.9, "cache": "dual"},
    # One token per step, no parallel decoding, no approximate cache.
    "quality": {"steps": None, "threshold": None, "factor": None, "cache": None},
    # LLaDA 2.x's recommended decoding: block diffusion, blocks of 32, threshold 0.95, finished blocks cached.
    "llada2": {"block_causal": True, "block_length": 32, "threshold": 0.95, "cache": "prefix", "temperature": 0.0,
               "tempered_confidence": True},
    # LLaDA 2.1's: the same, with token editing at 0.9 (its generate's defaults).
    "llada2.1": {"block_causal": True, "block_length": 32, "threshold": 0.95, "cache": "prefix", "temperature": 0.0,
                 "editing_threshold": 0.9, "max_post_steps": 16, "tempered_confidence": True},
    # Dream's sampler as its examples call it: one block, entropy ranking, its step schedule.
    "dream": {"block_length": None, "remasking": "entropy", "schedule": "dream", "schedule_eps": 1e-3,
              "tempered_confidence": True},
}


def markdown_table() -> str:
    """The options and presets as the README's Markdown table (a test keeps the README in step)."""
    rows = ["| option | default | " + " | ".join(SAMPLER_PRESETS) + " | meaning |",
            "|---|---|" + "---|" * len(SAMPLER_PRESETS) + "---|"]
    defaults, helps = SamplerOptions().to_dict(), SamplerOptions.help()
    for name in OPTION_NAMES:
        cells = [_cell(p[name]) if name in p else "" for p in SAMPLER_PRESETS.values()]
        rows.append(f"| `{name}` | {_cell(defaults[name])} | " + " | ".join(cells) + f" | {helps[name]} |")
    return "\n".join(rows)


def _cell(value: Any) -> str:
    return "None" if value is None else f"`{value}`"


def preset(name: str) -> SamplerOptions:
    """The options of a named preset (`SAMPLER_PRESETS`) over the defaults."""
    if not isinstance(name, str) or name not in SAMPLER_PRESETS:
        raise GenerationError(f"unknown sampler preset {name!r}; choose one of: {', '.join(SAMPLER_PRESETS)}")
    return SamplerOptions().replace(**SAMPLER_PRESETS[name])


# -------------------------------------------------------------------------------- validation


def _check_types(o: SamplerOptions) -> None:
    """The switches are booleans and the names strings (None only where the option may be unset);
    the numbers are checked with their ranges below."""
    for name, kind in OPTION_TYPES.items():
        value = getattr(o, name)
        if value is None and name in OPTIONAL_OPTIONS:
            continue
        if kind is bool and not isinstance(value, bool):
            raise GenerationError(f"{name} must be true or false, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise GenerationError(f"{name} must be a string, got {value!r}")


def _check_lengths(o: SamplerOptions) -> None:
    for name in ("gen_length", "steps", "block_length"):
        value = getattr(o, name)
        if (value is not None or name not in OPTIONAL_OPTIONS) and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise GenerationError(f"{name} must be a positive integer, got {value!r}")
    if o.num_steps > o.gen_length:  # a step decodes at least one position: more would be steps that do nothing
        raise GenerationError(f"steps ({o.steps}) must be at most gen_length ({o.gen_length}): each step decodes "
                              "at least one position")
    if o.block_causal:  # any length: the canvas ends on a block boundary of the whole sequence
        return
    if o.gen_length % o.block_size:
        raise GenerationError(f"gen_length ({o.gen_length}) must be a multiple of block_length ({o.block_size})")
    if o.num_steps % o.num_blocks:
        raise GenerationError(f"steps ({o.num_steps}) must be a positive multiple of the number of blocks "
                              f"gen_length / block_length = {o.num_blocks}")


def _check_sampling(o: SamplerOptions) -> None:
    from llada.sampling.remasking import REMASKING

    if o.remasking not in REMASKING:
        raise GenerationError(f"unknown remasking {o.remasking!r}; choose one of: {', '.join(REMASKING)}")
    for name in ("temperature", "cfg_scale"):
        if not _finite(getattr(o, name)) or getattr(o, name) < 0:
            raise GenerationError(f"{name} must be a finite number >= 0, got {getattr(o, name)!r}")
    if o.top_k is not None and (not isinstance(o.top_k, int) or isinstance(o.top_k, bool) or o.top_k < 1):
        raise GenerationError(f"top_k must be a positive integer (None or 0: no top-k), got {o.top_k!r}")
    if o.top_p is not None and not (_finite(o.top_p) and 0 < o.top_p <= 1):
        raise GenerationError(f"top_p must be in (0, 1] (None: no nucleus), got {o.top_p!r}")
    if o.min_p is not None and not (_finite(o.min_p) and 0 <= o.min_p <= 1):
        raise GenerationError(f"min_p must be in [0, 1] (None: no cut), got {o.min_p!r}")
    if o.seed is not None and (not isinstance(o.seed, int) or isinstance(o.seed, bool) or not 0 <= o.seed < 2**63):
        raise GenerationError(f"seed must be an integer in [0, 2**63), got {o.seed!r}")


def _check_parallel(o: SamplerOptions) -> None:
    if o.threshold is not None and not (_finite(o.threshold) and 0 < o.threshold <= 1):
        raise GenerationError(f"threshold must be in (0, 1], got {o.threshold!r}")
    if o.factor is not None and not (_finite(o.factor) and o.factor > 0):
        raise GenerationError(f"factor must be a finite number > 0, got {o.factor!r}")
    if o.threshold is not None and o.factor is not None:
        raise GenerationError("give threshold or factor, not both")
    if o.block_causal and o.factor is not None:
        raise GenerationError("block_causal decodes with threshold (or a fixed quota), not factor")
    if o.editing_threshold is not None:
        if not (_finite(o.editing_threshold) and 0 < o.editing_threshold <= 1):
            raise GenerationError(f"editing_threshold must be in (0, 1], got {o.editing_threshold!r}")
        if not o.block_causal:
            raise GenerationError("editing_threshold needs block_causal (token editing is a block-diffusion rule)")
    if o.schedule not in SCHEDULES:
        raise GenerationError(f"unknown schedule {o.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if not (_finite(o.schedule_eps) and 0 <= o.schedule_eps < 1):
        raise GenerationError(f"schedule_eps must be in [0, 1), got {o.schedule_eps!r}")
    if o.alg_temp is not None and not (_finite(o.alg_temp) and o.alg_temp > 0):
        raise GenerationError(f"alg_temp must be a finite number > 0, got {o.alg_temp!r}")
    parallel = o.threshold is not None or o.factor is not None or o.block_causal
    if o.threshold is not None and o.remasking == "entropy" and not o.block_causal:
        raise GenerationError("threshold compares a confidence in (0, 1]; entropy scores are <= 0: use "
                              "remasking low_confidence or margin with threshold")
    if parallel and (o.alg_temp is not None or o.schedule != "even"):
        raise GenerationError("alg_temp and schedule apply to fixed steps: give them without threshold, factor "
                              "or block_causal")
    if (not isinstance(o.max_post_steps, int) or isinstance(o.max_post_steps, bool)
            or not 0 <= o.max_post_steps <= MAX_POST_STEPS):
        raise GenerationError(f"max_post_steps must be an integer in 0..{MAX_POST_STEPS}, got {o.max_post_steps!r}")
    if o.cache not in (None, *CACHES):
        raise GenerationError(f"unknown cache {o.cache!r}; choose one of: none, {', '.join(CACHES)}")


def _finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Each option's value type: read by _coerce, the CLI flags (commands.sampler_flags) and the server schema.
OPTION_TYPES: dict[str, type] = {
    "gen_length": int, "steps": int, "block_length": int, "temperature": float, "top_k": int, "top_p": float,
    "min_p": float, "tempered_confidence": bool, "cfg_scale": float, "remasking": str,
    "threshold": float, "factor": float, "cache": str, "logits_eos_inf": bool, "confidence_eos_eot_inf": bool,
    "early_exit": bool, "block_causal": bool, "editing_threshold": float, "max_post_steps": int, "schedule": str, "schedule_eps": float, "alg_temp": float,
    "seed": int}
# Options whose value may be None: "none" clears them (over a preset's value, on the command line too).
OPTIONAL_OPTIONS = {"steps", "block_length", "threshold", "factor", "cache", "seed", "editing_threshold", "alg_temp",
                    "top_k", "top_p", "min_p"}


def _coerce(name: str, value: Any) -> Any:
    """`value` as field `name`'s type: strings from a command line or `--model_args` are parsed,
    integral floats become ints, "none"/"null" clears an optional field."""
    kind = OPTION_TYPES[name]
    if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
        if name in OPTIONAL_OPTIONS:
            return None
        raise GenerationError(f"{name} cannot be empty")
    if value is None or kind is str:
        return value
    try:
        if kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                return value.strip().lower() in ("true", "1")
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise ValueError
        if kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number) if not isinstance(number, bool) else number
        return float(value)
    except (TypeError, ValueError):
        wanted = "true or false" if kind is bool else kind.__name__
        raise GenerationError(f"{name} must be {wanted}, got {value!r}") from None
