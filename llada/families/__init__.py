"""Model families: what differs between the public diffusion LMs this library opens, in one place.

A family says which config.json `model_type`s and `architectures` name it, how its config.json maps
onto `ModelConfig` and back, which module builds its network, how its checkpoint keys map onto that
module's parameter names (a state-dict adapter), which token ends a chat turn, how its tokenizer
opens, and where its reference code lives for `trust_remote_code` users of a saved directory
(`base.Family`). `detect_family` picks the family of a config.json from its `architectures` /
`model_type`, as transformers' Auto classes do; `config_from_json` reads it with that family's
reader, and the config keeps the family's name (`ModelConfig.family`), which `family_for` looks up
to build, load and save (`checkpoint.load` / `save`, `llada.hf`). Every family's network takes and
returns the same things (`LLaDAModel.forward`: position i's logits predict token i), so the
samplers, estimators, server and evaluation never ask which family a model is.

    family     config.json                           network                    checkpoint keys
    llada      model_type "llada", LLaDAModelLM       model.LLaDAModel           model.transformer.blocks.N.q_proj.weight
    dream      model_type "Dream", DreamModel         families.dream.DreamModel  model.layers.N.self_attn.q_proj.weight
    llada_moe  LLaDAMoEModelLM ("llada"/"lladamoe")   model.LLaDAModel (MoE)     model.layers.N.mlp.experts.E.gate_proj.weight
    llada2     model_type "llada2_moe", LLaDA2MoeModelLM  model.LLaDAModel (MoE) model.layers.N.attention.query_key_value.weight

Adding a family is a module here that builds its `FAMILY` and its name in `FAMILIES` below.
"""

from __future__ import annotations

from typing import Any

from llada.config import ConfigError, ModelConfig, brief_repr
from llada.families import dream, llada, llada2, llada_moe
from llada.families.base import Family, naming, read_values
from llada.model import LLaDAModel

# The registry, in the order messages list the families. LLaDA's is the default: a config.json that
# names neither a model_type nor an architecture is LLaDA's (our earliest directories).
FAMILIES: dict[str, Family] = {f.name: f for f in (llada.FAMILY, llada_moe.FAMILY, llada2.FAMILY, dream.FAMILY)}
DEFAULT = llada.FAMILY.name
# Public diffusion LMs whose config.json we recognise but whose network is not implemented here:
# a model_type or architecture -> the model's name.
NOT_YET: dict[str, str] = {}
# Which family each `architectures` entry names (each family declares its own in FAMILIES).
FAMILY_BY_ARCHITECTURE: dict[str, str] = {a: f.name for f in FAMILIES.values() for a in f.architectures}


def family_for(config: ModelConfig) -> Family:
    """The family that builds, loads and saves `config` (its `family`); ConfigError for a name
    no family has."""
    if config.family not in FAMILIES:
        raise ConfigError(f"unknown model family {brief_repr(config.family)}; known: {', '.join(FAMILIES)}")
    return FAMILIES[config.family]


def build_model(config: ModelConfig) -> LLaDAModel:
    """A fresh network for `config`, of its family's class (on the current default device)."""
    return family_for(config).build(config)


def config_from_json(data: Any, source: str = "config") -> ModelConfig:
    """ModelConfig of a config.json of any family (`data`: what its JSON holds), read by the family
    `detect_family` picks. Every error is one ConfigError naming `source` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {brief_repr(data)}")
    return FAMILIES[detect_family(data, source)].config_from_json(data, source)


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """The config.json for `config`, in its family's layout (without dtype and auto_map)."""
    return family_for(config).config_to_json(config)


def detect_family(data: dict[str, Any], source: str = "config") -> str:
    """The family (a key of FAMILIES) whose reader takes config.json `data`: the one its
    `architectures` name, else the one its `model_type` names (compared in lower case: Dream writes
    "Dream"); they must agree. The architectures decide a model_type that several families read
    (LLaDA-MoE's public config.json says "llada", as LLaDA-8B's does); without one, `Family.claims`
    does. A config naming neither is the DEFAULT family's. ConfigError naming `source` otherwise."""
    read_values(data, source, {"architectures": "list[str] | None", "model_type": "str | None"}, {})
    names, model_type = data.get("architectures") or [], data.get("model_type")
    for key in [*names, model_type]:
        if key in NOT_YET:
            raise ConfigError(f"{source}: {NOT_YET[key]} ({key!r}) is not supported yet")
    named = next((FAMILIES[FAMILY_BY_ARCHITECTURE[n]] for n in names if n in FAMILY_BY_ARCHITECTURE), None)
    if model_type is None:
        return (named or FAMILIES[DEFAULT]).name
    readers = [f for f in FAMILIES.values() if model_type.lower() in {t.lower() for t in f.model_types}]
    if named is not None and (named in readers or len(readers) > 1):
        return named.name
    if named is None and readers:
        claimed = [f for f in readers if f.claims is not None and f.claims(data)]
        return (claimed or [f for f in readers if f.claims is None] or readers)[0].name
    with naming(source):
        if named is not None:
            raise ConfigError(f"`model_type` is {brief_repr(model_type)}; expected {named.model_types[0]!r} for "
                              f"architectures {', '.join(brief_repr(n)[1:-1] for n in names[:6])}")
        raise ConfigError(f"`model_type` is {brief_repr(model_type)}; expected one of "
                          f"{', '.join(repr(t) for t in FAMILY_BY_MODEL_TYPE)}")


# Which family a config.json's model_type alone picks (no architectures to decide).
FAMILY_BY_MODEL_TYPE: dict[str, str] = {t: detect_family({"model_type": t}) for f in FAMILIES.values()
                                        for t in f.model_types}

__all__ = ["DEFAULT", "FAMILIES", "FAMILY_BY_ARCHITECTURE", "FAMILY_BY_MODEL_TYPE", "NOT_YET", "Family",
           "build_model", "config_from_json", "config_to_json", "detect_family", "family_for"]
