"""The main job on built-in data: about five minutes on a 2-core laptop, no download.

1. generate the built-in world and train a byte-level BPE tokenizer on it;
2. pretrain a small mask predictor on the world's text (Eq. 3);
3. fine-tune it on the world's questions and answers (Eq. 5);
4. save the model directory and answer a few questions with the reverse process.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def quickstart(out_dir: str = "runs/quickstart", preset: str = "tiny", pretrain_steps: int = 1500,
               sft_steps: int = 600, batch_size: int = 16, seq_len: int = 128, vocab_size: int = 2048,
               seed: int = 0, objective: str = "diffusion") -> None:
    """Train a tokenizer and a small model on the built-in world, fine-tune it, answer questions.

    Args:
        out_dir: where the runs go (pretrain/, sft/, each with model/, metrics and curves.png)
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
    from llada.data.world import World
    from llada.sampling.autoregressive import generate_autoregressive
    from llada.sampling.text import decode_response, encode_prompts, generate_text
    from llada.train import TrainConfig, run

    started = time.perf_counter()
    out = Path(out_dir)
    common = dict(batch_size=batch_size, seed=seed, objective=objective, eval_every=150, save_every=300, keep_last=1, log_every=10)
    print(f"[1/3] pretraining a {preset!r} model on the built-in world ({pretrain_steps} steps)")
    pt = run(TrainConfig(model=preset, out_dir=str(out / "pretrain"), stage="pretrain", seq_len=seq_len,
                         max_steps=pretrain_steps, lr=3e-3, warmup_steps=50, vocab_size=vocab_size, **common))
    print(f"[2/3] fine-tuning on the built-in questions and answers ({sft_steps} steps)")
    ft = run(TrainConfig(model=str(pt), out_dir=str(out / "sft"), stage="sft", seq_len=96, max_steps=sft_steps,
                         lr=1e-3, warmup_steps=20, **common))

    print("[3/3] answering " + ("left to right (AR baseline)" if objective == "ar" else
                                "with the reverse process (32 steps, blocks of 16, low-confidence remasking)"))
    bundle = load(ft)
    world = World(seed=seed)
    group_a = [p for p in world.people if p.group == "A"][:3]
    questions = [(f"Where does {p.name} live?", p.city) for p in group_a[:2]]
    questions += [(f"What did {group_a[2].name} invent?", group_a[2].invention)]
    questions += [(f"What is {item['prompt'].removeprefix('What is ').rstrip('?')}?", item["answer"])
                  for item in world.eval_items("arithmetic", limit=2)]
    torch.manual_seed(seed)
    prompts = [q for q, _ in questions]
    if bundle.model.config.causal:  # the AR baseline answers left to right
        ids, mask = encode_prompts(bundle.tokenizer, prompts)
        out = generate_autoregressive(bundle.model, ids, mask, gen_length=32)
        stops = (bundle.model.config.eos_token_id, bundle.model.config.eot_token_id)
        answers = [decode_response(bundle.tokenizer, r, stops) for r in out.responses]
    else:
        answers = generate_text(bundle.model, bundle.tokenizer, prompts, steps=32, gen_length=32, block_length=16)
    for (q, truth), a in zip(questions, answers, strict=True):
        mark = "✓" if truth.lower() in a.lower() else "✗"
        print(f"  Q: {q}\n  A: {a}   [{mark} expected: {truth}]")
    minutes = (time.perf_counter() - started) / 60
    print(f"done in {minutes:.1f} min. The model is in {ft}; try:\n"
          f"  llada generate --model {ft} \"Where does {group_a[0].name} live?\" --trace true\n"
          f"  llada chat --model {ft}")
