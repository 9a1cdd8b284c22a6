"""AR -> diffusion conversion (`llada convert` on a causal LM) against the source models themselves.

The shift, as `LLaDAModel.realign` defines it: the converted model's logits at position i + 1 are
the source's at position i (what predicts token i + 1); position 0 keeps the source's own. With
`--causal true --shifted_prediction true` that holds exactly, in float32, on every id of the
source's vocabulary but the mask's, whose rows start afresh at the mean of the vocabulary's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.causal_lms import (
    LLAMA_3_2_1B,
    QWEN2_5_0_5B,
    QWEN3_0_6B,
    TOKENS,
)
from support.causal_lms import save_causal_lm as _source
from support.cli import _one_error_line

import llada
from llada.cli import main
from llada.conversion import KEYS, MASK_TOKEN, ConversionOptions, convert, transformers_config
from llada.model import LLaDAModel
from llada.rope import inverse_frequencies


def _ids(batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(0, TOKENS, (batch, length))


def _assert_realigned(ours: torch.Tensor, source: torch.Tensor, width: int) -> None:
    """ours (B, L, >= width) at i + 1 == source (B, L, >= width) at i, and at 0 == source's at 0."""
    ours, source = ours[..., :width].double(), source[..., :width].double()
    torch.testing.assert_close(ours[:, 1:], source[:, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:, 0], source[:, 0], atol=1e-5, rtol=1e-5)


# Llama 3.1's RoPE scaling, its original context short enough that the tiny heads' four wavelengths
# (6, 35, 199 and 1117 positions at theta 1000) fall in all three of its bands: kept, blended, divided.
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


@pytest.mark.parametrize("model_type,tied,rows,shard,changes", [
    ("llama", False, 48, "5GB", {}),   # the mask goes into a padding row of the embedding
    ("llama", True, 43, "5GB", {}),    # the embedding grows by one row for it
    ("qwen2", False, 43, "5GB", {}),   # q/k/v biases
    ("qwen2", True, 48, "5GB", {}),
    ("qwen3", False, 48, "8KB", {}),   # q/k norms; sharded, with an index
    ("qwen3", True, 43, "5GB", {}),
    # Llama 3.1 / 3.2's RoPE scaling (transformers 5's rope_parameters), and a linear one
    ("llama", True, 48, "5GB", {"rope_parameters": {**LLAMA3, "rope_theta": 1000.0}}),
    ("qwen2", False, 43, "5GB", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}}),
    # heads of their own size (Qwen3-0.6B: 16 x 128 on 1024), wider and narrower than hidden / heads
    ("qwen3", True, 43, "5GB", {"head_dim": 16}),
    ("llama", False, 48, "5GB", {"head_dim": 4}),
])
def test_a_transformers_causal_lm_converts_exactly(tmp_path, model_type, tied, rows, shard, changes):
    source = _source(tmp_path / "src", model_type, tied, rows, shard, **changes)
    assert (tmp_path / "src" / "model.safetensors.index.json").exists() == (shard == "8KB")
    config = convert(tmp_path / "src", tmp_path / "out", ConversionOptions(causal=True, shifted_prediction=True))
    bundle = llada.load(tmp_path / "out")
    assert bundle.config.replace(extra={}) == config and config.family == "llada" and config.kind == "diffusion"
    mask = bundle.tokenizer.mask_token_id
    assert bundle.tokenizer.mask_token == MASK_TOKEN and mask == TOKENS == config.mask_token_id
    assert (config.vocab_size, config.embedding_size) == (TOKENS + 1, max(rows, TOKENS + 1))
    roles = bundle.config.roles
    assert (roles.eos, roles.pad, roles.eot, roles.bos) == (40, 40, 42, None)
    assert (config.include_qkv_bias, config.qk_norm, config.weight_tying) == \
        (model_type == "qwen2", model_type == "qwen3", tied)
    assert config.head_dim == changes.get("head_dim", 8) == source.model.layers[0].self_attn.head_dim
    scaling = changes.get("rope_parameters", {"rope_type": "default"})
    assert config.rope_scaling == (None if scaling["rope_type"] == "default" else
                                   {k: v for k, v in scaling.items() if k != "rope_theta"})
    ids = _ids()
    with torch.no_grad():
        _assert_realigned(bundle.model(ids), source(ids).logits, TOKENS)
    # the mask's rows: the mean of the vocabulary's rows, in the embedding and (untied) the head
    wte = source.get_input_embeddings().weight[:TOKENS]
    torch.testing.assert_close(bundle.model.transformer.wte.weight[mask], wte.mean(0))
    if not tied:
        head = source.get_output_embeddings().weight[:TOKENS]
        torch.testing.assert_close(bundle.model.transformer.ff_out.weight[mask], head.mean(0))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["shifted_prediction"] is True and saved["causal"] is True and "auto_map" not in saved
    assert saved.get("head_dim") == changes.get("head_dim") and saved.get("rope_scaling") == config.rope_scaling


def test_the_command_converts_our_autoregressive_baseline_exactly(dirs, bundles, tmp_path, capsys):
    """The AR baseline of the sampling tests: its own tokenizer's mask token, its row reset to the mean."""
    out = tmp_path / "out"
    assert main(["convert", str(dirs["ar"]), str(out), "--causal", "true", "--shifted_prediction", "true"]) == 0
    assert "a mask predictor (causal attention, shifted_prediction=True" in capsys.readouterr().out
    ar, converted = bundles["ar"], llada.load(out)
    assert ar.config.kind == "autoregressive" and converted.config.kind == "diffusion"
    mask = converted.config.mask_token_id
    assert mask == ar.config.mask_token_id == ar.tokenizer.mask_token_id
    vocab = sorted(set(ar.tokenizer.get_vocab().values()))
    torch.testing.assert_close(converted.model.transformer.wte.weight[mask],
                               ar.model.transformer.wte.weight[vocab].mean(0))
    ids = torch.tensor([[i for i in range(12) if i != mask]] * 2)
    with torch.no_grad():
        ours, source = converted.model(ids), ar.model(ids)
    keep = [i for i in range(ar.config.embedding_size) if i != mask]
    _assert_realigned(ours[..., keep], source[..., keep], len(keep))


def test_a_bidirectional_conversion_samples_as_block_diffusion(tmp_path, capsys):
    _source(tmp_path / "src", "qwen2", True, 48)
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "src"), str(out), "--block_size", "4"]) == 0
    assert "bidirectional attention, shifted_prediction=True" in capsys.readouterr().out
    bundle = llada.load(out)
    assert (bundle.config.causal, bundle.config.shifted_prediction) == (False, True)
    options = bundle.options
    assert (options.block_causal, options.block_length, options.cache, options.threshold) == (True, 4, "prefix", 0.95)
    ids = _ids(1, 6)
    with torch.no_grad():
        full, head = bundle.model(ids), bundle.model(ids[:, :3])
    assert not torch.allclose(full[:, 1:3], head[:, 1:3])  # earlier positions see later ones now
    prompt = bundle.tokenizer.apply_chat_template([{"role": "user", "content": "w1 w2 w3"}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)["input_ids"]
    result = llada.sample(bundle.model, prompt, options.replace(gen_length=8))
    assert result.sequences.shape == (1, prompt.shape[1] + 8)
    assert not bool((result.responses == bundle.config.mask_token_id).any())
    uncached = llada.sample(bundle.model, prompt, options.replace(gen_length=8, cache=None))
    assert torch.equal(uncached.sequences, result.sequences)  # the prefix cache reads the state before a block


def test_mean_noise_starts_the_mask_row_near_the_mean_by_seed(tmp_path):
    source = _source(tmp_path / "src", "llama", True, 48)
    rows = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert(tmp_path / "src", tmp_path / name, ConversionOptions(mask_init="mean_noise", seed=seed))
        rows[name] = llada.load(tmp_path / name).model.transformer.wte.weight[TOKENS]
    assert torch.equal(rows["a"], rows["b"]) and not torch.equal(rows["a"], rows["c"])
    mean = source.get_input_embeddings().weight[:TOKENS].mean(0)
    assert 0.005 < (rows["a"] - mean).std().item() < 0.05  # the noise of the source's initializer_range, 0.02


def _rope_scaled(root: Path) -> None:
    _source(root, "llama", True, 48, rope_parameters={"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0,
                                                      "original_max_position_embeddings": 32})


def _edited_config(root: Path, **changes) -> None:
    _source(root, "qwen2", True, 48)
    data = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**data, **changes}))


def _without_weights(root: Path) -> None:
    _source(root, "qwen2", True, 48)
    (root / "model.safetensors").unlink()


def _missing_tensor(root: Path) -> None:
    from safetensors.torch import load_file, save_file

    _source(root, "qwen2", False, 48)
    state = load_file(root / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(root / "model.safetensors"))


@pytest.mark.parametrize("make,flags,message", [
    (lambda r: r.write_text("x"), [], "is a file; a model directory"),
    (lambda r: r.mkdir(), [], "no config.json; is this a model directory?"),
    (lambda r: _edited_config(r, model_type="gpt2"), [],
     "`model_type` is 'gpt2'; llada converts the causal LMs llama, qwen2, qwen3 and re-saves llada"),
    (_rope_scaled, [], "`rope_parameters` {.*'rope_type': 'yarn'.*} asks for RoPE scaling of type 'yarn', which is "
                       "not supported; supported: linear, llama3, or none \\(rope_scaling null, rope_type default\\)"),
    (lambda r: _edited_config(r, rope_scaling={"type": "yarn", "factor": 4.0}), [],
     "`rope_scaling` {'factor': 4.0, 'type': 'yarn'} asks for RoPE scaling"),
    (lambda r: _edited_config(r, head_dim=16), [],  # heads of 16 said, of 8 stored
     r"src: model.layers.0.self_attn.k_proj.bias has shape \(16,\), but config.json implies \(32,\)"),
    (lambda r: _edited_config(r, rope_scaling={**LLAMA3, "low_freq_factor": 4.0, "high_freq_factor": 1.0}), [],
     "src/config.json: rope_scaling `low_freq_factor` must be less than its `high_freq_factor`"),
    (lambda r: _edited_config(r, use_sliding_window=True), [], "`use_sliding_window` = True is not supported"),
    (_without_weights, [], "no model.safetensors or model.safetensors.index.json"),
    (_missing_tensor, [], "1 weight\\(s\\) missing from the safetensors files: model.layers.1.mlp.up_proj.weight"),
    (lambda r: _source(r, "qwen2", True, 48), ["--mask_init", "zeros"], "mask_init is 'zeros'; choose one of: mean, "),
    (lambda r: _source(r, "qwen2", True, 48), ["--block_size", "0"], "block_size must be a positive number"),
])
def test_sources_and_options_that_cannot_convert_are_one_line(tmp_path, capsys, make, flags, message):
    import re

    make(tmp_path / "src")
    capsys.readouterr()  # what saving the source printed
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out"), *flags]) == 2
    assert re.search(message, _one_error_line(capsys.readouterr().err, "convert")), message
    assert not (tmp_path / "out" / "config.json").exists()


def test_conversion_flags_on_a_mask_predictor_are_refused(dirs, tmp_path, capsys):
    assert main(["convert", str(dirs["diffusion"]), str(tmp_path / "out"), "--causal", "true", "--seed", "3"]) == 2
    line = _one_error_line(capsys.readouterr().err, "convert")
    assert line.endswith("--causal, --seed: options for converting a causal LM, and "
                         f"{dirs['diffusion']} is a mask predictor already (it is re-saved without them)")


def test_the_card_and_conversion_json_say_what_a_converted_model_is(tmp_path, capsys):
    """conversion.json records the source as named and its model_type; the card says the model was
    converted from it, with the attention and head it has now, whether it samples as it is (causal
    and shifted: left to right, as its source) or needs diffusion training first, and its shape."""
    _source(tmp_path / "qwen3", "qwen3", True, 43, head_dim=16)
    convert(tmp_path / "qwen3", tmp_path / "bi", name="Qwen/Qwen3-0.6B")
    record = json.loads((tmp_path / "bi" / "conversion.json").read_text())
    assert record == {"source": "Qwen/Qwen3-0.6B", "model_type": "qwen3", "causal": False, "shifted_prediction": True,
                      "mask_init": "mean", "seed": 0, "block_size": None, "mask_token": MASK_TOKEN,
                      "mask_token_id": TOKENS, "llada_version": llada.__version__}
    card = (tmp_path / "bi" / "README.md").read_text()
    assert "\nbase_model: Qwen/Qwen3-0.6B\n" in card and "a bidirectional Transformer" in card
    assert ("converted by `llada convert` from the causal LM `Qwen/Qwen3-0.6B` (model_type `qwen3`), recorded in "
            "conversion.json: the source's weights as trained, its attention made bidirectional, its head kept and "
            f"realigned, and a mask token `{MASK_TOKEN}` (id {TOKENS}) whose embedding starts at the mean") in card
    assert "position i's logits come from the state at i - 1" in card
    assert "It has not been trained as a mask predictor: it needs diffusion training" in card
    assert "None since the conversion: the weights are those of `Qwen/Qwen3-0.6B`" in card
    assert "| layers, width | 2 x 32, 4 heads (2 key/value) of 16, MLP 64 |" in card

    _source(tmp_path / "llama", "llama", True, 48, rope_parameters={**LLAMA3, "rope_theta": 1000.0})
    assert main(["convert", str(tmp_path / "llama"), str(tmp_path / "causal"), "--causal", "true"]) == 0
    card = (tmp_path / "causal" / "README.md").read_text()
    assert json.loads((tmp_path / "causal" / "conversion.json").read_text())["source"] == str(tmp_path / "llama")
    assert "base_model" not in card and "bidirectional" not in card and "not been trained as a mask" not in card
    assert "a Transformer with causal attention" in card and "its causal attention kept" in card
    assert "decoded one token at a time from left to right it samples as the source does" in card
    assert ("| RoPE | base 1000, llama3 scaling (factor 8, low_freq_factor 1, high_freq_factor 4, "
            "original_max_position_embeddings 64) |") in card
    # re-saved by `llada convert`, it stays described as converted
    assert main(["convert", str(tmp_path / "causal"), str(tmp_path / "again")]) == 0
    assert "its causal attention kept" in (tmp_path / "again" / "README.md").read_text()


class _Tokenizer:
    """What `transformers_config` asks of a tokenizer: its EOS, BOS and pad ids and its vocabulary."""

    def __init__(self, eos: int):
        self.eos_token_id, self.bos_token_id, self.pad_token_id = eos, None, None

    def get_vocab(self) -> dict[str, int]:
        return {"<|im_end|>": 7}


@pytest.mark.parametrize("data,params,without_embeddings", [
    (QWEN2_5_0_5B, 494.0e6, 357.9e6), (QWEN3_0_6B, 596.0e6, 440.5e6), (LLAMA_3_2_1B, 1235.8e6, 973.1e6),
], ids=["Qwen2.5-0.5B", "Qwen3-0.6B", "Llama-3.2-1B"])
def test_public_causal_lms_read_as_transformers_builds_them(data, params, without_embeddings):
    """The config.json of the models people convert: our network (on the meta device) has every
    weight of the shape transformers' has, and RoPE the same frequencies, to the bit; the sizes
    are the published ones (Qwen3-0.6B: 0.6B, 0.44B without embeddings)."""
    import transformers

    config = transformers_config(dict(data), _Tokenizer(data["eos_token_id"]))
    theirs = transformers.AutoConfig.for_model(**data)
    with torch.device("meta"):
        ours = {k: tuple(t.shape) for k, t in LLaDAModel(config).state_dict().items()}
        model = transformers.AutoModelForCausalLM.from_config(theirs)
    shapes = {KEYS.parameter_name(k): tuple(t.shape) for k, t in model.state_dict().items()
              if not (k == "lm_head.weight" and config.weight_tying)}
    assert shapes == ours
    rotary = type(model.model.rotary_emb)(theirs)  # on the CPU this time
    torch.testing.assert_close(inverse_frequencies(config.rotary_dim, config.rope_theta, config.rope_scaling),
                               rotary.inv_freq, rtol=0, atol=0)
    assert abs(config.num_params() - params) < 0.1e6
    assert abs(config.num_params(embeddings=False) - without_embeddings) < 0.1e6
