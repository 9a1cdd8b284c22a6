"""What every model family is made of: the `Family` record that `llada.families` registers, the
`KeyTable` that maps our parameter names onto a family's checkpoint keys, and the helpers its
config.json reader uses (typed reads that name the file and the key, refusals of what a family's
files cannot express). A family module (llada.py, dream.py, ...) builds its `FAMILY` from these;
`llada/families/__init__.py` lists the families and picks one for a config.json.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from llada.config import ConfigError, ModelConfig, brief_repr, check_value
from llada.model import LLaDAModel


@dataclass(frozen=True)
class Family:
    """One model family: how its config.json and checkpoint keys map onto ours, which network it
    builds, and what its tokenizer and saved directory need (see `llada/families/__init__.py`)."""

    name: str
    """The key of FAMILIES, and `ModelConfig.family` of its configs."""
    model_types: tuple[str, ...]
    """config.json `model_type`s that name this family (compared in lower case); the first is the
    one it writes. A model_type several families read is decided by `architectures`."""
    architectures: tuple[str, ...]
    """config.json `architectures` entries that name this family; the first is the one it writes."""
    model_class: type[LLaDAModel]
    """The network: LLaDAModel or a subclass that keeps its forward contract."""
    reader: Callable[[dict[str, Any], str], ModelConfig]
    """config.json (a dict) and its source for error messages -> ModelConfig."""
    writer: Callable[[ModelConfig], dict[str, Any]]
    """ModelConfig -> the family's config.json fields (names, dtype and auto_map are added around it)."""
    checkpoint_key: Callable[[str], str]
    """Our parameter name -> the key it has in the family's safetensors."""
    parameter_name: Callable[[str], str | None]
    """A safetensors key -> our parameter name (None: not a key of this family)."""
    end_of_turn: str | None
    """The token string that closes a chat turn, looked up in the tokenizer (None: no chat format)."""
    auto_map: dict[str, str] = field(default_factory=dict)
    """config.json's `auto_map` when saved: the reference modeling code on the Hub."""
    tokenizer_class: str | None = None
    """A transformers tokenizer class to open the family's tokenizer with when its directory names
    remote code (Dream's `DreamTokenizer` is Qwen2's byte-level BPE); None: AutoTokenizer."""
    sampler_preset: str | None = None
    """The sampler preset its authors recommend (LLaDA 2.x: "llada2"), written into the
    generation_config.json of a saved directory; None: SamplerOptions' defaults."""
    split: Callable[[str, Tensor, ModelConfig], dict[str, Tensor] | None] | None = None
    """For checkpoint keys that hold several of our parameters (LLaDA 2.x's fused
    `query_key_value`): key, tensor and config -> our parameters, else None (`parameter_name` says)."""
    join: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    """The inverse, on a whole state dict in our names: the family's checkpoint state; None:
    `checkpoint_key` renames each tensor."""
    claims: Callable[[dict[str, Any]], bool] | None = None
    """For a config.json whose model_type several families read and whose architectures name none
    of them: whether it is this family's (LLaDA-MoE: it has `num_experts`). A family without this
    test takes the ones no test claims."""

    def build(self, config: ModelConfig) -> LLaDAModel:
        return self.model_class(config)

    def config_from_json(self, data: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """ModelConfig of this family's config.json `data` (errors name `source` and the field)."""
        return self.reader(data, source)

    def config_to_json(self, config: ModelConfig) -> dict[str, Any]:
        """This family's config.json for `config`, with its model_type and architecture (the first
        of each); without dtype and auto_map, which the saved weights decide."""
        return {**self.writer(config), "model_type": self.model_types[0], "architectures": [self.architectures[0]]}

    def from_checkpoint(self, key: str, tensor: Tensor, config: ModelConfig) -> dict[str, Tensor] | None:
        """Our parameter (or buffer) names and tensors held by one checkpoint key; None when the
        key is not one of this family's."""
        if self.split is not None:
            pieces = self.split(key, tensor, config)
            if pieces is not None:
                return pieces
        name = self.parameter_name(key)
        return None if name is None else {name: tensor}

    def to_checkpoint(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Our state dict (names -> tensors) in the family's checkpoint keys."""
        if self.join is not None:
            return self.join(state)
        return {self.checkpoint_key(name): t for name, t in state.items()}


# Our names for an expert's three projections -> the names every family's code gives them.
EXPERT_PROJECTIONS = {"ff_proj": "gate_proj", "up_proj": "up_proj", "ff_out": "down_proj"}


@dataclass(frozen=True)
class KeyTable:
    """Our parameter names <-> a family's checkpoint keys, written as tables: the model's top-level
    names, and within block N (`transformer.blocks.N.` <-> `model.layers.N.`) its modules, its
    routed experts (`moe.experts.E.<proj>` <-> `<experts>.E.<their proj>`), its shared expert and
    its router's expert bias. Several of our modules may map to one key (a fused tensor, see
    `Family.split`); such keys are not mapped back."""

    top: dict[str, str]
    block: dict[str, str]
    experts: str | None = None
    shared: str | None = None
    bias: str | None = None
    family: str = "this family"

    def checkpoint_key(self, name: str) -> str:
        if name in self.top:
            return self.top[name]
        m = re.fullmatch(r"transformer\.blocks\.(\d+)\.(.+)", name)
        theirs = None if m is None else self._block_key(m[2])
        if theirs is None:
            raise KeyError(f"{name!r} has no key in {self.family}'s checkpoint layout")
        return f"model.layers.{m[1]}.{theirs}"

    def _block_key(self, rest: str) -> str | None:
        if rest == "moe.router.expert_bias":
            return self.bias
        module, _, leaf = rest.rpartition(".")
        if module in self.block:
            return f"{self.block[module]}.{leaf}"
        e = re.fullmatch(r"moe\.experts\.(\d+)\.(\w+)", module)
        if e is not None and self.experts is not None and e[2] in EXPERT_PROJECTIONS:
            return f"{self.experts}.{e[1]}.{EXPERT_PROJECTIONS[e[2]]}.{leaf}"
        e = re.fullmatch(r"moe\.shared\.(\w+)", module)
        if e is not None and self.shared is not None and e[1] in EXPERT_PROJECTIONS:
            return f"{self.shared}.{EXPERT_PROJECTIONS[e[1]]}.{leaf}"
        return None

    def parameter_name(self, key: str) -> str | None:
        top = {theirs: ours for ours, theirs in self.top.items()}
        if key in top:
            return top[key]
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
        ours = None if m is None else self._block_name(m[2])
        return None if ours is None else f"transformer.blocks.{m[1]}.{ours}"

    def _block_name(self, rest: str) -> str | None:
        if rest == self.bias:
            return "moe.router.expert_bias"
        module, _, leaf = rest.rpartition(".")
        targets = list(self.block.values())
        block = {theirs: ours for ours, theirs in self.block.items() if targets.count(theirs) == 1}
        if module in block:
            return f"{block[module]}.{leaf}"
        projections = {theirs: ours for ours, theirs in EXPERT_PROJECTIONS.items()}
        head, _, proj = module.rpartition(".")
        if proj not in projections:
            return None
        if self.shared is not None and head == self.shared:
            return f"moe.shared.{projections[proj]}.{leaf}"
        e = None if self.experts is None else re.fullmatch(re.escape(self.experts) + r"\.(\d+)", head)
        return None if e is None else f"moe.experts.{e[1]}.{projections[proj]}.{leaf}"


def refuse_unless(config: ModelConfig, family_name: str, required: dict[str, Any], also: list[str] = ()) -> None:
    """ConfigError naming every field of `config` whose value differs from `required` (the one value
    the family's network or config.json can express), the options only the llada layout saves
    (embedding rows past vocab_size, learned positions, a head size of its own, RoPE scaling), and
    the reasons in `also`; nothing if none."""
    bad = [f"{k}={getattr(config, k)}" for k, v in required.items() if getattr(config, k) != v]
    if config.embedding_size != config.vocab_size:
        bad.append(f"embedding_size={config.embedding_size} ({family_name} has vocab_size rows)")
    if config.learned_positions:
        bad.append("learned_positions=True (llada's own option: only the llada layout saves it)")
    if config.custom_head_dim:
        bad.append(f"head_dim={config.head_dim} (heads of {family_name} are d_model / n_heads; only the llada layout "
                   "saves another size)")
    if config.rope_scaling is not None:
        bad.append(f"rope_scaling={brief_repr(config.rope_scaling)} (only the llada layout saves it)")
    bad += list(also)
    if bad:
        raise ConfigError(f"a {family_name} model cannot have {', '.join(bad)}")


@contextmanager
def naming(source: str) -> Iterator[None]:
    """Re-raise a ConfigError from the block with `source` (the config.json) in front of it."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def unused_keys(data: dict[str, Any], *used: Any) -> dict[str, Any]:
    """The keys of a config.json that none of `used` (tables or key lists) reads: `ModelConfig.extra`,
    kept so that saving loses nothing."""
    return {k: v for k, v in data.items() if not any(k in u for u in used)}


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(ModelConfig)}


def read_values(data: dict[str, Any], source: str, types: dict[str, str], defaults: dict[str, Any]) -> dict[str, Any]:
    """The keys of `types` that a config.json holds or `defaults` gives (null: the default), each
    checked against its type ("int", "float", "bool", "int | None", ... as `config.check_value`
    reads them) before anything computes with it. Errors name `source` and the key."""
    values = {k: data[k] if data.get(k) is not None else defaults.get(k) for k in types if k in data or k in defaults}
    with naming(source):
        for key, value in values.items():
            check_value(key, value, types[key])
    return values


def read_fields(data: dict[str, Any], source: str, fields: dict[str, str], required: tuple[str, ...],
                defaults: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig keyword values from a transformers-style config.json (`fields`: its key -> our
    field, whose declared type its value must have), with `defaults` for keys it may omit (the
    family's configuration class defaults); keys in `fixed` must hold the one value implemented
    (or be absent / null). Errors name `source` and the key."""
    missing = [k for k in required if data.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)}")
    with naming(source):
        for key, wanted in fixed.items():
            if data.get(key) is None:
                continue
            if isinstance(wanted, bool):
                check_value(key, data[key], "bool")
            if data[key] != wanted:
                raise ConfigError(f"`{key}` = {brief_repr(data[key])} is not supported (only {wanted})")
        eos = data.get("eos_token_id")
        if isinstance(eos, list):  # some configs list several; the first is EOS
            if not eos:
                raise ConfigError("`eos_token_id` must be a token id or a non-empty list of them, got []")
            check_value("eos_token_id", eos, "tuple[int, ...]")
            data = {**data, "eos_token_id": eos[0]}
    values = read_values(data, source, {theirs: _FIELD_TYPES[ours] for theirs, ours in fields.items()}, defaults)
    return {fields[theirs]: value for theirs, value in values.items()}
