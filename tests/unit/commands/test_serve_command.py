"""`llada serve`: the app it would run (uvicorn replaced) and the settings it refuses at start."""

from __future__ import annotations

import pytest
from support.serve import (
    _serve_cli,
    _with_template,
)


@pytest.mark.parametrize("template,needle", [
    ("{{ raise_exception('no chat here') }}", "no chat here"),
    ("{% for i in range(100000000) %}x{% endfor %}", "OverflowError"),
])
def test_serve_refuses_to_start_with_a_chat_template_that_fails(monkeypatch, capsys, bundle, template, needle):
    """Such a template answered every chat request with a 500; the server now stops at start, in one line."""
    app, ran = _serve_cli(monkeypatch, _with_template(bundle, template), [])
    err = capsys.readouterr().err.strip()
    assert app is None and not ran and "chat template" in err and needle in err and len(err.splitlines()) == 1, err


def test_serve_cli_names_the_model_after_its_directory(monkeypatch, bundle):
    from fastapi.testclient import TestClient

    for args, want in [(["--model", "runs/x/my-model/"], "my-model"),
                       (["--model", "runs/x/my-model", "--served_model_name", "mine"], "mine")]:
        app, _ = _serve_cli(monkeypatch, bundle, args)
        with TestClient(app) as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [want]


@pytest.mark.parametrize("args,needle", [
    (["--host", "0.0.0.0"], "--api_key"), (["--host", "::"], "--allow_unauthenticated"),
    (["--max_queue", "0"], "max_queue"), (["--timeout_s", "0"], "timeout_s"), (["--max_gen_tokens", "0"], "max_gen_tokens"),
    (["--port", "70000"], "port"), (["--max_batch", "0"], "max_batch"), (["--mc_num", "0"], "mc_num"),
])
def test_serve_refuses_to_start_with_settings_that_fail_every_request(monkeypatch, capsys, bundle, args, needle):
    monkeypatch.delenv("LLADA_API_KEY", raising=False)
    app, ran = _serve_cli(monkeypatch, bundle, args)
    err = capsys.readouterr().err.strip()
    assert app is None and not ran and needle in err and len(err.splitlines()) == 1, err


def test_serve_beyond_loopback_when_the_user_says_so(monkeypatch, bundle):
    monkeypatch.delenv("LLADA_API_KEY", raising=False)
    for args in (["--host", "0.0.0.0", "--api_key", "k"], ["--host", "0.0.0.0", "--allow_unauthenticated", "true"]):
        app, ran = _serve_cli(monkeypatch, bundle, args)
        assert app is not None and ran["host"] == "0.0.0.0"
    app, _ = _serve_cli(monkeypatch, bundle, ["--allowed_hosts", "llada.lan, Box.Lan."])
    assert app.state.service.cfg.allowed_hosts == ("llada.lan", "box.lan")
