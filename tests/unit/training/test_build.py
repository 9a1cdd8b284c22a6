"""Building the trained module: LoRA adapters, compile, dtypes and the Hub revision."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.train import _cfg

import llada
from llada.errors import UserError
from llada.training.trainer import Trainer


def test_a_bfloat16_checkpoint_is_fully_fine_tuned_in_float32(tmp_path, corpus):
    """Full fine-tuning keeps float32 master weights whatever the checkpoint's dtype (bf16 compute is
    --mixed_precision's autocast); LoRA leaves the frozen base as stored."""
    base = Trainer(_cfg(tmp_path / "pt", corpus, max_steps=1)).fit()
    bf16 = tmp_path / "bf16"
    bundle = llada.load(base)
    llada.save(bf16, bundle.model, bundle.tokenizer, dtype="bfloat16")
    full = Trainer(_cfg(tmp_path / "full", corpus, model=str(bf16), max_steps=1))
    assert {p.dtype for p in full.base.parameters()} == {torch.float32}
    assert math.isfinite(full.train_step()["loss"])
    lora = Trainer(_cfg(tmp_path / "lora", corpus, model=str(bf16), max_steps=1, lora_r=2))
    frozen = {p.dtype for n, p in lora.module.named_parameters() if "lora_" not in n}
    assert frozen == {torch.bfloat16}
    assert math.isfinite(lora.train_step()["loss"])


def test_compile_wraps_the_prepared_module_with_static_shapes(tmp_path, corpus, monkeypatch):
    """--compile: torch.compile (its eager backend here, to keep the test fast) runs after
    accelerate's prepare, with dynamic=False; the run trains and saves the same keys as uncompiled."""
    calls = []
    real = torch.compile

    def recording(module, **kwargs):
        calls.append((type(module).__name__, kwargs))
        return real(module, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    trainer = Trainer(_cfg(tmp_path / "c", corpus, max_steps=2, compile=True))
    assert calls == [("LLaDAModel", {"dynamic": False})]  # (on the CPU prepare leaves the model unwrapped)
    assert hasattr(trainer.module, "_orig_mod")
    final = trainer.fit()
    plain = Trainer(_cfg(tmp_path / "p", corpus, max_steps=2)).fit()
    # a compiled run resumes from its checkpoint and ends where an uninterrupted one does
    for lora_r in (0, 2):
        whole = Trainer(_cfg(tmp_path / f"w{lora_r}", corpus, max_steps=4, compile=True, lora_r=lora_r)).fit()
        cfg = _cfg(tmp_path / f"r{lora_r}", corpus, max_steps=4, save_every=2, compile=True, lora_r=lora_r)
        first = Trainer(cfg)
        first.train_step(), first.train_step()
        first.save_checkpoint()
        del first
        resumed = Trainer(cfg)
        assert resumed.step == 2
        a, b = load_file(whole / "model.safetensors"), load_file(resumed.fit() / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lora_r
    from safetensors import safe_open
    with safe_open(str(Path(final) / "model.safetensors"), "pt") as a, \
            safe_open(str(Path(plain) / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())


def test_lora_adapters_are_drawn_from_the_seed(tmp_path, chats, pretrained):
    """Two LoRA runs with the same settings start from the same adapters, whatever the process drew before."""
    def cfg(out):
        return _cfg(out, chats, model=str(pretrained), stage="sft", seq_len=64, lora_r=4)

    a = Trainer(cfg(tmp_path / "a"))
    torch.rand(1000)
    b = Trainer(cfg(tmp_path / "b"))
    for (name, p), q in zip(a.module.named_parameters(), b.module.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_merged_from_a_state_dict_equals_peft_merge(dtype):
    """`merge_lora_state` (what a FSDP run's gathered state dict is merged with) gives peft's
    merge_and_unload weights: bit for bit in float32; in bfloat16 within one rounding (peft rounds
    the update before adding it)."""
    import copy

    from llada.config import preset
    from llada.model import LLaDAModel
    from llada.runtime import apply_lora, merge_lora_state

    torch.manual_seed(0)
    adapted = apply_lora(LLaDAModel(preset("debug")).to(dtype), 4)
    with torch.no_grad():  # peft starts B at zero: a merge of that would change nothing
        for name, p in adapted.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    got = merge_lora_state(adapted.state_dict(), adapted)
    want = copy.deepcopy(adapted).merge_and_unload().state_dict()
    got = {k.removeprefix("base_model.model."): v for k, v in got.items()}
    assert got.keys() == want.keys()
    before = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
              for k, v in adapted.state_dict().items() if ".lora_" not in k}
    changed = [k for k in want if not torch.equal(want[k], before[k])]
    assert len(changed) == 2 * 7  # every adapted Linear of the debug model's blocks
    for k in want:
        if dtype == torch.float32:
            assert torch.equal(got[k], want[k]), k
        else:
            torch.testing.assert_close(got[k].float(), want[k].float(), atol=0, rtol=2**-7, msg=k)


def test_revision_reaches_the_hub_download_and_is_refused_elsewhere(tmp_path, corpus, monkeypatch):
    """--revision picks the branch, tag or commit of a Hub --model (as on llada generate); for a preset
    or a local directory it is one line saying why not."""
    base = Trainer(_cfg(tmp_path / "pt", corpus, max_steps=1)).fit()
    import llada.checkpoint

    asked = []

    def download(repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return str(base)

    monkeypatch.setattr("huggingface_hub.snapshot_download", download)
    trainer = Trainer(_cfg(tmp_path / "hub", corpus, model="someone/tiny-llada", revision="v1.0", max_steps=1))
    assert asked and asked[0] == ("someone/tiny-llada", "v1.0")
    assert trainer.model_config.d_model == llada.checkpoint.read_config(base).d_model
    for model in ("tiny", str(base)):
        with pytest.raises(UserError, match="--revision applies to a Hugging Face Hub id"):
            _cfg(tmp_path / "x", corpus, model=model, revision="v1.0")
