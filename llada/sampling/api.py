"""The one way to ask a model for a sample: `sample_steps` (every state) and `sample` (the result).

    out = llada.sample(model, input_ids, SamplerOptions(gen_length=64), attention_mask=mask)
    for state in llada.sample_steps(model, input_ids, preset("fast")):   # streaming
        ...

The model decides how it is sampled (`config.kind`): a mask predictor runs the reverse process
(`core.diffusion_steps`), the autoregressive baseline decodes left to right
(`autoregressive.autoregressive_steps`). Every surface (CLI, server, lm-eval, built-in evaluation,
quickstart) goes through here, so none of them checks what kind of model it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling.autoregressive import autoregressive_steps
from llada.sampling.core import GenerateOutput, StepState, diffusion_steps
from llada.sampling.options import AUTOREGRESSIVE_OPTIONS, OPTION_NAMES, SamplerOptions

Steps = Callable[[LLaDAModel, Tensor, SamplerOptions, "Tensor | None", "torch.Generator | None"], Iterator[StepState]]
SAMPLERS: dict[str, Steps] = {"diffusion": diffusion_steps, "autoregressive": autoregressive_steps}
# The options each kind of sampler reads (the others configure the reverse process only).
READS: dict[str, tuple[str, ...]] = {"diffusion": OPTION_NAMES, "autoregressive": AUTOREGRESSIVE_OPTIONS}


def options_used(model: LLaDAModel, options: SamplerOptions) -> dict[str, Any]:
    """The options that shape `model`'s samples, by name (steps and blocks resolved): what a
    report should record."""
    values = options.explicit().to_dict()
    return {k: values[k] for k in READS[model.config.kind]}


def _check_prompt(model: LLaDAModel, input_ids: Tensor, attention_mask: Tensor | None, options: SamplerOptions) -> None:
    """input_ids (B, P) and attention_mask as `sample_steps` takes them, and room for the answer;
    a GenerationError naming what is wrong otherwise."""
    if not isinstance(input_ids, Tensor):
        raise GenerationError("input_ids must be a torch.Tensor of token ids (batch, prompt_length), "
                              f"got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise GenerationError(f"input_ids must hold integer token ids, got a {input_ids.dtype} tensor")
    if input_ids.ndim != 2:
        raise GenerationError(f"input_ids must be (batch, prompt_length), got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0:
        raise GenerationError(f"input_ids has no rows (shape {tuple(input_ids.shape)}); give at least one prompt")
    if input_ids.shape[1] == 0:
        raise GenerationError("the prompt is empty; give at least one token (for unconditional text, start with BOS)")
    if attention_mask is not None and not isinstance(attention_mask, Tensor):
        raise GenerationError(f"attention_mask must be a torch.Tensor (batch, prompt_length) or None, "
                              f"got {type(attention_mask).__name__}")
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if t is not None and t.is_meta:
            raise GenerationError(f"{name} is on the meta device, which holds no values; give it on the CPU or "
                                  "the model's device")
    low, high = torch.stack(torch.aminmax(input_ids)).tolist()  # one read back, before the step loop
    size = model.config.embedding_size
    if low < 0 or high >= size:
        raise GenerationError(f"input_ids holds token id {low if low < 0 else high}, outside the model's "
                              f"embedding 0..{size - 1}")
    options.check_room(input_ids.shape[1], model.config.max_sequence_length)
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise GenerationError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                              f"input_ids {tuple(input_ids.shape)}")


def left_aligned(input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Prompts padded on the right (a tokenizer's `padding_side="right"`) or in the middle, moved
    to left padding: pad slots between a prompt and its answer would change the answer with its
    batch neighbours. Left-padded (or unpadded) input is returned as it is."""
    if attention_mask is None:
        return input_ids, None
    am = attention_mask.long()
    if not bool((am[:, :-1] > am[:, 1:]).any()):  # no 0 after a 1: left padded already
        return input_ids, attention_mask
    order = am.argsort(dim=1, stable=True)  # pad slots (0) first, each prompt's own order kept
    return input_ids.gather(1, order.to(input_ids.device)), am.gather(1, order)


def sample_steps(model: LLaDAModel, input_ids: Tensor, options: SamplerOptions | None = None, *,
                 attention_mask: Tensor | None = None, generator: torch.Generator | None = None,
                 **overrides: Any) -> Iterator[StepState]:
    """Sample after each prompt row of `input_ids` (B, P) (padded, with `attention_mask` (B, P),
    when rows differ in length; right padding is moved to the left), yielding a `StepState` after every step; the last one has
    `final=True` and its canvas (B, P + gen_length) is the output.

    options: a `SamplerOptions` (default: the paper's settings); `overrides` replace fields of it
    (`steps=64`). generator: the random source for temperature > 0 and random remasking; when
    None and `options.seed` is set, one seeded on the model's device.
    Raises GenerationError for options or a prompt the sampler cannot honour.
    """
    options = options if options is not None else SamplerOptions()
    if not isinstance(options, SamplerOptions):
        raise GenerationError("options must be a SamplerOptions (SamplerOptions.from_dict(...) reads a mapping, "
                              f"preset(name) a preset), got {type(options).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise GenerationError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if overrides:
        options = options.replace(**overrides)
    _check_prompt(model, input_ids, attention_mask, options)
    input_ids, attention_mask = left_aligned(input_ids, attention_mask)
    if generator is None and options.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(options.seed)
    return SAMPLERS[model.config.kind](model, input_ids, options, attention_mask, generator)


def sample(model: LLaDAModel, input_ids: Tensor, options: SamplerOptions | None = None, *,
           attention_mask: Tensor | None = None, generator: torch.Generator | None = None,
           callback: Callable[[StepState], None] | None = None, **overrides: Any) -> GenerateOutput:
    """`sample_steps` run to the end: the sequences (B, P + gen_length), prompt then response, and
    the call's forward-pass counts. `callback(state)` sees every step (streaming)."""
    state = None
    for state in sample_steps(model, input_ids, options, attention_mask=attention_mask, generator=generator,
                              **overrides):
        if callback is not None and not state.final:
            callback(state)
    assert state is not None and state.final
    return GenerateOutput(state.canvas, state.prompt_length, state.stats)


def generate(model: LLaDAModel, input_ids: Tensor, attention_mask: Tensor | None = None, *,
             generator: torch.Generator | None = None, callback: Callable[[StepState], None] | None = None,
             **options: Any) -> GenerateOutput:
    """`sample` with the options as keywords, in the order of LLaDA's `generate.py`:
    `generate(model, ids, steps=128, gen_length=128, block_length=32)`."""
    return sample(model, input_ids, None, attention_mask=attention_mask, generator=generator, callback=callback,
                  **options)
