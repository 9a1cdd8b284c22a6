"""An OpenAI-compatible HTTP server for a llada model, and the page that shows the denoising.

    llada serve --model runs/quickstart/sft/model            # http://127.0.0.1:8000/
    llada serve --model DIR --preset fast                     # the server's default sampler options

Routes: GET / (the chat page), GET /health, GET /v1/models, GET /v1/sampler (the default options,
presets and remasking strategies), POST /v1/completions, POST /v1/chat/completions (both with
"stream": true for server-sent events), GET /openapi.json (the API's schema). With an API key,
every route but / and /health needs it; there are no /docs or /redoc pages (FastAPI's load their
scripts from a CDN, so they would be blank offline). Errors are OpenAI-shaped JSON with a 4xx
status: 400 bad value, 401 key, 408 timeout, 413 body too large, 415 a POST body that is not JSON,
421 a Host header naming another server, 422 unknown or out-of-range field, 429 queue full.

This module holds the app, its routes and the `llada serve` command; the rest of the package, one
concern a module:
    config.py    ServeConfig: the server's limits and defaults
    guard.py     whether a request is admitted: Host, API key, content type, body size
    schema.py    the OpenAI wire format and its mapping onto SamplerOptions
    service.py   a request's life: encoding, queueing, finishing, streaming
    logprobs.py  Eq. 6 log-probabilities in OpenAI's two formats
    batcher.py   the queue and the worker thread that runs compatible requests as one batch
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from llada.sampling.options import SAMPLER_PRESETS
from llada.sampling.remasking import REMASKING
from llada.serve import schema
from llada.serve.config import ServeConfig, ServeConfigError
from llada.serve.guard import Guard, read_body
from llada.serve.schema import ChatRequest, CompletionRequest, RequestError
from llada.serve.service import Service

__all__ = ["ServeConfig", "ServeConfigError", "Service", "create_app"]


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

    app = FastAPI(title="llada", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batch_sizes, app.state.batcher, app.state.service = service.batch_sizes, None, service
    app.add_middleware(Guard, allowed_hosts=cfg.allowed_hosts, api_key=cfg.api_key)
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
    started = int(time.time())

    async def handle(request: Request, chat: bool) -> Any:
        req = schema.parse(ChatRequest if chat else CompletionRequest, await read_body(request, cfg.max_body_bytes))
        call = service.accept(req, chat, await asyncio.to_thread(service.prompts, req, chat))
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
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": started,
                                            "owned_by": "llada",
                                            "max_model_len": service.model.config.max_sequence_length}]}

    @app.get("/v1/sampler")
    async def sampler() -> dict[str, Any]:
        """The server's default options, the named presets and the remasking strategies (the page's controls)."""
        return {"defaults": cfg.options.to_dict(), "presets": SAMPLER_PRESETS, "remasking": list(REMASKING),
                "max_gen_tokens": cfg.max_gen_tokens}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": service.batcher.queued() if service.batcher else 0}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("llada.serve").joinpath("page.html").read_text()
