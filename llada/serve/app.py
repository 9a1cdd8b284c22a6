"""An OpenAI-compatible HTTP server for a llada model, and the page that shows the denoising.

    llada serve --model runs/quickstart/sft/model            # http://127.0.0.1:8000/

Routes: GET / (the chat page), GET /health, GET /v1/models, POST /v1/completions,
POST /v1/chat/completions (both with "stream": true for server-sent events). Sampler options are
extra request fields: steps, block_length, remasking, cfg_scale, threshold, factor, cache,
temperature; "seed" makes a sampled answer reproducible (the request then runs in a batch of its own);
"stream_states": true adds each intermediate canvas to the stream (the page uses it).
Errors are OpenAI-shaped JSON with a 4xx status: 400 bad value, 401 key, 408 timeout, 413 body too
large, 422 unknown or out-of-range field, 429 queue full.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llada.errors import GenerationError
from llada.sampling.core import validate
from llada.sampling.remasking import REMASKING
from llada.sampling.schedule import fit_blocks
from llada.sampling.text import cut_at_stop, cut_at_stop_texts, token_pieces
from llada.serve.batcher import Batcher, Job, QueueFull


@dataclass
class ServeConfig:
    """Limits and defaults of the server."""

    model_name: str = "llada"
    max_batch: int = 8  # requests run together in one batched sampler call
    max_queue: int = 64  # waiting requests; one more gets 429
    timeout_s: float = 120.0  # per request, queueing included; then 408
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context (prompt + response must fit it)
    max_gen_tokens: int = 256
    default_max_tokens: int = 64
    default_block_length: int = 32
    api_key: str | None = None  # when set, /v1/* need "Authorization: Bearer <key>"


# ------------------------------------------------------------------------------------ schemas
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)  # reproducible sampling (temperature > 0, random remasking)
    user: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)  # only 1 (no nucleus sampling): see _options
    # llada sampler options
    steps: int | None = Field(None, ge=1, le=4096)
    block_length: int | None = Field(None, ge=1)
    remasking: str = "low_confidence"
    cfg_scale: float = Field(0.0, ge=0.0, le=20.0)
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    factor: float | None = Field(None, gt=0.0)
    cache: Literal["prefix", "dual"] | None = None
    stream_states: bool = False


class CompletionRequest(_Request):
    prompt: str | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)


def _sendable(text: str, stop_texts: list[str]) -> str:
    """The part of a partial answer that can be streamed now and never changes later: not an
    incomplete UTF-8 character at the end (it decodes as U+FFFD until its next byte arrives), nothing
    from a stop string on, and not an end that could still become a stop string."""
    text = cut_at_stop_texts(text, stop_texts)[0].rstrip("\ufffd")
    hold = max((k for stop in stop_texts for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[: len(text) - hold]


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


# ------------------------------------------------------------------------------------ the app
def create_app(bundle: Any, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `bundle` (a loaded model directory)."""
    cfg = config or ServeConfig()
    model, tok = bundle.model.eval(), bundle.tokenizer
    mcfg = model.config
    max_prompt = cfg.max_prompt_tokens or mcfg.max_sequence_length - 1  # prompt + response checked later
    pad = tok.pad_token_id if tok.pad_token_id is not None else mcfg.eos_token_id
    stops = (mcfg.eos_token_id, mcfg.eot_token_id)
    special_ids = set(tok.all_special_ids) | {t for t in stops if t is not None}
    batch_sizes: list[int] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = Batcher(model, pad, max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                                    on_batch=lambda jobs: batch_sizes.append(len(jobs)))
        yield
        app.state.batcher.close()

    app = FastAPI(title="llada", version="1", lifespan=lifespan)
    app.state.batch_sizes = batch_sizes  # sizes of the batches run, for tests and monitoring
    app.state.batcher = None

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # never leak a traceback
        return _error(500, f"internal error: {type(exc).__name__}", "server_error")

    def _check_key(request: Request) -> None:
        sent = request.headers.get("authorization", "")
        if cfg.api_key and not hmac.compare_digest(sent.encode(), f"Bearer {cfg.api_key}".encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    async def _parse(request: Request, schema: type[_Request]) -> _Request:
        _check_key(request)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise HTTPException(413, f"request body of {declared} bytes exceeds the limit of {cfg.max_body_bytes}")
        body = await request.body()
        if len(body) > cfg.max_body_bytes:
            raise HTTPException(413, f"request body exceeds the limit of {cfg.max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPException(400, f"the body is not valid JSON: {e}") from None
        try:
            return schema.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
            raise HTTPException(422, problems) from None

    def _options(req: _Request, prompt_len: int) -> dict[str, Any]:
        if req.top_p is not None and req.top_p < 1:
            raise HTTPException(422, f"top_p: {req.top_p} asks for nucleus sampling, which the diffusion sampler "
                                     "does not do; leave it out (or 1) and use temperature")
        if req.remasking not in REMASKING:
            raise HTTPException(422, f"remasking: {req.remasking!r} is not one of {', '.join(REMASKING)}")
        if prompt_len > max_prompt:
            raise HTTPException(400, f"the prompt has {prompt_len} tokens; the limit is {max_prompt}")
        if prompt_len == 0:
            raise HTTPException(400, "the prompt is empty")
        gen = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
        if gen > cfg.max_gen_tokens:
            raise HTTPException(400, f"max_tokens is {gen}; this server allows at most {cfg.max_gen_tokens}")
        gen, block, steps = fit_blocks(gen, req.block_length or cfg.default_block_length, req.steps)
        opts = dict(steps=steps, gen_length=gen, block_length=block, remasking=req.remasking,
                    cfg_scale=req.cfg_scale, temperature=req.temperature, threshold=req.threshold,
                    factor=req.factor, cache=req.cache)
        try:
            validate(prompt_length=prompt_len, max_length=mcfg.max_sequence_length, **opts)
        except GenerationError as e:
            raise HTTPException(400, str(e)) from None
        return opts

    def _finish(ids: list[int], stop_texts: list[str]) -> tuple[str, str]:
        """Text up to the first EOS/EOT (finish "stop") or the end ("length"), then cut at stop strings."""
        ids, stopped = cut_at_stop(ids, stops)
        reason = "stop" if stopped else "length"
        text, cut = cut_at_stop_texts(tok.decode(ids, skip_special_tokens=True), stop_texts)
        return text.lstrip(), "stop" if cut else reason  # trailing whitespace stays: a stream cannot take back what it sent

    def _settled_prefix(tokens: list[int]) -> list[int]:
        """The response tokens already final: up to the first mask, or the first stop token."""
        out = []
        for t in tokens:
            if t == mcfg.mask_token_id or t in stops:
                break
            out.append(t)
        return out

    async def _submit(prompt_ids: list[int], opts: dict[str, Any], want_states: bool, seed: int | None) -> Job:
        job = Job(prompt_ids, opts, asyncio.get_running_loop(), want_states=want_states, seed=seed)
        try:
            app.state.batcher.submit(job)
        except QueueFull:
            raise HTTPException(429, f"the request queue is full ({cfg.max_queue} waiting); retry later") from None
        return job

    async def _next(job: Job, deadline: float, request: Request) -> tuple[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                job.cancelled.set()
                raise HTTPException(408, f"the request took longer than {cfg.timeout_s:g} s and was cancelled")
            try:
                return await asyncio.wait_for(job.events.get(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    raise HTTPException(408, "the client went away") from None

    async def _handle(request: Request, chat: bool) -> Any:
        req = await _parse(request, ChatRequest if chat else CompletionRequest)
        if chat:
            messages = [{"role": m.role, "content": m.content} for m in req.messages]  # type: ignore[attr-defined]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            prompts = req.prompt if isinstance(req.prompt, list) else [req.prompt]  # type: ignore[attr-defined]
            if len(prompts) != 1:
                raise HTTPException(422, "prompt: give one string (batches are formed by the server)")
            if not prompts[0]:
                raise HTTPException(400, "the prompt is empty; give at least one character")
            bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
            prompt_ids = bos + tok(prompts[0], add_special_tokens=False)["input_ids"]
        opts = _options(req, len(prompt_ids))
        stop_texts = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        deadline = time.monotonic() + cfg.timeout_s
        job = await _submit(prompt_ids, opts, want_states=req.stream, seed=req.seed)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        name = req.model or cfg.model_name

        def _usage(text: str) -> dict[str, int]:
            done = len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0
            return {"prompt_tokens": len(prompt_ids), "completion_tokens": done, "total_tokens": len(prompt_ids) + done}

        def chunk(delta: str | None, reason: str | None, extra: dict | None = None) -> str:
            if chat:
                d = {} if delta is None else {"content": delta}
                choice = {"index": 0, "delta": d, "finish_reason": reason}
                body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [choice]}
            else:
                body = {"id": rid, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}]}
            if extra:
                body.update(extra)
            return f"data: {json.dumps(body)}\n\n"

        if not req.stream:
            try:
                while True:
                    kind, payload = await _next(job, deadline, request)
                    if kind == "error":
                        raise HTTPException(503, payload)
                    if kind == "done":
                        break
            finally:
                job.cancelled.set()
            ids, forwards = payload
            text, reason = _finish(ids, stop_texts)
            usage = _usage(text)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
                      if chat else {"index": 0, "text": text, "finish_reason": reason, "logprobs": None})
            return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                    "model": name, "choices": [choice], "usage": usage, "llada": {"forwards": forwards, **opts}}

        async def events() -> AsyncIterator[str]:
            sent = ""
            unmasked_at: list[int] = [-1] * opts["gen_length"]
            try:
                if chat:
                    first = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                             "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None}]}
                    yield f"data: {json.dumps(first)}\n\n"
                while True:
                    try:
                        kind, payload = await _next(job, deadline, request)
                    except HTTPException as e:
                        yield f"data: {json.dumps({'error': {'message': str(e.detail), 'code': e.status_code}})}\n\n"
                        return
                    if kind == "error":
                        yield f"data: {json.dumps({'error': {'message': payload, 'code': 503}})}\n\n"
                        return
                    if kind == "state":
                        step, tokens, transferred = payload
                        for i, moved in enumerate(transferred):
                            if moved:
                                unmasked_at[i] = step
                        # the same order as _finish: cut at stop strings, then drop leading whitespace
                        text = _sendable(tok.decode(_settled_prefix(tokens), skip_special_tokens=True),
                                         stop_texts).lstrip()
                        delta = ""
                        if text.startswith(sent) and len(text) > len(sent):
                            delta, sent = text[len(sent):], text
                        extra = None
                        if req.stream_states:
                            masked = [t == mcfg.mask_token_id for t in tokens]
                            special = [not m and t in special_ids for t, m in zip(tokens, masked, strict=True)]
                            pieces = token_pieces(tok, tokens, masked, special_ids)
                            extra = {"llada_state": {"step": step, "pieces": pieces, "unmasked_at": unmasked_at,
                                                     "masked": masked, "special": special}}
                        if delta or extra:
                            yield chunk(delta, None, extra)
                    if kind == "done":
                        text, reason = _finish(payload[0], stop_texts)
                        rest = text[len(sent):] if text.startswith(sent) else ""
                        yield chunk(rest, reason)
                        if (req.stream_options or {}).get("include_usage"):  # OpenAI's last chunk: usage only
                            usage = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                                     "created": created, "model": name, "choices": [], "usage": _usage(text)}
                            yield f"data: {json.dumps(usage)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
            finally:
                job.cancelled.set()  # a client that went away frees its slot

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _handle(request, chat=True)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_key(request)
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "llada"}]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": app.state.batcher.queued() if app.state.batcher else 0}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("llada.serve").joinpath("page.html").read_text()

    return app


def serve(model: str = "runs/quickstart/sft/model", host: str = "127.0.0.1", port: int = 8000,
          device: str | None = None, dtype: str = "auto",
          max_batch: int = 8, max_queue: int = 64, timeout_s: float = 120.0, max_gen_tokens: int = 256,
          api_key: str | None = None) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with a chat page at /.

    Args:
        model: a model directory (or Hub id)
        host: address to bind; loopback by default. Anything else should come with --api_key.
        port: TCP port
        device: cpu, cuda, ... (default: cuda when available)
        dtype: auto, float32, bfloat16
        max_batch: requests batched into one sampler call
        max_queue: waiting requests before 429
        timeout_s: per-request limit (queueing included) before 408
        max_gen_tokens: the largest max_tokens a request may ask for
        api_key: require "Authorization: Bearer <key>" on /v1/* (or set LLADA_API_KEY)
    """
    import os

    import torch
    import uvicorn

    from llada.checkpoint import load

    api_key = api_key or os.environ.get("LLADA_API_KEY")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without an API key; anyone who can reach it can use it")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bundle = load(model, dtype=dtype, device=device)
    name = os.path.basename(os.path.normpath(model))
    app = create_app(bundle, ServeConfig(model_name=name, max_batch=max_batch, max_queue=max_queue,
                                         timeout_s=timeout_s, max_gen_tokens=max_gen_tokens, api_key=api_key))
    uvicorn.run(app, host=host, port=port, log_level="info")
