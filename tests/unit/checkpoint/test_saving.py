"""Saving: exact round trips, shards, weights stored once, LoRA adapters, file modes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from support.checkpoint import LLADA_STYLE_CONFIG

import llada


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


def test_learned_positions_round_trip_in_the_llada_layout_only(llada_dir, tmp_path):
    """A model with our learned position embedding saves its `wpe` rows and the option, names no
    remote code (LLaDA's would drop the rows), loads back exactly, and is refused by a layout that
    cannot hold it."""
    from llada.config import ConfigError
    from llada.families import FAMILIES
    from llada.model import LLaDAModel

    root, _ = llada_dir
    bundle = llada.load(root)
    config = dataclasses.replace(bundle.model.config, learned_positions=True)
    model = LLaDAModel(config)
    llada.save(tmp_path / "out", model, bundle.tokenizer)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["learned_positions"] is True and "auto_map" not in saved
    again = llada.load(tmp_path / "out")
    ids = torch.randint(0, 60, (2, 7))
    assert torch.equal(again.model(ids), model(ids))
    assert torch.equal(again.model.transformer.wpe.weight, model.transformer.wpe.weight)
    # a model without the option writes neither the key nor drops the remote code
    plain = json.loads((root / "config.json").read_text())
    assert "learned_positions" not in plain and "auto_map" in plain
    with pytest.raises(ConfigError, match=r"a Dream model cannot have .*learned_positions=True \(llada's own"):
        FAMILIES["dream"].config_to_json(dataclasses.replace(config, family="dream"))


def test_head_size_and_rope_scaling_round_trip_in_the_llada_layout_only(llada_dir, tmp_path):
    """Heads of their own size and Llama 3's RoPE scaling are saved (only when set), name no remote
    code (LLaDA's would size heads d_model / n_heads and not scale), load back exactly, open in
    transformers' Auto classes, and are refused by the layouts that cannot hold them."""
    from transformers import AutoModelForCausalLM

    from llada.config import ConfigError
    from llada.families import FAMILIES
    from llada.model import LLaDAModel

    root, _ = llada_dir
    bundle = llada.load(root)
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    for changes in ({"head_dim": 16}, {"rope_scaling": scaling}, {"head_dim": 4, "rope_scaling": scaling}):
        model = LLaDAModel(dataclasses.replace(bundle.model.config, **changes))
        llada.save(tmp_path / "out", model, bundle.tokenizer)
        saved = json.loads((tmp_path / "out" / "config.json").read_text())
        assert {k: saved[k] for k in changes} == changes and "auto_map" not in saved
        assert {"head_dim", "rope_scaling"} & set(saved) == set(changes)  # only what is set is written
        again = llada.load(tmp_path / "out")
        ids = torch.randint(0, 60, (2, 7))
        assert again.config.replace(extra={}) == model.config.replace(extra={})
        assert torch.equal(again.model(ids), model(ids))
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
        assert hf.model.config.replace(extra={}) == model.config.replace(extra={})
        assert torch.equal(hf(ids).logits, model(ids))
        for family, name in (("dream", "Dream"), ("llada2", "LLaDA 2.x"), ("llada_moe", "LLaDA-MoE")):
            with pytest.raises(ConfigError, match=f"a {name} model cannot have .*{next(iter(changes))}="):
                FAMILIES[family].config_to_json(dataclasses.replace(model.config, family=family))
    plain = json.loads((root / "config.json").read_text())
    assert "head_dim" not in plain and "rope_scaling" not in plain and "auto_map" in plain


def test_shifted_prediction_round_trips_in_the_llada_layout_only(llada_dir, tmp_path):
    """A shifted model saves the option, names no remote code (LLaDA's would not realign), loads
    back shifted; Dream's config.json implies the shift without writing it; the MoE layouts,
    which cannot express it, refuse it."""
    from llada.config import ConfigError
    from llada.families import FAMILIES
    from llada.model import LLaDAModel

    root, _ = llada_dir
    bundle = llada.load(root)
    model = LLaDAModel(dataclasses.replace(bundle.model.config, shifted_prediction=True))
    model.load_state_dict(bundle.model.state_dict())
    llada.save(tmp_path / "out", model, bundle.tokenizer)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["shifted_prediction"] is True and "auto_map" not in saved
    again = llada.load(tmp_path / "out")
    ids = torch.randint(0, 60, (2, 7))
    assert again.config.shifted_prediction and torch.equal(again.model(ids), model(ids))
    assert torch.equal(model(ids)[:, 1:], bundle.model(ids)[:, :-1])
    assert "shifted_prediction" not in json.loads((root / "config.json").read_text())
    dream = FAMILIES["dream"].config_to_json(dataclasses.replace(model.config, family="dream", include_qkv_bias=True,
                                                                 vocab_size=model.config.embedding_size))
    assert "shifted_prediction" not in dream
    for family, name in (("llada2", "LLaDA 2.x"), ("llada_moe", "LLaDA-MoE")):
        with pytest.raises(ConfigError, match=f"a {name} model cannot have .*shifted_prediction=True"):
            FAMILIES[family].config_to_json(dataclasses.replace(model.config, family=family))


def test_a_shifted_llada_model_samples_and_scores_as_the_dream_model_of_its_weights(dream_dir, tmp_path):
    """Dream's weights saved in the llada layout with `shifted_prediction`: the same logits, and the
    samplers (caches and block diffusion included) and the Eq. 6 estimator, which never ask the
    family, give the same results."""
    from llada.likelihood import log_likelihoods
    from llada.model import LLaDAModel
    from llada.sampling import SamplerOptions, sample

    dream = llada.load(dream_dir[0])
    model = LLaDAModel(dataclasses.replace(dream.config, family="llada"))
    model.load_state_dict(dream.model.state_dict())
    llada.save(tmp_path / "out", model, dream.tokenizer)
    ours = llada.load(tmp_path / "out")
    assert (type(ours.model).__name__, ours.config.family, ours.config.shifted_prediction) == ("LLaDAModel", "llada", True)
    assert ours.config.roles == dream.config.roles
    ids = torch.randint(0, dream.config.vocab_size, (2, 9))
    assert torch.equal(ours.model(ids), dream.model(ids))
    prompt = dream.tokenizer("the cat sat", return_tensors="pt")["input_ids"]
    for options in (SamplerOptions(gen_length=8, block_length=4, steps=8, temperature=0.7),
                    SamplerOptions(gen_length=8, block_length=4, steps=8, cache="dual"),
                    SamplerOptions.from_dict({"preset": "llada2", "gen_length": 8, "block_length": 4})):
        runs = [sample(m.model, prompt, options, generator=torch.Generator().manual_seed(3)).sequences
                for m in (dream, ours)]
        assert torch.equal(*runs), options
    text = dream.tokenizer("the cat sat on the mat").input_ids
    scores = [log_likelihoods(m.model, [(text[:2], text[2:])], mc_num=8, generator=torch.Generator().manual_seed(5))
              for m in (dream, ours)]
    assert scores[0][0].value == scores[1][0].value


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
    directory: tests/unit/training/test_checkpoints.py checks that it continues exactly)."""
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
