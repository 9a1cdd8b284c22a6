"""Model directories in the public LLaDA layout: load, save, shards, Auto classes, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_word_tokenizer
from safetensors.torch import save_file
from test_model import reference_forward

import llada
from llada.config import ConfigError
from llada.errors import CheckpointError, ModelDirError

# A config.json as the public checkpoints write it (LLaDA-8B's fields, tiny numbers).
LLADA_STYLE_CONFIG = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModel": "modeling_llada.LLaDAModelLM",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 32,
    "embedding_dropout": 0.0, "embedding_size": 64, "eos_token_id": 62, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 63, "max_sequence_length": 128,
    "mlp_hidden_size": 96, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "pad_token_id": 62, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False,
    "vocab_size": 60, "weight_tying": False,
}


def _random_llada_state(cfg: dict) -> dict[str, torch.Tensor]:
    """Weights with the public checkpoints' key names, built from the config alone."""
    d, h, v = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    kv = cfg["n_kv_heads"] * d // cfg["n_heads"]
    sd = {"model.transformer.wte.weight": torch.randn(v, d) * 0.5,
          "model.transformer.ln_f.weight": 1 + 0.2 * torch.randn(d),
          "model.transformer.ff_out.weight": torch.randn(v, d) * 0.2}
    for n in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{n}."
        shapes = {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "attn_out": (d, d),
                  "ff_proj": (h, d), "up_proj": (h, d), "ff_out": (d, h)}
        for name, shape in shapes.items():
            sd[p + name + ".weight"] = torch.randn(shape) / shape[1] ** 0.5
        sd[p + "attn_norm.weight"] = 1 + 0.2 * torch.randn(d)
        sd[p + "ff_norm.weight"] = 1 + 0.2 * torch.randn(d)
    return sd


def _write_llada_dir(root: Path, cfg: dict, sd: dict[str, torch.Tensor], shards: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg))
    keys = sorted(sd)
    if shards == 1:
        save_file(sd, str(root / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: sd[k] for k in keys[i::shards]}
            save_file(part, str(root / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in part})
        (root / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    make_word_tokenizer(["the", "cat", "sat"]).save_pretrained(root)
    return root


@pytest.fixture
def llada_dir(tmp_path) -> tuple[Path, dict]:
    sd = _random_llada_state(LLADA_STYLE_CONFIG)
    return _write_llada_dir(tmp_path / "single", LLADA_STYLE_CONFIG, sd), sd


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


@pytest.mark.parametrize("shard_size", ["5GB", "8KB"])
def test_save_load_round_trip_is_exact(llada_dir, tmp_path, shard_size):
    root, _ = llada_dir
    bundle = llada.load(root)
    out = tmp_path / "out"
    llada.save(out, bundle.model, bundle.tokenizer, max_shard_size=shard_size)
    assert (out / "model.safetensors.index.json").exists() == (shard_size == "8KB")
    again = llada.load(out)
    ids = torch.randint(0, 60, (3, 7))
    assert torch.equal(again.model(ids), bundle.model(ids))
    for (n, a), (_, b) in zip(bundle.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    saved = json.loads((out / "config.json").read_text())
    # the reference code reads these; our own keys ride along
    for key in ("d_model", "n_layers", "mlp_hidden_size", "block_type", "rope", "weight_tying", "mask_token_id"):
        assert saved[key] == LLADA_STYLE_CONFIG[key]
    assert again.tokenizer.get_vocab() == bundle.tokenizer.get_vocab()


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


# ------------------------------------------------------------------------------------------ bad input


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


def test_cli_info_and_help(llada_dir, capsys):
    from llada.cli import main

    assert main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert main(["info", str(llada_dir[0])]) == 0
    assert "d_model=32" in capsys.readouterr().out
    assert main(["info", "/definitely/not/here"]) == 2
    assert "no such directory" in capsys.readouterr().err


# ------------------------------------------------------------------------- what a saved directory holds


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


def test_model_card_says_what_the_directory_knows(llada_dir, tmp_path):
    bundle = llada.load(llada_dir[0])
    out = tmp_path / "card"
    llada.save(out, bundle.model, bundle.tokenizer)
    card = (out / "README.md").read_text()
    assert card.startswith("---\npipeline_tag: text-generation\n")
    assert "| context | 128 tokens |" in card and "| weights | float32, model.safetensors |" in card
    assert "| mask | `<|mdm_mask|>` | 63 |" in card and "| end of text | `<|endoftext|>` | 62 |" in card
    assert "no training_config.json" in card and "No evaluation is recorded" in card
    assert f'llada.load("{out}")' in card and f'AutoModelForCausalLM.from_pretrained("{out}")' in card

    # what the trainer and `llada eval` leave beside the weights is described when present
    training = {"model": "tiny", "data": None, "world": {"n_people": 12}, "stage": "sft", "objective": "diffusion",
                "seq_len": 64, "batch_size": 4, "grad_accum": 2, "max_steps": 30, "lr": 0.001, "warmup_steps": 5,
                "min_lr_ratio": 0.1, "weight_decay": 0.1, "seed": 7, "lora_r": 0, "vocab_size": 300}
    (out / "training_config.json").write_text(json.dumps(training))
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text(json.dumps({
        "tasks": [{"kind": "diffusion", "task": "fact_forward", "n": 24, "generation_accuracy": 0.625,
                   "choice_accuracy": None, "setting": {"steps": 32}}],
        "likelihood": {"diffusion": {"nll_per_token": 1.234, "exact": False}}}))
    llada.save(out, bundle.model, bundle.tokenizer)
    card = (out / "README.md").read_text()
    assert "supervised fine-tuning" in card and "built-in synthetic world" in card and "seed 7" in card
    assert "30 optimizer steps of 4 sequences x 2 accumulation" in card and "fresh `tiny` shape" in card
    assert "| diffusion | fact_forward | 24 | 0.625 |  | steps=32 |" in card and "<= 1.234 nats" in card

    # a card written by hand is kept; `push` rewrites a generated one for the repository
    (out / "README.md").write_text("# mine\n")
    llada.save(out, bundle.model, bundle.tokenizer)
    assert (out / "README.md").read_text() == "# mine\n"


# -------------------------------------------------------------------------- the Hub, without a network


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


class _FakeHfApi:
    """Records what huggingface_hub.HfApi would be asked to do; `refuse` makes each call fail with it."""

    calls: list[tuple] = []
    refuse: Exception | None = None

    def _call(self, *record):
        self.calls.append(record)
        if self.refuse is not None:
            raise self.refuse

    def create_repo(self, repo_id, private=False, exist_ok=False, **kw):
        self._call("create_repo", repo_id, private)

    def create_branch(self, repo_id, branch, exist_ok=False, **kw):
        self._call("create_branch", repo_id, branch)

    def create_commit(self, repo_id, operations, commit_message=None, revision=None, **kw):
        uploaded = {op.path_in_repo: op.path_or_fileobj for op in operations}
        card = uploaded.get("README.md")
        card = card if isinstance(card, bytes) else Path(card).read_bytes()
        self._call("create_commit", repo_id, revision, sorted(uploaded),
                   f'from_pretrained("{repo_id}")'.encode() in card)

    def upload_folder(self, repo_id, folder_path, **kw):
        self._call("upload_folder", repo_id, sorted(str(p.relative_to(folder_path))
                                                    for p in Path(folder_path).rglob("*") if p.is_file()))


@pytest.fixture
def hub(monkeypatch):
    """A fake HfApi and a stored token (no network)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(_FakeHfApi, "calls", [])
    monkeypatch.setattr(_FakeHfApi, "refuse", None)
    return _FakeHfApi


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


# ------------------------------------------------------------------------------------ damaged files


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


# ------------------------------------------------------------------- what the trainer's directories hold


@pytest.fixture(scope="module")
def world_files(tmp_path_factory) -> Path:
    from llada.data.world import World

    root = tmp_path_factory.mktemp("world")
    w = World(seed=0, n_people=30, n_stories=60, n_sums=400)
    (root / "corpus.txt").write_text("\n\n".join(w.pretrain_documents()))
    (root / "chat.jsonl").write_text("\n".join(json.dumps(c) for c in w.sft_conversations()))
    return root


def _train(out: Path, data: Path, **kw) -> Path:
    from llada.training.config import TrainConfig
    from llada.training.trainer import Trainer

    base = dict(model="debug", data=str(data), out_dir=str(out), seq_len=32, batch_size=4, max_steps=2,
                warmup_steps=1, lr=3e-3, eval_every=0, save_every=1, log_every=1, vocab_size=300, progress=False,
                tensorboard=False)
    return Trainer(TrainConfig(**{**base, **kw})).fit()


def _weight_files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name.startswith(("model", "pytorch_model", "adapter_model")))


def test_a_checkpoint_stores_the_weights_once(tmp_path, world_files):
    """checkpoints/step-N holds the model directory and the trainer state, which has the optimizer,
    the scheduler and the RNG but not the weights again (a resume builds the model from the model
    directory: tests/test_train.py checks that it continues exactly)."""
    _train(tmp_path / "run", world_files / "corpus.txt")
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    assert _weight_files_below(ckpt) == ["model.safetensors"]
    assert (ckpt / "trainer" / "optimizer.bin").exists() and (ckpt / "trainer" / "state.json").exists()


def test_a_lora_run_saves_a_peft_adapter_beside_the_merged_weights(tmp_path, world_files):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = _train(tmp_path / "pt", world_files / "corpus.txt", save_every=0)
    final = _train(tmp_path / "sft", world_files / "chat.jsonl", model=str(base), stage="sft", seq_len=64,
                   lora_r=4, lr=1e-2)
    ckpt = tmp_path / "sft" / "checkpoints" / "step-000001"
    # merged weights once, the adapters alone once, nothing in trainer/
    assert _weight_files_below(ckpt) == ["adapter/adapter_model.safetensors", "model.safetensors"]
    config = json.loads((final / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(base.resolve())

    ids = torch.randint(0, 200, (2, 12))
    merged = AutoModelForCausalLM.from_pretrained(final)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), final / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(AutoModelForCausalLM.from_pretrained(base)(ids).logits, merged(ids).logits,
                                  atol=1e-4)  # the adapters were trained: they change the model
    card = (final / "README.md").read_text()
    assert "rank 4 adapters" in card and "`adapter/` (peft)" in card


# ------------------------------------------------------------------------ directories that reach outside


def _sharded(llada_dir, tmp_path) -> Path:
    return _write_llada_dir(tmp_path / "sharded", LLADA_STYLE_CONFIG, llada_dir[1], shards=3)


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


def test_symlinks_that_stay_inside_and_the_hub_cache_layout_load(llada_dir, tmp_path, monkeypatch):
    """A symlink to a file inside the directory is fine; so is a Hugging Face cache snapshot, whose
    files are symlinks into the repository folder's `blobs/` (../../blobs/<hash>), and a directory
    whose files link to such blobs (a `--local-dir` download by huggingface_hub before 0.23).
    (tests/test_hostile_dirs.py: the blobs of another repository, or outside the cache, are refused.)"""
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


# ------------------------------------------------------------------------ files that are not what they say


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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_follow_the_umask(llada_dir, tmp_path, umask):
    """safetensors writes its files 0600; a model directory gets the user's umask like any file."""
    import os

    bundle = llada.load(llada_dir[0])
    old = os.umask(umask)
    try:
        llada.save(tmp_path / "out" / "single", bundle.model, bundle.tokenizer)
        llada.save(tmp_path / "out" / "sharded", bundle.model, bundle.tokenizer, max_shard_size="20KB")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len([p for p in files if p.name.endswith(".safetensors")]) > 2
    assert {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in files} == \
        {p.relative_to(tmp_path).as_posix(): 0o666 & ~umask for p in files}
