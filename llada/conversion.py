"""Autoregressive -> diffusion conversion: a causal LM's weights as a mask predictor (`llada convert`).

A causal LM is most of a mask predictor already: the same Transformer, which has to stop looking
one way only and needs a token that stands for "not known yet". The conversion changes three
things and keeps every trained weight, as Dream was made from Qwen2.5:

1. **Attention** becomes bidirectional (`causal=False`). `causal=True` keeps the causal mask: the
   converted model then computes exactly what its source did, which is how the weight mapping is
   tested, and is a mask predictor that looks back only.
2. **The alignment of the head.** The source's state at position i predicts token i + 1.
   `shifted_prediction` (the default) keeps that head as trained and realigns the logits
   (`LLaDAModel.realign`): position i's logits come from position i - 1, position 0's from
   itself. Without it the head is asked, untrained, for the token at its own position.
3. **A mask token**: the tokenizer's own, else a new special token `<|mask|>` added to it (and an
   embedding row when its id is past the matrix). Its embedding row, and its output row when the
   head is not tied, starts at the mean of the vocabulary's rows (`MASK_INITS`): a point among
   the trained rows rather than a random direction.

Sources (`read_causal_lm`): a transformers LLaMA, Qwen2 or Qwen3 directory (`model_type` llama,
qwen2, qwen3: config.json and safetensors, read as tensors, no transformers model is built; heads
of their own size, `head_dim`, and RoPE scaling of types "linear" and "llama3" included), or our
autoregressive baseline (a llada directory with `causal`). The result (`convert`) is a llada
directory that `llada.load` opens and `llada.sample` samples; with `block_size` its
generation_config.json samples as block diffusion (the "llada2" preset with that block length).
Its conversion.json records the source and the options, and its model card says what it is.

Exactness, checked in tests/unit/test_conversion.py: with `causal=True, shifted_prediction=True`
the converted logits at position i + 1 equal the source's at position i (float32) on every id of
the source's vocabulary but the mask's (whose embedding row starts afresh).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from llada import __version__
from llada.checkpoint.card import write_model_card
from llada.checkpoint.layout import CONFIG_NAME, CONVERSION_NAME, open_safetensors, read_json, weight_files
from llada.checkpoint.loading import load
from llada.checkpoint.options import resolve_dtype
from llada.checkpoint.saving import save_state_dict
from llada.checkpoint.tokenizer import load_tokenizer
from llada.config import ROPE_SCALINGS, ConfigError, ModelConfig, brief_repr
from llada.errors import CheckpointError, UserError
from llada.families import FAMILIES, config_from_json, dream, family_for
from llada.families.base import KeyTable, naming, read_fields
from llada.rope import rope_fields
from llada.sampling.options import SamplerOptions
from llada.tokenizer import MASK as LLADA_MASK


class ConversionError(UserError, ValueError):
    """A source that cannot be converted, or conversion options that cannot work; one line."""


# ------------------------------------------------------------------------------------- options

MASK_TOKEN = "<|mask|>"
"""The mask token added to a tokenizer that has none (Dream's name for it)."""


def mean_row(rows: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """The mean (D,) of embedding rows (N, D), computed in float32."""
    return rows.float().mean(0)


def mean_noise_row(rows: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """The mean of the rows plus Gaussian noise of standard deviation `std` (the source's
    `init_std`), drawn from `generator` (seeded: the same seed gives the same row)."""
    return mean_row(rows, std, generator) + std * torch.randn(rows.shape[1], generator=generator)


# How a new embedding row (the mask's, and any the tokenizer needs past the matrix) starts.
MASK_INITS: dict[str, Callable[[Tensor, float, torch.Generator], Tensor]] = {
    "mean": mean_row,
    "mean_noise": mean_noise_row,
}


@dataclass(frozen=True)
class ConversionOptions:
    """How a causal LM becomes a mask predictor (see the module docstring)."""

    causal: bool = False
    """Keep the causal attention; the default makes it bidirectional."""
    shifted_prediction: bool = True
    """Keep the head's alignment (state i predicts token i + 1) and realign the logits."""
    mask_init: str = "mean"
    """The mask token's starting embedding row: a key of MASK_INITS."""
    seed: int = 0
    """Seed of the noise of "mean_noise"."""
    block_size: int | None = None
    """Sample as block diffusion with blocks of this many tokens (generation_config.json); None:
    the default sampler settings."""

    def __post_init__(self) -> None:
        for name in ("causal", "shifted_prediction"):
            if not isinstance(getattr(self, name), bool):
                raise ConversionError(f"{name} must be true or false, got {brief_repr(getattr(self, name))}")
        if self.mask_init not in MASK_INITS:
            raise ConversionError(f"mask_init is {brief_repr(self.mask_init)}; choose one of: {', '.join(MASK_INITS)}")
        if self.block_size is not None and (isinstance(self.block_size, bool) or not isinstance(self.block_size, int)
                                            or self.block_size < 1):
            raise ConversionError(f"block_size must be a positive number of tokens, got {brief_repr(self.block_size)}")

    def sampler_options(self) -> SamplerOptions | None:
        """The converted model's generation_config.json settings: block diffusion ("llada2", blocks
        of `block_size`) when a block size is given, else None (the defaults)."""
        if self.block_size is None:
            return None
        return SamplerOptions.from_dict({"preset": "llada2", "block_length": self.block_size})


# ------------------------------------------------------------------------- transformers sources

# config.json keys of a transformers causal LM -> ModelConfig fields (LLaMA, Qwen2 and Qwen3 share them).
_FIELDS = {
    "hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size", "vocab_size": "vocab_size",
    "max_position_embeddings": "max_sequence_length", "rms_norm_eps": "rms_norm_eps", "hidden_act": "activation_type",
    "tie_word_embeddings": "weight_tying", "initializer_range": "init_std", "eos_token_id": "eos_token_id",
    "bos_token_id": "bos_token_id", "pad_token_id": "pad_token_id", "head_dim": "head_dim",
}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class Architecture:
    """What one transformers `model_type` means for our network."""

    defaults: dict[str, Any]
    """Its configuration class's defaults for keys a config.json may leave out."""
    fixed: dict[str, Any]
    """Options whose other values our network does not implement (absent or null is fine)."""
    options: dict[str, Any]
    """The ModelConfig fields the architecture implies."""


_COMMON = {"rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False, "initializer_range": 0.02}
ARCHITECTURES: dict[str, Architecture] = {
    # LlamaForCausalLM: no biases unless attention_bias / mlp_bias (which would bias o_proj / the MLP too)
    "llama": Architecture({**_COMMON, "max_position_embeddings": 2048},
                          {"attention_bias": False, "mlp_bias": False}, {}),
    # Qwen2ForCausalLM: biases on q, k and v only
    "qwen2": Architecture({**_COMMON, "max_position_embeddings": 32768},
                          {"use_sliding_window": False}, {"include_qkv_bias": True}),
    # Qwen3ForCausalLM: RMSNorm over each head of q and k before RoPE; its head size is its own field
    "qwen3": Architecture({**_COMMON, "max_position_embeddings": 32768, "head_dim": 128},
                          {"attention_bias": False, "use_sliding_window": False}, {"qk_norm": True}),
}

# The weights of all three, in transformers' names: Dream's keys (Qwen2's layout) plus Qwen3's norms.
KEYS = KeyTable(top=dream.KEYS.top, block={**dream.KEYS.block, "q_norm": "self_attn.q_norm",
                                           "k_norm": "self_attn.k_norm"}, family="a transformers causal LM")
# Tokens that end a chat turn in the chat formats of these models (Qwen's, Llama 3's).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>")


def transformers_config(data: dict[str, Any], tokenizer: Any, source: str = CONFIG_NAME) -> ModelConfig:
    """The ModelConfig (causal, unshifted: the source as it is) of a transformers LLaMA / Qwen2 /
    Qwen3 config.json, with EOS, BOS, pad and end-of-turn ids from it and `tokenizer`. Its
    `mask_token_id` stands in as EOS until `to_diffusion` gives it a mask. ConversionError /
    ConfigError naming `source` and the key for what our network does not implement."""
    arch = ARCHITECTURES[data["model_type"]]
    values = read_fields(data, source, _FIELDS, _REQUIRED, arch.defaults, arch.fixed)
    kinds = set(data.get("layer_types") or ["full_attention"])
    if kinds != {"full_attention"}:
        raise ConversionError(f"{source}: `layer_types` {brief_repr(sorted(kinds))}; only full_attention is supported")
    vocab = tokenizer.get_vocab()
    # the tokenizer's EOS first: an instruct model's config.json may list several, its tokenizer names the one
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else values.get("eos_token_id")
    if eos is None:
        raise ConversionError(f"{source}: no EOS id (neither `eos_token_id` nor the tokenizer's eos_token names one)")
    eot = next((vocab[t] for t in END_OF_TURN if t in vocab), None)
    values.update(eos_token_id=eos, mask_token_id=eos, eot_token_id=eot,
                  **_rope(data, source, values["max_sequence_length"]))
    for name, given in (("bos_token_id", tokenizer.bos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
        if values.get(name) is None:
            values[name] = given
    with naming(source):
        return ModelConfig(**values, **arch.options, causal=True, family="llada")


def _rope(data: dict[str, Any], source: str, max_positions: int) -> dict[str, Any]:
    """`rope_theta` and `rope_scaling` of a config.json (`llada.rope.rope_fields`: transformers 4.x's
    `rope_theta` and `rope_scaling`, or 5.x's `rope_parameters`), theta 10000 when it names none.
    ConversionError for a scaling of a type the network does not implement (yarn, dynamic,
    longrope, ...) or a partial rotary factor (LLaMA and Qwen rotate whole heads). Llama 3's
    `original_max_position_embeddings` defaults to `max_positions` (max_position_embeddings), as in
    transformers."""
    key, rope = rope_fields(data)
    scaling = rope.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type") not in ROPE_SCALINGS:
        raise ConversionError(f"{source}: `{key}` {brief_repr(data[key])} asks for RoPE scaling of type "
                              f"{brief_repr(scaling.get('rope_type'))}, which is not supported; supported: "
                              f"{', '.join(ROPE_SCALINGS)}, or none (rope_scaling null, rope_type default)")
    if isinstance(scaling, dict) and scaling["rope_type"] == "llama3":
        scaling.setdefault("original_max_position_embeddings", max_positions)
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConversionError(f"{source}: `partial_rotary_factor` {brief_repr(rope['partial_rotary_factor'])} is "
                              "not supported for LLaMA / Qwen (only 1: RoPE over each whole head)")
    theta = rope.get("rope_theta", 10000.0)
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise ConversionError(f"{source}: `rope_theta` must be a positive number, got {brief_repr(theta)}")
    return {"rope_theta": float(theta), "rope_scaling": scaling}


def _transformers_weights(root: Path, config: ModelConfig) -> dict[str, Tensor]:
    """The safetensors tensors of a transformers causal LM directory in our parameter names. A tied
    model's stored `lm_head.weight` (some checkpoints keep the copy) and RoPE's stored frequencies
    are left out; any other key we have no name for is a CheckpointError naming it."""
    state: dict[str, Tensor] = {}
    for file_name, keys in weight_files(root).items():
        with open_safetensors(root / file_name) as f:
            for key in keys:
                if key.endswith("rotary_emb.inv_freq") or (key == "lm_head.weight" and config.weight_tying):
                    continue
                name = KEYS.parameter_name(key)
                if name is None:
                    raise CheckpointError(f"{root / file_name}: unexpected weight {key!r} for a "
                                          f"{config.n_layers}-layer LLaMA / Qwen2 / Qwen3 model")
                state[name] = f.get_tensor(key)
    return state


# ------------------------------------------------------------------------------------- reading


@dataclass
class CausalLM:
    """A causal LM in our terms: its config (the source's ids, `causal`), its weights by our
    parameter names, its tokenizer, where it was read (for messages) and what it was."""

    config: ModelConfig
    state: dict[str, Tensor]
    tokenizer: Any
    source: str
    checkpoint_key: Callable[[str], str]
    """Our parameter name -> the source's key, for messages about its weights."""
    model_type: str = "llada"
    """The source's config.json `model_type` ("llama", "qwen2", "qwen3"; "llada": our baseline)."""


def source_kind(root: Path) -> str:
    """"causal" for a directory `read_causal_lm` reads (a transformers LLaMA / Qwen2 / Qwen3, or a
    config of ours whose `kind` is autoregressive), "diffusion" for a model directory of one of our
    families that is a mask predictor already. ConversionError for a directory without config.json,
    or whose model_type is neither, naming what is supported."""
    path = root / CONFIG_NAME
    if not path.is_file():
        raise ConversionError(f"{root}: no {CONFIG_NAME}; is this a model directory?")
    data = read_json(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    model_type = data.get("model_type")
    if model_type in ARCHITECTURES:
        return "causal"
    ours = [t for f in FAMILIES.values() for t in f.model_types]
    if model_type is not None and str(model_type).lower() not in {t.lower() for t in ours}:
        raise ConversionError(f"{path}: `model_type` is {brief_repr(model_type)}; llada converts the causal LMs "
                              f"{', '.join(ARCHITECTURES)} and re-saves {', '.join(dict.fromkeys(ours))}")
    return "causal" if config_from_json(data, source=str(path)).kind == "autoregressive" else "diffusion"


def read_causal_lm(root: Path) -> CausalLM:
    """The causal LM of model directory `root` (see `source_kind`), its weights checked against
    the shapes its config implies. Errors are one line naming the file."""
    if source_kind(root) != "causal":
        raise ConversionError(f"{root} is a mask predictor already; llada convert re-saves it as it is")
    data = read_json(root / CONFIG_NAME, ConfigError)
    if data.get("model_type") in ARCHITECTURES:
        weight_files(root)  # a directory without weights is refused before the tokenizer is read
        tokenizer = load_tokenizer(root)
        config = transformers_config(data, tokenizer, str(root / CONFIG_NAME))
        lm = CausalLM(config, _transformers_weights(root, config), tokenizer, str(root), KEYS.checkpoint_key,
                      data["model_type"])
    else:  # our autoregressive baseline: its own loader checks everything
        bundle = load(root)
        state = {k: v.detach() for k, v in bundle.model.state_dict().items()}
        lm = CausalLM(bundle.config, state, bundle.tokenizer, str(root), family_for(bundle.config).checkpoint_key)
    check_weights(lm)
    return lm


def check_weights(lm: CausalLM) -> None:
    """CheckpointError unless `lm.state` holds exactly the weights of `lm.config`'s network, each
    of the shape it implies (compared with the network built on the meta device)."""
    with torch.device("meta"):
        shapes = {n: tuple(t.shape) for n, t in family_for(lm.config).build(lm.config).state_dict().items()}
    missing = [lm.checkpoint_key(n) for n in shapes if n not in lm.state]
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise CheckpointError(f"{lm.source}: {len(missing)} weight(s) missing from the safetensors files: {shown}")
    for name, tensor in lm.state.items():
        if name not in shapes:
            raise CheckpointError(f"{lm.source}: unexpected weight {lm.checkpoint_key(name)!r} for this config")
        if tuple(tensor.shape) != shapes[name]:
            raise CheckpointError(f"{lm.source}: {lm.checkpoint_key(name)} has shape {tuple(tensor.shape)}, but "
                                  f"{CONFIG_NAME} implies {shapes[name]}")


# ---------------------------------------------------------------------------------- converting


def mask_token(tokenizer: Any) -> int:
    """The id of `tokenizer`'s mask token: its declared one, else a special token of LLaDA's or
    Dream's mask name it has, else a new special token MASK_TOKEN added to it; declared its mask
    token either way. ConversionError when MASK_TOKEN is an ordinary token of its vocabulary
    (it would mean two things)."""
    if tokenizer.mask_token is not None:
        return tokenizer.mask_token_id
    for name in (LLADA_MASK, MASK_TOKEN):
        if name in tokenizer.get_added_vocab():
            tokenizer.add_special_tokens({"mask_token": name})
            return tokenizer.mask_token_id
    if MASK_TOKEN in tokenizer.get_vocab():
        raise ConversionError(f"the tokenizer has no mask token and {MASK_TOKEN} is one of its ordinary tokens; "
                              "declare a mask token in its tokenizer_config.json (`mask_token`)")
    tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    return tokenizer.mask_token_id


def with_new_rows(matrix: Tensor, rows: int, new: list[int], init: Tensor) -> Tensor:
    """A copy of `matrix` (N, D) with `rows` >= N rows, rows `new` set to `init` (D,) in its dtype."""
    out = matrix.new_zeros(rows, matrix.shape[1])
    out[:matrix.shape[0]] = matrix
    out[new] = init.to(out.dtype)
    return out


def to_diffusion(lm: CausalLM, options: ConversionOptions) -> CausalLM:
    """`lm` as a mask predictor (see the module docstring): its tokenizer with a mask token, every
    new embedding row (and output row, untied) started by `options.mask_init` from the rows of
    the ids the tokenizer had, and a llada config with `options`' attention and alignment. The
    vocabulary is the tokenizer's ids; rows past it (padding) stay as they were."""
    config, tokenizer = lm.config, lm.tokenizer
    known = sorted(i for i in set(tokenizer.get_vocab().values()) if i < config.embedding_size)
    mask = mask_token(tokenizer)
    vocab = max(tokenizer.get_vocab().values()) + 1
    rows = max(config.embedding_size, vocab)
    new = sorted({mask, *range(config.embedding_size, rows)})
    generator = torch.Generator().manual_seed(options.seed)
    state = dict(lm.state)
    for name in ["transformer.wte.weight"] + ([] if config.weight_tying else ["transformer.ff_out.weight"]):
        init = MASK_INITS[options.mask_init](state[name][known], config.init_std, generator)
        state[name] = with_new_rows(state[name], rows, new, init)
    with naming(lm.source):
        converted = dataclasses.replace(config, vocab_size=vocab, embedding_size=rows, mask_token_id=mask,
                                        causal=options.causal, shifted_prediction=options.shifted_prediction,
                                        family="llada")
    return CausalLM(converted, state, tokenizer, lm.source, family_for(converted).checkpoint_key, lm.model_type)


def conversion_record(lm: CausalLM, options: ConversionOptions, name: str) -> dict[str, Any]:
    """What conversion.json records of converted model `lm`: its source as the user named it (a
    path or a Hub id) and that source's model_type, the options, the mask token, the version."""
    return {"source": name, "model_type": lm.model_type, **dataclasses.asdict(options),
            "mask_token": lm.tokenizer.mask_token, "mask_token_id": lm.config.mask_token_id,
            "llada_version": __version__}


def convert(source: str | Path, out: str | Path, options: ConversionOptions | None = None, *,
            dtype: str | torch.dtype | None = None, max_shard_size: int | str = "5GB",
            name: str | None = None) -> ModelConfig:
    """Convert the causal LM of directory `source` into a mask predictor written to `out` in the
    llada layout (config.json, safetensors, tokenizer, generation_config.json, conversion.json,
    card), in `dtype` (None / "auto": as stored). `name`: the source as conversion.json and the card
    name it (a Hub id it was downloaded from; default: `source`). Returns the converted config.
    Errors are one-line UserErrors."""
    options = options or ConversionOptions()
    want = resolve_dtype(dtype)
    root = Path(source).expanduser()
    if not root.is_dir():
        raise ConversionError(f"{source} is not a directory; give a model directory with {CONFIG_NAME} and safetensors")
    lm = to_diffusion(read_causal_lm(root), options)
    state = {k: (t.to(want) if want is not None and t.is_floating_point() else t).contiguous()
             for k, t in lm.state.items()}
    save_state_dict(out, family_for(lm.config).to_checkpoint(state), lm.config, lm.tokenizer,
                    max_shard_size=max_shard_size, options=options.sampler_options())
    record = conversion_record(lm, options, str(source) if name is None else name)
    (Path(out) / CONVERSION_NAME).write_text(json.dumps(record, indent=2) + "\n")
    write_model_card(Path(out))  # again, now that it can say what the model was converted from
    return lm.config
