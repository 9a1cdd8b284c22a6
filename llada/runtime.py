"""Runtime techniques applied to a finished model, in one place: LoRA, activation checkpointing,
torch.compile, and weight-only quantization for inference. Distributed wrapping (DDP, FSDP) is
accelerate's, chosen by its config file (configs/accelerate/*.yaml) and applied by
`accelerator.prepare` in the trainer.

Order matters: LoRA first (it replaces Linear modules), then activation checkpointing (a flag the
model's forward reads per block), then compile (it traces what the other two built). Quantization
is for a loaded model that only runs forward (`llada.load(..., quantization="int8")`).
"""

from __future__ import annotations

import logging
import typing
from typing import Literal

import torch
from torch import nn

from llada.errors import CheckpointError, UserError
from llada.model import LLaDAModel

logger = logging.getLogger(__name__)

def inference_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None) -> str | torch.dtype | None:
    """The dtype a command that only runs a model (generate, chat, serve, eval, lm-eval, poem) loads
    it in: `dtype` as given, except "auto"/None on a CUDA device that supports bfloat16, which is
    "bfloat16" there (a float32 checkpoint at half the memory and on the tensor cores, as LLaDA's own
    weights are stored) and enables TF32 for the matmuls that stay in float32. Elsewhere "auto"
    keeps the stored dtype. Training keeps float32 master weights and never calls this."""
    if dtype not in (None, "auto") or device is None or torch.device(device).type != "cuda":
        return dtype
    torch.set_float32_matmul_precision("high")  # TF32 tensor cores for float32 matmuls
    return "bfloat16" if torch.cuda.is_bf16_supported() else dtype


# The weight-only quantizations `llada.load` and the --quantization flags accept (None: none).
Quantization = Literal["int8", "int4"]
QUANTIZATIONS: tuple[str, ...] = typing.get_args(Quantization)

# Every Linear of a block: attention q/k/v/out and the SwiGLU gate/up/down projections. In a
# mixture-of-experts block the router and the experts stay frozen and unadapted (adapting hundreds
# of experts, each seeing a few tokens, is what LoRA for MoE models avoids): attention only.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]


def apply_lora(model: LLaDAModel, r: int, alpha: int | None = None, dropout: float = 0.0) -> nn.Module:
    """Freeze the model and add rank-`r` LoRA adapters to every block Linear (through peft).

    The output head `transformer.ff_out` is left frozen and unadapted (the block-level `ff_out`
    matches by name; the head is excluded explicitly).
    """
    from peft import LoraConfig, get_peft_model

    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got {r}")
    targets = [name for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and ".blocks." in name and ".moe." not in name
               and name.rsplit(".", 1)[-1] in LORA_TARGETS]
    config = LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=targets, bias="none")
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    logger.info("LoRA r=%d: %s trainable parameters of %s", r, f"{trainable:,}", f"{model.num_params():,}")
    return peft_model


def merge_lora_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """peft's `merge_and_unload` on a state dict of the peft-wrapped `model` (its `state_dict()`, or the one
    accelerate's `get_state_dict` gathers from FSDP shards, whose parameters `copy.deepcopy` and an
    in-place merge cannot take): each adapted Linear's `base_layer.weight` W becomes
    W + scaling · B @ A (computed in float32, rounded once to W's dtype, as peft's merge does for a
    half-precision weight on the CPU), under the key the plain model gives it; the adapters are
    dropped. Other keys keep their prefix (peft's `base_model.model.`). No copy of the model is made.

    Raises KeyError when an adapted weight has no lora_A/lora_B pair in `state`."""
    from peft.tuners.lora import LoraLayer

    scaling = {name: m.scaling["default"] for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        module, found, leaf = key.rpartition(".base_layer.")
        if found and leaf == "weight":
            a, b = state[f"{module}.lora_A.default.weight"], state[f"{module}.lora_B.default.weight"]
            value = (value.float() + (b.float() @ a.float()) * scaling[module]).to(value.dtype)
        merged[f"{module}.{leaf}" if found else key] = value
    return merged


def base_model(model: nn.Module) -> LLaDAModel:
    """The LLaDAModel inside whatever wrappers (compile, peft, DDP) surround it."""
    seen = model
    for _ in range(8):
        if isinstance(seen, LLaDAModel):
            return seen
        seen = getattr(seen, "_orig_mod", None) or getattr(seen, "module", None) or getattr(seen, "base_model", None) \
            or getattr(seen, "model", None)
        if seen is None:
            break
    raise TypeError(f"no LLaDAModel inside {type(model).__name__}")


def prepare_model(model: LLaDAModel, *, lora_r: int = 0, activation_checkpointing: bool = False,
                  compile: bool = False) -> nn.Module:
    """Apply the runtime techniques in their one valid order; returns the module to train."""
    out: nn.Module = model
    if lora_r:
        out = apply_lora(model, lora_r)
    model.activation_checkpointing = activation_checkpointing
    if compile:
        out = compile_model(out)
    return out


def compile_model(module: nn.Module) -> nn.Module:
    """`torch.compile` with static shapes: training batches have one shape (LLaDA's 1% of
    variable-length crops recompile once per new length); the trainer calls it after
    `accelerator.prepare`, so it traces the module as wrapped for DDP/FSDP and mixed precision."""
    return torch.compile(module, dynamic=False)


def compile_blocks(model: LLaDAModel) -> LLaDAModel:
    """Compile each Transformer block of a model that only runs forward (`llada.load(...,
    compile=True)`, the inference commands' --compile), in place; returns the model.

    torch.compile with inductor fuses what eager runs as separate kernels (the norms, RoPE,
    SwiGLU's product, the residual adds) around the matmuls and attention. Every block shares one
    compiled graph per kind of call (the blocks are one class, their weights inputs). Sizes are
    symbolic from the start (batch, prompt length, cache length; the cache positions are a tensor),
    so the kinds are few: with or without a key/value cache, with or without padded rows, a batch of
    one or more (torch specialises size 1); tests/unit/checkpoint/test_load_options.py counts 6 graphs for all the
    sampler's calls, and none more for new lengths and batch sizes. The first calls pay the
    compilation. An MoE block's routing stays eager (its grouping by expert is data dependent).
    torchao's quantized layers compile too (their kernels are made for it). No CUDA graphs: they
    need static shapes, which a server would get by bucketing lengths; unmeasured, so not built.
    """
    for block in model.transformer.blocks:
        block.compile(dynamic=True)
    return model


# ------------------------------------------------------------------------------- quantization (torchao)

# int4 weights are quantized in groups along the input dimension, each with its own scale and zero
# point: the largest of these sizes that divides a layer's input width is used.
INT4_GROUP_SIZES = (128, 64, 32)


def check_quantization(scheme: str | None) -> str | None:
    """`scheme` if it is one of QUANTIZATIONS or None; else a CheckpointError listing them."""
    if scheme is None or (isinstance(scheme, str) and scheme in QUANTIZATIONS):
        return scheme
    raise CheckpointError(f"unknown quantization {scheme!r}; choose one of: {', '.join(QUANTIZATIONS)} "
                          "(or None for full precision)")


def check_device(device: str | torch.device | None, name: str = "device") -> torch.device | None:
    """`device` as a torch.device when this machine has it (None stays None: the caller's default);
    else a CheckpointError naming the argument `name` and the devices this machine offers."""
    if device is None:
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise CheckpointError(f"{name} {device!r} is not a device; use one of: {', '.join(devices())}") from None
    if d.type in ("cpu", "meta"):  # every machine has these (meta: shapes without data)
        return d
    backend = torch.backends.mps if d.type == "mps" else getattr(torch, d.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise CheckpointError(f"{name} {device}: this machine has no {d.type} device; use one of: "
                              f"{', '.join(devices())}")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if d.index is not None and d.index >= count:
        raise CheckpointError(f"{name} {device}: this machine has {count} {d.type} device(s), numbered from 0")
    return d


def devices() -> list[str]:
    """The device names this machine offers."""
    found = ["cpu"] + (["cuda", "cuda:N"] if torch.cuda.is_available() else [])
    return found + (["mps"] if torch.backends.mps.is_available() else [])


def quantization_targets(model: LLaDAModel) -> list[str]:
    """Names of the Linear layers quantization replaces: every Linear inside the blocks (attention,
    MLP, MoE experts) except an MoE router, whose scores pick the experts. The embedding, the norms
    and the output head `transformer.ff_out` stay in full precision."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.startswith("transformer.blocks.")
            and not name.endswith(".moe.router")]


def _torchao():
    """torchao's `quantize_` and the two configs (llada/__init__.py drops torchao's import-time noise)."""
    try:
        import torchao.quantization as q
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    except ImportError as e:
        raise UserError(f"quantization needs torchao ({e}); install it with pip install 'llada[quant]'") from None
    return q.quantize_, q.Int8WeightOnlyConfig, PrototypeInt4WeightOnlyConfig


def quantize(model: LLaDAModel, scheme: str, device: str | torch.device = "cpu") -> LLaDAModel:
    """Weight-only quantization of `quantization_targets(model)` in place, through torchao; the
    activations stay in the model's dtype. Returns the model, moved to `device`.

    "int8": one int8 weight per element with a scale per output row (torchao's
        Int8WeightOnlyConfig); CPU tested, CUDA untested here.
    "int4": two 4-bit weights per byte with a scale and zero point per group of 128, 64 or 32
        inputs (torchao's PrototypeInt4WeightOnlyConfig, packed for torch's CPU int4 matmul): CPU
        only. A layer whose input width none of those sizes divides stays in full precision.

    The Linear layers are moved to `device` one at a time and quantized there, so a model loaded on
    the CPU never needs its full-precision size on the device. Raises CheckpointError for an unknown
    scheme or int4 off the CPU, UserError when torchao is not installed.
    """
    check_quantization(scheme)
    device = torch.device(device)
    if scheme == "int4" and device.type != "cpu":
        raise CheckpointError(f"quantization='int4' runs on the CPU only (torchao's CPU int4 kernel); "
                              f"on {device.type} use 'int8'")
    quantize_, Int8WeightOnlyConfig, Int4Config = _torchao()
    targets = quantization_targets(model)
    if scheme == "int8":
        configs = [(Int8WeightOnlyConfig(), set(targets))]
    else:
        widths = {name: model.get_submodule(name).in_features for name in targets}
        group = {n: next((g for g in INT4_GROUP_SIZES if w % g == 0), None) for n, w in widths.items()}
        configs = [(Int4Config(group_size=g), {n for n, size in group.items() if size == g}) for g in INT4_GROUP_SIZES]
        left = sorted(n for n, size in group.items() if size is None)
        if left:
            logger.warning("int4: %d Linear layer(s) kept in full precision: their input width is not a multiple "
                           "of %d (%s)", len(left), INT4_GROUP_SIZES[-1], ", ".join(left[:3]))
    for config, names in configs:
        if names:
            quantize_(model, config, filter_fn=lambda _m, fqn, names=names: fqn in names, device=device)
    return model.to(device)


def is_quantized(model: nn.Module) -> bool:
    """Whether any weight of `model` is a quantized tensor (a torch.Tensor subclass, as torchao's are)."""
    return any(type(p) not in (torch.Tensor, nn.Parameter) for p in model.parameters())
