"""Hugging Face `transformers` integration: a config class and a `PreTrainedModel` wrapper.

Importing `llada` registers them with the Auto classes under `model_type: "llada"`, so
`AutoModel.from_pretrained(dir)` (and `AutoModelForCausalLM`, `AutoModelForMaskedLM`, which
lm-eval and peft use) opens our directories and LLaDA's without `trust_remote_code`.

The wrapper holds our `LLaDAModel` as `self.model`, which gives the state-dict keys of the public
checkpoints (`model.transformer.blocks.0.q_proj.weight`, ...).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import MaskedLMOutput

from llada.config import ModelConfig
from llada.model import LLaDAModel, RMSNorm


class LLaDAConfig(PretrainedConfig):
    """The `config.json` of a LLaDA model as a transformers config; see `ModelConfig` for fields."""

    model_type = "llada"

    def __init__(self, **kwargs: Any):
        weight_tying = kwargs.get("weight_tying", False)
        kwargs.setdefault("tie_word_embeddings", weight_tying)
        super().__init__(**kwargs)

    def to_model_config(self) -> ModelConfig:
        generic = set(PretrainedConfig().to_dict()) - {"model_type", "architectures", "pad_token_id",
                                                        "eos_token_id", "bos_token_id"}
        ours = {k: v for k, v in self.to_dict().items() if k not in generic}
        return ModelConfig.from_dict(ours, source="config.json")

    @classmethod
    def from_model_config(cls, config: ModelConfig) -> LLaDAConfig:
        return cls(**config.to_dict())


class LLaDAModelLM(PreTrainedModel):
    """`LLaDAModel` behind the transformers API; `forward` returns `.logits` (B, L, vocab)."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig, model: LLaDAModel | None = None):
        super().__init__(config)
        self.model = model if model is not None else LLaDAModel(config.to_model_config())
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        if isinstance(module, RMSNorm):
            torch.nn.init.ones_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> torch.nn.Module | None:
        return None if self.model.config.weight_tying else self.model.transformer.ff_out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> MaskedLMOutput:
        if kwargs.get("labels") is not None:
            raise ValueError("a masked diffusion model has no next-token loss: use llada.diffusion")
        return MaskedLMOutput(logits=self.model(input_ids, attention_mask=attention_mask,
                                                position_ids=position_ids))


def register() -> None:
    """Register the config and model with the transformers Auto classes (idempotent)."""
    try:
        AutoConfig.register("llada", LLaDAConfig)
    except ValueError:  # already registered
        return
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        auto.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


register()
