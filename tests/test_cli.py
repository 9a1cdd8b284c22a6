"""The `llada` subcommands run end to end through `llada.cli.main` on a tiny model directory:
exit codes, what they print (against answers decoded here with `llada.sampling.core.denoise`),
and what they write."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import pytest
import torch

import llada
from llada.cli import main
from llada.config import preset
from llada.model import LLaDAModel
from llada.sampling import core
from llada.tokenizer import config_ids, train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20
FLAGS = ["--device", "cpu"]


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
    for _ in core.denoise(bundle.model, canvas, start=len(ids), block_length=block_length, steps=steps):
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
