"""The OpenAI wire format of `llada serve`: request schemas, their mapping onto `SamplerOptions`,
and the response and stream-chunk bodies. No routes and no model here (those are in app.py).

Sampler options are extra request fields named as `SamplerOptions`' fields (steps, block_length,
remasking, cfg_scale, threshold, factor, cache, ...), plus "preset" (reference, fast, quality);
max_tokens / max_completion_tokens set gen_length, and OpenAI's temperature and seed map onto
the fields of the same names. "stream_states": true adds each intermediate canvas to the stream.

Every field the official client sends is accepted. Fields that ask for something the sampler
cannot do (penalties, logit_bias, n > 1, best_of > 1, JSON mode, tools, image parts) are accepted
at their neutral values and answered 400 otherwise, naming what is allowed (`check_supported`);
bookkeeping fields (user, store, metadata, service_tier, ...) are accepted and change nothing.
A field nobody knows is a 422 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from llada.errors import GenerationError
from llada.sampling.options import OPTION_NAMES, OPTION_TYPES, SamplerOptions

MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_STOP_CHARS = 256  # characters per stop string (each is matched against the answer at every step)
MAX_TOP_LOGPROBS = 20

# Fields a request sets through OpenAI's own names (max_tokens -> gen_length), not as extras.
_OPENAI_NAMED = {"gen_length": "max_tokens"}


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and a message naming the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Strict(BaseModel):
    # unknown fields are named in a 422; NaN and infinity are no numbers a sampler can use
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _OpenAIFields(_Strict):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    # accepted at their neutral values only (`check_supported`)
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # bookkeeping: accepted, no effect on the answer
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    # llada's own
    preset: str | None = None
    stream_states: bool = False


# Every SamplerOptions field a request may set, typed, defaulting to None ("as the preset/server").
_Request = create_model(  # type: ignore[call-overload]
    "_Request", __base__=_OpenAIFields,
    **{name: (OPTION_TYPES[name] | None, Field(None, description=SamplerOptions.help()[name]))
       for name in OPTION_NAMES if name not in _OPENAI_NAMED})


class CompletionRequest(_Request):  # type: ignore[misc, valid-type]
    # one text, several texts, one list of token ids, or several (lm-eval sends ids)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)  # 0 with echo: score the prompt, generate nothing
    echo: bool | None = False
    logprobs: bool | int | None = Field(None, ge=0)
    suffix: str | None = None
    best_of: int | None = None


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    # what the client's own response objects carry when sent back as history
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None  # a tool result's; refused with the tool role


class ChatRequest(_Request):  # type: ignore[misc, valid-type]
    messages: list[Message] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None


def parse(schema: type[BaseModel], body: bytes) -> Any:
    """The validated request, or RequestError 400 (not JSON) / 422 (a field, named)."""
    from pydantic import ValidationError

    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise RequestError(400, "the body is nested too deeply to be a request") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
        raise RequestError(422, problems) from None


# ------------------------------------------------------------------------------------ what is allowed
_NO_TOOLS = "this server generates text only; it makes no tool calls"
# field -> (is the value one the sampler can honour, what is allowed). Anything else is a 400.
_ONLY: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v in (None, 1), "1 (one answer per request; send several requests and they are batched)"),
    "best_of": (lambda v: v in (None, 1), "1 (one sample per request)"),
    "presence_penalty": (lambda v: not v, "0 (the sampler has no repetition penalties)"),
    "frequency_penalty": (lambda v: not v, "0 (the sampler has no repetition penalties)"),
    "logit_bias": (lambda v: not v, "{} (the sampler takes no per-token bias)"),
    "suffix": (lambda v: not v, "null (no text after the insertion point)"),
    "response_format": (lambda v: v is None or v.get("type") == "text", '{"type": "text"} (no JSON mode)'),
    "tools": (lambda v: not v, f"[] ({_NO_TOOLS})"),
    "functions": (lambda v: not v, f"[] ({_NO_TOOLS})"),
    "tool_choice": (lambda v: v in (None, "none", "auto"), f'"none" or "auto" ({_NO_TOOLS})'),
    "function_call": (lambda v: v in (None, "none", "auto"), f'"none" or "auto" ({_NO_TOOLS})'),
    "modalities": (lambda v: v in (None, ["text"]), '["text"]'),
}


def check_supported(req: Any, chat: bool) -> None:
    """RequestError 400 for a value the sampler cannot honour, naming the field and what is allowed."""
    for key, (ok, allowed) in _ONLY.items():
        name, _, only_on = key.partition(".")
        if name not in type(req).model_fields or (only_on == "chat" and not chat):
            continue
        value = getattr(req, name)
        if not ok(value):
            raise RequestError(400, f"{name}: {json.dumps(value)} is not supported; allowed: {allowed}")
    if chat:
        for i, m in enumerate(req.messages):
            message_text(m, i)
    if isinstance(req.stop, list) and len(req.stop) > MAX_STOP:
        raise RequestError(400, f"stop: {len(req.stop)} stop strings; the limit is {MAX_STOP}")
    if any(len(s) > MAX_STOP_CHARS for s in stop_texts(req)):
        raise RequestError(400, f"stop: a stop string is longer than the limit of {MAX_STOP_CHARS} characters")


def message_text(m: Message, i: int) -> str:
    """A message's text: a string, or the text parts of a list joined; 400 for what is no text."""
    where = f"messages[{i}]"
    if m.role in ("tool", "function") or m.tool_calls or m.function_call or m.audio:
        raise RequestError(400, f"{where}: tool calls, tool results and audio are not supported ({_NO_TOOLS}); "
                                "send system, developer, user and assistant messages with text")
    if m.content is None or isinstance(m.content, str):
        return m.content or ""
    texts = []
    for j, part in enumerate(m.content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise RequestError(400, f"{where}.content[{j}]: a part of type {json.dumps(part.get('type'))} is not "
                                    'supported; only text parts: {"type": "text", "text": "..."}')
        texts.append(part["text"])
    return "".join(texts)


def stop_texts(req: Any) -> list[str]:
    return [req.stop] if isinstance(req.stop, str) else list(req.stop or [])


def top_logprobs(req: Any, chat: bool = False) -> int | None:
    """How many alternatives per token the request wants reported (None: no logprobs): completions'
    "logprobs": k, or chat's "logprobs": true with "top_logprobs": k (OpenAI refuses top_logprobs
    without logprobs, and so does this: 400)."""
    value = getattr(req, "logprobs", None)
    if chat:
        if not value:
            if req.top_logprobs:
                raise RequestError(400, "top_logprobs needs logprobs: true")
            return None
        return req.top_logprobs or 0
    if value is None or value is False:
        return None
    if value is True:
        return 0
    if value > MAX_TOP_LOGPROBS:
        raise RequestError(400, f"logprobs: {value} alternatives per token; the limit is {MAX_TOP_LOGPROBS}")
    return int(value)


def sampler_options(req: Any, defaults: SamplerOptions, max_gen_tokens: int) -> tuple[SamplerOptions, int]:
    """The request's SamplerOptions and the most tokens its answer may hold. The options are its
    preset (else the server's defaults), then its own fields, gen_length from max_tokens (rounded
    up to whole blocks, steps fitted to it: the answer is cut back to the length asked for).
    RequestError 422 names a field the sampler refuses; 400 a max_tokens above the server's limit."""
    given = {name: getattr(req, name) for name in OPTION_NAMES
             if name not in _OPENAI_NAMED and getattr(req, name) is not None}
    if given.get("top_k") == -1:  # vLLM's way of saying no top-k (0 is the options' own)
        given.pop("top_k")
    gen = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if gen is not None and gen > max_gen_tokens:
        raise RequestError(400, f"max_tokens is {gen}; this server allows at most {max_gen_tokens}")
    try:
        base = SamplerOptions.from_dict({"preset": req.preset}) if req.preset else defaults
        limit = base.gen_length if gen is None else gen
        options = base.fitted(max(limit, 1), **given)
    except GenerationError as e:
        raise RequestError(422, str(e)) from None
    if req.steps is not None and req.steps > options.gen_length:
        raise RequestError(400, f"steps: {req.steps} for an answer of {options.gen_length} positions (max_tokens in "
                                "whole blocks); the limit is one step per position")
    return options, limit


# ------------------------------------------------------------------------------------ responses
@dataclass
class Answer:
    """One choice of a response: its text, why it ended, and its logprobs (in its endpoint's format)."""

    text: str
    reason: str
    logprobs: dict[str, Any] | None = None


@dataclass
class Reply:
    """What the bodies of one request's response share."""

    id: str
    created: int
    model: str
    chat: bool

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def body(self, answers: list[Answer], usage: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.reason,
                        "logprobs": a.logprobs} for i, a in enumerate(answers)]
        else:
            choices = [{"index": i, "text": a.text, "finish_reason": a.reason, "logprobs": a.logprobs}
                       for i, a in enumerate(answers)]
        return {**self._head("chat.completion" if self.chat else "text_completion"), "choices": choices,
                "usage": usage, **extra}

    def chunk(self, delta: str | None, reason: str | None, extra: dict[str, Any] | None = None) -> str:
        """One server-sent event of a stream."""
        if self.chat:
            choice = {"index": 0, "delta": {} if delta is None else {"content": delta}, "finish_reason": reason}
            body = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            body = {**self._head("text_completion"),
                    "choices": [{"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}]}
        return event({**body, **(extra or {})})

    def first_chunk(self) -> str:
        """Chat streams open with the assistant's role, as OpenAI's do."""
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return event({**self._head("chat.completion.chunk"), "choices": [choice]})

    def usage_chunk(self, usage: dict[str, Any]) -> str:
        """OpenAI's last chunk under stream_options.include_usage: usage, no choices."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return event({**self._head(obj), "choices": [], "usage": usage})


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def error_body(status: int, message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}
