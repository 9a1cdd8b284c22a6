"""The transfer schedule, even and uneven, inside denoise."""

from __future__ import annotations

import torch

from llada.sampling.schedule import num_transfer_tokens


def test_transfer_schedule():
    counts = torch.tensor([16, 7, 0, 3])
    q = num_transfer_tokens(counts, 4)
    assert q.sum(-1).tolist() == counts.tolist()
    assert q[1].tolist() == [2, 2, 2, 1] and q[3].tolist() == [1, 1, 1, 0]
