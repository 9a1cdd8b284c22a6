"""A stage's data as a run trains on it: rows, batches, their order and the noise generators.

`TrainingData` is what an objective (llada.training.objectives) asks of a stage: `load()` reads the
sources (llada.data: the built-in world, files, the Hub) before a tokenizer exists,
`tokenizer_texts()` is what a fresh tokenizer is trained on, `prepare(tokenizer)` renders the rows
(`train`, `eval`), and `batch(indices)` stacks rows into a dict holding at least `input_ids` (B, L).

    stage     rows (TrainingData)   a batch
    pretrain  PackedText            (B, seq_len) blocks of EOS-joined documents; 1% of steps cropped;
                                    with document_mask also their document_ids (llada.documents)
    sft       Conversations         rendered with the chat template, EOS-padded, with response_mask

Reproducibility is by construction: the data order of epoch e is a permutation seeded by (seed, e)
(`BatchPlan`), and the noise of optimizer step s is drawn from a generator seeded by (seed, s)
(`step_generator`) for the whole global batch, each process keeping its rows. So a run resumed
from its last checkpoint retraces the same loss curve, and 2 processes compute what 1 process does
with the same global batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import Tensor

from llada import diffusion
from llada.data.pretrain import load_texts, pack, pieces
from llada.data.sft import SFTCollator, learnable, load_conversations, render_all
from llada.documents import document_ids
from llada.errors import DataError, UserError
from llada.training.config import TrainConfig

logger = logging.getLogger(__name__)

Batch = dict[str, Tensor]
TOKENIZER_PIECE_CHARS = 1 << 16
"""The longest text a fresh tokenizer's trainer is handed at once (it needs many times a text's size)."""


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

    def tokenizer_texts(self) -> Iterable[str]:
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
    (`llada.data.pretrain.pack`); a batch is (B, seq_len) `input_ids` (with cfg.document_mask
    also their `document_ids`, a new document after each EOS), and a training batch is cropped to
    a random length with probability `variable_length_prob` (LLaDA: 1%)."""

    def load(self) -> None:
        cfg = self.cfg
        self.train_texts = load_texts(cfg.data, split="train", seed=cfg.seed, world=cfg.world)
        self.eval_texts = load_texts(cfg.data, split="validation", seed=cfg.seed, world=cfg.world)

    def tokenizer_texts(self) -> Iterator[str]:
        # a long document in pieces cut where words start: the same words to count, in bounded memory
        for text in self.train_texts.select(range(min(len(self.train_texts), 200_000)))["text"]:
            yield from pieces(text, TOKENIZER_PIECE_CHARS)

    def prepare(self, tokenizer: Any, main_first: Callable[[], AbstractContextManager] = nullcontext) -> None:
        L = self.cfg.seq_len
        self.eos_id = tokenizer.eos_token_id
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
        batch = {"input_ids": rows[torch.tensor(indices)]}
        if self.cfg.document_mask:
            batch["document_ids"] = document_ids(batch["input_ids"], self.eos_id)
        return batch

    def crop(self, batch: Batch, generator: torch.Generator) -> Batch:
        # one decision per step for the whole global batch, so every process crops alike
        length = diffusion.crop_length(self.cfg.seq_len, self.cfg.variable_length_prob, generator)
        return {name: rows[:, :length] for name, rows in batch.items()}  # input_ids (and document_ids)


class Conversations(TrainingData):
    """SFT rows: chat conversations rendered with the tokenizer's template plus EOS
    (`llada.data.sft.render_conversation`); a batch is EOS-padded by `SFTCollator` to `input_ids`
    and `response_mask` (B, L), the response (assistant turns and EOS padding) being what is learned.
    `multiple_of`: every batch's length is a multiple of it (block diffusion: whole blocks)."""

    def __init__(self, cfg: TrainConfig, multiple_of: int = 1):
        super().__init__(cfg)
        self.multiple_of = multiple_of

    def load(self) -> None:
        cfg = self.cfg
        self.train_conversations = load_conversations(cfg.data, split="train", seed=cfg.seed, world=cfg.world)
        self.eval_conversations = load_conversations(cfg.data, split="validation", seed=cfg.seed, world=cfg.world)

    def tokenizer_texts(self) -> Iterator[str]:
        for c in self.train_conversations:
            yield from pieces("\n".join(m["content"] for m in c), TOKENIZER_PIECE_CHARS)

    def prepare(self, tokenizer: Any, main_first: Callable[[], AbstractContextManager] = nullcontext) -> None:
        cfg = self.cfg
        # rendered only as far as seq_len tokens reach: the collator cuts there
        render = partial(render_all, tokenizer, max_tokens=cfg.seq_len, chat=cfg.chat_template)
        self.train = self._learnable(render(self.train_conversations), "training")
        self.eval = self._learnable(render(self.eval_conversations), "held-out")
        self.collate = SFTCollator(tokenizer.eos_token_id, cfg.seq_len, cfg.truncation, cfg.padding, self.multiple_of)
        if not self.eval:
            logger.warning("there are no held-out conversations, so this run reports no held-out loss")

    def _learnable(self, rows: list[dict[str, list]], split: str) -> list[dict[str, list]]:
        """`rows` less those with no response token within seq_len (a prompt that fills it would train
        at loss 0); refused when none remain, or when --truncation error meets a longer one."""
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


def _describe(tokenizer: Any, texts: Any) -> str:
    """'N document(s), T tokens': the size of a split as packing sees it (with BOS and EOS)."""
    n = len(texts)
    ids = tokenizer(list(texts["text"]), add_special_tokens=False)["input_ids"] if n else []
    per_doc = 1 + (tokenizer.bos_token_id is not None)
    return f"{n} document(s), {sum(len(x) + per_doc for x in ids)} tokens"


# ------------------------------------------------------------------------------- order and noise


class BatchPlan:
    """Which examples form each micro-batch: a deterministic function of (seed, step).

    The stream of example indices is the concatenation of per-epoch permutations seeded by
    (seed, epoch); optimizer step s consumes positions [s*G, (s+1)*G) with G the global batch
    (batch_size * grad_accum * processes); process r's micro-batch m takes its own slice.
    """

    def __init__(self, n_examples: int, global_batch: int, seed: int):
        if n_examples == 0:
            raise UserError("the training set is empty after packing/rendering; provide more data or lower --seq_len")
        self.n, self.global_batch, self.seed = n_examples, global_batch, seed
        self._perm: dict[int, torch.Tensor] = {}

    def _epoch(self, e: int) -> torch.Tensor:
        if e not in self._perm:
            self._perm = {e: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + e))}
        return self._perm[e]

    def global_indices(self, step: int) -> list[int]:
        start = step * self.global_batch
        out = []
        for pos in range(start, start + self.global_batch):
            out.append(int(self._epoch(pos // self.n)[pos % self.n]))
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.n


def step_generator(seed: int, step: int, micro: int = 0, salt: int = 0) -> torch.Generator:
    """The noise generator of optimizer step `step`, micro-batch `micro`: a pure function of its inputs."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1_009 + micro * 17 + salt) % (2**63))


@contextmanager
def datasets_progress(shown: bool) -> Iterator[None]:
    """--progress false also silences the datasets library's bars (loading, tokenizing) while the
    data is prepared; its setting is restored after."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    if not shown:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was and not shown:
            datasets.enable_progress_bars()
