"""Model directories in the public LLaDA layout: load, save, shards, Auto classes, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_word_tokenizer
from support.checkpoint import LLADA_STYLE_CONFIG, _sharded, _write_llada_dir
from support.model import reference_forward

import llada
from llada.config import ConfigError
from llada.errors import CheckpointError, ModelDirError


def test_llada_layout_loads_and_matches_reference(llada_dir):
    root, sd = llada_dir
    bundle = llada.load(root)
    cfg = bundle.config
    assert (cfg.d_model, cfg.n_layers, cfg.mask_token_id, cfg.vocab_size) == (32, 2, 63, 60)
    ids = torch.randint(0, 60, (2, 10))
    logits = bundle.model(ids)
    plain = {k.removeprefix("model."): v for k, v in sd.items()}
    for row in range(2):
        ref = reference_forward(plain, cfg, ids[row])
        torch.testing.assert_close(logits[row].double(), ref, atol=1e-5, rtol=1e-5)
    assert bundle.tokenizer.eos_token_id == cfg.eos_token_id


def test_sharded_and_single_file_agree(llada_dir, tmp_path):
    root, sd = llada_dir
    sharded = _write_llada_dir(tmp_path / "sharded", LLADA_STYLE_CONFIG, sd, shards=3)
    ids = torch.randint(0, 60, (2, 10))
    assert torch.equal(llada.load(root).model(ids), llada.load(sharded).model(ids))


def test_dtype_conversion_on_load(llada_dir):
    root, _ = llada_dir
    model = llada.load(root, dtype="bfloat16").model
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with pytest.raises(CheckpointError, match="unsupported dtype 'int8'.*float32, bfloat16"):
        llada.load(root, dtype="int8")


def test_auto_model_opens_our_directories(llada_dir, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    root, _ = llada_dir
    bundle = llada.load(root)
    out = tmp_path / "ours"
    llada.save(out, bundle.model, bundle.tokenizer)
    ids = torch.randint(0, 60, (2, 5))
    for auto in (AutoModel, AutoModelForCausalLM):
        hf = auto.from_pretrained(out)
        assert torch.equal(hf(ids).logits, bundle.model(ids))
    # the public layout too (its auto_map points at remote code; the registered class wins)
    assert torch.equal(AutoModel.from_pretrained(root)(ids).logits, bundle.model(ids))


def test_meta_device_build_holds_no_weights_until_loaded(llada_dir, monkeypatch):
    """The model is built on the meta device: no random initialisation is ever allocated."""
    from llada import model as model_module

    calls = []
    original = model_module.LLaDAModel.reset_parameters
    monkeypatch.setattr(model_module.LLaDAModel, "reset_parameters",
                        lambda self: calls.append(1) or original(self))
    llada.load(llada_dir[0])
    assert calls == []


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelDirError, match="no such directory"):
        llada.load(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="no config.json"):
        llada.load(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelDirError, match="is a file"):
        llada.load(f)


def test_missing_required_field(llada_dir):
    root, _ = llada_dir
    cfg = dict(LLADA_STYLE_CONFIG)
    del cfg["n_heads"]
    (root / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config.json: missing required field\(s\) n_heads"):
        llada.load(root)


@pytest.mark.parametrize("field,value,message", [
    ("block_type", "sequential", "`block_type` is 'sequential'; supported: llama"),
    ("layer_norm_type", "default", "`layer_norm_type` is 'default'; supported: rms"),
    ("alibi", True, "`alibi` = True is not supported"),
    ("model_type", "llama", "`model_type` is 'llama'; expected 'llada'"),
    ("n_heads", 5, "`d_model` \\(32\\) must be divisible by `n_heads` \\(5\\)"),
])
def test_unsupported_config_values(llada_dir, field, value, message):
    root, _ = llada_dir
    (root / "config.json").write_text(json.dumps({**LLADA_STYLE_CONFIG, field: value}))
    with pytest.raises(ConfigError, match=message) as info:
        llada.load(root)
    assert "config.json" in str(info.value)


def test_tokenizer_larger_than_embedding(llada_dir):
    root, _ = llada_dir
    make_word_tokenizer(["w"], vocab_size=80).save_pretrained(root)
    with pytest.raises(CheckpointError, match="ids up to 79 but config.json's `embedding_size` is 64"):
        llada.load(root)


def test_missing_shard(llada_dir, tmp_path):
    _, sd = llada_dir
    root = _write_llada_dir(tmp_path / "sharded", LLADA_STYLE_CONFIG, sd, shards=3)
    (root / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelDirError, match="missing: model-00002-of-00003.safetensors"):
        llada.load(root)


def test_missing_and_misshapen_weights(llada_dir, tmp_path):
    _, sd = llada_dir
    partial = {k: v for k, v in sd.items() if "blocks.1.up_proj" not in k}
    root = _write_llada_dir(tmp_path / "partial", LLADA_STYLE_CONFIG, partial)
    with pytest.raises(CheckpointError, match="1 weight\\(s\\) missing.*blocks.1.up_proj"):
        llada.load(root)
    bad = dict(sd)
    bad["model.transformer.blocks.0.q_proj.weight"] = torch.zeros(3, 3)
    root = _write_llada_dir(tmp_path / "bad", LLADA_STYLE_CONFIG, bad)
    with pytest.raises(CheckpointError, match="q_proj.weight has shape \\(3, 3\\)"):
        llada.load(root)


def test_no_weights_at_all(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLADA_STYLE_CONFIG))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelDirError, match="no model.safetensors.*pytorch_model.bin"):
        llada.load(tmp_path)


def test_saved_directory_tokenizer_pads_left_with_the_models_length(llada_dir, tmp_path):
    from transformers import PreTrainedTokenizerFast

    bundle = llada.load(llada_dir[0])
    llada.save(tmp_path / "out", bundle.model, bundle.tokenizer)
    saved = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"  # a name transformers 4.46 knows too
    assert saved["padding_side"] == "left"
    assert saved["model_max_length"] == LLADA_STYLE_CONFIG["max_sequence_length"]
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path / "out")
    assert tok.padding_side == "left" and tok.model_max_length == 128
    assert llada.load(tmp_path / "out").tokenizer.get_vocab() == bundle.tokenizer.get_vocab()


def _damage(root: Path, how: str) -> Path:
    if how == "truncated weights":
        data = (root / "model.safetensors").read_bytes()
        (root / "model.safetensors").write_bytes(data[: len(data) // 2])
        return root / "model.safetensors"
    if how == "truncated header":
        (root / "model.safetensors").write_bytes((root / "model.safetensors").read_bytes()[:20])
        return root / "model.safetensors"
    if how == "config not UTF-8":
        (root / "config.json").write_bytes(b'{"d_model": \xff\xfe 32}')
        return root / "config.json"
    if how == "config is a directory":
        (root / "config.json").unlink()
        (root / "config.json").mkdir()
        return root / "config.json"
    if how == "generation config not JSON":
        (root / "generation_config.json").write_text("{max_new_tokens: 8")
        return root / "generation_config.json"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated weights", "truncated header", "config not UTF-8",
                                 "config is a directory", "generation config not JSON"])
def test_a_damaged_file_is_one_line_naming_it(llada_dir, tmp_path, capsys, how):
    from llada.cli import main
    from llada.errors import UserError

    bundle = llada.load(llada_dir[0])
    root = tmp_path / "m"
    llada.save(root, bundle.model, bundle.tokenizer)
    bad = _damage(root, how)
    with pytest.raises(UserError) as info:
        llada.load(root)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    command = ["info", str(root)] if how != "generation config not JSON" else ["convert", str(root), str(tmp_path / "o")]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err


def test_a_truncated_shard_is_one_line_naming_it(llada_dir, tmp_path):
    _, sd = llada_dir
    root = _write_llada_dir(tmp_path / "sharded", LLADA_STYLE_CONFIG, sd, shards=3)
    shard = root / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors: not a readable safetensors file"):
        llada.load(root)


def _point_index_at(root: Path, shard: str, name: str) -> None:
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: (name if v == shard else v) for k, v in index["weight_map"].items()}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink", "symlinked single file", "symlinked config"])
def test_a_directory_naming_a_file_outside_itself_is_refused(llada_dir, tmp_path, capsys, how):
    """A shard the index names by `../`, by an absolute path, or through a symlink leading out of the
    directory (or such a symlink in place of a file loading reads) is refused in one line naming it."""
    from llada.cli import main

    root, shard = _sharded(llada_dir, tmp_path), "model-00002-of-00003.safetensors"
    outside = tmp_path / "outside"
    outside.mkdir()
    if how == "symlinked single file":
        root = llada_dir[0]
        (root / "model.safetensors").rename(outside / "x.safetensors")
        (root / "model.safetensors").symlink_to(outside / "x.safetensors")
    elif how == "symlinked config":
        (root / "config.json").rename(outside / "config.json")
        (root / "config.json").symlink_to(outside / "config.json")
    else:
        (root / shard).rename(outside / "x.safetensors")
        if how == "symlink":
            (root / shard).symlink_to(outside / "x.safetensors")
        else:
            _point_index_at(root, shard, "../outside/x.safetensors" if how == "relative"
                            else str(outside / "x.safetensors"))
    with pytest.raises(ModelDirError, match="outside the model directory") as info:
        llada.load(root)
    assert "\n" not in str(info.value)
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the model directory" in err


@pytest.mark.parametrize("key,value", [("fast_tokenizer_files", ["../outside/tokenizer.4.0.0.json"]),
                                       ("tokenizer_file", "OUTSIDE/tokenizer.json")])
def test_a_tokenizer_config_naming_a_file_outside_is_refused(llada_dir, tmp_path, key, value):
    root = llada_dir[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("tokenizer.json", "tokenizer.4.0.0.json"):
        (outside / name).write_text((root / "tokenizer.json").read_text())
    config = json.loads((root / "tokenizer_config.json").read_text())
    config[key] = value.replace("OUTSIDE", str(outside)) if isinstance(value, str) else value
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match=f"tokenizer_config.json.*{key}.*outside the model directory"):
        llada.load(root)


def test_integer_weights_are_refused_at_load(llada_dir, tmp_path):
    """int64 weights where the model has a float parameter would load and fail at the first forward."""
    _, sd = llada_dir
    bad = {**sd, "model.transformer.blocks.0.q_proj.weight": torch.ones(32, 32, dtype=torch.int64)}
    root = _write_llada_dir(tmp_path / "int", LLADA_STYLE_CONFIG, bad)
    with pytest.raises(CheckpointError, match=r"blocks.0.q_proj.weight holds int64 values.*floating-point"):
        llada.load(root)


def _load_next_to(fifo: Path, root: Path) -> BaseException | None:
    """What llada.load(root) raises. A load blocked opening `fifo` (inside a library that holds the GIL, so
    no thread of this process could help) is released after 20 s by another process opening it for
    writing, and then fails on the empty file."""
    import subprocess

    writer = subprocess.Popen(["sh", "-c", 'sleep 20; : > "$0"', str(fifo)])
    try:
        llada.load(root)
    except BaseException as e:  # noqa: BLE001 - handed to the test
        return e
    finally:
        writer.kill()
        writer.wait()
    return None


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                                  "generation_config.json", "model-00002-of-00003.safetensors",
                                  "model.safetensors.index.json"])
def test_a_fifo_in_place_of_a_file_is_refused_before_it_is_opened(llada_dir, tmp_path, name):
    import os

    root = _sharded(llada_dir, tmp_path) if "0000" in name or "index" in name else llada_dir[0]
    (root / "generation_config.json").write_text("{}")
    (root / name).unlink()
    os.mkfifo(root / name)
    error = _load_next_to(root / name, root)
    assert isinstance(error, ModelDirError) and f"{root / name} is not a regular file" in str(error), error


def _with_chat_template(root: Path, template: str) -> Path:
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    return root


@pytest.mark.parametrize("template,needle", [
    ("{{ raise_exception('no chat here') }}", "no chat here"),
    ("{% for i in range(100000000) %}x{% endfor %}", "OverflowError"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "does not finish"),
])
def test_a_chat_template_that_fails_or_runs_away_is_refused_at_load(llada_dir, template, needle):
    root = _with_chat_template(llada_dir[0], template)
    with pytest.raises(CheckpointError, match="chat template") as info:
        llada.load(root)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_working_chat_template_still_loads(llada_dir):
    from llada.tokenizer import CHAT_TEMPLATE

    tok = llada.load(_with_chat_template(llada_dir[0], CHAT_TEMPLATE)).tokenizer
    assert tok.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False).startswith(
        "<|startoftext|><|start_header_id|>user")


@pytest.mark.parametrize("device,message", [
    ("bogus", "device 'bogus' is not a device; use one of: cpu"),
    (3.5, "device 3.5 is not a device; use one of: cpu"),
    ("cuda:0" if not torch.cuda.is_available() else "cuda:99", "device cuda"),
])
def test_load_names_a_device_it_cannot_use(llada_dir, device, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        llada.load(llada_dir[0], device=device)
