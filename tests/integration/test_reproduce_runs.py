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
    rev = json.loads((tmp_path / "reversal" / "results.json").read_text())["results"]
    n_group_b = RECIPES["test"].world.n_people // 2
    for key in ("diffusion/fact_forward", "diffusion/fact_reverse", "ar/fact_forward", "ar/fact_reverse"):
        assert rev[key]["n"] == n_group_b and 0 <= rev[key]["value"] <= 1
    # the models were trained once and shared: one diffusion, one AR, one EOS-padded SFT run
    models = tmp_path / "models" / "test-seed0"
    assert sorted(p.name for p in models.iterdir()) == ["ar", "diffusion", "diffusion-eos"]
    sft = json.loads((models / "diffusion-eos" / "sft" / "model" / "training_config.json").read_text())
    assert sft["padding"] == "max_length" and sft["model"] == str(models / "diffusion" / "pretrain" / "model")


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
