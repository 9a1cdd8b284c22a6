"""The main job on built-in data: a few minutes on a 2-core laptop, no download.

1. generate a small built-in world and train a byte-level BPE tokenizer on it;
2. pretrain a small mask predictor on the world's biographies (Eq. 3);
3. fine-tune it on questions about the world (Eq. 5);
4. answer five questions with the reverse process, one of them the reversal question: the
   model was told "P ... They invented the T." and taught "What did P invent?", never "Who
   invented the T?". A left-to-right model trained on the same text cannot answer it.

The recipe (world size, model, steps, learning rates) is `llada.recipe.RECIPES["quickstart"]`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Literal

import torch

from llada.data.world import World, WorldConfig
from llada.recipe import RECIPES, SAMPLER

QUICKSTART = RECIPES["quickstart"]


def quickstart_questions(world: World) -> list[dict[str, str]]:
    """Five questions about `world`, chosen by a fixed rule, and what each tests.

    Returns dicts with "question", "expected" (a substring the correct answer contains) and
    "tests". Four ask what the biographies state and SFT taught; the fourth is the reversal
    question of a group-B person, which no text and no SFT conversation ever asks that way round.
    Raises ValueError for a world of fewer than 6 people.
    """
    a = [p for p in world.people if p.group == "A"]
    b = [p for p in world.people if p.group == "B"]
    if len(a) < 2 or len(b) < 3:
        raise ValueError("the quickstart questions need a world of at least 6 people")
    held = {p.name: attribute for p, _, _, attribute in world.held_out_facts()}
    asks = {"city": ("Where does {} live?", "city"), "occupation": ("What does {} do for a living?", "occupation"),
            "pet": ("What pet does {} keep?", "pet")}

    def taught(p: Any) -> dict[str, str]:  # the first of city, occupation, pet that SFT asked about p
        attribute = next(k for k in asks if k != held[p.name])
        return {"question": asks[attribute][0].format(p.name), "expected": str(getattr(p, attribute)),
                "tests": f"a fact taught ({attribute})"}

    return [
        taught(a[0]),
        taught(b[0]),
        {"question": f"What did {b[1].name} invent?", "expected": f"the {b[1].invention}",
         "tests": "an invention, asked the way it was taught"},
        {"question": f"Who invented the {b[2].invention}?", "expected": b[2].name,
         "tests": "reversal: never asked or stated this way round"},
        taught(a[1]),
    ]


def quickstart(out_dir: str = "runs/quickstart", world: WorldConfig = QUICKSTART.world,
               preset: str = QUICKSTART.preset, pretrain_steps: int = QUICKSTART.pretrain_steps,
               sft_steps: int = QUICKSTART.sft_steps, batch_size: int = QUICKSTART.batch_size,
               seq_len: int = QUICKSTART.seq_len, vocab_size: int = QUICKSTART.vocab_size, seed: int = 0,
               objective: Literal["diffusion", "ar"] = "diffusion") -> dict:
    """Train a tokenizer and a small model on the built-in world, fine-tune it, answer five questions.

    Prints each answer and "answered K/5 correctly", and writes OUT_DIR/quickstart.json
    (questions, expected, answers, correct, minutes of training, seed); returns that record.

    Args:
        out_dir: where the runs go (pretrain/, sft/, each with model/, metrics and curves.png)
        world: the built-in world's size and mix (--world.n_people 40 ...)
        preset: model size (debug, tiny, small, ...)
        pretrain_steps: optimizer steps of pretraining
        sft_steps: optimizer steps of supervised fine-tuning
        batch_size: sequences per step
        seq_len: pretraining sequence length
        vocab_size: BPE vocabulary size
        seed: seed of the world, the initialisation and the data order
        objective: diffusion, or ar for the autoregressive baseline (same model with a causal
            mask, same data and steps): `llada quickstart --objective ar --out_dir runs/quickstart-ar`
    """
    from llada.checkpoint import load
    from llada.recipe import train_recipe
    from llada.sampling import sample_text

    recipe = QUICKSTART.replace(world=world, preset=preset, pretrain_steps=pretrain_steps, sft_steps=sft_steps,
                                batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size)
    started = time.perf_counter()
    out = Path(out_dir)
    print(f"[1/3] pretraining a {preset!r} model on a world of {world.n_people} people ({pretrain_steps} steps), "
          f"[2/3] then fine-tuning it on questions about them ({sft_steps} steps)")
    _, finetuned = train_recipe(recipe, out, objective=objective, seed=seed)
    train_minutes = (time.perf_counter() - started) / 60

    print("[3/3] answering " + ("left to right (AR baseline)" if objective == "ar" else
                                f"with the reverse process ({SAMPLER.num_steps} steps, blocks of {SAMPLER.block_size}, "
                                f"{SAMPLER.remasking.replace('_', '-')} remasking)"))
    bundle = load(finetuned)
    items = quickstart_questions(World(seed, world))
    prompts = [it["question"] for it in items]
    torch.manual_seed(seed)
    answers = sample_text(bundle.model, bundle.tokenizer, prompts, SAMPLER)  # left to right for the AR baseline
    for it, answer in zip(items, answers, strict=True):
        it["answer"] = answer
        it["correct"] = it["expected"].lower() in answer.lower()
        mark = "✓" if it["correct"] else "✗"
        print(f"  Q: {it['question']}   ({it['tests']})\n  A: {answer}   [{mark} expected: {it['expected']}]")
    correct = sum(it["correct"] for it in items)
    record = {"answered": correct, "questions": items, "minutes_training": round(train_minutes, 2),
              "minutes_total": round((time.perf_counter() - started) / 60, 2), "seed": seed,
              "objective": objective, "recipe": dataclasses.asdict(recipe),
              "model": str(finetuned), "sampler": SAMPLER.to_dict()}
    (out / "quickstart.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"answered {correct}/{len(items)} correctly")
    print(f"done in {record['minutes_total']:.1f} min. The model is in {finetuned}; try:\n"
          f"  llada generate --model {finetuned} \"{items[3]['question']}\" --trace true\n"
          f"  llada chat --model {finetuned}")
    return record
