"""The request guard: Host, then key, then content type."""

from __future__ import annotations


def test_guard_checks_host_then_key_then_content_type():
    """The guard on its own, request by request: the first refusal wins, / and /health need no key, and
    the bound address is always a name of this server."""
    from llada.serve.guard import Guard, host_name, is_loopback

    assert [host_name(h) for h in ["[::1]:8000", "Example.org.", "localhost:80", "::1", ""]] == [
        "::1", "example.org", "localhost", "::1", ""]
    assert [is_loopback(h) for h in ["localhost", "127.0.0.2", "::1", "10.0.0.1", "evil.example", ""]] == [
        True, True, True, False, False, False]
    guard = Guard(None, allowed_hosts=("llada.lan",), api_key="k")

    def status(host, path="/v1/completions", method="POST", key="k", kind="application/json", server="10.0.0.5"):
        headers = [(b"host", host.encode()), (b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", kind.encode())]
        refused = guard.refusal({"type": "http", "path": path, "method": method, "headers": headers,
                                 "server": (server, 8000)})
        return refused and refused[0]

    assert status("evil.example", key="wrong", kind="text/plain") == 421
    assert status("localhost:8000", key="wrong", kind="text/plain") == 401
    assert status("llada.lan", kind="text/plain; charset=utf-8") == 415
    assert status("10.0.0.5:8000") is None and status("[::1]:8000") is None
    assert status("127.0.0.1", path="/health", method="GET", key="wrong") is None
    assert status("127.0.0.1", path="/v1/models", method="GET", key="wrong") == 401
