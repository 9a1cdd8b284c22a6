"""LLaDA-8B (Base, Instruct), LLaDA-1.5 and every checkpoint of their architecture, ours included.

config.json uses LLaDA's field names (`ModelConfig` reads them as they are); the weights are our
`LLaDAModel` parameter names behind the `model.` prefix of the transformers wrapper. Variants
that change only sizes or token ids (LLaDA-1.5 is LLaDA-8B-Instruct's shape and ids) need nothing
here: the mask, EOS and pad ids come from config.json, BOS and end-of-turn from the tokenizer.
"""

from __future__ import annotations

from typing import Any

from llada.config import ModelConfig
from llada.families import Family, register
from llada.model import LLaDAModel

PREFIX = "model."  # the transformers wrapper (llada.hf) holds the LLaDAModel as `.model`
REFERENCE_CODE_REPO = "GSAI-ML/LLaDA-8B-Base"  # configuration_llada.py / modeling_llada.py


def _config_from_json(data: dict[str, Any], source: str) -> ModelConfig:
    return ModelConfig.from_dict(data, source=source)


def _config_to_json(config: ModelConfig) -> dict[str, Any]:
    return config.to_dict()


def _parameter_name(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key  # early files of ours had no prefix


FAMILY = register(Family(
    name="llada",
    model_class=LLaDAModel,
    config_from_json=_config_from_json,
    config_to_json=_config_to_json,
    checkpoint_key=lambda name: PREFIX + name,
    parameter_name=_parameter_name,
    end_of_turn="<|eot_id|>",
    auto_map={
        "AutoConfig": f"{REFERENCE_CODE_REPO}--configuration_llada.LLaDAConfig",
        "AutoModel": f"{REFERENCE_CODE_REPO}--modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": f"{REFERENCE_CODE_REPO}--modeling_llada.LLaDAModelLM",
    },
))
