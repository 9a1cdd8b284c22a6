"""The request guard: what decides whether a request is admitted, before any model work.

A web page the user visits can send requests to a server on their machine, so every request passes
`Guard` (an ASGI middleware, in front of every route) first:

- 421: the Host header must name this server: a loopback name, the address the connection came in
  on, or one of `--allowed_hosts` ("*": any). A DNS-rebinding page names its own host.
- 401: with an API key, every path but `PUBLIC_PATHS` must send "Authorization: Bearer <key>"
  (compared in constant time).
- 415: a POST body must be declared JSON: a cross-origin page can send text/plain without asking first.

No CORS headers are sent, so browsers keep other origins from reading the answers. A route then
reads the body through `read_body` (413 past `ServeConfig.max_body_bytes`); a request's time limit
(408) runs from there, while it waits on the model (service.py). At start-up, `check_exposure`
refuses to listen beyond loopback without an API key unless the user says so.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from llada.serve.config import ServeConfigError
from llada.serve.schema import RequestError, error_body

PUBLIC_PATHS = ("/", "/health")  # what answers without the API key: the chat page (it asks for the key) and liveness


def host_name(header: str) -> str:
    """The host of a Host header, without its port: "[::1]:8000" -> "::1", "Example.org." -> "example.org"."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    name = header.rpartition(":")[0] if header.count(":") == 1 else header
    return name.lower().rstrip(".")


def is_loopback(name: str) -> bool:
    """Whether a host name (as `host_name` gives it) is this machine's loopback: localhost, 127.0.0.0/8, ::1."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """The checks made before any route (see the module docstring): the first refusal is answered
    as OpenAI-shaped JSON, and the request goes no further."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] = (), api_key: str | None = None) -> None:
        self.app, self.allowed, self.api_key = app, set(allowed_hosts), api_key

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        """(status, message) for a request that is not admitted, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        return self._host(scope, headers) or self._key(scope, headers) or self._content_type(scope, headers)

    def _host(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        name = host_name(headers.get("host", "").strip())
        bound = (scope.get("server") or ("",))[0]
        if "*" in self.allowed or name in self.allowed or is_loopback(name) or (name and name == bound):
            return None
        return 421, (f"this server does not answer for host {name or '(none)'!r}; start it with "
                     f"--allowed_hosts {name or 'NAME'} to allow that name")

    def _key(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        if not self.api_key or scope.get("path") in PUBLIC_PATHS:
            return None
        sent = headers.get("authorization", "").encode("latin-1")
        if hmac.compare_digest(sent, f"Bearer {self.api_key}".encode()):
            return None
        return 401, "missing or wrong API key: send 'Authorization: Bearer <key>'"

    @staticmethod
    def _content_type(scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
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
        await JSONResponse(error_body(status, message), status)(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, or RequestError 413 when it is over `limit` bytes: at once when its
    Content-Length says so, else once read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    body = await request.body()
    if len(body) > limit:
        raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
    return body


def check_exposure(host: str, port: int, api_key: str | None, allow_unauthenticated: bool) -> None:
    """ServeConfigError for a port out of range, or an address beyond loopback with no API key
    (unless `allow_unauthenticated`): anyone who can reach the machine could use the model."""
    if not 1 <= port <= 65535:
        raise ServeConfigError(f"port must be in 1..65535, got {port}")
    if not is_loopback(host_name(host)) and not api_key and not allow_unauthenticated:
        raise ServeConfigError(f"--host {host} would let anyone who can reach this machine use the model; "
                               "give --api_key KEY (or set LLADA_API_KEY), or --allow_unauthenticated true "
                               "if that is what you mean")
