"""Document masks on packed rows (--document_mask, llada.documents): a packed row trains as its
documents would alone, for Eq. 3, the autoregressive baseline and block diffusion, each checked
against a slow loop that runs every document by itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support.block_diffusion import documents_of, per_block_logits
from support.train import _cfg

from llada.block_diffusion import block_diffusion_logits
from llada.documents import document_ids, document_positions, within_documents
from llada.model import LLaDAModel
from llada.training.config import TrainConfig
from llada.training.objectives.block_diffusion import PretrainBlockDiffusion
from llada.training.objectives.masked_diffusion import PretrainDiffusion
from llada.training.objectives.next_token import PretrainAR
from llada.training.trainer import Trainer

EOS, MASK = 62, 63


def _rows() -> torch.Tensor:
    """Two packed rows of 16: documents of 5, 7 and 4 tokens (the last cut by the row's end), and
    one of 1 token then one of 15 (a row starting with the EOS of a document cut before it)."""
    rows = torch.randint(0, 60, (2, 16))
    rows[0, 4] = rows[0, 11] = EOS
    rows[1, 0] = EOS
    return rows


def _spans(row: torch.Tensor) -> list[slice]:
    docs, _ = documents_of(row.tolist(), EOS)
    return [slice(docs.index(d), len(docs) - docs[::-1].index(d)) for d in sorted(set(docs))]


def _objective(kind, **kw):
    return kind(TrainConfig(model="debug", document_mask=True, **kw))


def test_document_ids_and_positions_are_those_counted_token_by_token():
    rows = torch.randint(0, 8, (4, 40))
    rows[rows == 7] = EOS
    ids = document_ids(rows, EOS)
    for b in range(4):
        docs, positions = documents_of(rows[b].tolist(), EOS)
        assert ids[b].tolist() == docs and document_positions(ids)[b].tolist() == positions


def test_eq3_on_a_packed_row_is_each_document_alone(config):
    model = LLaDAModel(config).eval()
    x0 = _rows()
    batch = {"input_ids": x0, "document_ids": document_ids(x0, EOS)}
    objective = _objective(PretrainDiffusion, eps=0.3)
    noised = objective.noise(batch, MASK, torch.Generator().manual_seed(0))
    with torch.no_grad():
        packed = within_documents(model, batch["document_ids"])(noised.noisy_ids)
        total = 0.0
        for b in range(2):
            for span in _spans(x0[b]):
                alone = model(noised.noisy_ids[b:b + 1, span])[0]  # positions 0.. of the document
                assert torch.allclose(packed[b, span], alone, atol=1e-5)
                ce = F.cross_entropy(alone, x0[b, span], reduction="none")
                total += float((ce[noised.masked[b, span]] / noised.t[b]).sum())
        loss = objective.loss(model, batch, noised, slice(0, 2), "cpu").loss
    assert noised.masked.any() and loss.item() == pytest.approx(total / x0.numel(), rel=1e-5)


def test_ar_on_a_packed_row_is_each_document_alone(config):
    causal = LLaDAModel(config.replace(causal=True)).eval()
    x0 = _rows()
    batch = {"input_ids": x0, "document_ids": document_ids(x0, EOS)}
    with torch.no_grad():
        packed = within_documents(causal, batch["document_ids"])(x0)
        total, count = 0.0, 0
        for b in range(2):
            for span in _spans(x0[b]):
                alone = causal(x0[b:b + 1, span])[0]
                assert torch.allclose(packed[b, span], alone, atol=1e-5)
                total += float(F.cross_entropy(alone[:-1], x0[b, span][1:], reduction="sum"))
                count += span.stop - span.start - 1  # a document's first token has nothing before it
        out = _objective(PretrainAR, objective="ar").loss(causal, batch, None, slice(0, 2), "cpu")
    assert int(out.num_tokens) == count and out.loss.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("shifted", [False, True])
def test_block_diffusion_on_a_packed_row_is_each_document_alone(config, shifted):
    """Blocks counted from each document's first token, one t each; the logits and the loss those of
    every document run alone, block by block (`per_block_logits`), with shifted prediction too (a
    document's first token then takes its own state, as position 0 of a run alone does)."""
    model = LLaDAModel(config.replace(shifted_prediction=shifted)).eval()
    x0 = _rows()
    batch = {"input_ids": x0, "document_ids": document_ids(x0, EOS)}
    objective = _objective(PretrainBlockDiffusion, block_size=4, seq_len=16, eps=0.3)
    objective.check_model(model.config)
    noised = objective.noise(batch, MASK, torch.Generator().manual_seed(0))
    with torch.no_grad():
        packed = block_diffusion_logits(model, noised.noisy_ids, x0, 4, batch["document_ids"], shifted=shifted)
        total = 0.0
        for b in range(2):
            _, positions = documents_of(x0[b].tolist(), EOS)
            for span in _spans(x0[b]):
                t = noised.t[b, span]
                first_of_block = [i for i in range(len(t)) if positions[span.start + i] % 4 == 0]
                for i in range(len(t)):  # one t per block of the document
                    assert t[i] == t[max(f for f in first_of_block if f <= i)]
                alone = per_block_logits(model, x0[b, span], noised.noisy_ids[b, span], 4)
                assert torch.allclose(packed[b, span], alone, atol=1e-5)
                ce = F.cross_entropy(alone, x0[b, span], reduction="none")
                total += float((ce / t)[noised.masked[b, span]].sum())
        loss = objective.loss(model, batch, noised, slice(0, 2), "cpu").loss
    assert noised.masked.any() and loss.item() == pytest.approx(total / x0.numel(), rel=1e-5)


def test_packed_batches_carry_document_ids_aligned_after_a_crop(tmp_path, corpus):
    trainer = Trainer(_cfg(tmp_path, corpus, document_mask=True, variable_length_prob=1.0, max_steps=2))
    eos = trainer.tokenizer.eos_token_id
    for step in range(3):
        batch = trainer._global_batch(step)
        assert batch["document_ids"].shape == batch["input_ids"].shape
        for row, docs in zip(batch["input_ids"], batch["document_ids"], strict=True):
            assert docs.tolist() == documents_of(row.tolist(), eos)[0]
    assert trainer.fit().is_dir()
