"""llada: masked diffusion language models in the style of LLaDA (Nie et al., 2025).

    import llada
    bundle = llada.load("path/to/model")             # or a public LLaDA checkpoint; options: llada.LoadOptions
    logits = bundle.model(input_ids)                 # (B, L, vocab): predicts every masked token
    out = llada.sample(bundle.model, prompt_ids, llada.SamplerOptions(gen_length=64))  # out.responses
    llada.save("out/model", bundle.model, bundle.tokenizer)

`import llada` is light: torch and transformers load when a name below is first used (PEP 562),
so `llada --help` does not pay for them. The transformers Auto classes learn `model_type: "llada"`
(llada.hf) as soon as transformers is imported in a process that imported llada, whichever came
first, so `AutoModel.from_pretrained(dir)` works after `import llada` as before.
"""

from __future__ import annotations

import importlib
import logging
import sys

__version__ = "0.1.0"

# public name -> module that defines it; imported on first attribute access
_LAZY: dict[str, str] = {
    "Bundle": "llada.checkpoint",
    "LoadOptions": "llada.checkpoint",
    "load": "llada.checkpoint",
    "save": "llada.checkpoint",
    "ModelConfig": "llada.config",
    "preset": "llada.config",
    "LLaDAModel": "llada.model",
    "SamplerOptions": "llada.sampling",
    "sample": "llada.sampling",
    "sample_steps": "llada.sampling",
}

__all__ = ["Bundle", "LLaDAModel", "LoadOptions", "ModelConfig", "SamplerOptions", "load", "preset", "sample", "sample_steps",
           "save"]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llada' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _RegisterWithTransformers:
    """A meta-path finder that registers llada.hf right after `transformers` itself is imported.

    It stays in place until that import runs: libraries probe `importlib.util.find_spec("transformers")`
    without importing it, and those probes must not use it up.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "transformers":
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: object) -> None:
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            importlib.import_module("llada.hf")

        spec.loader.exec_module = exec_then_register  # this spec's own loader instance only
        return spec


def _register_auto_classes() -> None:
    if "transformers" in sys.modules:  # already paid for: register now
        importlib.import_module("llada.hf")
    elif not any(isinstance(f, _RegisterWithTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWithTransformers())


_register_auto_classes()


def _drop_torchao_import_noise(record: logging.LogRecord) -> bool:
    """False for the warnings torchao (the `quant` extra, which transformers imports whenever it is
    installed) logs at import with nothing for a user to act on: that its CUDA kernel libraries do
    not load on a CPU build of torch, and that torch.compile now handles its enums itself."""
    message = record.getMessage()
    if record.name == "torchao" and message.startswith("Failed to load"):
        torch = sys.modules.get("torch")
        return not (torch is not None and torch.version.cuda is None)
    return "is an Enum subclass and is now natively supported by torch.compile" not in message


for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_drop_torchao_import_noise)
