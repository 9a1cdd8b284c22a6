"""The command line end to end on a tiny model: generate, chat, convert, eval, quickstart and training runs."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
import torch
from support.cli import FLAGS, _command, _one_error_line

import llada
from llada.cli import main
from llada.config import preset
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions, core
from llada.tokenizer import config_ids, train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    model = LLaDAModel(preset("debug", **config_ids(tok))).eval()
    with torch.no_grad():  # larger weights than the init, so that answers depend on the prompt
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("cli") / "model"
    llada.save(path, model, tok)
    return path


@pytest.fixture(scope="module")
def bundle(model_dir):
    return llada.load(model_dir, device="cpu")


def prompt_ids(tokenizer, prompt: str | list[dict[str, str]], chat: bool) -> list[int]:
    """The chat template with the assistant header appended (chat), else BOS + the text."""
    if not chat:
        return [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def expected_answer(bundle, prompt, *, steps: int, gen_length: int, block_length: int, chat: bool = True) -> str:
    """Greedy decoding with the block loop, then the text up to the first EOS / end-of-turn."""
    ids = prompt_ids(bundle.tokenizer, prompt, chat)
    cfg = bundle.model.config
    canvas = torch.full((1, len(ids) + gen_length), cfg.mask_token_id)
    canvas[0, :len(ids)] = torch.tensor(ids)
    opts = SamplerOptions(gen_length=gen_length, block_length=block_length, steps=steps)
    for _ in core.denoise(bundle.model, canvas, opts, start=len(ids)):
        pass
    response = canvas[0, len(ids):].tolist()
    assert cfg.mask_token_id not in response
    stops = {cfg.eos_token_id, cfg.eot_token_id}
    end = next((k for k, t in enumerate(response) if t in stops), len(response))
    return bundle.tokenizer.decode(response[:end], skip_special_tokens=True).strip()


@pytest.mark.parametrize("steps,block_length,forwards", [(8, 8, 8), (4, 4, 4)])
def test_generate_prints_the_greedy_answer(model_dir, bundle, capsys, steps, block_length, forwards):
    prompt = "what is two plus two"
    rc = main(["generate", prompt, "--model", str(model_dir), "--steps", str(steps), "--gen_length", "8",
               "--block_length", str(block_length), *FLAGS])
    out, err = capsys.readouterr()
    assert rc == 0
    want = expected_answer(bundle, prompt, steps=steps, gen_length=8, block_length=block_length)
    assert want  # the tiny model says something, so equality below is not "" == ""
    assert out == want + "\n"
    # one full forward per step, 8 tokens: 8 / forwards tokens per forward
    assert f"[{forwards} forward passes ({forwards} full, 0 cached), {8 / forwards:.2f} tokens per forward]" in err


def test_generate_plain_text_and_trace(model_dir, bundle, capsys):
    prompt = "the cat sat"
    want = expected_answer(bundle, prompt, steps=8, gen_length=8, block_length=8, chat=False)
    rc = main(["generate", prompt, "--model", str(model_dir), "--steps", "8", "--gen_length", "8",
               "--block_length", "8", "--chat", "false", *FLAGS])
    assert rc == 0 and capsys.readouterr().out == want + "\n"
    assert want != expected_answer(bundle, prompt, steps=8, gen_length=8, block_length=8)  # the template matters
    rc = main(["generate", prompt, "--model", str(model_dir), "--steps", "8", "--gen_length", "8",
               "--block_length", "8", "--chat", "false", "--trace", "true", *FLAGS])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("\rstep ") == 8  # one trace line per step
    assert out.splitlines()[-1] == want


def test_generate_bad_flag_is_one_line(model_dir, capsys):
    rc = main(["generate", "hi", "--model", str(model_dir), "--steps", "8", "--gen_length", "8",
               "--block_length", "3", *FLAGS])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("llada generate: error: ") and "block_length" in err and "Traceback" not in err


def test_chat_answers_each_turn_with_the_history(model_dir, bundle, capsys, monkeypatch):
    turns = ["what is two plus two", "the cat"]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in turns)))  # two lines, then EOF
    rc = main(["chat", "--model", str(model_dir), "--steps", "8", "--gen_length", "8", "--block_length", "8",
               *FLAGS])
    out = capsys.readouterr().out
    assert rc == 0
    replies = re.findall(r"llada> (.*)\n", out)
    messages, expected = [], []
    for turn in turns:  # the second turn sees the first question and answer
        messages.append({"role": "user", "content": turn})
        expected.append(expected_answer(bundle, list(messages), steps=8, gen_length=8, block_length=8))
        messages.append({"role": "assistant", "content": expected[-1]})
    assert replies == expected
    assert expected[0]
    assert out.count("you> ") == 3  # asked three times: the third read meets the end of input


def test_convert_round_trips_to_bfloat16(model_dir, bundle, tmp_path, capsys):
    from safetensors import safe_open

    out = tmp_path / "bf16"
    assert main(["convert", str(model_dir), str(out), "--dtype", "bfloat16"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    files = sorted(out.glob("*.safetensors"))
    assert files
    for f in files:  # stored in bfloat16 on disk
        with safe_open(f, framework="pt") as st:
            assert all(st.get_tensor(k).dtype == torch.bfloat16 for k in st.keys())
    half = llada.load(out, device="cpu")
    source = dict(bundle.model.named_parameters())
    converted = dict(half.model.named_parameters())
    assert converted.keys() == source.keys()
    for name, w in converted.items():
        assert w.dtype == torch.bfloat16
        assert torch.equal(w, source[name].detach().to(torch.bfloat16)), name
    assert half.model.config.extra.get("torch_dtype") == "bfloat16"  # the config says what is stored...
    assert dataclasses.replace(half.model.config, extra={}) == dataclasses.replace(bundle.model.config, extra={})
    assert {k: v for k, v in half.model.config.extra.items() if k != "torch_dtype"} == \
        {k: v for k, v in bundle.model.config.extra.items() if k != "torch_dtype"}  # ...and nothing else changed
    assert half.tokenizer("the cat sat")["input_ids"] == bundle.tokenizer("the cat sat")["input_ids"]

    back = tmp_path / "f32"  # and back to float32: the bfloat16 values, exactly
    assert main(["convert", str(out), str(back), "--dtype", "float32", "--max_shard_size", "20KB"]) == 0
    assert len(list(back.glob("*.safetensors"))) > 1  # sharded at 20KB
    full = llada.load(back, device="cpu")
    for name, w in full.model.named_parameters():
        assert w.dtype == torch.float32 and torch.equal(w, converted[name].float()), name


def test_quickstart_at_the_test_size(tmp_path, capsys):
    """The smallest honest run: the "test" recipe's world and model, 2 + 2 optimizer steps."""
    from llada.recipe import RECIPES

    world = RECIPES["test"].world
    rc = main(["quickstart", "--out_dir", str(tmp_path), "--preset", "debug", "--pretrain_steps", "2",
               "--sft_steps", "2", "--batch_size", "4", "--seq_len", "32", "--vocab_size", "300", "--seed", "1",
               "--world.n_people", str(world.n_people), "--world.n_cities", str(world.n_cities),
               "--world.n_countries", str(world.n_countries), "--world.n_stories", "0", "--world.n_sums", "0",
               "--world.sft_sums", "0"])
    printed = capsys.readouterr().out
    assert rc == 0
    record = json.loads((tmp_path / "quickstart.json").read_text())
    assert record["recipe"]["pretrain_steps"] == 2 and record["recipe"]["sft_steps"] == 2  # the flags arrived
    assert record["recipe"]["world"]["n_people"] == world.n_people and record["seed"] == 1
    assert len(record["questions"]) == 5
    for q in record["questions"]:
        assert q["correct"] == (q["expected"].lower() in q["answer"].lower())
    k = sum(q["correct"] for q in record["questions"])
    assert record["answered"] == k
    assert f"answered {k}/5 correctly" in printed
    assert (tmp_path / "sft" / "model" / "config.json").is_file()


def test_a_bare_boolean_flag_means_true(model_dir, capsys):
    """`--trace` alone, at the end or before the prompt, is `--trace true`; `--trace false` and 1/0 still work."""
    from llada.cli import _bare_booleans

    flags = {"--trace", "--chat"}
    assert _bare_booleans(["hi", "--trace"], flags) == ["hi", "--trace", "true"]
    assert _bare_booleans(["--trace", "hi", "--chat", "0"], flags) == ["--trace", "true", "hi", "--chat", "false"]
    assert _bare_booleans(["--trace", "False", "--", "--trace"], flags) == ["--trace", "false", "--", "--trace"]
    small = ["--model", str(model_dir), "--steps", "4", "--gen_length", "4", "--block_length", "4", *FLAGS]
    outs = []
    for args in (["the cat", "--trace", "true", *small], ["the cat", *small, "--trace"], ["--trace", "the cat", *small]):
        assert main(["generate", *args]) == 0, args
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2] and outs[0].count("\rstep ") == 4
    assert main(["generate", "the cat", *small, "--trace", "false"]) == 0
    assert "\rstep" not in capsys.readouterr().out


@pytest.mark.parametrize("args,words", [
    (["generate", "hi", "--steps", "x"], "steps must be int, got 'x'"),  # (a word is read first: none clears it)
    (["generate", "hi", "--stepz", "3"], "unrecognized arguments: --stepz 3"),
    (["generate"], "required: prompt"),
    (["generate", "hi", "--temperature", ".inf"], "temperature must be a finite number"),
    (["generate", "hi", "--cfg_scale", ".nan"], "cfg_scale must be a finite number"),
    (["generate", "hi", "--seed", str(2**64)], "seed must be an integer in [0, 2**63)"),
    (["generate", "hi", "--seed", "-1"], "seed must be an integer in [0, 2**63)"),
    (["generate", "hi", "--preset", "nope"], "unknown sampler preset 'nope'"),
    (["chat", "--preset", "nope"], "unknown sampler preset 'nope'"),
    (["train", "--objective", "xx"], "--objective: expected one of 'diffusion', 'ar', 'block_diffusion', got 'xx'"),
    (["train", "--world.n_people", "1"], "the world needs at least two people"),
    (["eval", "--world.n_people", "1"], "the world needs at least two people"),
    (["eval", "--seed", "-1"], "seed must be an integer in [0, 2**63)"),
    (["generate", "hi", "--config", "/no/such/file.yaml"], "--config: File does not exist"),
])
def test_refused_values_are_one_line_with_exit_code_2(model_dir, capsys, args, words):
    args = [*args, *(["--model", str(model_dir)] if args[0] in ("generate", "chat", "eval") else [])]
    assert main(args) == 2
    assert words in _one_error_line(capsys.readouterr().err, args[0])


def test_non_utf8_arguments_are_refused(model_dir, capsys):
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape): refused by name."""
    assert main(["generate", "caf\udce9", "--model", str(model_dir), *FLAGS]) == 2
    line = _one_error_line(capsys.readouterr().err, "generate")
    assert "b'caf\\xe9' is not valid UTF-8" in line


@pytest.mark.parametrize("command", ["generate", "chat", "eval", "poem"])
@pytest.mark.parametrize("device,words", [
    ("cuda", "this machine has no cuda device"), ("cuda:7", "this machine has no cuda device"),
    ("mps", "this machine has no mps device"), ("tpu", "'tpu' is not a device"), ("", "'' is not a device"),
])
def test_a_device_this_machine_lacks_is_one_line(model_dir, poem_file, tmp_path, capsys, monkeypatch, command,
                                                  device, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main([*_command(command, str(model_dir), str(poem_file), str(tmp_path / "out")), "--device", device]) == 2
    assert words in _one_error_line(capsys.readouterr().err, command)


@pytest.mark.parametrize("command", ["eval", "poem"])
def test_an_out_dir_that_is_a_file_is_one_line(model_dir, poem_file, tmp_path, capsys, command):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    assert main([*_command(command, str(model_dir), str(poem_file), str(taken)), *FLAGS]) == 2
    assert "is a file" in _one_error_line(capsys.readouterr().err, command)
    assert main([*_command(command, str(model_dir), str(poem_file), str(taken / "below")), *FLAGS]) == 2
    assert "--out_dir" in _one_error_line(capsys.readouterr().err, command)


def test_eval_writes_under_the_current_directory_not_the_model(model_dir, tmp_path, capsys, monkeypatch):
    import shutil

    model = tmp_path / "models" / "mine"
    shutil.copytree(model_dir, model)
    before = sorted(p.name for p in model.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = _command("eval", str(model), "", "")
    assert main([*args[: args.index("--out_dir")], *FLAGS]) == 0
    assert sorted(p.name for p in model.iterdir()) == before  # nothing written next to the model
    out = next((work / "runs" / "eval").iterdir())  # runs/eval/NAME, NAME from the model path's last parts
    assert out.name.endswith("models-mine") and (out / "results.json").is_file() and (out / "report.md").is_file()
    assert f"report: {Path('runs') / 'eval' / out.name / 'report.md'}" in capsys.readouterr().out


def _tiny_training(out: Path) -> list[str]:
    return ["--out_dir", str(out), "--max_steps", "2", "--batch_size", "2", "--seq_len", "32", "--vocab_size", "300",
            "--world.n_people", "4", "--world.n_cities", "2", "--world.n_countries", "2", "--world.n_stories", "0",
            "--world.n_sums", "0", "--world.sft_sums", "0", "--save_every", "1", "--eval_every", "0",
            "--progress", "false", "--tensorboard", "false"]


@pytest.mark.parametrize("command", ["train", "sft"])
def test_a_model_name_that_is_both_a_preset_and_a_model_directory_is_refused(command, model_dir, monkeypatch,
                                                                             tmp_path, capsys):
    import shutil

    import llada.training.trainer

    ran = []
    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: ran.append(cfg) or tmp_path)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(model_dir, tmp_path / "debug")
    assert main([command, "--model", "debug"]) == 2  # ./debug is a model directory and `debug` a preset
    line = _one_error_line(capsys.readouterr().err, command)
    assert "both the preset debug and the model directory ./debug" in line and not ran
    assert main([command, "--model", "./debug"]) == 0 and ran[-1].model == "./debug"
    (tmp_path / "tiny").mkdir()  # a folder without config.json is no model: the preset is meant
    assert main([command, "--model", "tiny"]) == 0 and ran[-1].from_scratch
    assert main([command, "--help"]) == 0
    assert "both a preset and a model directory" in " ".join(capsys.readouterr().out.split())


def test_a_resumed_run_says_where_it_resumed(tmp_path, capsys):
    out = tmp_path / "pt"
    assert main(["train", "--model", "debug", *_tiny_training(out)]) == 0
    assert "resumed" not in capsys.readouterr().err
    args = _tiny_training(out)
    args[args.index("--max_steps") + 1] = "3"
    assert main(["train", "--model", "debug", *args]) == 0
    err = capsys.readouterr().err
    latest = re.search(r"llada train: resumed from (\S+) at step (\d+)", err)
    assert latest, err
    assert Path(latest[1]).parent == out / "checkpoints" and Path(latest[1]).name.endswith(latest[2])


class _Terminal(io.StringIO):
    """Standard output that records each write, to see an answer arrive in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_chat_writes_the_answer_as_it_settles(model_dir, bundle, monkeypatch):
    prompt = "what is two plus two"
    out = _Terminal()
    monkeypatch.setattr("sys.stdin", io.StringIO(prompt + "\n"))
    monkeypatch.setattr("sys.stdout", out)
    assert main(["chat", "--model", str(model_dir), "--steps", "8", "--gen_length", "8", "--block_length", "2",
                 *FLAGS]) == 0
    start = out.writes.index("llada> ") + 1
    end = next(i for i in range(start, len(out.writes)) if out.writes[i].endswith("\n"))
    pieces = out.writes[start: end + 1]
    want = expected_answer(bundle, prompt, steps=8, gen_length=8, block_length=2)
    assert "".join(pieces) == want + "\n"
    assert len([p for p in pieces if p.strip()]) >= 2  # blocks of 2: the text arrives block by block


def test_chat_commands_reset_settings_set_help(model_dir, bundle, capsys, monkeypatch):
    lines = ["/help", "/settings", "/set steps 4", "/set temperature warm", "/set", "/nope",
             "what is two plus two", "/reset", "the cat", "exit", "never read"]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    assert main(["chat", "--model", str(model_dir), "--steps", "8", "--gen_length", "8", "--block_length", "8",
                 *FLAGS]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("/reset", "/settings", "/set NAME VALUE", "/help"))  # /help lists them
    assert "  steps = 8\n" in out and "  steps = 4\n" in out and "  gen_length = 8\n" in out
    assert "error: temperature must be float, got 'warm'" in out
    assert "usage: /set NAME VALUE" in out and "unknown command /nope" in out
    replies = re.findall(r"llada> (.*)\n", out)
    first = expected_answer(bundle, "what is two plus two", steps=4, gen_length=8, block_length=8)
    alone = expected_answer(bundle, "the cat", steps=4, gen_length=8, block_length=8)
    history = [{"role": "user", "content": "what is two plus two"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "the cat"}]
    assert alone != expected_answer(bundle, history, steps=4, gen_length=8, block_length=8)  # /reset shows
    assert replies == [first, alone]
    assert out.count("you> ") == len(lines) - 1  # `exit` quit before the last line


def test_chat_edits_lines_on_a_terminal(model_dir, monkeypatch):
    pytest.importorskip("readline")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delitem(__import__("sys").modules, "readline")
    monkeypatch.setattr("sys.stdin", Tty("\n"))
    assert main(["chat", "--model", str(model_dir), *FLAGS]) == 0
    assert "readline" in __import__("sys").modules  # input() now has line editing and history


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_chat_refuses_input_that_is_not_utf8(model_dir, capsys, monkeypatch, errors):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8", errors=errors))
    assert main(["chat", "--model", str(model_dir), *FLAGS]) == 2
    assert "the input is not UTF-8 text" in _one_error_line(capsys.readouterr().err, "chat")


@pytest.mark.parametrize("prompts,words", [
    ([], "an empty list"),
    ({"role": "user", "content": "hi"}, "a single message; give a list of messages"),
    ([[]], "prompt 0 must be a text or a non-empty list of messages"),
    ([{"role": "user"}], "prompt 0 must be a text or a non-empty list of messages"),
    (["hi", 3], "prompt 1 must be"),
    (7, "got int"),
])
def test_sample_text_names_what_prompts_may_be(bundle, prompts, words):
    from llada.errors import GenerationError
    from llada.sampling import sample_text

    with pytest.raises(GenerationError, match=re.escape(words)):
        sample_text(bundle.model, bundle.tokenizer, prompts, gen_length=4, steps=4, block_length=4)
    with pytest.raises(GenerationError, match="must be text with chat=False"):
        sample_text(bundle.model, bundle.tokenizer, [[{"role": "user", "content": "hi"}]], chat=False)
