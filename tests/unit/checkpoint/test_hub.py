"""Hub access: info, revision and push against a fake HfApi (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.checkpoint import LLADA_STYLE_CONFIG, _sharded

import llada
from llada.errors import ModelDirError


def test_info_of_a_hub_id_downloads_config_json_alone(llada_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from llada.cli import main

    fetched = []
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "config.json").write_text(json.dumps({**LLADA_STYLE_CONFIG, "torch_dtype": "bfloat16"}))

    def hf_hub_download(repo_id, filename, revision=None, **kw):
        fetched.append((repo_id, filename, revision))
        return str(tmp_path / "hub" / filename)

    def snapshot_download(*a, **kw):
        raise AssertionError("info must not download the weights")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert main(["info", "someone/llada-tiny", "--revision", "v2"]) == 0
    out = capsys.readouterr().out
    assert fetched == [("someone/llada-tiny", "config.json", "v2")]
    assert "d_model=32" in out and "bfloat16" in out and "someone/llada-tiny (revision v2)" in out


def test_revision_reaches_the_hub_for_load_and_convert(llada_dir, tmp_path, monkeypatch):
    import huggingface_hub

    from llada.cli import main

    asked = []

    def snapshot_download(repo_id, revision=None, **kw):
        asked.append((repo_id, revision))
        return str(llada_dir[0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert llada.load("someone/llada-tiny", revision="abc123").config.d_model == 32
    assert main(["convert", "someone/llada-tiny", str(tmp_path / "out"), "--revision", "v1"]) == 0
    assert asked == [("someone/llada-tiny", "abc123"), ("someone/llada-tiny", "v1")]
    assert (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(ModelDirError, match="--revision applies to a Hugging Face Hub id"):
        llada.load(llada_dir[0], revision="v1")


MODEL_FILES = ["README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json"]


def test_push_uploads_a_model_directory(llada_dir, tmp_path, hub, capsys):
    from llada.cli import main

    bundle = llada.load(llada_dir[0])
    llada.save(tmp_path / "m", bundle.model, bundle.tokenizer)
    card = (tmp_path / "m" / "README.md").read_bytes()
    assert main(["push", str(tmp_path / "m"), "me/llada-tiny", "--revision", "dev"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert hub.calls == [("create_repo", "me/llada-tiny", False), ("create_branch", "me/llada-tiny", "dev"),
                         ("create_commit", "me/llada-tiny", "dev", MODEL_FILES, True)]
    assert (tmp_path / "m" / "README.md").read_bytes() == card  # the card names the repository in the upload only
    hub.calls.clear()
    llada.save(tmp_path / "n", bundle.model, bundle.tokenizer, push_to_hub="me/other")
    assert hub.calls[-1][:3] == ("create_commit", "me/other", None)
    assert main(["push", str(tmp_path), "me/x"]) == 2  # not a model directory: one line, nothing uploaded
    assert "no config.json" in capsys.readouterr().err and len(hub.calls) == 2


def test_push_uploads_only_the_models_files(llada_dir, tmp_path, hub):
    """A training checkpoint holds pickles, optimizer state and notes beside the model: none of that goes."""
    bundle = llada.load(llada_dir[0])
    root = tmp_path / "m"
    llada.save(root, bundle.model, bundle.tokenizer)
    for name in ("trainer/custom_checkpoint_0.pkl", "optimizer.pt", "pytorch_model.bin", "notes.txt", ".env",
                 "eval/report.md", "training_config.json", "eval/results.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "special_tokens_map.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    from llada.commands.checkpoint import push

    push(str(root), "me/m")
    assert hub.calls[-1][3] == sorted([*MODEL_FILES, "adapter/adapter_config.json",
                                       "adapter/adapter_model.safetensors", "eval/results.json",
                                       "special_tokens_map.json", "training_config.json"])


@pytest.mark.parametrize("repo,refuse,words", [
    ("bad id!!", None, "'bad id!!' is not a Hugging Face Hub repository id"),
    ("a/b/c", None, "'a/b/c' is not a Hugging Face Hub repository id"),
    ("me/m", "no token", "not logged in to the Hugging Face Hub: log in with `hf auth login` or set HF_TOKEN"),
    ("me/m", "offline", "cannot reach the Hugging Face Hub"),
    ("me/m", 401, "the Hugging Face Hub refused the token (401 Unauthorized)"),
    ("me/m", 403, "may not write to 'me/m' (403 Forbidden)"),
])
def test_push_failures_are_one_line_each_and_change_nothing(llada_dir, tmp_path, hub, monkeypatch, capsys, repo,
                                                            refuse, words):
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import HfApi

    from llada.cli import main

    bundle = llada.load(llada_dir[0])
    root = tmp_path / "m"
    llada.save(root, bundle.model, bundle.tokenizer)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    if refuse == "no token":
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    elif refuse == "offline":  # the real client, in offline mode: it fails before any socket opens
        monkeypatch.setattr(huggingface_hub, "HfApi", HfApi)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_TOKEN", "hf_test")
    elif refuse is not None:
        response = SimpleNamespace(status_code=refuse, headers={}, request=None)
        hub.refuse = HfHubHTTPError(f"{refuse} Client Error", response=response)
    assert main(["push", str(root), repo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err, err
    assert ("log in" in err) == (refuse in ("no token", 401)), err  # only where logging in is the fix
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    assert not any(c[0] == "create_commit" for c in hub.calls)


def test_symlinks_that_stay_inside_and_the_hub_cache_layout_load(llada_dir, tmp_path, monkeypatch):
    """A symlink to a file inside the directory is fine; so is a Hugging Face cache snapshot, whose
    files are symlinks into the repository folder's `blobs/` (../../blobs/<hash>), and a directory
    whose files link to such blobs (a `--local-dir` download by huggingface_hub before 0.23).
    (tests/unit/checkpoint/test_hostile_dirs.py: the blobs of another repository, or outside the cache, are refused.)"""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # the cache those downloads use
    root, _ = llada_dir
    (root / "store").mkdir()
    (root / "model.safetensors").rename(root / "store" / "weights.safetensors")
    (root / "model.safetensors").symlink_to(Path("store") / "weights.safetensors")
    ids = torch.randint(0, 60, (1, 6))
    expected = llada.load(root).model(ids)

    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    sharded = _sharded(llada_dir, tmp_path)
    for i, f in enumerate(sorted(p for p in sharded.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        f.rename(blob)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    assert torch.equal(llada.load(snapshot).model(ids), expected)
    local = tmp_path / "local"
    local.mkdir()
    for f in snapshot.iterdir():
        (local / f.name).symlink_to(f.resolve())
    assert torch.equal(llada.load(local).model(ids), expected)
