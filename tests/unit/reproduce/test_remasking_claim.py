"""The remasking claim's pieces: the step each answer position is unmasked at (a hand-made step
sequence and a fixed-logits model, against a hand count), the fill-order summary and the verdict rule
on made-up numbers (tests/integration/test_reproduce_runs.py runs the claim end to end)."""

from __future__ import annotations

import math

import pytest
import torch
from support.sampling import MASK, FixedLogits

from llada.reproduce.measure import unmask_steps
from llada.reproduce.remasking import fill_order, step_counts, verdict_of
from llada.sampling import SamplerOptions, StepState, core
from llada.tasks import TaskItem


def _state(prompt: int, moved: list[list[int]], step: int, final: bool = False) -> StepState:
    """A state whose response positions `moved` (per row) were unmasked at this step."""
    transferred = torch.zeros(len(moved), prompt + 3, dtype=torch.bool)
    for row, positions in enumerate(moved):
        transferred[row, [prompt + p for p in positions]] = True
    return StepState(torch.zeros_like(transferred, dtype=torch.long), transferred, 0, step, prompt, final=final)


def test_unmask_steps_counts_a_hand_made_step_sequence():
    # two rows, gen_length 3: row 0 fills 2, then 0 and 1 together; row 1 fills 1, 2, 0
    states = [_state(5, [[2], [1]], 0), _state(5, [[0, 1], [2]], 1), _state(5, [[], [0]], 2),
              _state(5, [[], []], 2, final=True)]
    assert unmask_steps(states).tolist() == [[2, 2, 1], [3, 1, 2]]
    assert unmask_steps(states[:1]).tolist() == [[0, 0, 1], [0, 1, 0]]  # 0: never unmasked
    with pytest.raises(ValueError, match="no sampler states"):
        unmask_steps([])


@torch.no_grad()
def test_unmask_steps_of_low_confidence_on_a_model_surest_of_the_last_position():
    # a context-free model: at response position i (0..3) the predicted token has logit 2 + i over
    # zeros, so low-confidence keeps the last position first, then the one before it, ...
    table = torch.zeros(6, 64)
    for i in range(4):
        table[2 + i, 10 + i] = 2.0 + i
    canvas = torch.tensor([[1, 2, MASK, MASK, MASK, MASK]] * 2)
    opts = SamplerOptions(gen_length=4, block_length=4, steps=4, remasking="low_confidence")
    assert unmask_steps(core.denoise(FixedLogits(table), canvas, opts, start=2)).tolist() == [[4, 3, 2, 1]] * 2
    # two tokens per step: the last two positions at step 1, the first two at step 2
    canvas[:, 2:] = MASK
    opts = opts.replace(steps=2)
    assert unmask_steps(core.denoise(FixedLogits(table), canvas, opts, start=2)).tolist() == [[2, 2, 1, 1]] * 2
    # random remasking: each row's positions are a permutation of the four steps
    canvas[:, 2:] = MASK
    got = unmask_steps(core.denoise(FixedLogits(table), canvas, opts.replace(steps=4, remasking="random"), start=2,
                                    generator=torch.Generator().manual_seed(0)))
    assert [sorted(row) for row in got.tolist()] == [[1, 2, 3, 4]] * 2


def test_fill_order_against_a_hand_count():
    items = [TaskItem("50+55=", "105"), TaskItem("1+2=", "3"), TaskItem("60+70=", "130"), TaskItem("10+20=", "30")]
    order = [[3, 2, 1, 4], [2, 1, 3, 4], [1, 3, 2, 4], [1, 2, 3, 4]]
    means, share, n = fill_order(order, items, 3)
    assert n == 2 and means == [2.0, 2.5, 1.5, 4.0]
    assert share == 0.5  # 105: units (step 1) before 3 and 2; 130: units (step 2) after the hundreds (step 1)
    means, share, n = fill_order(order, items, 2)
    assert (means, share, n) == ([1.0, 2.0, 3.0, 4.0], 0.0, 1)  # 30: the tens before the units
    means, share, n = fill_order(order, items, 4)
    assert n == 0 and all(math.isnan(x) for x in [*means, share])


def test_verdict_rule_on_made_up_numbers():
    # held only when every step count >= 2 clears two paired SE; steps = 1 (a control) is ignored
    assert verdict_of({1: (0.0, 0.0), 2: (0.10, 0.04), 4: (0.30, 0.05)})
    assert not verdict_of({1: (0.0, 0.0), 2: (0.08, 0.04), 4: (0.30, 0.05)})  # exactly 2 SE is not more
    assert not verdict_of({1: (0.0, 0.0), 2: (-0.10, 0.02), 4: (0.30, 0.05)})
    assert verdict_of({1: (-0.5, 0.01), 2: (0.2, 0.01)})
    assert not verdict_of({1: (0.5, 0.01)})  # nothing to judge
    assert step_counts(4) == [1, 2, 4] and step_counts(5) == [1, 2, 5] and step_counts(1) == [1]
