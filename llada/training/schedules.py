"""The training schedules of the recipes that turn an autoregressive model into a diffusion one, each a
pure function of the optimizer step (so a resumed run retraces the same losses).

Block-size schedule (`TrainConfig.block_size_schedule`, --objective block_diffusion): LLaDA 2.0's
"warmup-stable-decay" of the block size (LLaDA 2.0 technical report, Sec. 3, continued pretraining
of an AR model): blocks of one token first (next-token prediction, what the AR model already does),
growing to the whole sequence (plain masked diffusion), then shrinking to the block size the model
samples with. Written as (from step, block size) pairs, "0:1,200:4,400:32,600:128,1200:32", or
"wsd" (`wsd_schedule`); the block size of step s is that of the last pair at or before s.

Attention-mask annealing (`TrainConfig.attention_anneal_steps`, --objective diffusion): the causal
mask of an adapted AR model is relaxed to bidirectional over the first N steps (Gong et al. 2025,
"Scaling Diffusion Language Models via Adaptation from Autoregressive Models", DiffuLLaMA's
`get_anneal_attn_mask`): at step s < N each key after a query is visible with probability s / N
(`annealed_mask`).
"""

from __future__ import annotations

import bisect
from typing import Any

import torch
from torch import Tensor

from llada.diffusion import LogitsFn
from llada.errors import UserError

BlockSizeSchedule = tuple[tuple[int, int], ...]
"""(from step, block size) pairs, steps strictly ascending from 0."""

WSD_WARMUP = (1, 4, 32, 64)
"""The block sizes of LLaDA 2.0's warm-up below the whole sequence (1 -> 4 -> 32 -> 64 -> 4096)."""

_FORMAT = "'wsd' or (from step):(block size) pairs such as 0:1,200:4,400:32"


def block_size_schedule(spec: str | None, block_size: int, seq_len: int, max_steps: int) -> BlockSizeSchedule:
    """The schedule `spec` names (None: `block_size` at every step), checked against the run.

    spec: "wsd" (`wsd_schedule` of max_steps, seq_len, block_size) or pairs "step:size,step:size"
    (spaces allowed). Raises UserError, one line, for a spec that does not parse, a first step that
    is not 0, steps not strictly ascending, a step at or past max_steps (it would never train), or
    a block size that does not divide seq_len.
    """
    if spec is None:
        return ((0, block_size),)
    flag = f"--block_size_schedule {spec!r}"
    if spec == "wsd":
        schedule = wsd_schedule(max_steps, seq_len, block_size)
    else:
        try:
            schedule = tuple((int(step), int(size)) for step, size in (pair.split(":") for pair in spec.split(",")))
        except ValueError:
            raise UserError(f"{flag}: expected {_FORMAT}") from None
    steps = [step for step, _ in schedule]
    if steps[0] != 0:
        raise UserError(f"{flag}: the first pair must start at step 0, not {steps[0]}")
    if any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
        raise UserError(f"{flag}: the steps must be strictly ascending, got {', '.join(map(str, steps))}")
    if steps[-1] >= max_steps:
        raise UserError(f"{flag}: step {steps[-1]} is not below --max_steps {max_steps}, so it would never train")
    for _, size in schedule:
        if size <= 0 or seq_len % size:
            raise UserError(f"{flag}: block size {size} must be positive and divide --seq_len {seq_len}")
    return schedule


def wsd_schedule(max_steps: int, seq_len: int, block_size: int) -> BlockSizeSchedule:
    """LLaDA 2.0's warmup-stable-decay of the block size, over `max_steps` steps:

        warm-up   steps 0 .. W-1, W = max_steps // 10   the sizes of WSD_WARMUP that divide seq_len
                                                        and are below it, in W / (their count) steps each
        stable    steps W .. D-1                        seq_len (one block: plain masked diffusion)
        decay     steps D .. max_steps - 1              block_size, the size the model samples with;
                  D = max_steps - max(1, max_steps // 10)   at least the last step

    e.g. max_steps 1000, seq_len 128, block_size 32: "0:1,25:4,50:32,75:64,100:128,900:32". A phase
    with no step (a short run) is left out: max_steps 3 gives "0:128,2:32". Equal sizes in a row
    merge into the first (block_size = seq_len: no decay).
    """
    decay = max_steps - max(1, max_steps // 10)
    warmup = min(max_steps // 10, decay)
    warm = [size for size in WSD_WARMUP if size < seq_len and seq_len % size == 0]
    pairs = [(i * warmup // len(warm), size) for i, size in enumerate(warm)] + [(warmup, seq_len), (decay, block_size)]
    at_step = dict(pairs)  # a step named twice keeps its last size (a phase of no steps is dropped)
    merged: list[tuple[int, int]] = []
    for step, size in at_step.items():
        if not merged or merged[-1][1] != size:
            merged.append((step, size))
    return tuple(merged)


def block_size_at(schedule: BlockSizeSchedule, step: int) -> int:
    """The block size of optimizer step `step` (0-based): that of the last pair at or before it."""
    return schedule[bisect.bisect_right([s for s, _ in schedule], step) - 1][1]


def annealed_mask(L: int, step: int, anneal_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """The attention mask of step `step` of `anneal_steps`, bool (1, 1, L, L), True where query i
    (row) sees key j: every key at or before the query, and each key after it with probability
    step / anneal_steps, one Bernoulli draw per (query, key) pair from `generator`, the same
    pattern for every row of the batch (as DiffuLLaMA's `get_anneal_attn_mask`). Step 0 is exactly
    causal; from step anneal_steps on, every key is visible (nothing is drawn).
    """
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    ratio = step / anneal_steps if anneal_steps > 0 else 1.0
    if ratio >= 1:
        return torch.ones(1, 1, L, L, dtype=torch.bool)
    return (causal | (torch.rand(L, L, generator=generator) < ratio))[None, None]


def attending(model: LogitsFn, visible: Tensor) -> LogitsFn:
    """`model` with every call's attention limited to `visible` (a boolean 4-D mask, (B|1, 1, T, T)),
    and to the call's own attention_mask too when it gives one (a document mask)."""

    def run(input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        return model(input_ids, attention_mask=visible if attention_mask is None else attention_mask & visible,
                     **kwargs)

    return run
