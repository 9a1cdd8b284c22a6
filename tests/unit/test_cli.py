"""The `llada` command line before a model runs: help and version, each flag described, one-line
refusals, and the Hub revision reaching every command that takes a Hub name.
(tests/integration/test_cli_end_to_end.py runs the commands on a tiny model.)"""

from __future__ import annotations

import io

import pytest
from support.cli import FLAGS, _command, _one_error_line

import llada
from llada.cli import main
from llada.sampling import SamplerOptions


def test_version_and_help_into_a_closed_pipe():
    import subprocess
    import sys

    import llada

    out = subprocess.run([sys.executable, "-m", "llada", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == f"llada {llada.__version__}\n"
    for args in (["--help"], ["generate", "--help"]):  # `llada --help | head -1`: the reader is gone before we write
        p = subprocess.Popen([sys.executable, "-m", "llada", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()
        err = p.stderr.read().decode()
        p.wait(timeout=120)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        assert p.returncode in (0, 141)


@pytest.mark.parametrize("command", ["generate", "chat", "eval", "poem"])
def test_a_bad_model_path_is_one_line(poem_file, tmp_path, capsys, monkeypatch, command):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main([*_command(command, str(tmp_path / "nowhere"), str(poem_file), str(tmp_path / "out")), *FLAGS]) == 2
    assert "nowhere" in _one_error_line(capsys.readouterr().err, command)


def _attribute_docstrings(cls) -> dict[str, str | None]:
    """Each field of a dataclass and the string literal under it in the source (None without one)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0].body
    out = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign):
            doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
            out[node.target.id] = doc
    return out


@pytest.mark.parametrize("command", ["train", "sft"])
def test_train_help_shows_each_fields_docstring(command, capsys):
    from llada.training.config import TrainConfig

    assert main([command, "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    documented = {k: v for k, v in _attribute_docstrings(TrainConfig).items() if v and k != "stage"}
    assert len(documented) > 20
    for name, doc in documented.items():
        assert " ".join(doc.split()).rstrip(".") in shown, name  # (a group title ends in ":")
    assert "--stage" not in shown  # the command is the stage


def test_every_train_flag_is_described():
    from llada.training.config import TrainConfig

    assert [k for k, v in _attribute_docstrings(TrainConfig).items() if not v] == []


def test_stage_is_not_a_flag_and_sft_needs_a_model(monkeypatch, tmp_path, capsys):
    import llada.training.trainer

    ran = []
    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: ran.append(cfg) or tmp_path)
    assert main(["train", "--stage", "sft"]) == 2
    assert "--stage is not a flag" in _one_error_line(capsys.readouterr().err, "train")
    assert main(["sft", "--stage=pretrain", "--model", "tiny"]) == 2
    assert "--stage is not a flag" in _one_error_line(capsys.readouterr().err, "sft")
    assert main(["sft", "--max_steps", "3"]) == 2  # no silent fresh model
    assert "llada sft needs --model" in _one_error_line(capsys.readouterr().err, "sft")
    assert not ran
    assert main(["sft", "--model", "tiny"]) == 0 and main(["train"]) == 0  # a preset named explicitly is fine
    assert [(c.stage, c.model) for c in ran] == [("sft", "tiny"), ("pretrain", "tiny")]
    # a config file may say the stage its command trains (configs/train/llada-8b-sft-lora.yaml does), not another
    config = tmp_path / "sft.yaml"
    config.write_text("stage: sft\nmodel: tiny\nmax_steps: 3\n")
    assert main(["sft", "--config", str(config)]) == 0 and (ran[-1].stage, ran[-1].max_steps) == ("sft", 3)
    assert main(["train", "--config", str(config)]) == 2
    assert "llada train trains the pretrain stage" in _one_error_line(capsys.readouterr().err, "train")


@pytest.mark.parametrize("field", ["temperature", "cfg_scale", "threshold", "factor"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "inf"])
def test_sampler_options_refuse_numbers_that_are_not_finite(field, value):
    from llada.errors import GenerationError

    with pytest.raises(GenerationError, match=field):
        SamplerOptions().replace(**{field: value})
    with pytest.raises(GenerationError, match=field):
        SamplerOptions.from_dict({field: value})
    if not isinstance(value, str):
        with pytest.raises(GenerationError, match=field):
            SamplerOptions(**{field: value})


def test_load_none_names_the_argument():
    from llada.errors import UserError

    with pytest.raises((UserError, ValueError), match="path"):
        llada.load(None)


@pytest.mark.parametrize("command", ["generate", "chat", "serve", "poem", pytest.param("lm-eval", marks=pytest.mark.slow)])
def test_revision_reaches_the_hub_on_every_command_that_takes_a_hub_name(command, monkeypatch, tmp_path):
    """--revision (lm-eval: model_args revision=) is passed to the Hub download; a fake hub records it."""
    import llada.checkpoint as checkpoint

    seen = []

    def fake_download(repo, revision=None, **kw):
        seen.append((repo, revision))
        raise OSError("offline in this test")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    monkeypatch.setattr(checkpoint, "snapshot_download", fake_download, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    data = tmp_path / "poems.json"
    data.write_text('[{"first": "a", "second": "b"}]')
    args = {"generate": ["generate", "hi", "--model", "org/name", "--revision", "v1"],
            "chat": ["chat", "--model", "org/name", "--revision", "v1"],
            "serve": ["serve", "--model", "org/name", "--revision", "v1"],
            "poem": ["poem", "org/name", str(data), "--revision", "v1", "--out_dir", str(tmp_path / "o")],
            "lm-eval": ["lm-eval", "--model", "llada", "--model_args", "pretrained=org/name,revision=v1",
                        "--tasks", "arc_easy"]}[command]
    rc = main(args + (["--device", "cpu"] if command in ("generate", "chat", "poem") else []))
    assert rc != 0 and seen and seen[0] == ("org/name", "v1")
