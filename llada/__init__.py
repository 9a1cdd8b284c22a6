"""llada: masked diffusion language models in the style of LLaDA (Nie et al., 2025).

    import llada
    bundle = llada.load("path/to/model")             # or a public LLaDA checkpoint
    logits = bundle.model(input_ids)                 # (B, L, vocab): predicts every masked token
    llada.save("out/model", bundle.model, bundle.tokenizer)

Importing the package registers `model_type: "llada"` with transformers' Auto classes.
"""

from llada import hf as _hf  # noqa: F401  (registers the Auto classes)
from llada.checkpoint import Bundle, load, save
from llada.config import ModelConfig, preset
from llada.model import LLaDAModel

__all__ = ["Bundle", "LLaDAModel", "ModelConfig", "load", "preset", "save"]
__version__ = "0.1.0"
