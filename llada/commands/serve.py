"""`llada serve`: the OpenAI-compatible server of `llada/serve/` on a model loaded from the flags."""

from __future__ import annotations

import os
from typing import Any

import uvicorn

import llada.checkpoint
from llada.checkpoint.options import inference_options
from llada.commands.flags import load_flags, options_from_flags, pop_load_flags, sampler_flags
from llada.serve.app import create_app
from llada.serve.config import ServeConfig
from llada.serve.guard import check_exposure


@sampler_flags
@load_flags
def serve(model: str = "runs/quickstart/sft/model", host: str = "127.0.0.1", port: int = 8000,
          max_batch: int = 8, max_queue: int = 64,
          timeout_s: float = 120.0, max_gen_tokens: int = 256, api_key: str | None = None,
          served_model_name: str | None = None, mc_num: int = 32, allowed_hosts: str | None = None,
          allow_unauthenticated: bool = False, **options: Any) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with a chat page at /.

    Args:
        model: a model directory (or Hub id)
        host: address to bind; loopback by default. Anything else needs --api_key (or --allow_unauthenticated).
        port: TCP port
        max_batch: requests batched into one sampler call
        max_queue: waiting requests before 429
        timeout_s: per-request limit (queueing included) before 408
        max_gen_tokens: the largest max_tokens a request may ask for
        api_key: require "Authorization: Bearer <key>" on every route but / and /health (or set LLADA_API_KEY)
        served_model_name: the model id /v1/models reports (default: the model directory's name)
        mc_num: Monte-Carlo samples of each Eq. 6 estimate behind "logprobs" on /v1/completions
        allowed_hosts: Host header names to answer besides loopback and the bound address, comma-separated ("*": any)
        allow_unauthenticated: serve beyond loopback without an API key

    The sampler flags below set what a request does not: a request's own fields and "preset" win.
    """
    how = pop_load_flags(options)
    api_key = api_key or os.environ.get("LLADA_API_KEY")
    check_exposure(host, port, api_key, allow_unauthenticated)
    cfg = ServeConfig(model_name=served_model_name or os.path.basename(os.path.normpath(model)), max_batch=max_batch,
                      max_queue=max_queue, timeout_s=timeout_s, max_gen_tokens=max_gen_tokens, api_key=api_key,
                      mc_num=mc_num, allowed_hosts=tuple(h for h in (allowed_hosts or "").split(",") if h.strip()),
                      options=options_from_flags(options))
    bundle = llada.checkpoint.load(model, inference_options(how))
    uvicorn.run(create_app(bundle, cfg), host=host, port=port, log_level="info")
