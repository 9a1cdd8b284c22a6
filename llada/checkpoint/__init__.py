"""Model directories in the Hugging Face layout of the public LLaDA checkpoints, both ways.

    bundle = llada.checkpoint.load("path/to/model", LoadOptions(dtype="bfloat16"))   # = llada.load
    llada.checkpoint.save("out/model", bundle.model, bundle.tokenizer)                # = llada.save

A model directory holds:
    config.json                      LLaDA field names, `model_type: "llada"`
    model.safetensors                or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json   chat template inside; opens in transformers 4.46 to 5.x
    generation_config.json           the recommended sampler settings (SamplerOptions) and the token ids
    README.md                        a model card, generated from what the directory holds
    training_config.json, adapter/   written by the trainer: its settings; with LoRA the peft adapter

Keys are `model.transformer.wte.weight`, `model.transformer.blocks.N.{q_proj,...}.weight`, ... —
the `LLaDAModel` parameter names behind a `model.` prefix. A directory of another model family
(Dream: its config.json and key names) loads and saves through that family's entry in
`llada.families`, which says how its config and keys map onto ours; nothing here names a family.

One concern a module:
    options.py    LoadOptions: every loading option, its default and its checks; inference_options
    layout.py     the files' names, reading them (JSON, config, safetensors), staying inside the directory
    loading.py    load / load_model: the model streamed onto the meta device, placed, quantized, compiled
    tokenizer.py  the tokenizer of a directory, checked against the config
    saving.py     save / save_state_dict: safetensors shards, config and generation config, flushed
    card.py       the model card (README.md)
    adapter.py    a LoRA run's peft adapter
    hub.py        the Hugging Face Hub: a Hub id downloaded, a directory pushed

The `llada info` and `push` commands are llada/commands/checkpoint.py, `llada convert` is
llada/commands/convert.py (a causal LM converted by llada/conversion.py).
"""

from llada.checkpoint.layout import read_config
from llada.checkpoint.loading import Bundle, load, load_model
from llada.checkpoint.options import LoadOptions
from llada.checkpoint.saving import save

__all__ = ["Bundle", "LoadOptions", "load", "load_model", "read_config", "save"]
