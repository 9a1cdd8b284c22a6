"""The model behind the routes: `Service` turns a parsed request into queued jobs, and the batcher's
events into OpenAI responses and stream chunks.

A request goes through four stages, in this order in the class:
- encoding (`prompts`, off the event loop): the request checked against what the sampler can do
  (schema.py) and its prompts tokenised: chat messages through the model's template, completion
  texts with BOS, token ids as given;
- queueing (`accept`): its `SamplerOptions` chosen, its length checked against the model's
  context, one job per prompt submitted to the batcher (all or none: 429), a deadline set (408);
- finishing (`complete`): each answer cut and counted, with its log-probabilities (logprobs.py)
  when asked for;
- streaming (`stream`): server-sent text deltas as the canvas settles, with each step's canvas
  under "stream_states".

An answer holds at most max_tokens tokens (the sampler's length is rounded up to whole blocks,
and the answer cut back), ends at the first EOS / end-of-turn or stop string, and its usage
counts the generated tokens it kept, with the sampler's steps and forward passes under "llada".
A stream sends only text that cannot change later (`_sendable`). Text work per step runs in worker
threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from llada.errors import CheckpointError, GenerationError
from llada.sampling.options import SamplerOptions
from llada.sampling.text import cut_at_stop, cut_at_stop_texts, token_pieces
from llada.serve import schema
from llada.serve.batcher import Batcher, Job, QueueFull
from llada.serve.config import ServeConfig
from llada.serve.logprobs import Estimator, chat_logprobs, completion_logprobs, scoring
from llada.serve.schema import Answer, Reply, RequestError
from llada.tokenizer import check_chat_template, encode, render_chat


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
    """The model behind the routes (see the module docstring). `start` makes its batcher, inside
    the running server; `batch_sizes` records the size of every batch run."""

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

    # ------------------------------------------------------------------------------ encoding
    def prompts(self, req: Any, chat: bool) -> tuple[list[list[int]], list[str]]:
        """The request checked and its prompts encoded (ids, echo texts): run off the event loop."""
        schema.check_supported(req, chat)
        return ([self.chat_prompt(req)], [""]) if chat else self.completion_prompts(req)

    def encode(self, text: str, where: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RequestError(400, f"{where}: not valid Unicode text ({e.reason} at character {e.start})") from None
        try:
            return encode(self.tok, text)
        except CheckpointError as e:  # the model's tokenizer fails on this text (a regex that gives up)
            raise RequestError(400, f"{where}: {e}") from None

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

    # ------------------------------------------------------------------------------ queueing
    def accept(self, req: Any, chat: bool, encoded: tuple[list[list[int]], list[str]]) -> _Call:
        """Choose the options and queue one request, given its prompts (`prompts`)."""
        prompts, texts = encoded
        options, limit = schema.sampler_options(req, self.cfg.options, self.cfg.max_gen_tokens)
        top = schema.top_logprobs(req, chat)
        if req.stream and (len(prompts) > 1 or top is not None):
            raise RequestError(400, "stream: a streamed request is allowed one prompt and no logprobs; "
                                    "send it with stream false")
        for ids in prompts:
            self._check_length(ids, options, limit)
        loop = asyncio.get_running_loop()
        jobs = [Job(ids, options, loop, want_states=req.stream) if limit > 0 else None for ids in prompts]
        self._submit([j for j in jobs if j is not None])
        reply = Reply(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time()),
                      self.cfg.model_name, chat)
        return _Call(jobs, reply, prompts, texts, options, limit, schema.stop_texts(req), req.stream_states,
                     bool((req.stream_options or {}).get("include_usage")), time.monotonic() + self.cfg.timeout_s,
                     echo=bool(getattr(req, "echo", False)), top=top, seed=req.seed or 0)

    def _check_length(self, ids: list[int], options: SamplerOptions, asked: int) -> None:
        """RequestError 400 for a prompt over the server's limit, or a canvas (prompt + answer, block
        diffusion in whole blocks) past the model's positions: before any job reaches the model."""
        if len(ids) > self.max_prompt:
            raise RequestError(400, f"the prompt has {len(ids)} tokens; the limit is {self.max_prompt}")
        limit = self.model.config.max_sequence_length
        try:
            options.check_block(limit)
        except GenerationError as e:
            raise RequestError(400, str(e)) from None
        try:
            options.check_room(len(ids), limit)
        except GenerationError as e:  # the sampler's length is max_tokens, in whole blocks
            whole = f" in whole blocks of {options.block_size}" if asked != options.gen_length else ""
            raise RequestError(400, f"{e} (gen_length: max_tokens {asked}{whole})") from None

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

    # ------------------------------------------------------------------------------ finishing
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

    async def complete(self, call: _Call, request: Request) -> dict[str, Any]:
        """The whole response of a non-streamed request."""
        done = []
        try:
            for job in call.jobs:
                ids, stats = ([], {}) if job is None else await self.result(call, job, request)
                done.append(_Done(*await asyncio.to_thread(self.finish, ids, call.limit, call.stop_texts), stats))
        finally:
            for job in call.jobs:
                if job is not None:
                    job.cancelled.set()
        answers = []
        for k, d in enumerate(done):
            scored = None if call.top is None else await self.logprobs(call, k, d, request)
            answers.append(Answer(self._answer_text(call, k, d), d.reason, scored))
        llada = call.options.to_dict()
        if call.top is not None:  # how the logprobs were estimated
            llada["logprobs"] = self._estimator(call).describe()
        return call.reply.body(answers, self.usage(call, done), {"llada": llada})

    def _answer_text(self, call: _Call, k: int, d: _Done) -> str:
        if not call.echo:
            return d.text
        # prompt and answer as they join: the space an answer starts with is kept
        raw = self.tok.decode(d.ids, skip_special_tokens=True)
        return call.prompt_texts[k] + raw[: len(raw) - len(raw.lstrip())] + d.text

    def _estimator(self, call: _Call) -> Estimator:
        return Estimator(self.cfg.mc_num, self.cfg.mc_batch_size, call.seed)

    async def logprobs(self, call: _Call, k: int, d: _Done, request: Request) -> dict[str, Any]:
        """Answer k's logprobs in its endpoint's format, scored by a job in the same queue."""
        prompt, top = call.prompts[k], call.top or 0
        work = scoring(self.model, prompt, d.ids, call.echo, top, self._estimator(call))
        job = Job(prompt, call.options, asyncio.get_running_loop(), work=work)
        self._submit([job])
        scores = await self.result(call, job, request)
        if call.reply.chat:
            return await asyncio.to_thread(chat_logprobs, self.tok, self.special_ids, prompt, d.ids,
                                           scores, top)
        echo_text = call.prompt_texts[k] if call.echo else None
        return await asyncio.to_thread(completion_logprobs, self.tok, self.special_ids, prompt, d.ids,
                                       scores, echo_text)

    # ------------------------------------------------------------------------------ streaming
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
                job.cancelled.set()

    def _closing(self, call: _Call, ids: list[int], stats: dict[str, int], sent: str) -> list[str]:
        d = _Done(*self.finish(ids, call.limit, call.stop_texts), stats)
        out = [call.reply.chunk(d.text[len(sent):] if d.text.startswith(sent) else "", d.reason)]
        if call.include_usage:
            out.append(call.reply.usage_chunk(self.usage(call, [d])))
        return out + ["data: [DONE]\n\n"]
