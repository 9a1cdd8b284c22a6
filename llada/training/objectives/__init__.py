"""Training objectives: the registry of what trains each (stage, objective) pair.

    stage × objective           class                   data rows (llada.training.data)          loss
    pretrain × diffusion        PretrainDiffusion       PackedText: seq_len blocks, 1% cropped   Eq. 3
    sft × diffusion             SFTDiffusion            Conversations: rendered, EOS-padded      Eq. 5 (prompt never masked)
    pretrain × ar               PretrainAR              PackedText                               next-token CE
    sft × ar                    SFTAR                   Conversations                            next-token CE on the response
    pretrain × block_diffusion  PretrainBlockDiffusion  PackedText                               Eq. 3 with one t per block
    sft × block_diffusion       SFTBlockDiffusion       Conversations, padded to whole blocks    Eq. 5 with one t per block

An `Objective` (base.py) owns its stage's `TrainingData` and adds the two steps that depend on the
objective: how a global batch is noised and the loss of a slice of its rows. Each algorithm is a
file over that base (masked_diffusion.py, next_token.py, block_diffusion.py). The Trainer looks one up once,
`objective_for(cfg)`, and never branches on the stage or objective itself: a new objective is a new
file, a line in `OBJECTIVES` and its name among `TrainConfig.objective`'s choices.
"""

from __future__ import annotations

from llada.errors import UserError
from llada.training.config import TrainConfig
from llada.training.objectives.base import Objective
from llada.training.objectives.block_diffusion import PretrainBlockDiffusion, SFTBlockDiffusion
from llada.training.objectives.masked_diffusion import PretrainDiffusion, SFTDiffusion
from llada.training.objectives.next_token import SFTAR, PretrainAR

OBJECTIVES: dict[tuple[str, str], type[Objective]] = {
    ("pretrain", "diffusion"): PretrainDiffusion,
    ("sft", "diffusion"): SFTDiffusion,
    ("pretrain", "ar"): PretrainAR,
    ("sft", "ar"): SFTAR,
    ("pretrain", "block_diffusion"): PretrainBlockDiffusion,
    ("sft", "block_diffusion"): SFTBlockDiffusion,
}
"""(TrainConfig.stage, TrainConfig.objective) -> the Objective that trains it."""


def objective_for(cfg: TrainConfig) -> Objective:
    """The objective (with its data) that `cfg.stage` and `cfg.objective` name; a UserError for a
    pair no objective trains."""
    try:
        kind = OBJECTIVES[(cfg.stage, cfg.objective)]
    except KeyError:
        raise UserError(f"no objective for --stage {cfg.stage} --objective {cfg.objective}; choose from "
                        + ", ".join(f"{s}/{o}" for s, o in OBJECTIVES)) from None
    return kind(cfg)
