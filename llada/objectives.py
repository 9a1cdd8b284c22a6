"""Training objectives: what the Trainer asks of a (stage, objective) pair, and nothing else.

    stage × objective     class               data rows (TrainingData)                 loss
    pretrain × diffusion  PretrainDiffusion   PackedText: seq_len blocks, 1% cropped   Eq. 3
    sft × diffusion       SFTDiffusion        Conversations: rendered, EOS-padded      Eq. 5 (prompt never masked)
    pretrain × ar         PretrainAR          PackedText                               next-token CE
    sft × ar              SFTAR               Conversations                            next-token CE on the response

An `Objective` owns its `TrainingData` (how the stage's data is loaded, what the tokenizer is
trained on, how rows are rendered and batched) and adds the two steps that depend on the
objective: how a global batch is noised and the loss of a slice of its rows. The Trainer looks
one up once, `objective_for(cfg)`, and never branches on the stage or objective itself:

    objective = objective_for(cfg)            # e.g. SFTDiffusion(cfg)
    objective.data.load()                     # texts or conversations, train and validation
    objective.data.prepare(tokenizer)         # rows
    batch = objective.data.crop(objective.data.batch(indices), crop_generator)
    noised = objective.noise(batch, mask_id, generator)        # the whole global batch at once
    out = objective.loss(model, batch, noised, rows, device)   # this process's rows

Randomness comes only from the generators passed in, so the Trainer decides how every draw is
seeded (and a run is reproducible whatever the number of processes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from llada import diffusion
from llada.errors import DataError

if TYPE_CHECKING:
    from llada.train import TrainConfig

logger = logging.getLogger(__name__)

Batch = dict[str, Tensor]


# -------------------------------------------------------------------------------------------- data


class TrainingData:
    """A stage's data: train and validation sources, the rows rendered from them, their batches.

    `load()` reads the sources (before a tokenizer exists), `tokenizer_texts()` is what a fresh
    tokenizer is trained on, `prepare(tokenizer)` renders the rows (`train`, `eval`), and
    `batch(indices)` stacks rows into a dict holding at least `input_ids` (B, L).
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.train: Any = None
        self.eval: Any = None

    def load(self) -> None:
        raise NotImplementedError

    def tokenizer_texts(self) -> list[str]:
        raise NotImplementedError

    def prepare(self, tokenizer: Any, main_first: Callable[[], AbstractContextManager] = nullcontext) -> None:
        """Render `train` and `eval` rows; `main_first` runs cached work on the main process first."""
        raise NotImplementedError

    def batch(self, indices: list[int], split: str = "train") -> Batch:
        raise NotImplementedError

    def crop(self, batch: Batch, generator: torch.Generator) -> Batch:
        """A training batch as the step trains on it (unchanged unless the stage crops)."""
        return batch

    def learned(self, batch: Batch) -> Tensor | None:
        """(B, L) bool: the positions the model learns to predict (None: all of them)."""
        return None

    def report(self) -> None:
        """Log what the run should know about its data when training ends."""

    @property
    def has_eval(self) -> bool:
        """Whether there are held-out rows to report a held-out loss on."""
        return self.eval is not None and len(self.eval) > 0


class PackedText(TrainingData):
    """Pretraining rows: documents tokenised, joined with EOS and cut into seq_len blocks
    (`llada.data.pretrain.pack`); a batch is (B, seq_len) `input_ids`, and a training batch is
    cropped to a random length with probability `variable_length_prob` (LLaDA: 1%)."""

    def load(self) -> None:
        from llada.data.pretrain import load_texts

        cfg = self.cfg
        self.train_texts = load_texts(cfg.data, split="train", seed=cfg.seed, world=cfg.world)
        self.eval_texts = load_texts(cfg.data, split="validation", seed=cfg.seed, world=cfg.world)

    def tokenizer_texts(self) -> list[str]:
        return list(self.train_texts.select(range(min(len(self.train_texts), 200_000)))["text"])

    def prepare(self, tokenizer: Any, main_first: Callable[[], AbstractContextManager] = nullcontext) -> None:
        from llada.data.pretrain import pack

        L = self.cfg.seq_len
        with main_first():
            self.train = torch.tensor(pack(tokenizer, self.train_texts, L)["input_ids"], dtype=torch.long).view(-1, L)
            self.eval = torch.tensor(pack(tokenizer, self.eval_texts, L)["input_ids"], dtype=torch.long).view(-1, L)
        # a split shorter than one block packs to no rows: too little to train on, or to hold out
        if len(self.train) == 0:
            raise DataError(f"the training text is too short for one --seq_len {L} block: "
                            f"{_describe(tokenizer, self.train_texts)}, and at least {L} tokens are needed. "
                            "Add data or lower --seq_len")
        if len(self.eval) == 0:
            logger.warning("the held-out split (%s) is shorter than one --seq_len %d block, so this run "
                           "reports no held-out loss; add data or lower --seq_len to get one",
                           _describe(tokenizer, self.eval_texts), L)

    def batch(self, indices: list[int], split: str = "train") -> Batch:
        rows = self.train if split == "train" else self.eval
        return {"input_ids": rows[torch.tensor(indices)]}

    def crop(self, batch: Batch, generator: torch.Generator) -> Batch:
        # one decision per step for the whole global batch, so every process crops alike
        length = diffusion.crop_length(self.cfg.seq_len, self.cfg.variable_length_prob, generator)
        return {**batch, "input_ids": batch["input_ids"][:, :length]}


class Conversations(TrainingData):
    """SFT rows: chat conversations rendered with the tokenizer's template plus EOS
    (`llada.data.sft.render_conversation`); a batch is EOS-padded by `SFTCollator` to `input_ids`
    and `response_mask` (B, L), the response (assistant turns and EOS padding) being what is learned."""

    def load(self) -> None:
        from llada.data.sft import load_conversations

        cfg = self.cfg
        self.train_conversations = load_conversations(cfg.data, split="train", seed=cfg.seed, world=cfg.world)
        self.eval_conversations = load_conversations(cfg.data, split="validation", seed=cfg.seed, world=cfg.world)

    def tokenizer_texts(self) -> list[str]:
        return ["\n".join(m["content"] for m in c) for c in self.train_conversations]

    def prepare(self, tokenizer: Any, main_first: Callable[[], AbstractContextManager] = nullcontext) -> None:
        from llada.data.sft import SFTCollator, render_all

        cfg = self.cfg
        # rendered only as far as seq_len tokens reach: the collator cuts there
        self.train = self._learnable(render_all(tokenizer, self.train_conversations, cfg.seq_len), "training")
        self.eval = self._learnable(render_all(tokenizer, self.eval_conversations, cfg.seq_len), "held-out")
        self.collate = SFTCollator(tokenizer.eos_token_id, cfg.seq_len, cfg.truncation, cfg.padding)
        if not self.eval:
            logger.warning("there are no held-out conversations, so this run reports no held-out loss")

    def _learnable(self, rows: list[dict[str, list]], split: str) -> list[dict[str, list]]:
        """`rows` less those with no response token within seq_len (a prompt that fills it would train
        at loss 0); refused when none remain, or when --truncation error meets a longer one."""
        from llada.data.sft import learnable

        L = self.cfg.seq_len
        longer = [len(r["input_ids"]) for r in rows if len(r["input_ids"]) > L]
        if longer and self.cfg.truncation == "error":
            raise DataError(f"{len(longer)} {split} conversation(s) are longer than --seq_len {L} (the longest has "
                            f"{max(longer)} tokens); raise --seq_len or set --truncation truncate")
        kept = [r for r in rows if learnable(r, L)]
        if rows and not kept and split == "training":
            shortest = min(r["response_mask"].index(True) for r in rows)
            raise DataError(f"every {split} conversation's prompt fills --seq_len {L} (the shortest prompt has "
                            f"{shortest} tokens), so no response token is left to learn; raise --seq_len")
        if len(kept) < len(rows):
            logger.warning("dropped %d of %d %s conversation(s) whose prompt fills --seq_len %d, leaving no "
                           "response token to learn; raise --seq_len to keep them", len(rows) - len(kept),
                           len(rows), split, L)
        return kept

    def batch(self, indices: list[int], split: str = "train") -> Batch:
        rows = self.train if split == "train" else self.eval
        return self.collate([rows[i] for i in indices])

    def learned(self, batch: Batch) -> Tensor | None:
        return batch["response_mask"].bool()

    def report(self) -> None:
        if self.collate.truncated:
            logger.warning("%d conversation(s) were truncated to seq_len=%d", self.collate.truncated,
                           self.cfg.seq_len)


# -------------------------------------------------------------------------------------- objectives


class Objective:
    """A training objective on a stage's data: how a global batch is noised, and a slice's loss.

    `causal` is the attention the model must have (True for the autoregressive baseline);
    `data` is the stage's `TrainingData`, built from the same config.
    """

    data_class: ClassVar[type[TrainingData]]
    causal: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.data = self.data_class(cfg)

    def noise(self, batch: Batch, mask_id: int, generator: torch.Generator) -> diffusion.NoisedBatch | None:
        """The forward process applied to the whole global batch (None: nothing is noised)."""
        return None

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        """The loss of rows `rows` of the global batch (one process's share of a micro-batch)."""
        raise NotImplementedError

    def _targets(self, batch: Batch, rows: slice, device: torch.device | str) -> tuple[Tensor, Tensor | None]:
        learned = self.data.learned(batch)
        return batch["input_ids"][rows].to(device), None if learned is None else learned[rows].to(device)


class MaskedDiffusion(Objective):
    """The masked diffusion objective: every learned token of x0 is masked with its sequence's
    probability t = (1 - eps) u + eps (antithetic u across the global batch when cfg.antithetic);
    the mask predictor sees x_t and is scored on the masked tokens, weighted by 1/t."""

    def noise(self, batch: Batch, mask_id: int, generator: torch.Generator) -> diffusion.NoisedBatch:
        return diffusion.forward_process(batch["input_ids"], mask_id, maskable=self.data.learned(batch),
                                         eps=self.cfg.eps, antithetic=self.cfg.antithetic, generator=generator)

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        assert noised is not None, "the diffusion loss needs the noised batch"
        x0, learned = self._targets(batch, rows, device)
        local = diffusion.NoisedBatch(*(x[rows].to(device) for x in noised))
        logits = model(local.noisy_ids)  # (B, L, V)
        return self._from_logits(logits, x0, local, learned)

    def _from_logits(self, logits: Tensor, x0: Tensor, noised: diffusion.NoisedBatch,
                     learned: Tensor | None) -> diffusion.LossOutput:
        raise NotImplementedError


class PretrainDiffusion(MaskedDiffusion):
    """Eq. 3 on packed text: Σ_masked CE / t over the micro-batch, divided by B · L."""

    data_class = PackedText

    def _from_logits(self, logits: Tensor, x0: Tensor, noised: diffusion.NoisedBatch,
                     learned: Tensor | None) -> diffusion.LossOutput:
        return diffusion.pretrain_loss_from_logits(logits, x0, noised)


class SFTDiffusion(MaskedDiffusion):
    """Eq. 5 on conversations: only response tokens are masked (the prompt stays clean); per
    sequence Σ_masked CE / t divided by its answer length, then the mean over the micro-batch."""

    data_class = Conversations

    def _from_logits(self, logits: Tensor, x0: Tensor, noised: diffusion.NoisedBatch,
                     learned: Tensor | None) -> diffusion.LossOutput:
        assert learned is not None
        return diffusion.sft_loss_from_logits(logits, x0, noised, learned)


class NextToken(Objective):
    """The autoregressive baseline: the same model with a causal mask, next-token cross-entropy
    on the clean text (no noise), averaged over the predicted tokens that are learned."""

    causal = True

    def loss(self, model: Callable[..., Tensor], batch: Batch, noised: diffusion.NoisedBatch | None,
             rows: slice, device: torch.device | str) -> diffusion.LossOutput:
        x0, learned = self._targets(batch, rows, device)
        return diffusion.ar_loss(model, x0, loss_mask=learned)


class PretrainAR(NextToken):
    """Next-token pretraining on packed text: every token after the first is a target."""

    data_class = PackedText


class SFTAR(NextToken):
    """Next-token SFT on conversations: only response tokens are targets."""

    data_class = Conversations


def _describe(tokenizer: Any, texts: Any) -> str:
    """'N document(s), T tokens': the size of a split as packing sees it (with BOS and EOS)."""
    n = len(texts)
    ids = tokenizer(list(texts["text"]), add_special_tokens=False)["input_ids"] if n else []
    per_doc = 1 + (tokenizer.bos_token_id is not None)
    return f"{n} document(s), {sum(len(x) + per_doc for x in ids)} tokens"


OBJECTIVES: dict[tuple[str, str], type[Objective]] = {
    ("pretrain", "diffusion"): PretrainDiffusion,
    ("sft", "diffusion"): SFTDiffusion,
    ("pretrain", "ar"): PretrainAR,
    ("sft", "ar"): SFTAR,
}
"""(TrainConfig.stage, TrainConfig.objective) -> the Objective that trains it."""


def objective_for(cfg: TrainConfig) -> Objective:
    """The objective (with its data) that `cfg.stage` and `cfg.objective` name."""
    try:
        kind = OBJECTIVES[(cfg.stage, cfg.objective)]
    except KeyError:
        from llada.errors import UserError

        raise UserError(f"no objective for --stage {cfg.stage} --objective {cfg.objective}; choose from "
                        + ", ".join(f"{s}/{o}" for s, o in OBJECTIVES)) from None
    return kind(cfg)
