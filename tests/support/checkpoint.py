"""Model directories in the public LLaDA layout, written from random weights, and a fake HfApi:
shared by the checkpoint tests and the hostile-directory tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from support.families import LLADA_8B_CONFIG
from support.tiny import make_word_tokenizer

# A config.json as the public checkpoints write it: LLaDA-8B's fields and values, tiny sizes and ids.
LLADA_STYLE_CONFIG = {**LLADA_8B_CONFIG, "d_model": 32, "embedding_size": 64, "eos_token_id": 62, "mask_token_id": 63,
                      "max_sequence_length": 128, "mlp_hidden_size": 96, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2,
                      "pad_token_id": 62, "vocab_size": 60}


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


def _sharded(llada_dir, tmp_path) -> Path:
    return _write_llada_dir(tmp_path / "sharded", LLADA_STYLE_CONFIG, llada_dir[1], shards=3)
