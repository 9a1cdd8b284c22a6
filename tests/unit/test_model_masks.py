"""`LLaDAModel.forward`'s 4-D attention masks: which keys each query sees, combined with the model's
own causal mask and with block_size, checked against the paths that existed before them."""

from __future__ import annotations

import pytest
import torch

from llada.model import LLaDAModel


@pytest.fixture
def models(config):
    """A bidirectional model and a causal copy of the same weights."""
    model = LLaDAModel(config).eval()
    causal = LLaDAModel(config.replace(causal=True)).eval()
    causal.load_state_dict(model.state_dict())
    return model, causal


def _ids(B=2, T=7):
    return torch.randint(0, 60, (B, T))


def test_a_padding_mask_as_4d_gives_the_same_logits(models):
    model, _ = models
    ids = _ids()
    pad = torch.ones(2, 7, dtype=torch.long)
    pad[0, :2] = 0  # left padding
    full = pad.bool()[:, None, None, :].expand(2, 1, 7, 7)
    with torch.no_grad():
        assert torch.allclose(model(ids, attention_mask=pad), model(ids, attention_mask=full), atol=1e-6)


def test_a_lower_triangular_4d_mask_is_the_causal_model(models):
    """(1, 1, T, T) broadcasts over the batch: a lower-triangular one makes the bidirectional model
    compute what its causal copy computes with no mask."""
    model, causal = models
    ids = _ids()
    tri = torch.ones(7, 7, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        assert torch.allclose(model(ids, attention_mask=tri), causal(ids), atol=1e-5)


def test_a_causal_model_never_sees_the_future_whatever_the_mask(models):
    _, causal = models
    ids = _ids()
    everything = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(causal(ids, attention_mask=everything), causal(ids), atol=1e-6)


def test_a_4d_mask_combines_with_block_size(models):
    model, _ = models
    ids = _ids()
    everything = torch.ones(1, 1, 7, 7, dtype=torch.bool)
    some = (torch.rand(2, 1, 7, 7) < 0.5) | torch.eye(7, dtype=torch.bool)  # each query sees itself at least
    with torch.no_grad():
        assert torch.allclose(model(ids, attention_mask=everything, block_size=2), model(ids, block_size=2), atol=1e-6)
        both = model(ids, attention_mask=some, block_size=2)
        assert torch.allclose(both, model(ids, attention_mask=some & _block_causal(7, 2)), atol=1e-6)


def _block_causal(T: int, block: int) -> torch.Tensor:
    """(T, T): query i sees key j when j's block is not after i's, a loop per pair."""
    return torch.tensor([[j // block <= i // block for j in range(T)] for i in range(T)])


@pytest.mark.parametrize("shape,dtype,message", [
    ((2, 1, 7, 8), torch.bool, r"attention_mask has shape \(2, 1, 7, 8\); expected \(batch or 1, 1, queries, keys\)"),
    ((3, 1, 7, 7), torch.bool, r"attention_mask has shape \(3, 1, 7, 7\)"),
    ((2, 2, 7, 7), torch.bool, r"attention_mask has shape \(2, 2, 7, 7\)"),
    ((2, 1, 7, 7), torch.float32, "a 4-D attention_mask must be boolean"),
    ((2, 8), torch.long, r"expected \(batch, keys attended\) = \(2, 7\), or a 4-D"),
])
def test_a_mask_of_another_shape_is_one_value_error(models, shape, dtype, message):
    model, _ = models
    with pytest.raises(ValueError, match=message) as e:
        model(_ids(), attention_mask=torch.ones(shape, dtype=dtype))
    assert len(str(e.value).splitlines()) == 1
