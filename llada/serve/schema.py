"""The OpenAI wire format of `llada serve`: request schemas, their mapping onto `SamplerOptions`,
and the response and stream-chunk bodies. No routes and no model here (those are in app.py).

Sampler options are extra request fields named as `SamplerOptions`' fields (steps, block_length,
remasking, cfg_scale, threshold, factor, cache, ...), plus "preset" (reference, fast, quality);
max_tokens / max_completion_tokens set gen_length, and OpenAI's temperature and seed map onto
the fields of the same names. "stream_states": true adds each intermediate canvas to the stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from llada.errors import GenerationError
from llada.sampling.options import OPTION_NAMES, SamplerOptions

# Fields a request sets through OpenAI's own names (max_tokens -> gen_length), not as extras.
_OPENAI_NAMED = {"gen_length": "max_tokens"}
_TYPES = {"gen_length": int, "steps": int, "block_length": int, "temperature": float, "cfg_scale": float,
          "remasking": str, "threshold": float, "factor": float, "cache": str, "logits_eos_inf": bool,
          "confidence_eos_eot_inf": bool, "early_exit": bool, "seed": int}


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and a message naming the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _OpenAIFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    user: str | None = None
    top_p: float | None = Field(None, gt=0.0, le=1.0)  # only 1: the diffusion sampler has no nucleus sampling
    preset: str | None = None
    stream_states: bool = False


# Every SamplerOptions field a request may set, typed, defaulting to None ("as the preset/server").
_Request = create_model(  # type: ignore[call-overload]
    "_Request", __base__=_OpenAIFields,
    **{name: (_TYPES[name] | None, Field(None, description=SamplerOptions.help()[name]))
       for name in OPTION_NAMES if name not in _OPENAI_NAMED})


class CompletionRequest(_Request):  # type: ignore[misc, valid-type]
    prompt: str | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRequest(_Request):  # type: ignore[misc, valid-type]
    messages: list[Message] = Field(min_length=1)


def parse(schema: type[BaseModel], body: bytes) -> Any:
    """The validated request, or RequestError 400 (not JSON) / 422 (a field, named)."""
    from pydantic import ValidationError

    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON: {e}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
        raise RequestError(422, problems) from None


def sampler_options(req: Any, defaults: SamplerOptions, max_gen_tokens: int) -> SamplerOptions:
    """The request's SamplerOptions: its preset (else the server's defaults), then its own fields,
    gen_length from max_tokens (blocks and steps fitted to it). RequestError 422 names a field
    the sampler refuses; 400 a max_tokens above the server's limit."""
    if req.top_p is not None and req.top_p < 1:
        raise RequestError(422, f"top_p: {req.top_p} asks for nucleus sampling, which the diffusion sampler "
                                "does not do; leave it out (or 1) and use temperature")
    given = {name: getattr(req, name) for name in OPTION_NAMES
             if name not in _OPENAI_NAMED and getattr(req, name) is not None}
    gen = req.max_completion_tokens or req.max_tokens
    if gen is not None and gen > max_gen_tokens:
        raise RequestError(400, f"max_tokens is {gen}; this server allows at most {max_gen_tokens}")
    try:
        base = SamplerOptions.from_dict({"preset": req.preset}) if req.preset else defaults
        return base.fitted(gen, **given)
    except GenerationError as e:
        raise RequestError(422, str(e)) from None


# ------------------------------------------------------------------------------------ responses
@dataclass
class Reply:
    """What the bodies of one request's response share."""

    id: str
    created: int
    model: str
    chat: bool

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def body(self, text: str, reason: str, usage: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return {**self._head("chat.completion" if self.chat else "text_completion"), "choices": [choice],
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

    def usage_chunk(self, usage: dict[str, int]) -> str:
        """OpenAI's last chunk under stream_options.include_usage: usage, no choices."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return event({**self._head(obj), "choices": [], "usage": usage})


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def error_body(status: int, message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}
