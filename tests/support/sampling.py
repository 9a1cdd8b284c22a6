"""Token ids and a fixed-logits model shared by the sampling tests."""

from __future__ import annotations

import torch
from support.tiny import tiny_config

MASK, EOS, EOT = 63, 62, 60


class FixedLogits(torch.nn.Module):
    """A context-free stand-in for the model: the same logits (L, V) whatever the input."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table, self.config = table, tiny_config()

    def forward(self, ids, attention_mask=None, output_positions=None, **_):
        out = self.table[: ids.shape[1]].expand(ids.shape[0], -1, -1)
        return out if output_positions is None else out[:, output_positions]
