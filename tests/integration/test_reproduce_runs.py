"""`llada reproduce` and `llada quickstart` run at the test size."""

from __future__ import annotations

import json

from llada.commands.reproduce import reproduce
from llada.recipe import RECIPES
from llada.reproduce import CLAIMS


def test_reproduce_every_claim_at_the_test_size(tmp_path):
    written = reproduce("all", out_dir=str(tmp_path), size="test", progress=False)
    assert [p.name for p in written] == list(CLAIMS)
    for name in CLAIMS:
        out = tmp_path / name
        report = (out / "report.md").read_text()
        assert report.startswith(f"# `llada reproduce {name}`")
        assert "**Paper.**" in report and "**Ours.**" in report and "**Result:" in report
        assert (out / f"{name}.png").stat().st_size > 1000
        res = json.loads((out / "results.json").read_text())
        assert res["claim"] == name and res["size"] == "test" and res["recipe"]["world"]["n_people"] == 8
        # seconds of training answer nothing: no verdict, whatever the numbers
        assert res["held"] is None and res["status"] == "not measured at this size"
        assert "**Result: not measured at this size.**" in report
    rev = json.loads((tmp_path / "reversal" / "results.json").read_text())["results"]
    n_group_b = RECIPES["test"].world.n_people // 2
    for key in ("diffusion/fact_forward", "diffusion/fact_reverse", "ar/fact_forward", "ar/fact_reverse"):
        assert rev[key]["n"] == n_group_b and 0 <= rev[key]["value"] <= 1
    # the models were trained once and shared: the world's diffusion and AR models, and per task its
    # own; planning's sudoku diffusion model is semi-ar's one-EOS model
    models = tmp_path / "models"
    assert sorted(p.name for p in (models / "test-seed0").iterdir()) == ["ar", "diffusion"]
    assert sorted(p.name for p in models.iterdir()) == ["test-seed0", "test-seed0-addition", "test-seed0-countdown",
                                                       "test-seed0-sudoku"]
    assert sorted(p.name for p in (models / "test-seed0-sudoku").iterdir()) == ["ar", "diffusion", "diffusion-eos"]
    sft = json.loads((models / "test-seed0-sudoku" / "diffusion-eos" / "model" / "training_config.json").read_text())
    assert sft["padding"] == "max_length" and sft["data"] == RECIPES["test"].semi_ar.source


def test_quickstart_answers_five_questions_and_records_them(tmp_path, capsys):
    from llada.commands.quickstart import quickstart

    recipe = RECIPES["test"]
    record = quickstart(out_dir=str(tmp_path), world=recipe.world, preset=recipe.preset, pretrain_steps=6,
                        sft_steps=4, batch_size=recipe.batch_size, seq_len=recipe.seq_len,
                        vocab_size=recipe.vocab_size, seed=3)
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "quickstart.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert len(saved["questions"]) == 5 and saved["seed"] == 3
    assert saved["answered"] == sum(q["correct"] for q in saved["questions"])
    for q in saved["questions"]:
        assert q["correct"] == (q["expected"].lower() in q["answer"].lower())
    assert f"answered {saved['answered']}/5 correctly" in printed
    assert "reversal" in saved["questions"][3]["tests"]
