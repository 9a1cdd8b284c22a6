"""A server on a loopback port in a thread, a slowed or rigged model, and the reference answers the
server tests compare against."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import torch
import uvicorn
from conftest import ROOT

from llada.sampling import generate
from llada.serve.app import create_app
from llada.serve.config import ServeConfig
from llada.tokenizer import train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20


class Rigged(torch.nn.Module):
    """The same model, `delay` seconds slower per forward (to make queues and timeouts observable) and
    certain of the token `tail[i]` at the i-th of the last len(tail) positions of every sequence
    (uncached forward; None leaves a position to the model)."""

    def __init__(self, model, delay=0.0, tail=()):
        super().__init__()
        self.inner, self.delay, self.tail, self.config = model, delay, list(tail), model.config

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def _rig(self, logits):
        if self.tail:
            logits = logits.clone()
            for i, token in enumerate(self.tail):
                if token is not None:
                    logits[:, i - len(self.tail), token] += 100.0
        return logits

    def forward(self, *a, output_positions=None, **k):
        time.sleep(self.delay)
        logits = self._rig(self.inner(*a, **k))
        if output_positions is None:
            return logits
        if isinstance(output_positions, tuple) or getattr(output_positions, "dtype", None) == torch.bool:  # (N, V)
            return logits[output_positions]
        return logits[:, output_positions]

    def forward_kv(self, *a, **k):  # the cached path is only slowed
        time.sleep(self.delay)
        return self.inner.forward_kv(*a, **k)


@contextmanager
def running(bundle, delay: float = 0.0, tail=(), **config):
    model = Rigged(bundle.model, delay, tail) if delay or tail else bundle.model
    app = create_app(SimpleNamespace(model=model, tokenizer=bundle.tokenizer), ServeConfig(**config))
    with serving(app) as url:
        yield url, app


@contextmanager
def serving(app):
    """`app` on a free loopback port, in a thread: its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _reference_ids(bundle, prompt_ids, **opts) -> list[int]:
    """The sampler's answer ids up to the first EOS / end of turn, straight from `generate`."""
    out = generate(bundle.model, torch.tensor([prompt_ids]), **opts)
    ids = out.responses[0].tolist()
    stops = {bundle.model.config.eos_token_id, bundle.model.config.eot_token_id}
    return ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]


def _reference(bundle, prompt_ids, **opts) -> str:
    return bundle.tokenizer.decode(_reference_ids(bundle, prompt_ids, **opts), skip_special_tokens=True).lstrip()


def _chat_ids(tok, messages):
    return tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"]


def _with_template(bundle, template: str) -> SimpleNamespace:
    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.chat_template = template
    return SimpleNamespace(model=bundle.model, tokenizer=tok)


def _serve_cli(monkeypatch, bundle, args):
    """`llada serve ARGS` through the CLI with the model loader and uvicorn replaced: the app it would run
    (None when it stopped first), its exit code and what it printed to stderr."""
    import llada.checkpoint
    from llada.cli import main

    ran = {}
    monkeypatch.setattr(llada.checkpoint, "load", lambda *a, **k: bundle)
    monkeypatch.setattr(uvicorn, "run", lambda app, **k: ran.update(app=app, **k))
    return ran.get("app") if main(["serve", *args]) == 0 else None, ran


def _readme_block(lang: str, needle: str) -> str:
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Serving"):]
    return next(b for b in re.findall(rf"```{lang}\n(.*?)```", section, re.S) if needle in b)
