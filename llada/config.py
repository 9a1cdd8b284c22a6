"""Model configuration: the shape and special tokens of a mask predictor, validated, plus named presets.

`ModelConfig` is neutral: every family's network is built from it, and it knows no family's file
layout. Field names are those of LLaDA's own config.json; reading and writing a config.json, LLaDA's
included, is a family's job (`llada.families.config_from_json` picks the family and reads the file,
`config_to_json` writes one back). Validation is here: every value's type, the sizes a machine
can hold, and what the network implements.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from llada.errors import UserError


class ConfigError(UserError, ValueError):
    """A model configuration that cannot be used; the message names the file and the field."""


# Values the model implements, per field. Anything else is refused with the list below.
_ALLOWED = {
    "block_type": ("llama",),
    "layer_norm_type": ("rms",),
    "activation_type": ("silu", "gelu", "relu"),
}


# Sizes a config may ask for. A config.json is read on any machine (`llada info` describes a model
# it will not load), so the bounds are fixed numbers, far above every public model, not this
# machine's memory: they turn a hostile or mistyped size into one line before anything is built
# or counted, where it would otherwise hang or exhaust memory.
MAX_PARAMS = 10**13
"""Parameters, every expert counted (the largest public models have about 2e12)."""
MAX_LAYERS = 1024
"""Transformer blocks (the deepest public models have about 128); each is Python objects when built."""
MAX_EXPERTS = 65536
"""Routed experts over all MoE blocks (DeepSeek-V3: 14,848); each is three modules when built."""
MAX_INT = 2**63 - 1
"""Every integer of a config ends up a tensor shape or element: int64."""
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def brief_repr(value: Any) -> str:
    """`repr(value)` cut to a few dozen characters, for error messages about untrusted values."""
    return _BRIEF.repr(value)


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = _BRIEF.maxlong = 48
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = 6


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


# A field's declared type (as dataclasses record it under `from __future__ import annotations`)
# -> the test a config.json value must pass and what the error says is allowed. JSON has no NaN
# or Infinity, but Python's json reads them; booleans are JSON's true and false, not strings or
# 0/1, so "false" never reads as true.
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an integer"),
    "float": (_is_finite, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and all(map(_is_int, v)), "a list of integers"),
    "list[str]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "MoEConfig": (lambda v: isinstance(v, (dict, MoEConfig)), "an object of MoE fields"),
    "dict[str, Any]": (lambda v: isinstance(v, dict), "an object"),
}


def check_value(name: str, value: Any, kind: str, owner: str = "") -> None:
    """ConfigError unless `value` of field `name` is of `kind`, a declared type ("int", "float",
    "bool", "str | None", ...): integers in int64, finite numbers, JSON booleans. `owner` goes in
    front of the name ("moe "). The message quotes the value shortened."""
    base, _, optional = kind.partition(" | ")
    if value is None and optional == "None":
        return
    test, allowed = _TYPES[base]
    if not test(value):
        null = " or null" if optional == "None" else ""
        raise ConfigError(f"{owner}`{name}` must be {allowed}{null}, got {brief_repr(value)}")
    if _is_int(value) and not -MAX_INT <= value <= MAX_INT:
        raise ConfigError(f"{owner}`{name}` = {brief_repr(value)} is out of range (at most 2**63 - 1)")


def _check_types(obj: Any, owner: str = "") -> None:
    """Every field of dataclass `obj` against its declared type (see `check_value`)."""
    for f in fields(obj):
        check_value(f.name, getattr(obj, f.name), f.type, owner)


def check_depth(n_layers: int) -> None:
    """ConfigError for more blocks than MAX_LAYERS (checked before anything makes one per block)."""
    if n_layers > MAX_LAYERS:
        raise ConfigError(f"`n_layers` = {n_layers} blocks: at most {MAX_LAYERS} (the deepest public models "
                          "have about 128)")


def _size_text(n: float) -> str:
    """Bytes in decimal units: 12.8 EB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} YB"


# RoPE scalings the network implements (`llada.rope.SCALED_FREQUENCIES`) and the keys each takes,
# named as in transformers' modeling_rope_utils.py.
ROPE_SCALINGS = {"linear": ("factor",),
                 "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}

ROUTER_SCORES = ("softmax", "sigmoid")
ROUTER_BIAS = ("weights", "selection")


@dataclass(frozen=True)
class MoEConfig:
    """A mixture-of-experts MLP (LLaDA-MoE, LLaDA 2.x): a router picks `num_experts_per_tok` of
    `num_experts` SwiGLU experts per token and mixes their outputs by its weights; a shared expert,
    when present, sees every token. The routing rule is written out in `model.MoE.route`."""

    num_experts: int
    """Routed experts per MoE block."""
    num_experts_per_tok: int
    """Experts each token is sent to (top-k)."""
    intermediate_size: int
    """Inner size of each routed expert's SwiGLU MLP."""
    shared_intermediate_size: int = 0
    """Inner size of the shared expert (0: none)."""
    dense_layers: tuple[int, ...] = ()
    """Blocks that keep the dense MLP (`ModelConfig.mlp_hidden_size`) instead (LLaDA 2.x: the first)."""
    score: str = "softmax"
    """Router scores: "softmax" over the experts (LLaDA-MoE) or an independent "sigmoid" (LLaDA 2.x)."""
    norm_topk: bool = False
    """Rescale the k chosen scores to sum to one (when k > 1)."""
    scaling: float = 1.0
    """Factor on the mixing weights (`routed_scaling_factor`)."""
    groups: int = 1
    """Expert groups (`n_group`): only the `topk_groups` groups with the best two scores are eligible."""
    topk_groups: int = 1
    bias: str | None = None
    """A per-expert bias buffer added to the scores: None (no bias), "weights" (it also enters the
    mixing weights, as LLaDA-MoE's code does) or "selection" (it only chooses, as LLaDA 2.x's does)."""

    def __post_init__(self) -> None:
        _check_types(self, owner="moe ")
        for name in ("num_experts", "num_experts_per_tok", "intermediate_size", "groups", "topk_groups"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"moe `{name}` must be a positive integer, got {value!r}")
        if self.num_experts_per_tok > self.num_experts:
            raise ConfigError(f"moe `num_experts_per_tok` ({self.num_experts_per_tok}) exceeds `num_experts` "
                              f"({self.num_experts})")
        if self.num_experts % self.groups or self.topk_groups > self.groups:
            raise ConfigError(f"moe: {self.num_experts} experts cannot form {self.groups} groups with "
                              f"{self.topk_groups} chosen")
        if self.groups > 1 and self.num_experts // self.groups < 2:
            raise ConfigError("moe: each expert group needs at least two experts (groups are ranked by their best two)")
        if self.score not in ROUTER_SCORES:
            raise ConfigError(f"moe `score` is {brief_repr(self.score)}; supported: {', '.join(ROUTER_SCORES)}")
        if self.bias is not None and self.bias not in ROUTER_BIAS:
            raise ConfigError(f"moe `bias` is {brief_repr(self.bias)}; supported: None, {', '.join(ROUTER_BIAS)}")
        if self.shared_intermediate_size < 0 or self.scaling <= 0:
            raise ConfigError("moe `shared_intermediate_size` must be >= 0 and `scaling` positive")
        object.__setattr__(self, "dense_layers", tuple(self.dense_layers))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoEConfig:
        """From the `moe` object of our config.json; unknown or missing keys are named."""
        names = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            shown = ", ".join(brief_repr(k)[1:-1] for k in unknown[:6])
            raise ConfigError(f"moe: unknown field(s) {shown}; known: {', '.join(names)}")
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"moe: missing field(s) {', '.join(missing)}")
        return cls(**data)

    def moe_blocks(self, n_layers: int) -> int:
        """How many of `n_layers` blocks are MoE blocks."""
        return n_layers - len(set(self.dense_layers))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for `llada info` and the model card."""
        shared = f", a shared expert of {self.shared_intermediate_size}" if self.shared_intermediate_size else ""
        dense = f"; dense MLP in blocks {', '.join(map(str, self.dense_layers))}" if self.dense_layers else ""
        return (f"{self.num_experts} experts of {self.intermediate_size}, {self.num_experts_per_tok} per token "
                f"({self.score} router){shared}{dense}")


@dataclass
class ModelConfig:
    """Shape and special tokens of a LLaDA mask predictor (names as in LLaDA's config.json)."""

    d_model: int = 4096
    """Hidden size."""
    n_layers: int = 32
    """Number of Transformer blocks."""
    n_heads: int = 32
    """Query heads."""
    head_dim: int | None = None
    """Size of each query and key/value head; None means d_model // n_heads (Qwen3 has its own)."""
    n_kv_heads: int | None = None
    """Key/value heads (grouped-query attention when fewer than n_heads); None means n_heads."""
    mlp_hidden_size: int | None = None
    """Inner size of the SwiGLU MLP; None means mlp_ratio * d_model."""
    mlp_ratio: int = 4
    """Used only when mlp_hidden_size is None."""
    vocab_size: int = 126464
    """Number of token ids the tokenizer may produce."""
    embedding_size: int | None = None
    """Rows of the embedding and output matrices (>= vocab_size, often padded); None means vocab_size."""
    max_sequence_length: int = 4096
    """Longest sequence the model is meant for (RoPE itself has no hard limit)."""
    rope_theta: float = 500000.0
    """Base of the rotary position embedding frequencies."""
    rope_scaling: dict[str, Any] | None = None
    """The frequencies' rescaling, as transformers' config.json names it: {"rope_type": one of
    ROPE_SCALINGS, and that type's keys}, e.g. Llama 3.1's "llama3" (`llada.rope`); None: plain RoPE."""
    learned_positions: bool = False
    """Also add a learned absolute position embedding (max_sequence_length rows, `wpe`) to the token
    embeddings, beside RoPE. Ours, not LLaDA's: an option for small models trained from scratch on
    reasoning tasks, where every masked position otherwise starts from the same hidden state
    (BENCHMARKS.md, "Steps to learn a reasoning task"). Saved only in the llada layout, whose
    reference code does not read it (such a directory names no remote code)."""
    rms_norm_eps: float = 1e-5
    """Epsilon inside RMSNorm."""
    include_bias: bool = False
    """Biases on every linear layer (and the norms, unless bias_for_layer_norm says otherwise)."""
    include_qkv_bias: bool = False
    """Biases on the q/k/v projections only."""
    weight_tying: bool = False
    """Share the output head with the input embedding."""
    activation_type: str = "silu"
    """Gate activation of the MLP: act(ff_proj(x)) * up_proj(x)."""
    block_type: str = "llama"
    """Only the LLaMA-style pre-norm block is implemented."""
    layer_norm_type: str = "rms"
    """Only RMSNorm is implemented."""
    scale_logits: bool = False
    """Multiply logits by 1/sqrt(d_model)."""
    input_emb_norm: bool = False
    """Multiply input embeddings by sqrt(d_model)."""
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of fresh weights."""
    mask_token_id: int = 126336
    """The absorbing [MASK] token of the forward process."""
    eos_token_id: int = 126081
    """End of text; also pads SFT responses and is learned there."""
    pad_token_id: int | None = 126081
    """Padding id for batches of different lengths (LLaDA uses EOS; None: EOS)."""
    bos_token_id: int | None = 126080
    """Beginning of text, or None."""
    eot_token_id: int | None = 126348
    """End of a chat turn (<|eot_id|>), or None for a model without a chat format."""
    qk_norm: bool = False
    """RMSNorm over each head of the queries and keys, before RoPE (LLaDA-MoE, LLaDA 2.x)."""
    partial_rotary_factor: float = 1.0
    """Share of each head's dimensions (the first ones) that RoPE rotates (LLaDA 2.x: 0.5)."""
    moe: MoEConfig | None = None
    """The mixture-of-experts MLP, or None for the dense SwiGLU MLP in every block."""
    causal: bool = False
    """A causal attention mask: each position sees itself and the positions before it. Without
    `shifted_prediction`, the autoregressive baseline (next-token loss, decoded left to right); with
    it, a mask predictor with causal attention (a causal LM converted by `llada convert --causal true`)."""
    shifted_prediction: bool = False
    """Position i's final state predicts token i + 1, as in Dream and models converted from an
    autoregressive checkpoint; the logits are realigned (`LLaDAModel.select_outputs`) so position
    i's logits predict token i, as every sampler and estimator expects. Saved by the llada layout
    (which then names no remote code: LLaDA's does not realign) and implied by Dream's."""
    family: str = "llada"
    """The model family that builds, loads and saves this config: a key of `llada.families.FAMILIES`
    ("llada", "dream", "llada_moe", "llada2"), set by the family that read the config.json (an unknown
    name is refused where the family is looked up). Not written into any config.json."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Keys of the source config.json we do not use, kept so that saving loses nothing."""

    def __post_init__(self) -> None:
        _check_types(self)  # first: nothing below computes with a value of the wrong type
        self._fill_derived_sizes()
        self._check_sizes()
        self._check_head_layout()
        self._check_rope_scaling()
        self._check_options()
        self._check_token_ids()
        self._check_limits()

    def _fill_derived_sizes(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = self.mlp_ratio * self.d_model
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        if isinstance(self.moe, dict):
            self.moe = MoEConfig.from_dict(self.moe)

    def _check_sizes(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size",
                     "embedding_size", "max_sequence_length"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")

    def _check_head_layout(self) -> None:
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ConfigError(f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads})")
            if (self.d_model // self.n_heads) % 2:
                raise ConfigError(f"the head size d_model/n_heads = {self.d_model // self.n_heads} must be even "
                                  "for RoPE")
            self.head_dim = self.d_model // self.n_heads
        elif self.head_dim <= 0 or self.head_dim % 2:
            raise ConfigError(f"`head_dim` must be a positive even number (RoPE turns pairs), got {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"`n_heads` ({self.n_heads}) must be a multiple of `n_kv_heads` ({self.n_kv_heads})")
        if self.embedding_size < self.vocab_size:
            raise ConfigError(
                f"`embedding_size` ({self.embedding_size}) must be at least `vocab_size` ({self.vocab_size})")

    def _check_rope_scaling(self) -> None:
        """A rope_scaling of a type in ROPE_SCALINGS with exactly its keys, positive numbers; kept as a copy."""
        s = self.rope_scaling
        if s is not None:
            keys = ROPE_SCALINGS.get(s.get("rope_type"))
            if keys is None or set(s) != {"rope_type", *keys} or not all(_is_finite(s[k]) and s[k] > 0 for k in keys):
                raise ConfigError(f"`rope_scaling` {brief_repr(s)} is not supported; supported: " + "; ".join(
                    f"rope_type {t!r} with positive {', '.join(k)}" for t, k in ROPE_SCALINGS.items()) + "; null")
            if s["rope_type"] == "llama3" and not s["low_freq_factor"] < s["high_freq_factor"]:
                raise ConfigError("rope_scaling `low_freq_factor` must be less than its `high_freq_factor`")
            self.rope_scaling = {k: s[k] for k in ("rope_type", *keys)}

    def _check_options(self) -> None:
        for name, allowed in _ALLOWED.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"`{name}` is {brief_repr(getattr(self, name))}; supported: {', '.join(allowed)}")
        if not 0 < self.partial_rotary_factor <= 1 or self.rotary_dim % 2:
            raise ConfigError(f"`partial_rotary_factor` ({self.partial_rotary_factor}) must be in (0, 1] and rotate "
                              f"an even number of each head's {self.head_dim} dimensions")
        if self.moe is not None and any(not 0 <= i < self.n_layers for i in self.moe.dense_layers):
            raise ConfigError(f"moe `dense_layers` {brief_repr(list(self.moe.dense_layers))} must be block indices 0..{self.n_layers - 1}")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ConfigError("`rope_theta` and `rms_norm_eps` must be positive")
        if self.init_std < 0:
            raise ConfigError(f"`init_std` must be at least 0, got {self.init_std}")
        for name in ("attention_dropout", "residual_dropout", "embedding_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"`{name}` must be in [0, 1), got {getattr(self, name)}")

    def _check_token_ids(self) -> None:
        for name in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id", "eot_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.embedding_size:
                raise ConfigError(
                    f"`{name}` = {value} is outside the embedding (0..{self.embedding_size - 1})")

    def _check_limits(self) -> None:
        """Refuse sizes no machine holds (see MAX_PARAMS, MAX_LAYERS, MAX_EXPERTS), by arithmetic
        on the fields alone: nothing is built, and nothing loops over blocks or experts."""
        params = self.num_params()
        if params > MAX_PARAMS:
            dtype = self.extra.get("torch_dtype") or self.extra.get("dtype")
            dtype = dtype if isinstance(dtype, str) and dtype in _DTYPE_BYTES else "float32"
            shape = (f"d_model={self.d_model}, n_layers={self.n_layers}, mlp_hidden_size={self.mlp_hidden_size}, "
                     f"embedding_size={self.embedding_size}")
            if self.moe is not None:
                shape += (f", {self.moe.num_experts} experts of {self.moe.intermediate_size} "
                          f"(shared {self.moe.shared_intermediate_size})")
            raise ConfigError(f"{shape} give {params:.1e} parameters ({_size_text(params * _DTYPE_BYTES[dtype])} "
                              f"in {dtype}), over the {MAX_PARAMS:.0e} any config may have (the largest public "
                              "models have about 2e+12)")
        check_depth(self.n_layers)
        blocks = 0 if self.moe is None else self.moe.moe_blocks(self.n_layers)
        if blocks and self.moe.num_experts * blocks > MAX_EXPERTS:
            raise ConfigError(f"moe: {self.moe.num_experts} experts in each of {blocks} blocks "
                              f"({self.moe.num_experts * blocks} in all): at most {MAX_EXPERTS} in all")

    # ----------------------------------------------------------------------------------------------
    @property
    def custom_head_dim(self) -> bool:
        """Whether the heads have a size of their own, not d_model / n_heads (only llada's layout saves it)."""
        return self.head_dim * self.n_heads != self.d_model

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that RoPE rotates."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, index: int) -> bool:
        return self.moe is not None and index not in self.moe.dense_layers

    def num_params(self, embeddings: bool = True, active: bool = False) -> int:
        """Parameter count, computed from the shapes (no model needed); every expert counted, or
        with `active` only the `num_experts_per_tok` experts a token runs through (and the router)."""
        d, h, q, kv = self.d_model, self.mlp_hidden_size, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        qkv_bias = self.include_bias or self.include_qkv_bias
        attn = d * q * 2 + d * kv * 2 + (q + 2 * kv if qkv_bias else 0) + (d if self.include_bias else 0)
        attn += 2 * self.head_dim if self.qk_norm else 0
        dense = 3 * d * h + ((2 * h + d) if self.include_bias else 0)
        norms = 2 * d * (2 if self.include_bias else 1)
        total = d * (2 if self.include_bias else 1) + self.n_layers * (attn + norms)
        moe_blocks = 0 if self.moe is None else self.moe.moe_blocks(self.n_layers)
        total += (self.n_layers - moe_blocks) * dense  # by multiplication: n_layers may be any size here
        if moe_blocks:
            m = self.moe
            experts = m.num_experts_per_tok if active else m.num_experts
            total += moe_blocks * (d * m.num_experts + 3 * d * (experts * m.intermediate_size
                                                                 + m.shared_intermediate_size))
        if embeddings:
            head = 0 if self.weight_tying else self.embedding_size * (d + (1 if self.include_bias else 0))
            total += self.embedding_size * d + head
        return total

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes`; a head size that was d_model / n_heads follows their new values."""
        if not self.custom_head_dim and "head_dim" not in changes:
            changes["head_dim"] = None
        return dataclasses.replace(self, **changes)

    @property
    def roles(self) -> TokenRoles:
        """The special tokens by role; every other module asks here, never by id or string."""
        pad = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        return TokenRoles(self.mask_token_id, self.eos_token_id, pad, self.bos_token_id, self.eot_token_id)

    @property
    def kind(self) -> str:
        """"diffusion" for a mask predictor, "autoregressive" for the causal baseline (causal, its
        logits at i predicting token i + 1): what `llada.sample` and the likelihood estimators
        dispatch on. A causal model with `shifted_prediction` is a mask predictor."""
        return "autoregressive" if self.causal and not self.shifted_prediction else "diffusion"


@dataclass(frozen=True)
class TokenRoles:
    """The special token ids of a model, by role (read from its config, which took them from
    its tokenizer: see `llada.tokenizer.config_ids`)."""

    mask: int
    """The absorbing [MASK] of the forward process."""
    eos: int
    """End of text; pads SFT responses and generated rows after they end."""
    pad: int
    """Left padding of batched prompts (EOS when the config names none, as LLaDA does)."""
    bos: int | None
    """Beginning of text, or None."""
    eot: int | None
    """End of a chat turn, or None for a model without a chat format."""

    @property
    def stops(self) -> tuple[int, ...]:
        """The ids that end a response: EOS, and end-of-turn when the model has one."""
        return (self.eos,) if self.eot is None else (self.eos, self.eot)


# Named shapes. Token ids are placeholders here: a model trained here takes them from its tokenizer.
PRESETS: dict[str, dict[str, Any]] = {
    # Tests: a few thousand parameters, runs in milliseconds on a CPU.
    "debug": dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden_size=64, max_sequence_length=256),
    # The quickstart: trains in minutes on a 2-core laptop.
    "tiny": dict(d_model=128, n_layers=4, n_heads=4, mlp_hidden_size=344, max_sequence_length=256),
    "small": dict(d_model=384, n_layers=8, n_heads=6, mlp_hidden_size=1024, max_sequence_length=1024),
    "100m": dict(d_model=768, n_layers=12, n_heads=12, mlp_hidden_size=2048, max_sequence_length=2048),
    # The 0.95B shape used by the training benchmark.
    "1b": dict(d_model=2048, n_layers=16, n_heads=16, mlp_hidden_size=5632, vocab_size=32000,
               max_sequence_length=2048, rope_theta=10000.0),
    # LLaDA-8B (Base and Instruct share the shape).
    "llada-8b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288,
                     vocab_size=126464, embedding_size=126464, max_sequence_length=4096, rope_theta=500000.0),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named shape, with fields overridden (e.g. the token ids of a freshly trained tokenizer)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values = {**PRESETS[name], **overrides}
    return ModelConfig(**values)
