"""Model families: what differs between the public diffusion LMs this library opens, in one place.

A family says how its config.json maps onto `ModelConfig` and back, which module builds its
network, how its checkpoint keys map onto that module's parameter names (a state-dict adapter),
which token ends a chat turn, how its tokenizer opens, and where its reference code lives for
`trust_remote_code` users of a saved directory. `llada.config.family_of` picks the family from a
config.json's `architectures` / `model_type`, as transformers' Auto classes do; the config keeps
its name (`ModelConfig.family`), and `checkpoint.load` / `save` look it up here. Every family's
network takes and returns the same things (`LLaDAModel.forward`: position i's logits predict
token i), so the samplers, estimators, server and evaluation never ask which family a model is.

    family      config.json                      network                   checkpoint keys
    llada       model_type "llada", LLaDAModelLM  model.LLaDAModel          model.transformer.blocks.N.q_proj.weight
    dream       model_type "Dream", DreamModel    families.dream.DreamModel model.layers.N.self_attn.q_proj.weight
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llada.config import ConfigError, ModelConfig
from llada.model import LLaDAModel


@dataclass(frozen=True)
class Family:
    """One model family; see the module docstring."""

    name: str
    """The key of FAMILIES, and `ModelConfig.family` of its configs."""
    model_class: type[LLaDAModel]
    """The network: LLaDAModel or a subclass that keeps its forward contract."""
    config_from_json: Callable[[dict[str, Any], str], ModelConfig]
    """config.json (a dict) and its source for error messages -> ModelConfig."""
    config_to_json: Callable[[ModelConfig], dict[str, Any]]
    """ModelConfig -> the family's own config.json (without dtype and auto_map)."""
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

    def build(self, config: ModelConfig) -> LLaDAModel:
        return self.model_class(config)


FAMILIES: dict[str, Family] = {}


def register(fam: Family) -> Family:
    FAMILIES[fam.name] = fam
    return fam


def family(name: str) -> Family:
    """The family registered under `name` (a ModelConfig's `family`)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def family_for(config: ModelConfig) -> Family:
    return family(config.family)


def build_model(config: ModelConfig) -> LLaDAModel:
    """A fresh network for `config`, of its family's class (on the current default device)."""
    return family_for(config).build(config)


# Registration: each module calls `register` once on import.
from llada.families import dream, llada  # noqa: E402,F401  (imported for their registrations)
