"""An OpenAI-compatible HTTP server for a llada model, and the page that shows the denoising.

    llada serve --model runs/quickstart/sft/model            # http://127.0.0.1:8000/
    llada serve --model DIR --preset fast                     # the server's default sampler options

Routes: GET / (the chat page), GET /health, GET /v1/models, GET /v1/sampler (the default options,
presets and remasking strategies), POST /v1/completions, POST /v1/chat/completions (both with
"stream": true for server-sent events), GET /openapi.json (the API's schema). With an API key,
every route but / and /health needs it; there are no /docs or /redoc pages (FastAPI's load their
scripts from a CDN, so they would be blank offline). The request format
and its mapping onto `SamplerOptions` are in schema.py; batching in batcher.py. Errors are
OpenAI-shaped JSON with a 4xx status: 400 bad value, 401 key, 408 timeout, 413 body too large,
415 a POST body that is not JSON, 421 a Host header naming another server, 422 unknown or
out-of-range field, 429 queue full.

An answer holds at most max_tokens tokens (the sampler's length is rounded up to whole blocks,
and the answer cut back), ends at the first EOS / end-of-turn or stop string, and its usage
counts the generated tokens it kept, with the sampler's steps and forward passes under "llada".

Log-probabilities (/v1/completions, "logprobs": k, with "echo" for the prompt's; /v1/chat/completions,
"logprobs": true and "top_logprobs": k, for the answer's tokens in chat's format) are Monte-Carlo
estimates of Eq. 6 (llada.likelihood), `ServeConfig.mc_num` samples each, seeded by the request's
seed (else 0). A masked diffusion model has no left-to-right factorisation, so a token's value is
a difference of sequence-level estimates: token i's logprob is E(i) - E(i+1), where E(k) is the
Eq. 6 estimate of log p(x[k:end] | x[:k]), end being the end of the prompt for prompt tokens and
of the completion for completion tokens (E(end) = 0). The values from any token k to the end of
the prompt thus add up to the estimate of that part given what precedes it (what lm-eval's
loglikelihood reads, whatever its split), and the completion's add up to the estimate of the
completion given the prompt. A prompt of n tokens costs n - 1 estimates. top_logprobs[i] lists
the token and the `logprobs` likeliest tokens of the model's prediction for position i from the
tokens before it (one mask appended; `llada.likelihood.next_token_logprobs`), on the token's own
scale: token_logprobs[i] plus each one's log-probability gap to the token. So the token is the
largest entry exactly when left-to-right decoding one token at a time would have picked it: that
is the "is_greedy" lm-eval reads.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from llada.errors import CheckpointError, UserError
from llada.sampling.commands import sampler_flags
from llada.sampling.options import SamplerOptions
from llada.sampling.text import cut_at_stop, cut_at_stop_texts, token_pieces
from llada.serve import schema
from llada.serve.batcher import Batcher, Job, QueueFull
from llada.serve.schema import Answer, ChatRequest, CompletionRequest, Reply, RequestError
from llada.tokenizer import check_chat_template, render_chat


class ServeConfigError(UserError, ValueError):
    """A server setting that would make every request fail."""


@dataclass
class ServeConfig:
    """Limits and defaults of the server, validated on construction (`ServeConfigError`)."""

    model_name: str = "llada"  # the id /v1/models reports and every response names
    max_batch: int = 8  # requests run together in one batched sampler call
    max_queue: int = 64  # waiting requests; one more gets 429
    timeout_s: float = 120.0  # per request, queueing included; then 408
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context (prompt + response must fit it)
    max_gen_tokens: int = 256
    api_key: str | None = None  # when set, every route but / and /health needs "Authorization: Bearer <key>"
    mc_num: int = 32  # Monte-Carlo samples of each Eq. 6 estimate behind logprobs
    mc_batch_size: int = 32  # rows per forward pass of those estimates
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback and the bound address; "*": any
    options: SamplerOptions = field(default_factory=SamplerOptions)  # what a request does not set

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_gen_tokens", "mc_num", "mc_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ServeConfigError(f"{name} must be a positive integer, got {value!r}: "
                                       "the server would refuse every request")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ServeConfigError(f"max_prompt_tokens must be a positive integer, got {self.max_prompt_tokens!r}")
        if not self.timeout_s > 0:
            raise ServeConfigError(f"timeout_s must be positive, got {self.timeout_s!r}: every request would time out")
        self.allowed_hosts = tuple(h.strip().lower().rstrip(".") for h in self.allowed_hosts)


def _sendable(text: str, stop_texts: list[str]) -> str:
    """The part of a partial answer that can be streamed now and never changes later: not an
    incomplete UTF-8 character at the end (it decodes as U+FFFD until its next byte arrives), nothing
    from a stop string on, and not an end that could still become a stop string."""
    text = cut_at_stop_texts(text, stop_texts)[0].rstrip("\ufffd")
    hold = 0
    for stop in stop_texts:  # the longest end of the text that begins a stop string
        hold = max(hold, next((k for k in range(min(len(stop) - 1, len(text)), hold, -1)
                               if text.endswith(stop[:k])), 0))
    return text[: len(text) - hold]


@dataclass
class _Call:
    """One accepted request: its jobs in the batcher (one per prompt; None where nothing is
    sampled) and what its response needs."""

    jobs: list[Job | None]
    reply: Reply
    prompts: list[list[int]]
    prompt_texts: list[str]  # what "echo" returns for each prompt
    options: SamplerOptions
    limit: int  # the most tokens an answer may hold: max_tokens
    stop_texts: list[str]
    stream_states: bool
    include_usage: bool
    deadline: float
    echo: bool = False
    top: int | None = None  # logprobs: alternatives per token, None for no logprobs
    seed: int = 0


@dataclass
class _Done:
    """A finished answer: the ids it kept (its completion tokens), its text and why it ended."""

    ids: list[int]
    text: str
    reason: str
    stats: dict[str, int]


class Service:
    """The model behind the routes: encodes requests, submits them, and turns the batcher's events
    into OpenAI responses and stream chunks. Text work per step runs in worker threads, never on
    the event loop."""

    def __init__(self, bundle: Any, cfg: ServeConfig) -> None:
        self.cfg, self.model, self.tok = cfg, bundle.model.eval(), bundle.tokenizer
        check_chat_template(self.tok)  # a template that fails would fail every chat request: refuse to start
        self.roles = self.model.config.roles
        self.max_prompt = cfg.max_prompt_tokens or self.model.config.max_sequence_length - 1
        self.special_ids = set(self.tok.all_special_ids) | set(self.roles.stops)
        self.batch_sizes: list[int] = []  # sizes of the batches run, for tests and monitoring
        self.batcher: Batcher | None = None

    def start(self) -> None:
        self.batcher = Batcher(self.model, self.roles.pad, max_batch=self.cfg.max_batch,
                               max_queue=self.cfg.max_queue, on_batch=lambda jobs: self.batch_sizes.append(len(jobs)))

    # ------------------------------------------------------------------------------ requests
    def encode(self, text: str, where: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RequestError(400, f"{where}: not valid Unicode text ({e.reason} at character {e.start})") from None
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def chat_prompt(self, req: Any) -> list[int]:
        # the developer role is OpenAI's new name for the system role
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": schema.message_text(m, i)}
                    for i, m in enumerate(req.messages)]
        for i, m in enumerate(messages):
            self.encode(m["content"], f"messages[{i}].content")
        try:
            text = render_chat(self.tok, messages)
        except CheckpointError as e:  # the template itself refused these messages, or ran away on them
            raise RequestError(400, f"messages: {e}") from None
        return self.encode(text, "messages")

    def completion_prompts(self, req: Any) -> tuple[list[list[int]], list[str]]:
        """Each prompt's ids and echo text: texts get BOS and are encoded; token ids are taken as given."""
        p = req.prompt
        prompts = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else list(p)
        if not prompts or any(len(x) == 0 for x in prompts):
            raise RequestError(400, "the prompt is empty; give at least one character (or token id)")
        most = min(self.cfg.max_batch, self.cfg.max_queue)  # they must fit the queue, and run as one batch
        if len(prompts) > most:
            raise RequestError(400, f"prompt: {len(prompts)} prompts in one request; the limit is {most}")
        bos = [self.roles.bos] if self.roles.bos is not None else []
        ids, texts = [], []
        for i, x in enumerate(prompts):
            if isinstance(x, str):
                ids.append(bos + self.encode(x, f"prompt[{i}]"))
                texts.append(x)
            else:
                self._check_ids(x, i)
                ids.append(list(x))
                texts.append(self.tok.decode(x, skip_special_tokens=True))
        return ids, texts

    def _check_ids(self, ids: list[int], i: int) -> None:
        vocab, mask = self.model.config.vocab_size, self.roles.mask
        bad = next((t for t in ids if not 0 <= t < vocab or t == mask), None)
        if bad is not None:
            raise RequestError(400, f"prompt[{i}]: token id {bad} is not a token of this model "
                                    f"(ids are 0..{vocab - 1}, the mask id {mask} excepted)")

    def prompts(self, req: Any, chat: bool) -> tuple[list[list[int]], list[str]]:
        """The request checked and its prompts encoded (ids, echo texts): run off the event loop."""
        schema.check_supported(req, chat)
        return ([self.chat_prompt(req)], [""]) if chat else self.completion_prompts(req)

    def accept(self, req: Any, chat: bool, encoded: tuple[list[list[int]], list[str]]) -> _Call:
        """Choose the options and queue one request, given its prompts (`prompts`)."""
        prompts, texts = encoded
        options, limit = schema.sampler_options(req, self.cfg.options, self.cfg.max_gen_tokens)
        top = schema.top_logprobs(req, chat)
        if req.stream and (len(prompts) > 1 or top is not None):
            raise RequestError(400, "stream: a streamed request is allowed one prompt and no logprobs; "
                                    "send it with stream false")
        for ids in prompts:
            self._check_length(ids, options.gen_length)
        loop = asyncio.get_running_loop()
        jobs = [Job(ids, options, loop, want_states=req.stream) if limit > 0 else None for ids in prompts]
        self._submit([j for j in jobs if j is not None])
        reply = Reply(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time()),
                      self.cfg.model_name, chat)
        return _Call(jobs, reply, prompts, texts, options, limit, schema.stop_texts(req), req.stream_states,
                     bool((req.stream_options or {}).get("include_usage")), time.monotonic() + self.cfg.timeout_s,
                     echo=bool(getattr(req, "echo", False)), top=top, seed=req.seed or 0)

    def _check_length(self, ids: list[int], gen_length: int) -> None:
        if len(ids) > self.max_prompt:
            raise RequestError(400, f"the prompt has {len(ids)} tokens; the limit is {self.max_prompt}")
        limit = self.model.config.max_sequence_length
        if len(ids) + gen_length > limit:
            raise RequestError(400, f"prompt ({len(ids)} tokens) + max_tokens ({gen_length}, in whole blocks) "
                                    f"exceeds the model's limit of {limit}")

    def _submit(self, jobs: list[Job]) -> None:
        """Queue every job of a request, or none of them (429)."""
        try:
            self.batcher.submit(*jobs)  # type: ignore[union-attr]
        except QueueFull:
            raise RequestError(429, f"the request queue is full ({self.cfg.max_queue} waiting); retry later") from None

    async def next_event(self, call: _Call, job: Job, request: Request) -> tuple[str, Any]:
        """The job's next event; RequestError 408 past the deadline or when the client went away."""
        while True:
            left = call.deadline - time.monotonic()
            if left <= 0:
                job.cancelled.set()
                raise RequestError(408, f"the request took longer than {self.cfg.timeout_s:g} s and was cancelled")
            try:
                return await asyncio.wait_for(job.events.get(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    raise RequestError(408, "the client went away") from None

    async def result(self, call: _Call, job: Job, request: Request) -> Any:
        """The payload of the job's "done" event (states in between are skipped)."""
        try:
            while True:
                kind, payload = await self.next_event(call, job, request)
                if kind == "error":
                    raise RequestError(503, payload)
                if kind == "done":
                    return payload
        finally:
            job.cancelled.set()

    # ------------------------------------------------------------------------------ answers
    def finish(self, ids: list[int], limit: int, stop_texts: list[str]) -> tuple[list[int], str, str]:
        """The answer in a finished canvas: at most `limit` tokens, up to the first EOS/EOT, cut at the
        first stop string. Returns the ids it kept, its text, and "stop" when an end token or stop
        string ended it, else "length" (the length asked for, or the sampler's, ran out)."""
        ids, stopped = cut_at_stop(ids[:limit], self.roles.stops)
        text, cut = cut_at_stop_texts(self.tok.decode(ids, skip_special_tokens=True), stop_texts)
        if cut:  # the tokens that make up the text before the stop string
            ids = ids[: next(k for k in range(len(ids) + 1)
                             if len(self.tok.decode(ids[:k], skip_special_tokens=True)) >= len(text))]
        # leading whitespace goes; trailing stays: a stream cannot take back what it sent
        return ids, text.lstrip(), "stop" if cut or stopped else "length"

    def usage(self, call: _Call, done: list[_Done]) -> dict[str, Any]:
        prompt = sum(len(p) for p in call.prompts)
        completion = sum(len(d.ids) for d in done)
        batches = {d.stats.get("batch"): d.stats for d in done if d.stats}  # a batch's passes count once
        llada = {"steps": max((s["steps"] for s in batches.values()), default=0),
                 "forwards": sum(s["forwards"] for s in batches.values())}
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "llada": llada}

    def settled_text(self, tokens: list[int], call: _Call) -> str:
        """The streamable text of a partial canvas: at most max_tokens tokens, up to the first mask
        or stop token, cut as `finish` cuts (stop strings, then leading whitespace)."""
        settled = []
        for t in tokens[: call.limit]:
            if t == self.roles.mask or t in self.roles.stops:
                break
            settled.append(t)
        return _sendable(self.tok.decode(settled, skip_special_tokens=True), call.stop_texts).lstrip()

    def state_extra(self, step: int, tokens: list[int], unmasked_at: list[int], steps: int) -> dict[str, Any]:
        """The canvas of one step, for the page: pieces of text, which are masks, which are special,
        and the number of steps the sampler is set to take (parallel decoding may take fewer)."""
        masked = [t == self.roles.mask for t in tokens]
        special = [not m and t in self.special_ids for t, m in zip(tokens, masked, strict=True)]
        pieces = token_pieces(self.tok, tokens, masked, self.special_ids)
        return {"llada_state": {"step": step, "steps": steps, "pieces": pieces, "unmasked_at": unmasked_at,
                                "masked": masked, "special": special}}

    async def complete(self, call: _Call, request: Request) -> dict[str, Any]:
        """The whole response of a non-streamed request."""
        done, answers = [], []
        try:
            for job in call.jobs:
                ids, stats = ([], {}) if job is None else await self.result(call, job, request)
                done.append(_Done(*await asyncio.to_thread(self.finish, ids, call.limit, call.stop_texts), stats))
        finally:
            for job in call.jobs:
                if job is not None:
                    job.cancelled.set()
        for k, d in enumerate(done):
            logprobs = None if call.top is None else await self.logprobs(call, k, d, request)
            text = d.text
            if call.echo:  # prompt and answer as they join: the space an answer starts with is kept
                raw = self.tok.decode(d.ids, skip_special_tokens=True)
                text = call.prompt_texts[k] + raw[: len(raw) - len(raw.lstrip())] + d.text
            answers.append(Answer(text, d.reason, logprobs))
        llada = call.options.to_dict()
        if call.top is not None:  # how the logprobs were estimated
            llada["logprobs"] = {"estimator": "Eq. 6 Monte-Carlo", "mc_num": self.cfg.mc_num, "seed": call.seed}
        return call.reply.body(answers, self.usage(call, done), {"llada": llada})

    # ------------------------------------------------------------------------------ logprobs
    def score(self, prompt: list[int], completion: list[int], echo: bool, top: int, seed: int) -> Any:
        """The batcher's work for one answer's logprobs (see the module docstring): per token of the
        sequence, its value (None where none is reported) and the top-`top` alternatives' ids and
        log-probability gaps to it."""
        import torch

        from llada.likelihood import log_likelihood, next_token_logprobs

        seq, P = prompt + completion, len(prompt)
        parts = ([(1, P)] if echo else []) + ([(P, len(seq))] if completion else [])
        cfg = self.cfg

        def work(cancelled: Any) -> Any:
            values: list[float | None] = [None] * len(seq)
            for begin, end in parts:
                after = 0.0  # E(k + 1), E(end) = 0
                for k in range(end - 1, begin - 1, -1):
                    if cancelled.is_set():
                        return None
                    estimate = log_likelihood(self.model, seq[:k], seq[k:end], mc_num=cfg.mc_num,
                                              batch_size=cfg.mc_batch_size,
                                              generator=torch.Generator().manual_seed(seed)).value
                    values[k], after = estimate - after, estimate
            first = 1 if echo else P
            lp = next_token_logprobs(self.model, seq, start=first, batch_size=cfg.mc_batch_size)
            best = lp.topk(min(top, lp.shape[1]), dim=-1) if top else None
            own = lp.gather(1, torch.as_tensor(seq[first:], dtype=torch.long)[:, None])[:, 0]
            alts = [([], []) if best is None else (best.indices[j].tolist(), (best.values[j] - own[j]).tolist())
                    for j in range(lp.shape[0])]
            return values, [None] * first + alts

        return work

    async def logprobs(self, call: _Call, k: int, d: _Done, request: Request) -> dict[str, Any]:
        """OpenAI's legacy logprobs of answer k: tokens, token_logprobs, top_logprobs, text_offset."""
        prompt = call.prompts[k]
        job = Job(prompt, call.options, asyncio.get_running_loop(),
                  work=self.score(prompt, d.ids, call.echo, call.top or 0, call.seed))
        self._submit([job])
        values, alts = await self.result(call, job, request)
        body = self._chat_logprobs_body if call.reply.chat else self._logprobs_body
        return await asyncio.to_thread(body, call, k, d, values, alts)

    def _chat_logprobs_body(self, call: _Call, k: int, d: _Done, values: list, alts: list) -> dict[str, Any]:
        """Chat's logprobs of answer k: per answer token, its text, value, UTF-8 bytes and the
        `top_logprobs` likeliest (the token among them at its own value when it is one of them),
        highest first. The values are those of /v1/completions: they add up to the Eq. 6 estimate
        of the whole answer given the prompt. The tokens join into the message's content (whose
        leading whitespace is dropped; with a stop string, the last one may hold part of it)."""
        seq, P = call.prompts[k] + d.ids, len(call.prompts[k])
        pieces = token_pieces(self.tok, seq, [False] * len(seq), self.special_ids)

        def item(text: str, value: float) -> dict[str, Any]:
            return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

        content, leading = [], True
        for i in range(P, len(seq)):
            if seq[i] in self.special_ids:
                continue
            ranked = {self.tok.decode([t]): values[i] + gap for t, gap in zip(*alts[i], strict=True) if t != seq[i]}
            ranked[pieces[i]] = values[i]
            best = sorted(ranked.items(), key=lambda kv: -kv[1])[: call.top or 0]
            shown = pieces[i].lstrip() if leading else pieces[i]  # the content's leading space is dropped: so here
            leading = leading and not shown
            content.append({**item(shown, values[i]), "top_logprobs": [item(t, v) for t, v in best]})
        return {"content": content, "refusal": None}

    def _logprobs_body(self, call: _Call, k: int, d: _Done, values: list, alts: list) -> dict[str, Any]:
        seq, P = call.prompts[k] + d.ids, len(call.prompts[k])
        pieces = token_pieces(self.tok, seq, [False] * len(seq), self.special_ids)
        special = [t in self.special_ids for t in seq]
        shown = range(0 if call.echo else P, len(seq))
        raw = "".join(p for p, s in zip(pieces[P:], special[P:], strict=True) if not s)
        stripped = len(raw) - len(raw.lstrip())  # the answer's leading whitespace is not in its text
        base = len(call.prompt_texts[k]) if call.echo else 0  # where the answer's text starts
        offsets, at = [], 0
        for i in range(len(seq)):
            if i == P:
                at = base - stripped
            offsets.append(max(at, base) if i >= P else at)
            at += 0 if special[i] else len(pieces[i])
        tops: list[dict[str, float] | None] = []
        for i in shown:
            if alts[i] is None:
                tops.append(None)
                continue
            entry = {self.tok.decode([t]): values[i] + gap for t, gap in zip(*alts[i], strict=True) if t != seq[i]}
            entry.pop(pieces[i], None)  # another token that reads the same is not a better choice
            tops.append({**entry, pieces[i]: values[i]})  # the token itself, at its own value
        return {"tokens": [pieces[i] for i in shown], "token_logprobs": [values[i] for i in shown],
                "top_logprobs": tops, "text_offset": [offsets[i] for i in shown]}

    # ------------------------------------------------------------------------------ streams
    def step_chunk(self, call: _Call, payload: Any, sent: str, unmasked_at: list[int]) -> tuple[str, str | None]:
        """One state's chunk (None when it adds nothing) and the text sent so far."""
        step, tokens, transferred = payload
        for i, moved in enumerate(transferred):
            if moved:
                unmasked_at[i] = step
        text = self.settled_text(tokens, call)
        delta = text[len(sent):] if text.startswith(sent) and len(text) > len(sent) else ""
        extra = self.state_extra(step, tokens, unmasked_at, call.options.num_steps) if call.stream_states else None
        return sent + delta, call.reply.chunk(delta, None, extra) if delta or extra else None

    async def stream(self, call: _Call, request: Request) -> AsyncIterator[str]:
        """The server-sent events of a streamed request: text deltas as the canvas settles."""
        job, sent, unmasked_at = call.jobs[0], "", [-1] * call.options.gen_length
        try:
            if call.reply.chat:
                yield call.reply.first_chunk()
            if call.echo:
                yield call.reply.chunk(call.prompt_texts[0], None)
            while job is not None:
                try:
                    kind, payload = await self.next_event(call, job, request)
                except RequestError as e:
                    yield schema.event({"error": {"message": str(e), "code": e.status}})
                    return
                if kind == "error":
                    yield schema.event({"error": {"message": payload, "code": 503}})
                    return
                if kind == "done":
                    break
                sent, chunk = await asyncio.to_thread(self.step_chunk, call, payload, sent, unmasked_at)
                if chunk:
                    yield chunk
            ids, stats = payload if job is not None else ([], {})
            for chunk in await asyncio.to_thread(self._closing, call, ids, stats, sent):
                yield chunk
        finally:
            if job is not None:
                job.cancelled.set()  # a client that went away frees its slot

    def _closing(self, call: _Call, ids: list[int], stats: dict[str, int], sent: str) -> list[str]:
        d = _Done(*self.finish(ids, call.limit, call.stop_texts), stats)
        out = [call.reply.chunk(d.text[len(sent):] if d.text.startswith(sent) else "", d.reason)]
        if call.include_usage:
            out.append(call.reply.usage_chunk(self.usage(call, [d])))
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

    app = FastAPI(title="llada", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batch_sizes, app.state.batcher, app.state.service = service.batch_sizes, None, service
    app.add_middleware(_Guard, allowed_hosts=cfg.allowed_hosts, api_key=cfg.api_key)
    _add_error_handlers(app)
    _add_routes(app, service, cfg)
    return app


def _host_name(header: str) -> str:
    """The host of a Host header, without its port: "[::1]:8000" -> "::1", "Example.org." -> "example.org"."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    name = header.rpartition(":")[0] if header.count(":") == 1 else header
    return name.lower().rstrip(".")


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


PUBLIC_PATHS = ("/", "/health")  # what answers without the API key: the chat page (it asks for the key) and liveness


class _Guard:
    """Checks made before any route, so that a web page the user visits cannot use a server on their
    machine: the Host header must name this server (loopback, the address the connection came in on,
    or --allowed_hosts), else 421 (a DNS-rebinding page names its own host); with an API key, every
    path but `PUBLIC_PATHS` must send it, else 401; a POST body must be declared JSON, else 415 (a
    cross-origin page can send text/plain without asking first). No CORS headers are sent, so
    browsers keep other origins from reading the answers."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] = (), api_key: str | None = None) -> None:
        self.app, self.allowed, self.api_key = app, set(allowed_hosts), api_key

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        name = _host_name(headers.get("host", "").strip())
        bound = (scope.get("server") or ("",))[0]
        if not ("*" in self.allowed or name in self.allowed or _is_loopback(name) or (name and name == bound)):
            return 421, (f"this server does not answer for host {name or '(none)'!r}; start it with "
                         f"--allowed_hosts {name or 'NAME'} to allow that name")
        sent = headers.get("authorization", "").encode("latin-1")
        if (self.api_key and scope.get("path") not in PUBLIC_PATHS
                and not hmac.compare_digest(sent, f"Bearer {self.api_key}".encode())):
            return 401, "missing or wrong API key: send 'Authorization: Bearer <key>'"
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope.get("method") == "POST" and kind != "application/json":
            return 415, f"the request body must be JSON, sent with Content-Type: application/json (got {kind!r})"
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        problem = self.refusal(scope) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        await JSONResponse(schema.error_body(status, message), status)(scope, receive, send)


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

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {cfg.max_body_bytes}")
        body = await request.body()
        if len(body) > cfg.max_body_bytes:
            raise RequestError(413, f"request body exceeds the limit of {cfg.max_body_bytes} bytes")
        return body

    async def handle(request: Request, chat: bool) -> Any:
        req = schema.parse(ChatRequest if chat else CompletionRequest, await body_of(request))
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
        from llada.sampling.options import SAMPLER_PRESETS
        from llada.sampling.remasking import REMASKING

        return {"defaults": cfg.options.to_dict(), "presets": SAMPLER_PRESETS, "remasking": list(REMASKING),
                "max_gen_tokens": cfg.max_gen_tokens}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": service.batcher.queued() if service.batcher else 0}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("llada.serve").joinpath("page.html").read_text()


def _check_exposure(host: str, port: int, api_key: str | None, allow_unauthenticated: bool) -> None:
    if not 1 <= port <= 65535:
        raise ServeConfigError(f"port must be in 1..65535, got {port}")
    if not _is_loopback(_host_name(host)) and not api_key and not allow_unauthenticated:
        raise ServeConfigError(f"--host {host} would let anyone who can reach this machine use the model; "
                               "give --api_key KEY (or set LLADA_API_KEY), or --allow_unauthenticated true "
                               "if that is what you mean")


@sampler_flags
def serve(model: str = "runs/quickstart/sft/model", host: str = "127.0.0.1", port: int = 8000,
          device: str | None = None, dtype: str = "auto", quantization: str | None = None, compile: bool = False,
          max_batch: int = 8, max_queue: int = 64,
          timeout_s: float = 120.0, max_gen_tokens: int = 256, api_key: str | None = None,
          served_model_name: str | None = None, mc_num: int = 32, allowed_hosts: str | None = None,
          allow_unauthenticated: bool = False, revision: str | None = None, **options: Any) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with a chat page at /.

    Args:
        model: a model directory (or Hub id)
        host: address to bind; loopback by default. Anything else needs --api_key (or --allow_unauthenticated).
        port: TCP port
        device: cpu, cuda, ... (default: cuda when available)
        dtype: float32, bfloat16 or float16 (default auto: bfloat16 on a CUDA GPU, as stored elsewhere)
        quantization: int8 or int4: the blocks' Linear layers quantized weight-only (the quant extra, torchao; int4 on the CPU only)
        compile: compile each Transformer block (torch.compile; the first calls pay the compilation)
        max_batch: requests batched into one sampler call
        max_queue: waiting requests before 429
        timeout_s: per-request limit (queueing included) before 408
        max_gen_tokens: the largest max_tokens a request may ask for
        api_key: require "Authorization: Bearer <key>" on every route but / and /health (or set LLADA_API_KEY)
        served_model_name: the model id /v1/models reports (default: the model directory's name)
        mc_num: Monte-Carlo samples of each Eq. 6 estimate behind "logprobs" on /v1/completions
        allowed_hosts: Host header names to answer besides loopback and the bound address, comma-separated ("*": any)
        allow_unauthenticated: serve beyond loopback without an API key
        revision: a branch, tag or commit when --model is a Hugging Face Hub id

    The sampler flags below set what a request does not: a request's own fields and "preset" win.
    """
    import os

    api_key = api_key or os.environ.get("LLADA_API_KEY")
    _check_exposure(host, port, api_key, allow_unauthenticated)
    from llada.sampling.commands import options_from_flags

    cfg = ServeConfig(model_name=served_model_name or os.path.basename(os.path.normpath(model)), max_batch=max_batch,
                      max_queue=max_queue, timeout_s=timeout_s, max_gen_tokens=max_gen_tokens, api_key=api_key,
                      mc_num=mc_num, allowed_hosts=tuple(h for h in (allowed_hosts or "").split(",") if h.strip()),
                      options=options_from_flags(options))
    import torch
    import uvicorn

    from llada.checkpoint import load
    from llada.runtime import inference_dtype

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bundle = load(model, dtype=inference_dtype(dtype, device), device=device, revision=revision,
                  quantization=quantization, compile=compile)
    uvicorn.run(create_app(bundle, cfg), host=host, port=port, log_level="info")
