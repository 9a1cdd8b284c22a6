"""Hugging Face `transformers` integration: a config class and a `PreTrainedModel` wrapper.

Importing `llada` registers them with the Auto classes under every model_type a family declares
(`llada.families.FAMILIES`: "llada", "Dream", "lladamoe", "llada2_moe", ...), so
`AutoModel.from_pretrained(dir)` (and `AutoModelForCausalLM`, `AutoModelForMaskedLM`, which
lm-eval and peft use) opens our directories and those of every family without `trust_remote_code`.

The wrapper holds our `LLaDAModel` as `self.model`, which gives the state-dict keys of the public
checkpoints (`model.transformer.blocks.0.q_proj.weight`, ...). Its `generate` runs `llada.sample`
(the reverse process, or left to right for the autoregressive baseline), so `model.generate(...)`
and `pipeline("text-generation", model=dir)` work as for any causal LM:

    model = AutoModelForCausalLM.from_pretrained(dir)
    out = model.generate(input_ids, attention_mask=mask, max_new_tokens=64, steps=64, block_length=32)
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    GenerationConfig,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.modeling_outputs import MaskedLMOutput

from llada import placement
from llada.config import ModelConfig, TokenRoles
from llada.errors import GenerationError
from llada.families import (
    DEFAULT,
    FAMILIES,
    build_model,
    config_from_json,
    config_to_json,
    detect_family,
    family_for,
)
from llada.model import LLaDAModel, RMSNorm
from llada.sampling.options import OPTION_NAMES, SamplerOptions


class LLaDAConfig(PretrainedConfig):
    """The `config.json` of a model of any family as a transformers config (LLaDA's model_type;
    `CONFIG_CLASSES` holds one subclass per other model_type); see `ModelConfig` for fields."""

    model_type = FAMILIES[DEFAULT].model_types[0]  # "llada"
    rope_scaling: dict[str, Any] | None = None
    """`ModelConfig.rope_scaling`, a plain attribute here: transformers 5 makes it an alias of its
    `rope_parameters`, which would move rope_theta into it and read fields our configs do not have."""

    def __init__(self, **kwargs: Any):
        weight_tying = kwargs.get("weight_tying", False)
        kwargs.setdefault("tie_word_embeddings", weight_tying)
        scaling = kwargs.pop("rope_scaling", None)
        super().__init__(**kwargs)
        if scaling is not None:
            self.rope_scaling = scaling

    def to_model_config(self) -> ModelConfig:
        generic = set(PretrainedConfig().to_dict()) - {"model_type", "architectures", "pad_token_id",
                                                        "eos_token_id", "bos_token_id"}
        ours = {k: v for k, v in self.to_dict().items() if k not in generic}
        return config_from_json(ours, source="config.json")

    @classmethod
    def from_model_config(cls, config: ModelConfig) -> LLaDAConfig:
        return cls(**config_to_json(config))


class LLaDAModelLM(PreTrainedModel, GenerationMixin):
    """`LLaDAModel` behind the transformers API; `forward` returns `.logits` (B, L, vocab), and
    `generate` samples with `llada.sample`."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig, model: LLaDAModel | None = None):
        super().__init__(config)
        self.model = model if model is not None else build_model(config.to_model_config())
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> LLaDAModelLM:
        """transformers' loading for LLaDA's own layout (a `device_map` placed as transformers
        places it, see `placement.follow_devices`); a directory of another family (LLaDA-MoE,
        LLaDA 2.x, Dream) is read by `llada.load`, whose family adapter knows its keys (`dtype` /
        `torch_dtype` and `revision` honoured), instead of coming back freshly initialised."""
        from llada.checkpoint import LoadOptions, layout, load
        from llada.checkpoint.hub import resolve_dir

        revision = kwargs.get("revision")
        try:
            root = resolve_dir(pretrained_model_name_or_path, LoadOptions(revision=revision))
            data = layout.read_json(root / layout.CONFIG_NAME)
        except Exception:  # noqa: BLE001 - not a directory we can read: transformers' own loading and errors
            return cls._transformers_load(pretrained_model_name_or_path, *args, **kwargs)
        if not isinstance(data, dict) or detect_family(data, str(root / layout.CONFIG_NAME)) == "llada":
            return cls._transformers_load(pretrained_model_name_or_path, *args, **kwargs)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        bundle = load(root, dtype=None if dtype in (None, "auto") else dtype, tokenizer=False)
        config_class = CONFIG_CLASSES[family_for(bundle.config).model_types[0]]
        with torch.device("meta"):  # (construction initialises weights: not the loaded ones)
            wrapped = cls(config_class.from_model_config(bundle.config))
        wrapped.model = bundle.model
        wrapped.generation_config = GenerationConfig.from_model_config(wrapped.config)
        if (root / layout.GENERATION_CONFIG_NAME).is_file():
            wrapped.generation_config = GenerationConfig.from_pretrained(root)
        return wrapped.eval()

    @classmethod
    def _transformers_load(cls, *args: Any, **kwargs: Any) -> LLaDAModelLM:
        """transformers' own `from_pretrained`; a model it spread over devices gets the hooks that
        keep the key/value caches with its blocks."""
        model = super().from_pretrained(*args, **kwargs)
        if getattr(model, "hf_device_map", None):
            placement.follow_devices(model.model)
        return model

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        """transformers' saving for LLaDA's layout; a model of another family is written by
        `llada.save` in that family's own layout (its keys, its config.json) with the model's
        generation config, so it opens again here, in `llada.load`, and in the family's reference
        code; transformers' other saving keywords (safe_serialization, ...) do not apply there."""
        if self.model.config.family == "llada":
            return super().save_pretrained(save_directory, *args, **kwargs)
        from llada.checkpoint import save
        from llada.checkpoint.layout import sampler_options

        options = sampler_options(self.generation_config.to_dict(), source="generation_config")
        save(save_directory, self.model, max_shard_size=kwargs.get("max_shard_size", "5GB"), options=options)

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

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 generation_config: GenerationConfig | None = None, *, generator: torch.Generator | None = None,
                 **kwargs: Any) -> torch.Tensor | GenerateDecoderOnlyOutput:
        """`llada.sample` behind transformers' `generate`: the sequences (B, P + max_new_tokens), the
        prompt then the answer, each row padded after its first EOS / end-of-turn as transformers pads.

        The options are, from weakest to strongest: SamplerOptions' defaults, the generation config
        (the model's, from generation_config.json, or `generation_config`), and the keywords:
        `max_new_tokens` (or `max_length`, prompt included) is gen_length, `do_sample=False`
        decodes greedily (temperature 0), `temperature`, and every SamplerOptions field by name
        (`steps=64, block_length=32, remasking="random"`). Block and step counts that do not divide
        the length are rounded up as `SamplerOptions.fitted` does, and the answer cut back to the
        length asked for. Keywords that a beam or a logits processor would take raise GenerationError.
        """
        from llada.sampling import sample

        config = generation_config if generation_config is not None else self.generation_config
        return_dict = kwargs.pop("return_dict_in_generate", getattr(config, "return_dict_in_generate", False))
        roles = self.model.config.roles
        if input_ids is None:  # an empty prompt: start from BOS, as transformers does
            if roles.bos is None:
                raise GenerationError("no prompt was given and the model has no BOS token to start from")
            input_ids = torch.full((1, 1), roles.bos, dtype=torch.long, device=self.model.device)
        options, new_tokens = sampler_request(config, kwargs, input_ids.shape[1])
        out = sample(self.model, input_ids, options, attention_mask=attention_mask, generator=generator)
        sequences = pad_after_stop(out.sequences[:, : out.prompt_length + new_tokens], out.prompt_length, roles)
        return GenerateDecoderOnlyOutput(sequences=sequences) if return_dict else sequences


def _class_name(model_type: str) -> str:
    """"llada2_moe" -> "Llada2Moe": a model_type as a class-name prefix."""
    return "".join(part[:1].upper() + part[1:] for part in model_type.split("_"))


def _config_class(model_type: str) -> type[LLaDAConfig]:
    """LLaDAConfig under `model_type` (transformers maps each model_type to one config class)."""
    if model_type == LLaDAConfig.model_type:
        return LLaDAConfig
    return type(f"{_class_name(model_type)}Config", (LLaDAConfig,), {
        "model_type": model_type, "__module__": __name__,
        "__doc__": f"A config.json of model_type {model_type!r} (see `llada.families.FAMILIES`)."})


def _model_class(config_class: type[LLaDAConfig]) -> type[LLaDAModelLM]:
    """LLaDAModelLM for the directories whose config.json is of `config_class`."""
    if config_class is LLaDAConfig:
        return LLaDAModelLM
    return type(f"{_class_name(config_class.model_type)}ModelLM", (LLaDAModelLM,), {
        "config_class": config_class, "__module__": __name__,
        "__doc__": f"`LLaDAModelLM` for directories of model_type {config_class.model_type!r}."})


# A transformers config class per model_type a family declares (the one a family writes is the config
# class of a model loaded in it), and the model class of each. A model_type several families read
# ("llada": LLaDA-8B and LLaDA-MoE) has one class: its config.json's architectures decide the family.
CONFIG_CLASSES: dict[str, type[LLaDAConfig]] = {
    t: _config_class(t) for family in FAMILIES.values() for t in family.model_types}
MODEL_CLASSES: dict[type[LLaDAConfig], type[LLaDAModelLM]] = {c: _model_class(c) for c in CONFIG_CLASSES.values()}


# transformers' generate() keywords that a sampler has no use for: the token ids come from the model.
_IGNORED = frozenset({"pad_token_id", "eos_token_id", "bos_token_id", "use_cache", "synced_gpus"})
# transformers' keywords that are honoured only at their neutral value.
_ONLY_ONE = ("num_beams", "num_return_sequences")


def sampler_request(config: GenerationConfig | None, kwargs: dict[str, Any],
                    prompt_length: int) -> tuple[SamplerOptions, int]:
    """The SamplerOptions of a `generate` call and the number of new tokens it returns: `kwargs`
    over the generation `config` over the defaults (see `LLaDAModelLM.generate`)."""
    from llada.checkpoint.layout import sampler_options

    kwargs = {k: v for k, v in kwargs.items() if k not in _IGNORED}
    for name in _ONLY_ONE:
        if kwargs.pop(name, None) not in (None, 1):
            raise GenerationError(f"{name} must be 1: the sampler returns one answer per prompt")
    # what the config sets, not transformers' class defaults (its top_k of 50 is no setting of this model)
    base = sampler_options(config.to_diff_dict() if config is not None else {}, source="generation_config")
    new_tokens = _new_tokens(kwargs, base, prompt_length)
    temperature = _temperature(config, kwargs, base)
    unknown = sorted(set(kwargs) - set(OPTION_NAMES))
    if unknown:
        raise GenerationError(f"generate() got {', '.join(unknown)}, which this sampler does not use; it takes "
                              "max_new_tokens, max_length, do_sample, temperature and the sampler options "
                              f"{', '.join(OPTION_NAMES)}")
    return base.fitted(new_tokens, temperature=temperature, **kwargs), new_tokens


def _new_tokens(kwargs: dict[str, Any], base: SamplerOptions, prompt_length: int) -> int:
    new = kwargs.pop("max_new_tokens", None)
    gen_length = kwargs.pop("gen_length", None)
    max_length = kwargs.pop("max_length", None)
    if new is None:
        new = gen_length
    if new is None and max_length is not None:
        new = max_length - prompt_length
        if new <= 0:
            raise GenerationError(f"max_length {max_length} leaves no room after the prompt's {prompt_length} "
                                  "tokens; use max_new_tokens")
    return base.gen_length if new is None else int(new)


def _temperature(config: GenerationConfig | None, kwargs: dict[str, Any], base: SamplerOptions) -> float:
    """do_sample=False is greedy; an explicit temperature is used as given (0 is greedy); do_sample=True
    alone samples at the configured temperature (transformers' default 1.0)."""
    do_sample = kwargs.pop("do_sample", None)
    temperature = kwargs.pop("temperature", None)
    if do_sample is False:
        return 0.0
    if temperature is not None:
        return float(temperature)
    if do_sample:
        return base.temperature or float(getattr(config, "temperature", None) or 1.0)
    return base.temperature


def pad_after_stop(sequences: torch.Tensor, prompt_length: int, roles: TokenRoles) -> torch.Tensor:
    """`sequences` (B, L) with every answer position after the answer's first stop token (EOS or
    end-of-turn) set to the pad id, as transformers' generate leaves finished rows."""
    answer = sequences[:, prompt_length:]
    stop = torch.isin(answer, torch.tensor(roles.stops, device=answer.device)).long()
    after = (stop.cumsum(dim=1) - stop) > 0  # (B, L - P): a stop came before this position
    return torch.cat([sequences[:, :prompt_length], answer.masked_fill(after, roles.pad)], dim=1)


def register() -> None:
    """Register the configs and the model with the transformers Auto classes (idempotent): every
    family's model_type opens as `LLaDAModelLM` (remote code still wins with trust_remote_code=True)."""
    try:
        AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig)
    except ValueError:  # already registered
        return
    for config_class, model_class in MODEL_CLASSES.items():
        if config_class is not LLaDAConfig:
            AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
            auto.register(config_class, model_class, exist_ok=True)
    # transformers 4.x pipelines load a tokenizer only for config types that name one
    try:  # 5.x calls it `tokenizer_class`
        AutoTokenizer.register(LLaDAConfig, tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
    except TypeError:
        AutoTokenizer.register(LLaDAConfig, fast_tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)


register()
