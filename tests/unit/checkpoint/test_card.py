"""The model card written beside saved weights."""

from __future__ import annotations

import json

import llada


def test_model_card_says_what_the_directory_knows(llada_dir, tmp_path):
    bundle = llada.load(llada_dir[0])
    out = tmp_path / "card"
    llada.save(out, bundle.model, bundle.tokenizer)
    card = (out / "README.md").read_text()
    assert card.startswith("---\npipeline_tag: text-generation\n")
    assert "| context | 128 tokens |" in card and "| weights | float32, model.safetensors |" in card
    assert "| mask | `<|mdm_mask|>` | 63 |" in card and "| end of text | `<|endoftext|>` | 62 |" in card
    assert "no training_config.json" in card and "No evaluation is recorded" in card
    assert f'llada.load("{out}")' in card and f'AutoModelForCausalLM.from_pretrained("{out}")' in card

    # what the trainer and `llada eval` leave beside the weights is described when present
    training = {"model": "tiny", "data": None, "world": {"n_people": 12}, "stage": "sft", "objective": "diffusion",
                "seq_len": 64, "batch_size": 4, "grad_accum": 2, "max_steps": 30, "lr": 0.001, "warmup_steps": 5,
                "min_lr_ratio": 0.1, "weight_decay": 0.1, "seed": 7, "lora_r": 0, "vocab_size": 300}
    (out / "training_config.json").write_text(json.dumps(training))
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text(json.dumps({
        "tasks": [{"kind": "diffusion", "task": "fact_forward", "n": 24, "generation_accuracy": 0.625,
                   "choice_accuracy": None, "setting": {"steps": 32}}],
        "likelihood": {"diffusion": {"nll_per_token": 1.234, "exact": False}}}))
    llada.save(out, bundle.model, bundle.tokenizer)
    card = (out / "README.md").read_text()
    assert "supervised fine-tuning" in card and "built-in synthetic world" in card and "seed 7" in card
    assert "30 optimizer steps of 4 sequences x 2 accumulation" in card and "fresh `tiny` shape" in card
    assert "| diffusion | fact_forward | 24 | 0.625 |  | steps=32 |" in card and "<= 1.234 nats" in card

    # a card written by hand is kept; `push` rewrites a generated one for the repository
    (out / "README.md").write_text("# mine\n")
    llada.save(out, bundle.model, bundle.tokenizer)
    assert (out / "README.md").read_text() == "# mine\n"
