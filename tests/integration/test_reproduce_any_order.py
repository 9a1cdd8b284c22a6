"""`llada reproduce any-order`'s filling against a slow obvious loop: each held-out sum alone (no
batch, no padding), the diffusion model unmasking its most confident masked position one at a
time, the AR model appending its most likely next token; and the claim end to end at the test size."""

from __future__ import annotations

import json

import pytest
import torch

import llada
from llada.commands.reproduce import reproduce
from llada.recipe import RECIPES, train_task_recipe
from llada.reproduce.any_order import BLANKS, blanked, fill, shown
from llada.tasks import TaskItem, parse_source
from llada.tokenizer import encode


@torch.no_grad()
def _slow_fill(bundle, item: TaskItem, blank: str) -> str:
    model, tok = bundle.model, bundle.tokenizer
    before, answer, after = blanked(item, blank)
    head = [tok.bos_token_id] + encode(tok, before)
    n = len(encode(tok, answer))
    if model.config.kind == "autoregressive":
        ids = list(head)
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1, :model.config.vocab_size].argmax()))
        return tok.decode(ids[len(head):], skip_special_tokens=True).strip()
    mask = model.config.mask_token_id
    ids = torch.tensor([head + [mask] * n + encode(tok, after) + [tok.eos_token_id]])
    for _ in range(n):
        probs = model(ids)[0, :, :model.config.vocab_size].float().softmax(-1)
        conf, pred = probs.max(-1)
        conf[ids[0] != mask] = -1.0
        at = int(conf.argmax())
        ids[0, at] = pred[at]
    return tok.decode(ids[0, len(head):len(head) + n].tolist(), skip_special_tokens=True).strip()


@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_fill_equals_a_slow_loop_one_sum_at_a_time(tmp_path, objective):
    recipe = RECIPES["test"].any_order
    bundle = llada.load(train_task_recipe(recipe, tmp_path, objective=objective, progress=False))
    torch.manual_seed(0)
    with torch.no_grad():  # weights far from a 10-step model's, so that every answer depends on its sum,
        for p in bundle.model.parameters():  # and a head that can only prefer a digit (logit 0 elsewhere)
            p.normal_(std=0.2)
        digits = [bundle.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
        head = bundle.model.transformer.ff_out.weight
        keep = head[digits].clone()
        head.zero_()
        head[digits] = keep
    task, _ = parse_source(recipe.source)
    items = task.items("test", 16, 0)
    assert len({len(it.prompt + it.answer) for it in items}) > 1  # sums of different lengths: left padded
    for blank in BLANKS:
        filled = fill(bundle, items, blank, batch_size=5)
        assert filled == [_slow_fill(bundle, it, blank) for it in items]
        assert all(f.isdigit() for f in filled)
        if not (objective == "ar" and blank == "first operand"):  # AR sees only BOS there: one answer for all
            assert len(set(filled)) > 1


def test_blanks_of_a_sum():
    item = TaskItem("37+45=", "82")
    assert [shown(item, b) for b in BLANKS] == ["__+45=82", "37+__=82", "37+45=__"]
    assert blanked(item, "second operand") == ("37+", "45", "=82")


def test_reproduce_any_order_scores_every_blank_on_the_same_held_out_sums(tmp_path):
    [out] = reproduce("any-order", out_dir=str(tmp_path), size="test", progress=False)
    recipe = RECIPES["test"].any_order
    res = json.loads((out / "results.json").read_text())["results"]
    for kind in ("diffusion", "ar"):
        for blank in BLANKS:
            assert res[f"{kind}/{blank}"]["n"] == recipe.eval_items
    for blank in BLANKS:
        diff = res[f"diffusion-ar/{blank}"]["difference"]
        assert diff == pytest.approx(res[f"diffusion/{blank}"]["value"] - res[f"ar/{blank}"]["value"])
    trained = json.loads((tmp_path / "models" / "test-seed0-addition" / "ar-text" / "model" / "training_config.json")
                         .read_text())
    assert trained["stage"] == "pretrain" and trained["data"] == recipe.source and trained["objective"] == "ar"
