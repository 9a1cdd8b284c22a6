"""The server's limits and defaults: `ServeConfig`, validated once, on construction.

`llada serve` builds it from its flags; `create_app(bundle, ServeConfig(...))` takes it whole, and
the service, the request guard and the routes read their limits from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llada.errors import UserError
from llada.sampling.options import SamplerOptions


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
