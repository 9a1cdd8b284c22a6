"""The README's "The command line" and "The Python API in ten lines" sections run as written.

Every line of the command-line block runs through `llada.cli.main` in a scratch directory, in order:
`llada train` makes runs/pt/model, `llada sft` fine-tunes it into runs/sft/model, and that model is
DIR in the lines after (AR_DIR: the same training with `--objective ar`, as the README says). The
training lines get flags appended that make them tiny (a 4-person world, 2 optimizer steps); the
sampling lines get a short answer (16 tokens) put before their own flags, so a line's own flags (such
as a bare `--trace` at its end) are parsed exactly as written. Placeholders: TASKS is a local
multiple-choice task (so no download), OUT a scratch directory, poem_data.json a two-couplet file.

Skipped, with the test that covers them instead:
- `llada quickstart`: about 4 minutes as written; tests/integration/test_cli_end_to_end.py runs it at the test size.
- `llada reproduce reversal`: trains a diffusion model and its AR baseline for minutes;
  tests/integration/test_reproduce_runs.py runs every claim at `--size test`.
`llada serve` runs with uvicorn.run replaced (it would listen until stopped); tests/integration/test_server.py
drives the app itself.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

from llada.cli import main

README = ROOT / "README.md"


TINY_WORLD = ["--world.n_people", "4", "--world.n_cities", "2", "--world.n_countries", "2", "--world.n_stories", "0",
              "--world.n_sums", "20", "--world.sft_sums", "0"]


TINY_TRAINING = ["--max_steps", "2", "--batch_size", "2", "--seq_len", "64", "--vocab_size", "300", "--eval_every", "0",
                 "--save_every", "0", "--progress", "false", "--tensorboard", "false", *TINY_WORLD]


SHORT_ANSWER = ["--gen_length", "16", "--steps", "16", "--block_length", "16", "--device", "cpu"]


SKIPPED = {
    "quickstart": "about 4 minutes as written; tests/integration/test_cli_end_to_end.py::test_quickstart_at_the_test_size runs it small",
    "reproduce": "trains two models per claim for minutes; tests/integration/test_reproduce_runs.py runs every claim at --size test",
}


def section(title: str) -> str:
    """The README's text from the `## title` heading to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else None]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def command_lines() -> list[list[str]]:
    """Each command of the command-line section's blocks as argv (comments dropped, `A / B` split)."""
    out = []
    for block in code_blocks(section("The command line")):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("/") if "/" in words else len(words)
                assert words[0] == "llada", line
                out.append(words[1:cut])
                words = words[cut + 1:]
    return out


def test_every_command_line_is_run_or_skipped_with_a_reason():
    names = [argv[0] if argv and not argv[0].startswith("-") else "--version" for argv in command_lines()]
    assert {"train", "sft", "generate", "chat", "eval", "lm-eval", "serve", "info", "convert", "poem",
            "--version"} <= set(names)
    assert set(names) - set(SKIPPED) - set(RUNNERS) == set()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def _local_task(root: Path) -> Path:
    """A three-question multiple-choice task on a local JSON file (stands in for TASKS)."""
    data = root / "qa.jsonl"
    rows = [{"question": "who sat on the mat", "choices": ["Velor", "Quint"], "label": 0},
            {"question": "where does Velor live", "choices": ["Arden", "Mossa"], "label": 1}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(
        f"task: readme_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{label}}'\n"
        "doc_to_choice: '{{choices}}'\nmetric_list:\n  - metric: acc\n")
    return tasks


def _substitute(argv: list[str], root: Path) -> list[str]:
    names = {"DIR": "runs/sft/model", "AR_DIR": "runs/ar/model", "OUT": str(root / "out" / "converted"),
             "TASKS": "readme_mc"}
    return [re.sub(r"\b(AR_DIR|DIR|OUT|TASKS)\b", lambda m: names[m[1]], a) for a in argv]


def _training(argv, root, monkeypatch, capsys):
    assert main([*argv, *TINY_TRAINING]) == 0
    out = Path(argv[argv.index("--out_dir") + 1])
    assert (out / "model" / "config.json").is_file()
    if argv[0] == "train":  # AR_DIR: "the same command with a flag" (--objective ar)
        assert main(["train", "--model", "tiny", "--objective", "ar", "--out_dir", "runs/ar", *TINY_TRAINING]) == 0


def _sampling(argv, root, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("where does Velor live\n"))  # for `llada chat`
    assert main([argv[0], *SHORT_ANSWER, *argv[1:]]) == 0
    out = capsys.readouterr().out
    if "--trace" in argv:
        assert out.count("\rstep ") == 16  # a bare --trace at the end of the line is --trace true
    if argv[0] == "chat":
        assert "llada> " in out


def _evaluation(argv, root, monkeypatch, capsys):
    assert main([*argv, "--limit", "1", "--mc_num", "1", "--likelihood_docs", "2", "--device", "cpu"]) == 0
    assert (Path("runs/eval") / "sft-model" / "report.md").is_file()  # under the current directory


def _lm_eval(argv, root, monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main([*argv, "--include_path", str(_local_task(root)), "--device", "cpu", "--batch_size", "2"]) == 0
    assert "readme_mc" in capsys.readouterr().out


def _serve(argv, root, monkeypatch, capsys):
    uvicorn = pytest.importorskip("uvicorn")
    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    assert main([*argv, "--device", "cpu"]) == 0
    assert ran["app"] is not None  # the app it would have served


def _poem(argv, root, monkeypatch, capsys):
    Path("poem_data.json").write_text(json.dumps([{"first": "the cat sat on the mat", "second": "the dog ran far"},
                                                  {"first": "Velor lives in Arden", "second": "Quint lives in Mossa"}]))
    assert main([*argv, "--device", "cpu"]) == 0
    assert Path("runs/poem/results.json").is_file()


def _plain(argv, root, monkeypatch, capsys):
    assert main(argv) == 0


RUNNERS = {"train": _training, "sft": _training, "generate": _sampling, "chat": _sampling, "eval": _evaluation,
           "lm-eval": _lm_eval, "serve": _serve, "poem": _poem, "info": _plain, "convert": _plain, "--version": _plain}


def test_the_command_line_section_runs_as_written(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    for argv in command_lines():
        name = argv[0]
        if name in SKIPPED:
            continue
        RUNNERS[name](_substitute(argv, workdir), workdir, monkeypatch, capsys)
        capsys.readouterr()
    assert (workdir / "out" / "converted" / "config.json").is_file()


def test_the_python_api_section_runs_as_written(workdir, monkeypatch, capsys):
    (block,) = code_blocks(section("The Python API in ten lines"))
    model = workdir / "runs" / "sft" / "model"
    if not model.is_dir():  # this test alone: a model of the same kind, made here
        assert main(["train", "--model", "tiny", "--out_dir", str(workdir / "runs" / "sft"), *TINY_TRAINING]) == 0
    monkeypatch.chdir(workdir)
    code = block.replace('"runs/quickstart/sft/model"', f'"{model}"')
    assert code != block
    exec(compile(code, "README.md", "exec"), {})
    answer = capsys.readouterr().out
    assert answer.endswith("\n")
    assert (workdir / "out" / "model" / "config.json").is_file()  # llada.save wrote where the README says


def section_commands(title: str) -> list[list[str]]:
    """The shell commands of a section's code blocks as argv: comments dropped, lines continued
    with a backslash joined."""
    commands = []
    for block in code_blocks(section(title)):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_the_ar_checkpoint_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """"Train a LLaDA 2.x-style model from an AR checkpoint": the download is a tiny random Qwen2
    model saved where the README downloads to, the corpus a local file, and training gets 2 steps of
    rows of 64; every flag the README gives is parsed and used as written."""
    from support.causal_lms import WORDS, save_causal_lm

    monkeypatch.chdir(tmp_path)
    commands = section_commands("Train a LLaDA 2.x-style model from an AR checkpoint")
    assert [c[:2] for c in commands] == [["huggingface-cli", "download"], ["llada", "convert"], ["llada", "train"],
                                         ["llada", "generate"]]
    save_causal_lm(tmp_path / commands[0][commands[0].index("--local-dir") + 1], "qwen2", True, 48)
    rng = __import__("random").Random(0)
    Path("corpus.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choices(WORDS, k=12))}) + "\n"
                                            for _ in range(300)))
    assert main(commands[1][1:]) == 0
    train = commands[2][1:]
    for flag in ("--objective", "--block_size", "--block_size_schedule", "--document_mask", "--complementary_masking"):
        assert flag in train
    assert main([*train, "--max_steps", "2", "--batch_size", "2", "--seq_len", "64", "--eval_every", "0",
                 "--save_every", "0", "--progress", "false", "--tensorboard", "false"]) == 0
    saved = json.loads(Path(train[train.index("--out_dir") + 1], "model", "generation_config.json").read_text())
    assert saved["block_causal"] is True and saved["block_length"] == 32
    capsys.readouterr()
    assert main([*commands[3][1:], "--gen_length", "8", "--steps", "8", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()
