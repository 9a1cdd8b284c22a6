"""`llada.load`'s options for models that do not fit as they are: weight-only quantization
(`quantization="int8" | "int4"`, torchao) and placement over devices and disk (`device_map`,
accelerate). CPU only: the quantized model is compared with the same directory loaded in full
precision; the dispatched model's logits must equal the plain model's exactly, and the placement of
LLaDA2.0-flash over eight 80 GiB GPUs is planned on the meta device. Last, `LoadOptions` itself:
one spelling and default per option, checked on construction, and the same options on every
surface (llada.load, the commands' flags, lm-eval's --model_args)."""

from __future__ import annotations

import collections
import importlib.util
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_word_tokenizer
from support.moe_families import LLADA2_FLASH_CONFIG, TINY_LLADA2, _public_dir, assert_same_float32_logits
from torch import nn

import llada
from llada.checkpoint import LoadOptions, load_model
from llada.checkpoint.options import FLAG_NAMES, inference_options
from llada.cli import main, resolve
from llada.config import preset as model_preset
from llada.errors import CheckpointError, UserError
from llada.families import config_from_json, family_for
from llada.model import KVCache, LLaDAModel
from llada.placement import caches_to_blocks, check_device_map, follow_devices, infer_device_map
from llada.runtime import QUANTIZATIONS, quantization_targets, quantize
from llada.sampling import SamplerOptions, sample
from llada.tokenizer import config_ids

needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None,
                                   reason="torchao is not installed (pip install 'llada[quant]')")


WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "big", "red", "blue", "hat", "in", "house", "tree"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model saved with llada.save; weights N(0, 0.2) as in tests/unit/sampling/test_api.py, so that
    answers depend on the prompt."""
    tok = make_word_tokenizer(WORDS)
    torch.manual_seed(0)
    model = LLaDAModel(model_preset("debug", **config_ids(tok))).eval()
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    root = tmp_path_factory.mktemp("load_options") / "model"
    llada.save(root, model, tok)
    return root


@pytest.fixture(scope="module")
def full(model_dir):
    return llada.load(model_dir)


def _ids(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, len(WORDS), (rows, length), generator=torch.Generator().manual_seed(seed))


def _inner(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The plain tensors a torchao weight stores (its quantized data, scales, ...)."""
    names, _ = weight.__tensor_flatten__()
    return {n: getattr(weight, n) for n in names}


@needs_torchao
def test_int8_quantizes_the_block_linears_and_nothing_else(model_dir):
    model = llada.load(model_dir, quantization="int8").model
    targets = quantization_targets(model)
    assert len(targets) == 7 * model.config.n_layers  # q, k, v, out, gate, up, down per block
    for name in targets:
        w = model.get_submodule(name).weight
        assert type(w).__name__ == "Int8Tensor", name
        assert _inner(w)["qdata"].dtype == torch.int8 and _inner(w)["qdata"].shape == w.shape
    for name, p in model.named_parameters():  # embedding, norms, output head
        if name.rpartition(".")[0] not in targets:
            assert type(p) is nn.Parameter and p.dtype == torch.float32, name
    assert {"transformer.wte.weight", "transformer.ff_out.weight"} <= {
        n for n, p in model.named_parameters() if type(p) is nn.Parameter}


@needs_torchao
@torch.no_grad()
def test_int8_logits_are_close_to_full_precision(model_dir, full):
    """Measured: max |difference| 7.0% of max |logit|, 2.4% in L2 norm, the same argmax at 96.4% of
    positions (the debug shape, d_model 32, whose few inputs per row average out little rounding)."""
    quantized = llada.load(model_dir, quantization="int8").model
    ids = _ids(8, 24)
    want, got = full.model(ids), quantized(ids)
    rel_max = ((got - want).abs().max() / want.abs().max()).item()
    rel_l2 = ((got - want).norm() / want.norm()).item()
    argmax = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    print(f"int8 logits: max |diff| / max |logit| = {rel_max:.4f}, L2 {rel_l2:.4f}, argmax agreement {argmax:.3f}")
    assert rel_max < 0.1 and rel_l2 < 0.05 and argmax > 0.9


@needs_torchao
def test_int8_greedy_answers_mostly_agree(model_dir, full):
    """llada.sample on the int8 model: measured 96.5% of 256 greedy tokens equal (11 of 16 answers whole)."""
    quantized = llada.load(model_dir, quantization="int8").model
    prompts = _ids(16, 6, seed=1)
    opts = SamplerOptions(gen_length=16, steps=16, block_length=8)
    want = sample(full.model, prompts, opts).sequences[:, 6:]
    got = sample(quantized, prompts, opts).sequences[:, 6:]
    agree = (got == want).float().mean().item()
    print(f"int8 greedy: {agree:.3f} of tokens equal, {int((got == want).all(1).sum())}/16 rows equal")
    assert agree >= 0.8


@needs_torchao
@torch.no_grad()
def test_int4_packs_two_weights_per_byte_on_the_cpu(model_dir, full):
    """int4 (torchao's CPU int4 layout): half a byte per weight; measured error 29% of the
    logits (L2) on this tiny model, so only that it runs is asserted."""
    bundle = llada.load(model_dir, quantization="int4")
    for name in quantization_targets(bundle.model):
        w = bundle.model.get_submodule(name).weight
        assert type(w).__name__ == "Int4OpaqueTensor", name
        assert _inner(w)["qdata"].dtype == torch.uint8 and _inner(w)["qdata"].numel() * 2 == w.numel()
    assert type(bundle.model.transformer.ff_out.weight) is nn.Parameter
    ids = _ids(8, 24)
    want, got = full.model(ids), bundle.model(ids)
    print(f"int4 logits: L2 {((got - want).norm() / want.norm()).item():.4f}")
    assert torch.isfinite(got).all()
    out = sample(bundle.model, _ids(2, 6), SamplerOptions(gen_length=8, steps=8, block_length=8))
    assert out.sequences.shape == (2, 14)


@needs_torchao
@torch.no_grad()
def test_moe_router_stays_in_full_precision():
    config = config_from_json(TINY_LLADA2)
    torch.manual_seed(0)
    model = family_for(config).build(config).eval()
    ids = _ids(2, 12)
    want = model(ids)
    quantize(model, "int8")
    moe = next(b.moe for b in model.transformer.blocks if b.moe is not None)
    assert type(moe.router.weight) is nn.Parameter and moe.router.weight.dtype == torch.float32
    assert type(moe.experts[0].ff_proj.weight).__name__ == "Int8Tensor"
    assert type(moe.shared.ff_out.weight).__name__ == "Int8Tensor"
    assert ((model(ids) - want).norm() / want.norm()).item() < 0.05


@pytest.mark.parametrize("value", ["int3", "INT8", 8, "fp8"])
def test_an_unknown_quantization_is_one_line_naming_the_allowed(model_dir, value):
    with pytest.raises(CheckpointError) as e:
        llada.load(model_dir, quantization=value)
    assert "\n" not in str(e.value) and all(q in str(e.value) for q in QUANTIZATIONS)


@needs_torchao
def test_int4_off_the_cpu_and_saving_a_quantized_model_are_refused(model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="CPU only"):
        llada.load(model_dir, quantization="int4", device="meta")
    bundle = llada.load(model_dir, quantization="int8")
    with pytest.raises(CheckpointError, match="quantized"):
        bundle.save(tmp_path / "out")


def test_a_missing_backend_names_the_extra(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # `import torchao` now fails, as when not installed
    with pytest.raises(UserError) as e:
        llada.load(model_dir, quantization="int8")
    assert "llada[quant]" in str(e.value) and "\n" not in str(e.value)


def test_the_cli_flag(model_dir, capsys):
    for command in ("serve", "eval", "poem", "generate", "chat"):
        assert main([command, "--help"]) == 0
        shown = capsys.readouterr().out
        assert "--quantization" in shown and "--compile" in shown, command
    assert main(["serve", "--model", str(model_dir), "--quantization", "int3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8, int4" in err


@needs_torchao
def test_generate_answers_from_an_int8_model(model_dir, capsys):
    from llada.sampling.text import sample_text

    bundle = llada.load(model_dir, quantization="int8")
    want = sample_text(bundle.model, bundle.tokenizer, "the cat", llada.SamplerOptions(gen_length=8),
                       chat=False)[0].strip()
    assert want  # the tiny model says something: the comparison is not "" == ""
    assert main(["generate", "the cat", "--model", str(model_dir), "--device", "cpu", "--quantization", "int8",
                 "--gen_length", "8", "--chat", "false"]) == 0
    assert capsys.readouterr().out.strip() == want


@needs_torchao
def test_lm_eval_model_args_take_it(model_dir):
    harness = pytest.importorskip("llada.evaluation.harness", exc_type=ImportError)
    lm = harness.LLaDAEvalLM(pretrained=str(model_dir), device="cpu", quantization="int8")
    assert type(lm.model.transformer.blocks[0].q_proj.weight).__name__ == "Int8Tensor"


@pytest.mark.slow
def test_compiled_blocks_answer_as_eager_and_stop_recompiling(model_dir, full):
    """`compile=True`: every block compiled; greedy answers equal the eager model's with and without
    the dual cache and with padded rows. Once a first round of requests has made the sizes symbolic,
    a second round of new prompt lengths and batch sizes compiles nothing, and the graphs stay
    under dynamo's recompile limit (past it, a block would silently run eager)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # graphs counted from here (reset keeps the counters)
    compiled = llada.load(model_dir, compile=True).model
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in compiled.transformer.blocks)
    graphs = []
    for round_ in ([(1, 5), (1, 7), (2, 6), (3, 9)], [(1, 11), (2, 4), (4, 8), (5, 13)]):
        for i, (rows, length) in enumerate(round_):
            am = torch.ones(rows, length, dtype=torch.long)
            am[-1, :2] = 0 if rows > 1 else 1  # a left-padded row among longer ones
            for cache in (None, "dual"):
                opts = SamplerOptions(gen_length=8, steps=4, block_length=4, cache=cache)
                want = sample(full.model, _ids(rows, length, i), opts, attention_mask=am).sequences
                got = sample(compiled, _ids(rows, length, i), opts, attention_mask=am).sequences
                assert torch.equal(got, want), (rows, length, cache)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[1] == graphs[0] < torch._dynamo.config.recompile_limit, graphs
    torch._dynamo.reset()


@pytest.mark.parametrize("value", ["yes", 1])
def test_lm_eval_compile_takes_a_boolean(model_dir, value):
    harness = pytest.importorskip("llada.evaluation.harness", exc_type=ImportError)
    with pytest.raises(UserError, match="compile must be true or false"):
        harness.LLaDAEvalLM(pretrained=str(model_dir), device="cpu", compile=value)


def test_llada2_flash_over_eight_gpus_keeps_blocks_whole_and_balanced():
    """LLaDA2.0-flash (103B parameters, 192 GiB in bfloat16) planned over 8 x 80 GiB on the meta
    device: each block on one GPU, every GPU within its budget, 4 blocks each."""
    from accelerate.utils import compute_module_sizes

    config = config_from_json(LLADA2_FLASH_CONFIG)
    with torch.device("meta"):
        model = family_for(config).build(config)
    device_map = infer_device_map(model, {i: "80GiB" for i in range(8)}, dtype=torch.bfloat16)
    check_device_map(model, device_map)  # every weight placed, no block split
    blocks = {f"transformer.blocks.{i}" for i in range(config.n_layers)}
    assert blocks <= set(device_map)  # each block is one entry: wholly on one device
    assert not any(k.startswith(tuple(b + "." for b in blocks)) for k in device_map)
    sizes = compute_module_sizes(model, dtype=torch.bfloat16)
    used = collections.Counter()
    count = collections.Counter()
    for name, device in device_map.items():
        used[device] += sizes[name]
        count[device] += name in blocks
    print("\nLLaDA2.0-flash over 8 x 80 GiB:")
    for device in sorted(used):
        names = [n for n, d in device_map.items() if d == device]
        print(f"  GPU {device}: {count[device]} blocks, {used[device] / 2**30:.1f} GiB  ({names[0]} .. {names[-1]})")
    assert set(used) == set(range(8)) and all(v <= 80 * 2**30 for v in used.values())
    assert sum(used.values()) == sizes[""]
    assert max(count.values()) - min(count.values()) <= 1


def _half_on_disk(n_layers: int) -> dict[str, str]:
    half = n_layers // 2
    return {"transformer.wte": "cpu", **{f"transformer.blocks.{i}": "cpu" if i < half else "disk"
                                         for i in range(n_layers)},
            "transformer.ln_f": "disk", "transformer.ff_out": "disk"}


@torch.no_grad()
def test_dispatched_with_half_on_disk_gives_the_same_logits(model_dir, full, tmp_path):
    """Half the blocks and the head offloaded to disk (accelerate's offload folder): the logits
    and a cached sampler's answer equal the plain model's exactly."""
    config = full.model.config
    bundle = llada.load(model_dir, device_map=_half_on_disk(config.n_layers), offload_folder=tmp_path / "offload")
    model = bundle.model
    assert model.transformer.blocks[-1].q_proj.weight.is_meta  # on disk until its forward
    assert not model.transformer.blocks[0].q_proj.weight.is_meta
    assert (tmp_path / "offload" / "index.json").is_file() and model.hf_device_map["transformer.ff_out"] == "disk"
    ids = _ids(3, 20)
    assert torch.equal(model(ids), full.model(ids))
    for cache in (None, "dual"):
        opts = SamplerOptions(gen_length=8, steps=8, block_length=4, cache=cache)
        assert torch.equal(sample(model, ids[:, :6], opts).sequences, sample(full.model, ids[:, :6], opts).sequences)
    with pytest.raises(CheckpointError, match="offloaded"):
        bundle.save(tmp_path / "out")


@torch.no_grad()
def test_auto_on_this_cpu_places_everything_here(model_dir, full):
    model = llada.load(model_dir, device_map="auto").model
    assert set(model.hf_device_map.values()) == {"cpu"}
    ids = _ids(2, 10)
    assert torch.equal(model(ids), full.model(ids))


def _tiny_model(**changes) -> LLaDAModel:
    return LLaDAModel(model_preset("debug", vocab_size=64, mask_token_id=63, eos_token_id=62, pad_token_id=62,
                                   bos_token_id=None, eot_token_id=None, **changes)).eval()


def test_each_layers_cache_moves_to_the_device_its_block_runs_on():
    """`caches_to_blocks` with accelerate's hook faked ("meta" stands in for a second GPU): the layer
    whose block runs there gets its buffers there, once; a layer without a hook keeps its own."""
    model = _tiny_model()
    model.transformer.blocks[1]._hf_hook = SimpleNamespace(hooks=[SimpleNamespace(execution_device="meta")])
    cache = KVCache(model.config, 2, 8, "cpu", torch.float32)
    first = cache.layers[0]
    caches_to_blocks(model, cache)
    assert cache.layers[0] is first
    assert [t.device.type for t in cache.layers[1]] == ["meta", "meta"]
    moved = cache.layers[1]
    caches_to_blocks(model, cache)
    assert cache.layers[1] is moved  # already there: the same buffers, at the same addresses


@torch.no_grad()
@pytest.mark.parametrize("tied", [False, True])
def test_the_placement_hooks_leave_a_one_device_forward_as_it_is(tied):
    model = _tiny_model(weight_tying=tied)
    ids = _ids(2, 8)
    want = model(ids, kv_cache=KVCache(model.config, 2, 8, "cpu", torch.float32))
    follow_devices(model)
    cache = KVCache(model.config, 2, 8, "cpu", torch.float32)
    assert torch.equal(model(ids, kv_cache=cache), want) and torch.equal(model(ids), want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_a_cache_made_off_the_blocks_device_follows_them(model_dir, full):
    """A model on GPU 0 with its later blocks offloaded to the CPU (they run on GPU 0) and a KVCache
    made on the CPU: the cached pass moves every layer's buffers to GPU 0, and a slice re-run against
    them gives the full pass's logits (writes into the hooks' copies would be lost)."""
    n = full.model.config.n_layers
    device_map = {"transformer.wte": 0, "transformer.blocks.0": 0, "transformer.ln_f": 0, "transformer.ff_out": 0,
                  **{f"transformer.blocks.{i}": "cpu" for i in range(1, n)}}
    model = llada.load(model_dir, device_map=device_map, tokenizer=False).model
    ids = _ids(2, 12)
    want = full.model(ids)
    cache = KVCache(model.config, 2, 12, "cpu", model.dtype)
    torch.testing.assert_close(model(ids.cuda(), kv_cache=cache).cpu(), want, atol=1e-4, rtol=1e-4)
    assert all(k.device == v.device == torch.device("cuda:0") for k, v in cache.layers)
    part = model(ids[:, 5:9].cuda(), kv_cache=cache, cache_position=5)
    torch.testing.assert_close(part.cpu(), want[:, 5:9], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    (dict(device_map="auto", device="cpu"), "not both"),
    (dict(device_map="auto", quantization="int8"), "not supported yet"),
    (dict(max_memory={"cpu": "1GiB"}), "apply with device_map"),
    (dict(device_map="balanced"), "unknown device_map"),
    (dict(device_map={"transformer.wte": "cpu"}), "places no device for"),
    (dict(device_map={"": "cpu", "transformer.blocks.0.q_proj": "cpu"}), "splits transformer.blocks.0"),
    (dict(device_map={"": "disk"}), "offloads transformer.wte"),
    (dict(device_map={"transformer.wte": "cpu", "": "disk"}), "offload_folder"),
    (dict(device_map={"": 3}), "CUDA device"),
    (dict(device_map={"": "cuda"} if not torch.cuda.is_available() else {"": 99}), "CUDA device"),
    (dict(device_map={"": "cpu"}, max_memory={"cpu": "1GiB"}), "applies to device_map='auto'"),
    (dict(device_map="auto", max_memory={"cpu": 1000}), "offloads transformer.wte to disk"),  # too little
    (dict(device_map="auto", max_memory={"cpu": "lots"}), "max_memory"),
    (dict(device_map="auto", compile=True), "compile with a device_map"),
    (dict(compile="yes"), "compile must be true or false"),
])
def test_device_map_mistakes_are_one_line(model_dir, kwargs, message):
    with pytest.raises(CheckpointError, match=message) as e:
        llada.load(model_dir, **kwargs)
    assert "\n" not in str(e.value)


@torch.no_grad()
def test_offloaded_moe_blocks_give_the_same_logits(tmp_path):
    """Mixture-of-experts blocks on disk (their router, its expert bias and every expert fetched by
    accelerate's hooks at the block's forward): the logits equal the plain model's to float32's
    precision and a block-diffusion answer with the cache token for token."""
    root, _ = _public_dir(tmp_path / "moe", TINY_LLADA2)
    n = TINY_LLADA2["num_hidden_layers"]
    plain = llada.load(root, tokenizer=False).model
    placed = llada.load(root, tokenizer=False, device_map=_half_on_disk(n), offload_folder=tmp_path / "offload").model
    assert placed.transformer.blocks[-1].moe.router.weight.is_meta  # on disk until its forward
    ids = _ids(2, 8)
    assert_same_float32_logits(placed(ids), plain(ids))
    options = SamplerOptions.from_dict({"preset": "llada2", "gen_length": 8, "block_length": 4})
    assert torch.equal(sample(placed, ids[:1, :5], options).sequences, sample(plain, ids[:1, :5], options).sequences)


def test_inference_commands_load_float32_checkpoints_in_bfloat16_on_cuda(monkeypatch):
    """generate/chat/serve/eval/lm-eval/poem: "auto" is bfloat16 on a CUDA device that has it (and
    TF32 for what stays float32); on the CPU, or with a dtype given, nothing changes."""
    from llada.runtime import inference_dtype

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert inference_dtype("auto", "cpu") == "auto" and inference_dtype(None, "cpu") is None
        assert torch.get_float32_matmul_precision() == "highest"
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        assert inference_dtype("auto", "cuda") == "bfloat16" and inference_dtype(None, "cuda:1") == "bfloat16"
        assert torch.get_float32_matmul_precision() == "high"
        assert inference_dtype("float32", "cuda") == "float32"  # asked for: kept
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        assert inference_dtype("auto", "cuda") == "auto"  # (a GPU without bfloat16: the stored dtype)
    finally:
        torch.set_float32_matmul_precision(before)


def test_each_option_has_one_spelling_and_one_default():
    """None, an alias or a torch.dtype is the dtype's full name; "auto" keeps the stored one."""
    default = LoadOptions()
    assert (default.dtype, default.device, default.quantization, default.compile, default.tokenizer) == (
        "auto", None, None, False, True)
    assert LoadOptions(**default.to_dict()) == default and default.torch_dtype is None
    for given, name in ((None, "auto"), ("bf16", "bfloat16"), (torch.float16, "float16"), ("fp32", "float32")):
        assert LoadOptions(dtype=given).dtype == name
    assert LoadOptions(dtype="bf16").torch_dtype is torch.bfloat16
    assert LoadOptions(device=torch.device("cpu")).device == "cpu"
    assert LoadOptions(device_map="auto", offload_folder=Path("off")).offload_folder == "off"


@pytest.mark.parametrize("kwargs,message", [
    (dict(dtype="int8"), "unsupported dtype 'int8'; choose one of: auto, float32, bfloat16, float16"),
    (dict(dtype=torch.int8), "unsupported dtype torch.int8"),
    (dict(compile="yes"), "compile must be true or false"),
    (dict(tokenizer=1), "tokenizer must be true or false"),
    (dict(revision=""), "revision must be a non-empty string"),
    (dict(device="gpu0"), "device 'gpu0' is not a device"),
    (dict(device_map=3), "device_map must be 'auto' or a dict"),
    (dict(device_map="auto", max_memory="1GiB"), "max_memory must be a dict"),
    (dict(quantization="int3"), "int8, int4"),
    (dict(device="cpu", device_map="auto"), "give device or device_map, not both"),
])
def test_a_bad_option_is_refused_on_construction_in_one_line(kwargs, message):
    with pytest.raises(CheckpointError) as e:
        LoadOptions(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_options_from_text_and_unknown_names():
    """Flags and lm-eval's --model_args give text: "true"/"false" switch, "none" clears."""
    o = LoadOptions.from_dict({"compile": "true", "quantization": "none", "dtype": "bf16"}, revision="v1")
    assert (o.compile, o.quantization, o.dtype, o.revision) == (True, None, "bfloat16", "v1")
    with pytest.raises(CheckpointError, match="compile must be true or false"):
        LoadOptions.from_dict({"compile": "yes"})
    for make in (lambda: LoadOptions.from_dict({"dtyp": "auto"}), lambda: LoadOptions().replace(dtyp="auto")):
        with pytest.raises(CheckpointError, match="unknown load option.s. dtyp; the options are dtype, device"):
            make()


def test_options_are_checked_before_anything_is_downloaded(monkeypatch):
    fetched = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda *a, **k: fetched.append(a))
    for bad in (dict(quantization="int3"), dict(device="cpu", device_map="auto"), dict(dtype="int8")):
        with pytest.raises(CheckpointError):
            llada.load("org/name", **bad)
    assert fetched == []


def test_load_takes_the_options_whole_or_by_name(model_dir):
    opts = LoadOptions(dtype="bfloat16", tokenizer=False)
    whole, named = llada.load(model_dir, opts), llada.load(model_dir, dtype="bf16", tokenizer=False)
    over = llada.load(model_dir, opts, dtype="float32")  # names over the options given
    assert whole.tokenizer is None and named.tokenizer is None and over.tokenizer is None
    assert whole.model.transformer.wte.weight.dtype == named.model.transformer.wte.weight.dtype == torch.bfloat16
    assert over.model.transformer.wte.weight.dtype == torch.float32
    ids = _ids(2, 6)
    assert torch.equal(whole.model(ids), named.model(ids))
    assert torch.equal(load_model(model_dir, opts)(ids), whole.model(ids))


@pytest.mark.parametrize("command", ["generate", "chat", "serve", "eval", "poem"])
def test_every_command_that_runs_a_model_takes_every_load_flag(command, capsys):
    """The flags are generated from LoadOptions: each command has each flag, with its help text
    (also where the docstring goes on after its Args, as serve's and poem's do)."""
    params = inspect.signature(resolve(command)).parameters
    assert set(FLAG_NAMES) <= set(params)
    assert main([command, "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name in FLAG_NAMES:
        assert f"--{name}" in shown and " ".join(LoadOptions.help()[name].split())[:40] in shown, name


def test_lm_eval_takes_the_same_load_options():
    harness = pytest.importorskip("llada.evaluation.harness", exc_type=ImportError)
    assert {*harness.LOAD_KEYS, "device"} == set(FLAG_NAMES)  # device: lm-eval's own --device


def test_the_commands_choose_the_device_and_dtype_the_library_leaves_alone():
    """No device: cuda when there is one, else the CPU; "auto" stays "auto" off CUDA (the
    bfloat16 rule on CUDA is runtime.inference_dtype's, tested above)."""
    assert inference_options({"device": None, "dtype": None}).device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert inference_options({"device": "cpu"}).dtype == "auto"
    assert inference_options({"device": "cpu", "dtype": "fp16"}).dtype == "float16"
    assert inference_options({"device_map": "auto"}).device is None  # the map places the model
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: this machine has no cuda device"):
            inference_options({"device": "cuda"})


def test_cache_dir_is_where_a_hub_id_is_downloaded(model_dir, tmp_path, monkeypatch, capsys):
    """llada.load's cache_dir, and the same option as a flag of a command: both reach the download."""
    seen = []

    def download(repo, **kwargs):
        seen.append((repo, kwargs["cache_dir"]))
        return str(model_dir)

    monkeypatch.setattr("huggingface_hub.snapshot_download", download)
    assert llada.load("org/name", cache_dir=tmp_path / "hub", tokenizer=False).config.d_model > 0
    assert main(["generate", "the cat", "--model", "org/name", "--cache_dir", str(tmp_path / "cli"),
                 "--device", "cpu", "--gen_length", "8", "--chat", "false"]) == 0
    assert seen == [("org/name", str(tmp_path / "hub")), ("org/name", str(tmp_path / "cli"))]
    assert capsys.readouterr().out.strip()


def test_local_files_only_opens_a_cached_hub_id_and_never_downloads(model_dir, tmp_path, monkeypatch):
    """A Hub id already in the cache (the Hugging Face cache layout) opens with local_files_only,
    which reaches the download call; one that is not cached is a one-line error."""
    import shutil

    import huggingface_hub

    from llada.errors import ModelDirError

    seen, download = [], huggingface_hub.snapshot_download

    def recording(repo, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        return download(repo, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    got = llada.load("someone/tiny", cache_dir=str(tmp_path / "cache"), local_files_only=True, tokenizer=False)
    want = llada.load(model_dir, tokenizer=False)
    assert got.config == want.config
    for (name, a), (_, b) in zip(got.model.state_dict().items(), want.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ModelDirError, match="'someone/absent' is not a local directory and could not be fetched"):
        llada.load("someone/absent", cache_dir=str(tmp_path / "cache"), local_files_only=True)
    assert seen == [True, True]
