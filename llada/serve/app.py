"""An OpenAI-compatible HTTP server for a llada model, and the page that shows the denoising.

    llada serve --model runs/quickstart/sft/model            # http://127.0.0.1:8000/
    llada serve --model DIR --preset fast                     # the server's default sampler options

Routes: GET / (the chat page), GET /health, GET /v1/models, GET /v1/sampler (the default options,
presets and remasking strategies), POST /v1/completions, POST /v1/chat/completions (both with
"stream": true for server-sent events). The request format
and its mapping onto `SamplerOptions` are in schema.py; batching in batcher.py. Errors are
OpenAI-shaped JSON with a 4xx status: 400 bad value, 401 key, 408 timeout, 413 body too large,
422 unknown or out-of-range field, 429 queue full.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from llada.sampling.commands import sampler_flags
from llada.sampling.options import SamplerOptions
from llada.sampling.text import cut_at_stop, cut_at_stop_texts, token_pieces
from llada.serve import schema
from llada.serve.batcher import Batcher, Job, QueueFull
from llada.serve.schema import ChatRequest, CompletionRequest, Reply, RequestError


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
    api_key: str | None = None  # when set, /v1/* need "Authorization: Bearer <key>"
    options: SamplerOptions = field(default_factory=SamplerOptions)  # what a request does not set


def _sendable(text: str, stop_texts: list[str]) -> str:
    """The part of a partial answer that can be streamed now and never changes later: not an
    incomplete UTF-8 character at the end (it decodes as U+FFFD until its next byte arrives), nothing
    from a stop string on, and not an end that could still become a stop string."""
    text = cut_at_stop_texts(text, stop_texts)[0].rstrip("\ufffd")
    hold = max((k for stop in stop_texts for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[: len(text) - hold]


@dataclass
class _Call:
    """One accepted request: its job in the batcher and what its response needs."""

    job: Job
    reply: Reply
    prompt_ids: list[int]
    options: SamplerOptions
    stop_texts: list[str]
    stream_states: bool
    include_usage: bool
    deadline: float


class Service:
    """The model behind the routes: encodes requests, submits them, and turns the batcher's events
    into OpenAI responses and stream chunks."""

    def __init__(self, bundle: Any, cfg: ServeConfig) -> None:
        self.cfg, self.model, self.tok = cfg, bundle.model.eval(), bundle.tokenizer
        self.roles = self.model.config.roles
        self.max_prompt = cfg.max_prompt_tokens or self.model.config.max_sequence_length - 1
        self.special_ids = set(self.tok.all_special_ids) | set(self.roles.stops)
        self.batch_sizes: list[int] = []  # sizes of the batches run, for tests and monitoring
        self.batcher: Batcher | None = None

    def start(self) -> None:
        self.batcher = Batcher(self.model, self.roles.pad, max_batch=self.cfg.max_batch,
                               max_queue=self.cfg.max_queue, on_batch=lambda jobs: self.batch_sizes.append(len(jobs)))

    # ------------------------------------------------------------------------------ requests
    def prompt_ids(self, req: Any, chat: bool) -> list[int]:
        tok = self.tok
        if chat:
            messages = [{"role": m.role, "content": m.content} for m in req.messages]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            prompts = req.prompt if isinstance(req.prompt, list) else [req.prompt]
            if len(prompts) != 1:
                raise RequestError(422, "prompt: give one string (batches are formed by the server)")
            if not prompts[0]:
                raise RequestError(400, "the prompt is empty; give at least one character")
            bos = [self.roles.bos] if self.roles.bos is not None else []
            ids = bos + tok(prompts[0], add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt:
            raise RequestError(400, f"the prompt has {len(ids)} tokens; the limit is {self.max_prompt}")
        return ids

    def accept(self, req: Any, chat: bool) -> _Call:
        """Encode, choose the options, and queue one request."""
        prompt_ids = self.prompt_ids(req, chat)
        options = schema.sampler_options(req, self.cfg.options, self.cfg.max_gen_tokens)
        limit = self.model.config.max_sequence_length
        if len(prompt_ids) + options.gen_length > limit:
            raise RequestError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({options.gen_length}) "
                                    f"exceeds the model's limit of {limit}")
        job = Job(prompt_ids, options, asyncio.get_running_loop(), want_states=req.stream)
        try:
            self.batcher.submit(job)  # type: ignore[union-attr]
        except QueueFull:
            raise RequestError(429, f"the request queue is full ({self.cfg.max_queue} waiting); retry later") from None
        reply = Reply(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time()),
                      req.model or self.cfg.model_name, chat)
        stop_texts = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return _Call(job, reply, prompt_ids, options, stop_texts, req.stream_states,
                     bool((req.stream_options or {}).get("include_usage")), time.monotonic() + self.cfg.timeout_s)

    async def next_event(self, call: _Call, request: Request) -> tuple[str, Any]:
        """The job's next event; RequestError 408 past the deadline or when the client went away."""
        while True:
            left = call.deadline - time.monotonic()
            if left <= 0:
                call.job.cancelled.set()
                raise RequestError(408, f"the request took longer than {self.cfg.timeout_s:g} s and was cancelled")
            try:
                return await asyncio.wait_for(call.job.events.get(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    call.job.cancelled.set()
                    raise RequestError(408, "the client went away") from None

    # ------------------------------------------------------------------------------ answers
    def finish(self, ids: list[int], stop_texts: list[str]) -> tuple[str, str]:
        """Text up to the first EOS/EOT (finish "stop") or the end ("length"), then cut at stop strings."""
        ids, stopped = cut_at_stop(ids, self.roles.stops)
        text, cut = cut_at_stop_texts(self.tok.decode(ids, skip_special_tokens=True), stop_texts)
        # leading whitespace goes; trailing stays: a stream cannot take back what it sent
        return text.lstrip(), "stop" if cut or stopped else "length"

    def usage(self, call: _Call, text: str) -> dict[str, int]:
        done = len(self.tok(text, add_special_tokens=False)["input_ids"]) if text else 0
        return {"prompt_tokens": len(call.prompt_ids), "completion_tokens": done,
                "total_tokens": len(call.prompt_ids) + done}

    def settled_text(self, tokens: list[int], stop_texts: list[str]) -> str:
        """The streamable text of a partial canvas: the tokens up to the first mask or stop token,
        cut as `finish` cuts (stop strings, then leading whitespace)."""
        settled = []
        for t in tokens:
            if t == self.roles.mask or t in self.roles.stops:
                break
            settled.append(t)
        return _sendable(self.tok.decode(settled, skip_special_tokens=True), stop_texts).lstrip()

    def state_extra(self, step: int, tokens: list[int], unmasked_at: list[int]) -> dict[str, Any]:
        """The canvas of one step, for the page: pieces of text, which are masks, which are special."""
        masked = [t == self.roles.mask for t in tokens]
        special = [not m and t in self.special_ids for t, m in zip(tokens, masked, strict=True)]
        pieces = token_pieces(self.tok, tokens, masked, self.special_ids)
        return {"llada_state": {"step": step, "pieces": pieces, "unmasked_at": unmasked_at, "masked": masked,
                                "special": special}}

    async def complete(self, call: _Call, request: Request) -> dict[str, Any]:
        """The whole response of a non-streamed request."""
        try:
            while True:
                kind, payload = await self.next_event(call, request)
                if kind == "error":
                    raise RequestError(503, payload)
                if kind == "done":
                    break
        finally:
            call.job.cancelled.set()
        ids, forwards = payload
        text, reason = self.finish(ids, call.stop_texts)
        return call.reply.body(text, reason, self.usage(call, text),
                               {"llada": {"forwards": forwards, **call.options.to_dict()}})

    async def stream(self, call: _Call, request: Request) -> AsyncIterator[str]:
        """The server-sent events of a streamed request: text deltas as the canvas settles."""
        sent, unmasked_at = "", [-1] * call.options.gen_length
        try:
            if call.reply.chat:
                yield call.reply.first_chunk()
            while True:
                try:
                    kind, payload = await self.next_event(call, request)
                except RequestError as e:
                    yield schema.event({"error": {"message": str(e), "code": e.status}})
                    return
                if kind == "error":
                    yield schema.event({"error": {"message": payload, "code": 503}})
                    return
                if kind == "done":
                    for chunk in self._closing(call, payload[0], sent):
                        yield chunk
                    return
                step, tokens, transferred = payload
                for i, moved in enumerate(transferred):
                    if moved:
                        unmasked_at[i] = step
                text = self.settled_text(tokens, call.stop_texts)
                delta = text[len(sent):] if text.startswith(sent) and len(text) > len(sent) else ""
                sent = sent + delta
                extra = self.state_extra(step, tokens, unmasked_at) if call.stream_states else None
                if delta or extra:
                    yield call.reply.chunk(delta, None, extra)
        finally:
            call.job.cancelled.set()  # a client that went away frees its slot

    def _closing(self, call: _Call, ids: list[int], sent: str) -> list[str]:
        text, reason = self.finish(ids, call.stop_texts)
        out = [call.reply.chunk(text[len(sent):] if text.startswith(sent) else "", reason)]
        if call.include_usage:
            out.append(call.reply.usage_chunk(self.usage(call, text)))
        return out + ["data: [DONE]\n\n"]


# ------------------------------------------------------------------------------------ the app
def create_app(bundle: Any, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `bundle` (a loaded model directory: .model and .tokenizer)."""
    cfg = config or ServeConfig()
    service = Service(bundle, cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        app.state.batcher = service.batcher
        yield
        service.batcher.close()  # type: ignore[union-attr]

    app = FastAPI(title="llada", version="1", lifespan=lifespan)
    app.state.batch_sizes, app.state.batcher, app.state.service = service.batch_sizes, None, service
    _add_error_handlers(app)
    _add_routes(app, service, cfg)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(schema.error_body(exc.status, str(exc)), exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(schema.error_body(exc.status_code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # never leak a traceback
        return JSONResponse(schema.error_body(500, f"internal error: {type(exc).__name__}", "server_error"), 500)


def _add_routes(app: FastAPI, service: Service, cfg: ServeConfig) -> None:
    def check_key(request: Request) -> None:
        sent = request.headers.get("authorization", "")
        if cfg.api_key and not hmac.compare_digest(sent.encode(), f"Bearer {cfg.api_key}".encode()):
            raise RequestError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    async def body_of(request: Request) -> bytes:
        check_key(request)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {cfg.max_body_bytes}")
        body = await request.body()
        if len(body) > cfg.max_body_bytes:
            raise RequestError(413, f"request body exceeds the limit of {cfg.max_body_bytes} bytes")
        return body

    async def handle(request: Request, chat: bool) -> Any:
        req = schema.parse(ChatRequest if chat else CompletionRequest, await body_of(request))
        call = service.accept(req, chat)
        if not req.stream:
            return await service.complete(call, request)
        return StreamingResponse(service.stream(call, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await handle(request, chat=True)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "llada"}]}

    @app.get("/v1/sampler")
    async def sampler() -> dict[str, Any]:
        """The server's default options, the named presets and the remasking strategies (the page's controls)."""
        from llada.sampling.options import SAMPLER_PRESETS
        from llada.sampling.remasking import REMASKING

        return {"defaults": cfg.options.to_dict(), "presets": SAMPLER_PRESETS, "remasking": list(REMASKING)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": service.batcher.queued() if service.batcher else 0}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("llada.serve").joinpath("page.html").read_text()


@sampler_flags
def serve(model: str = "runs/quickstart/sft/model", host: str = "127.0.0.1", port: int = 8000,
          device: str | None = None, dtype: str = "auto", max_batch: int = 8, max_queue: int = 64,
          timeout_s: float = 120.0, max_gen_tokens: int = 256, api_key: str | None = None,
          **options: Any) -> None:
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

    The sampler flags below set what a request does not: a request's own fields and "preset" win.
    """
    import os

    import torch
    import uvicorn

    from llada.checkpoint import load
    from llada.sampling.commands import options_from_flags

    defaults = options_from_flags(options)
    api_key = api_key or os.environ.get("LLADA_API_KEY")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without an API key; anyone who can reach it can use it")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bundle = load(model, dtype=dtype, device=device)
    name = os.path.basename(os.path.normpath(model))
    app = create_app(bundle, ServeConfig(model_name=name, max_batch=max_batch, max_queue=max_queue,
                                         timeout_s=timeout_s, max_gen_tokens=max_gen_tokens, api_key=api_key,
                                         options=defaults))
    uvicorn.run(app, host=host, port=port, log_level="info")

