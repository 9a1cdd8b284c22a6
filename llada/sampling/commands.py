"""`llada generate` and `llada chat`."""

from __future__ import annotations

import sys
import time

import torch

from llada.errors import GenerationError


def _load(model: str, device: str | None, dtype: str | None):
    from llada.checkpoint import load

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load(model, dtype=dtype, device=device)


def generate(prompt: str, model: str = "runs/quickstart/sft/model", steps: int = 64, gen_length: int = 64,
             block_length: int = 32, temperature: float = 0.0, cfg_scale: float = 0.0,
             remasking: str = "low_confidence", threshold: float | None = None, cache: str | None = None,
             trace: bool = False, chat: bool = True, device: str | None = None, dtype: str | None = None,
             seed: int = 0) -> None:
    """Sample a response to PROMPT with the reverse process.

    Args:
        prompt: the user message (or plain text with --chat false)
        model: a model directory
        steps: denoising steps in total (a multiple of gen_length / block_length)
        gen_length: response length in tokens
        block_length: semi-autoregressive block size (gen_length for one block)
        temperature: 0 for greedy; >0 samples with Gumbel noise
        cfg_scale: unsupervised classifier-free guidance (0 = off)
        remasking: low_confidence, random, margin or entropy
        threshold: confidence-threshold parallel decoding in (0, 1]
        cache: none, prefix or dual key/value caching
        trace: show the canvas denoise step by step
        chat: wrap the prompt in the chat template
        device: cpu or cuda (default: cuda when available)
        dtype: float32, bfloat16 or float16 (default: as stored)
        seed: random seed for temperature > 0 and random remasking
    """
    from llada.sampling.text import decode_response, generate_ids, stream_text

    bundle = _load(model, device, dtype)
    cache = None if cache in (None, "none") else cache
    options = dict(steps=steps, gen_length=gen_length, block_length=block_length, temperature=temperature,
                   cfg_scale=cfg_scale, remasking=remasking, threshold=threshold, cache=cache,
                   generator=torch.Generator(device=bundle.model.device).manual_seed(seed))
    stops = (bundle.config.eos_token_id, bundle.config.eot_token_id)
    if trace:
        final = None
        for state, text in stream_text(bundle.model, bundle.tokenizer, prompt, chat=chat, **options):
            sys.stdout.write(f"\x1b[2K\rstep {state.step + 1:>3}  {_one_line(text)}")
            sys.stdout.flush()
            final = state
            time.sleep(0.02)
        sys.stdout.write("\n")
        if final is not None:
            print(decode_response(bundle.tokenizer, final.canvas[0, final.prompt_length:], stops))
        return
    out = generate_ids(bundle.model, bundle.tokenizer, prompt, chat=chat, **options)
    print(decode_response(bundle.tokenizer, out.responses[0], stops))
    s = out.stats
    print(f"[{s.forwards} forward passes ({s.full_forwards} full, {s.cached_forwards} cached), "
          f"{s.tokens_per_forward:.2f} tokens per forward]", file=sys.stderr)


def _one_line(text: str) -> str:
    return text.replace("\n", "⏎")


def chat(model: str = "runs/quickstart/sft/model", steps: int = 64, gen_length: int = 64, block_length: int = 32,
         temperature: float = 0.0, remasking: str = "low_confidence", threshold: float | None = None,
         device: str | None = None, dtype: str | None = None) -> None:
    """Multi-turn chat in the terminal; an empty line, `exit` or end of input quits.

    Args:
        model: a model directory
        steps: denoising steps per answer
        gen_length: answer length in tokens
        block_length: semi-autoregressive block size
        temperature: 0 for greedy
        remasking: low_confidence, random, margin or entropy
        threshold: confidence-threshold parallel decoding in (0, 1]
        device: cpu or cuda
        dtype: float32, bfloat16 or float16
    """
    from llada.sampling.text import generate_text

    bundle = _load(model, device, dtype)
    messages: list[dict[str, str]] = []
    print("chat with the model; an empty line or `exit` quits")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line or line == "exit":
            break
        messages.append({"role": "user", "content": line})
        try:
            reply = generate_text(bundle.model, bundle.tokenizer, [messages], steps=steps, gen_length=gen_length,
                                  block_length=block_length, temperature=temperature, remasking=remasking,
                                  threshold=threshold)[0]
        except GenerationError as e:
            print(f"error: {e}")
            messages.pop()
            continue
        print(f"llada> {reply}")
        messages.append({"role": "assistant", "content": reply})
