"""Model directories and arguments made to do harm or by mistake: a push that would upload files
from outside the directory, symlinks into another repository's Hugging Face cache, NaN weights,
symlink loops, mixed and float8 dtypes, and `save` given what it cannot use. Each is refused in one
line (or, for mixed dtypes, loaded in one dtype); the directories are built here, no network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.checkpoint import LLADA_STYLE_CONFIG, _random_llada_state, _write_llada_dir
from support.moe_families import TINY_LLADA2, _public_dir

import llada
from llada.cli import main
from llada.errors import CheckpointError, ModelDirError, UserError


@pytest.fixture
def llada_dir(tmp_path) -> tuple[Path, dict]:
    sd = _random_llada_state(LLADA_STYLE_CONFIG)
    return _write_llada_dir(tmp_path / "single", LLADA_STYLE_CONFIG, sd), sd


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache root under tmp_path, where huggingface_hub would download to."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 600, text
    return text


@pytest.mark.parametrize("name", ["merges.txt", "eval/results.json", "secret_mod.py", "model.safetensors"])
def test_push_refuses_a_file_that_leads_outside_the_directory(llada_dir, tmp_path, hub, capsys, name):
    """A symlink to a file outside (a secret) under a name push uploads is refused, before anything
    is uploaded, as `llada info` and `llada.load` refuse it; nothing of the secret leaves."""
    bundle = llada.load(llada_dir[0])
    root = tmp_path / "pushevil"
    llada.save(root, bundle.model, bundle.tokenizer)
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("hf_SECRET")
    if name == "secret_mod.py":  # a module the config's auto_map names, as remote code would be
        config = json.loads((root / "config.json").read_text())
        config["auto_map"] = {**config["auto_map"], "AutoTokenizer": "secret_mod.X"}
        (root / "config.json").write_text(json.dumps(config))
    if name == "model.safetensors":
        (root / name).rename(secret)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).symlink_to(secret)
    assert main(["push", str(root), "me/model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the model directory" in err and name in err, err
    assert not any(c[0] == "create_commit" for c in hub.calls)


def test_push_uploads_a_symlink_that_stays_inside(llada_dir, tmp_path, hub):
    bundle = llada.load(llada_dir[0])
    root = tmp_path / "m"
    llada.save(root, bundle.model, bundle.tokenizer)
    (root / "store").mkdir()
    (root / "tokenizer.json").rename(root / "store" / "tokenizer.json")
    (root / "tokenizer.json").symlink_to(Path("store") / "tokenizer.json")
    from llada.checkpoint.hub import push

    push(str(root), "me/m")
    assert "tokenizer.json" in hub.calls[-1][3]


def _snapshot(cache: Path, repo: str, source: Path, blobs_of: str | None = None) -> Path:
    """`source`'s files as huggingface_hub caches them: blobs in <cache>/models--<repo>/blobs (or
    those of `blobs_of`), the snapshot's files symlinks to them by relative paths."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    blobs = cache / f"models--{(blobs_of or repo).replace('/', '--')}" / "blobs"
    snapshot = folder / "snapshots" / ("0" * 40)
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for i, f in enumerate(sorted(source.iterdir())):
        blob = blobs / f"{i:064x}"
        f.rename(blob)
        (snapshot / f.name).symlink_to(Path(os.path.relpath(blob, snapshot)))
    return snapshot


def test_a_symlink_into_some_blobs_folder_is_refused(llada_dir, tmp_path, capsys, hub_cache):
    """`models--evil/blobs/anything` outside the cache looks like a blob but is any file of anyone's."""
    root = llada_dir[0]
    evil = tmp_path / "outside" / "models--evil" / "blobs"
    evil.mkdir(parents=True)
    (root / "model.safetensors").rename(evil / "anything")
    (root / "model.safetensors").symlink_to(evil / "anything")
    with pytest.raises(ModelDirError, match="outside the model directory") as e:
        llada.load(root)
    assert "model.safetensors" in _one_line(e.value)
    assert main(["info", str(root)]) == 2 and "outside the model directory" in capsys.readouterr().err


def test_a_snapshot_linking_to_another_repositorys_blobs_is_refused(llada_dir, hub_cache):
    snapshot = _snapshot(hub_cache, "org/tiny", llada_dir[0], blobs_of="other/secret")
    with pytest.raises(ModelDirError, match="outside the model directory") as e:
        llada.load(snapshot)
    _one_line(e.value)


def test_a_local_dir_linking_to_blobs_outside_the_cache_or_of_two_repositories_is_refused(
        llada_dir, tmp_path, hub_cache, monkeypatch):
    """A `--local-dir` download of huggingface_hub before 0.23 links into the cache's blobs of the
    one repository it downloaded: blobs of a cache elsewhere, or of two repositories, are not that."""
    ids = torch.randint(0, 60, (1, 6))
    expected = llada.load(llada_dir[0]).model(ids)
    snapshot = _snapshot(hub_cache, "org/tiny", llada_dir[0])
    local = tmp_path / "local"
    local.mkdir()
    for f in snapshot.iterdir():
        (local / f.name).symlink_to(f.resolve())
    assert torch.equal(llada.load(local).model(ids), expected)  # the layout huggingface_hub made loads

    from huggingface_hub import constants

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelDirError, match="outside the model directory"):
        llada.load(local)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    other = hub_cache / "models--other--x" / "blobs"
    other.mkdir(parents=True)
    (local / "tokenizer.json").resolve().rename(other / "f")
    (local / "tokenizer.json").unlink()
    (local / "tokenizer.json").symlink_to(other / "f")
    with pytest.raises(ModelDirError, match="models--other--x.*models--org--tiny|models--org--tiny.*models--other--x"):
        llada.load(local)


def test_the_download_layouts_of_huggingface_hub_load(llada_dir, tmp_path, hub_cache):
    """A cache snapshot (symlinks to ../../blobs/<hash>), one opened through a symlinked cache root,
    and a `--local-dir` download of huggingface_hub 0.23 on (the files themselves, and its
    `.cache/huggingface/` bookkeeping)."""
    ids = torch.randint(0, 60, (1, 6))
    expected = llada.load(llada_dir[0]).model(ids)
    local = tmp_path / "local"
    local.mkdir()
    for f in llada_dir[0].iterdir():
        (local / f.name).write_bytes(f.read_bytes())
    (local / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (local / ".cache" / "huggingface" / "download" / "model.safetensors.metadata").write_text("0\nabc\n1.0\n")
    assert torch.equal(llada.load(local).model(ids), expected)
    snapshot = _snapshot(hub_cache, "org/tiny", llada_dir[0])
    assert torch.equal(llada.load(snapshot).model(ids), expected)
    (tmp_path / "cache-link").symlink_to(hub_cache)
    via_link = tmp_path / "cache-link" / snapshot.relative_to(hub_cache)
    assert torch.equal(llada.load(via_link).model(ids), expected)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_at_load(llada_dir, tmp_path, value):
    _, sd = llada_dir
    key = "model.transformer.blocks.1.up_proj.weight"
    bad = {k: t.clone() for k, t in sd.items()}
    bad[key][3, 5] = value
    root = _write_llada_dir(tmp_path / "bad", LLADA_STYLE_CONFIG, bad)
    with pytest.raises(CheckpointError, match=f"{key} holds NaN or infinite values") as e:
        llada.load(root)
    _one_line(e.value)


def test_weights_that_overflow_the_requested_dtype_are_refused(llada_dir, tmp_path):
    _, sd = llada_dir
    key = "model.transformer.blocks.0.q_proj.weight"
    big = {k: t.clone() for k, t in sd.items()}
    big[key][0, 0] = 1e6  # finite in float32 and bfloat16, infinite in float16
    root = _write_llada_dir(tmp_path / "big", LLADA_STYLE_CONFIG, big)
    assert llada.load(root, dtype="bfloat16").model is not None
    with pytest.raises(CheckpointError, match=f"{key} .*overflows float16") as e:
        llada.load(root, dtype="float16")
    _one_line(e.value)


@pytest.mark.parametrize("how", ["model.safetensors to itself", "two unrelated links to each other"])
def test_a_symlink_loop_is_one_line(llada_dir, capsys, how):
    root = llada_dir[0]
    if how == "model.safetensors to itself":
        (root / "model.safetensors").unlink()
        (root / "model.safetensors").symlink_to("model.safetensors")
    else:
        (root / "loop1").symlink_to("loop2")
        (root / "loop2").symlink_to("loop1")
    with pytest.raises(ModelDirError, match="symlink loop") as e:
        llada.load(root)
    _one_line(e.value)
    assert main(["info", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "symlink loop" in err and "Traceback" not in err


def test_mixed_floating_dtypes_load_in_the_majority_dtype(llada_dir, tmp_path):
    """bfloat16 weights with one projection in float32 (and the norms in float16) load in
    bfloat16, the dtype of most of the weights, and give the logits of the all-bfloat16 directory;
    a requested dtype wins."""
    _, sd = llada_dir
    mixed = {k: t.to(torch.float32 if "q_proj" in k else torch.float16 if "norm" in k else torch.bfloat16)
             for k, t in sd.items()}
    plain = {k: t.to(torch.bfloat16) for k, t in mixed.items()}
    root = _write_llada_dir(tmp_path / "mixed", LLADA_STYLE_CONFIG, mixed)
    same = _write_llada_dir(tmp_path / "plain", LLADA_STYLE_CONFIG, plain)
    model = llada.load(root).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, 60, (2, 7))
    assert torch.equal(model(ids), llada.load(same).model(ids))
    assert {p.dtype for p in llada.load(root, dtype="float32").model.parameters()} == {torch.float32}


def test_a_buffer_kept_in_float32_stays_float32(tmp_path):
    """LLaDA 2.x stores its weights in bfloat16 and its routers' expert_bias in float32 (it ranks
    experts by small differences): loaded as stored, the weights take the majority dtype, that
    buffer stays float32. A dtype asked for applies to everything (`llada convert --dtype`)."""
    root, state = _public_dir(tmp_path / "llada2", TINY_LLADA2)
    for shard in root.glob("model-*.safetensors"):
        tensors = load_file(shard)
        save_file({k: t if k.endswith("expert_bias") else t.to(torch.bfloat16) for k, t in tensors.items()},
                  str(shard), metadata={"format": "pt"})
    router = llada.load(root).model.transformer.blocks[1].moe.router
    assert router.weight.dtype == torch.bfloat16 and router.expert_bias.dtype == torch.float32
    assert torch.equal(router.expert_bias, state["model.layers.1.mlp.gate.expert_bias"])
    assert llada.load(root, dtype="bfloat16").model.transformer.blocks[1].moe.router.expert_bias.dtype == \
        torch.bfloat16


def test_float8_weights_are_refused_in_one_line(llada_dir, tmp_path):
    """A float8 checkpoint is quantized with scales it keeps beside the weights; cast alone its
    values would be other weights: refused, naming the tensor."""
    _, sd = llada_dir
    key = "model.transformer.blocks.0.ff_proj.weight"
    root = _write_llada_dir(tmp_path / "f8", LLADA_STYLE_CONFIG, {**sd, key: sd[key].to(torch.float8_e4m3fn)})
    for dtype in ("auto", "bfloat16"):
        with pytest.raises(CheckpointError, match=f"{key} holds float8") as e:
            llada.load(root, dtype=dtype)
        _one_line(e.value)


def test_load_refuses_a_dtype_that_is_not_a_name(llada_dir):
    with pytest.raises(CheckpointError, match=r"unsupported dtype \['x'\]") as e:
        llada.load(llada_dir[0], dtype=["x"])
    _one_line(e.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"tokenizer": "x"}, "tokenizer must be a transformers tokenizer"),
    ({"options": {"gen_length": 4}}, "options must be a SamplerOptions"),
    ({"max_shard_size": "abc"}, 'max_shard_size must be a size such as "5GB", "500MB" or an int of bytes'),
    ({"max_shard_size": 0}, "max_shard_size must be a size"),
    ({"max_shard_size": -1}, "max_shard_size must be a size"),
    ({"max_shard_size": "nanGB"}, "max_shard_size must be a size"),
    ({"max_shard_size": True}, "max_shard_size must be a size"),
    ({"path": "file"}, "is a file; save writes a model directory"),
    ({"path": "file/below"}, "cannot be created"),
])
def test_save_refuses_what_it_cannot_use_before_writing(llada_dir, tmp_path, kwargs, message):
    bundle = llada.load(llada_dir[0])
    (tmp_path / "file").write_text("x")
    path = tmp_path / kwargs.pop("path", "out")
    args = {"tokenizer": bundle.tokenizer, **kwargs}
    with pytest.raises(UserError, match=message) as e:
        llada.save(path, bundle.model, **args)
    _one_line(e.value)
    assert not (tmp_path / "out").exists() and (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("size,sharded", [("20KB", True), ("20kb", True), (20_000, True), (" 0.02 MB", True),
                                         ("5GB", False)])
def test_save_takes_the_sizes_the_hub_library_takes(llada_dir, tmp_path, size, sharded):
    bundle = llada.load(llada_dir[0])
    llada.save(tmp_path / "out", bundle.model, bundle.tokenizer, max_shard_size=size)
    files = sorted((tmp_path / "out").glob("model*.safetensors"))
    assert (len(files) > 1) == sharded
    merged = {k: v for f in files for k, v in load_file(f).items()}
    assert set(merged) == set(llada_dir[1])
