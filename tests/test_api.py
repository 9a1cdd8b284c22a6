"""`SamplerOptions` and the one entry point `llada.sample`: options validated and named once, the
model choosing its own sampler, and every surface (CLI, server, lm-eval) giving the same answer
for the same options and seed."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
import torch

import llada
from llada.cli import main
from llada.config import preset as model_preset
from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import SAMPLER_PRESETS, SamplerOptions, preset, sample, sample_steps, sample_text
from llada.sampling.autoregressive import generate_autoregressive
from llada.tokenizer import CHAT_TEMPLATE, config_ids, train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20


# ---- SamplerOptions ---------------------------------------------------------------------------------------------

def test_defaults_are_the_papers():
    o = SamplerOptions()
    assert (o.gen_length, o.num_steps, o.block_size, o.remasking) == (128, 128, 32, "low_confidence")
    assert (o.temperature, o.cfg_scale, o.threshold, o.cache) == (0.0, 0.0, None, None)


@pytest.mark.parametrize("changes,field", [
    (dict(steps=0), "steps"), (dict(gen_length=-4), "gen_length"), (dict(block_length=24), "block_length"),
    (dict(steps=6), "number of blocks"), (dict(temperature=-1.0), "temperature"), (dict(cfg_scale=-0.5), "cfg_scale"),
    (dict(remasking="loudest"), "remasking"), (dict(threshold=1.5), "threshold"), (dict(factor=0.0), "factor"),
    (dict(threshold=0.9, factor=1.0), "threshold or factor"), (dict(cache="triple"), "cache"),
    (dict(seed=-1), "seed"), (dict(stepz=3), "unknown sampler option"), (dict(steps="x"), "steps"),
])
def test_bad_options_name_the_field(changes, field):
    with pytest.raises(GenerationError, match=field):
        SamplerOptions().replace(**changes)


def test_from_dict_reads_strings_presets_and_round_trips():
    o = SamplerOptions.from_dict({"preset": "fast", "gen_length": "64", "early_exit": "true", "seed": "3"})
    assert (o.threshold, o.cache, o.gen_length, o.early_exit, o.seed) == (0.9, "dual", 64, True, 3)
    assert SamplerOptions.from_dict(o.to_dict()) == o
    assert SamplerOptions.from_dict({"cache": "none", "steps": "None"}) == SamplerOptions()
    with pytest.raises(GenerationError, match="unknown sampler preset 'fastest'"):
        SamplerOptions.from_dict({"preset": "fastest"})


def test_presets():
    assert set(SAMPLER_PRESETS) >= {"reference", "fast", "quality"}
    ref = preset("reference")  # LLaDA generate.py's signature defaults
    assert (ref.gen_length, ref.num_steps, ref.block_size) == (128, 128, 128)
    assert preset("quality").num_steps == preset("quality").gen_length  # one token per step
    assert preset("fast").replace(threshold=0.5).threshold == 0.5  # an explicit option wins


def test_fitted_rounds_a_requested_length():
    o = SamplerOptions(steps=64, block_length=32)
    assert o.fitted(50).explicit().to_dict() | {} == o.replace(gen_length=64, steps=64).explicit().to_dict()
    assert o.fitted(10).block_size == 10 and o.fitted(10).num_steps % o.fitted(10).num_blocks == 0
    assert SamplerOptions().fitted(8, steps=8, block_length=4).to_dict()["steps"] == 8
    with pytest.raises(GenerationError, match="steps"):
        SamplerOptions().fitted(8, steps=0)


# ---- llada.sample picks the sampler from the model ----------------------------------------------------------------

def _model(tok, causal: bool) -> LLaDAModel:
    torch.manual_seed(1 if causal else 0)
    model = LLaDAModel(model_preset("debug", causal=causal, **config_ids(tok))).eval()
    with torch.no_grad():  # larger weights than the init, so that answers depend on the prompt
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    root = tmp_path_factory.mktemp("api")
    for name, causal in (("diffusion", False), ("ar", True)):
        llada.save(root / name, _model(tok, causal), tok)
    return {"diffusion": root / "diffusion", "ar": root / "ar"}


@pytest.fixture(scope="module")
def bundles(dirs):
    return {k: llada.load(v, device="cpu") for k, v in dirs.items()}


def _chat_ids(tok, messages):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def _ar_answer(bundle, messages, gen_length=8) -> str:
    """The reference: generate_autoregressive on the chat prompt, decoded up to the first stop."""
    ids = torch.tensor([_chat_ids(bundle.tokenizer, messages)])
    row = generate_autoregressive(bundle.model, ids, gen_length=gen_length).responses[0].tolist()
    stops = bundle.model.config.roles.stops
    row = row[: next((k for k, t in enumerate(row) if t in stops), len(row))]
    text = bundle.tokenizer.decode(row, skip_special_tokens=True).strip()
    assert text  # the tiny model says something, so the comparisons are not "" == ""
    return text


def test_sample_on_a_causal_model_decodes_left_to_right(bundles):
    b = bundles["ar"]
    ids = torch.tensor([_chat_ids(b.tokenizer, [{"role": "user", "content": "the cat"}])])
    out = sample(b.model, ids, SamplerOptions(gen_length=8, steps=8, block_length=8))
    assert torch.equal(out.sequences, generate_autoregressive(b.model, ids, gen_length=8).sequences)
    # streamed like the reverse process: one more position filled per step, left to right (the
    # canvas is the sampler's buffer, so each state is read before the next step)
    masks, finals = [], []
    for s in sample_steps(b.model, ids, gen_length=8):
        masks.append(int((s.canvas[0, ids.shape[1]:] == b.model.config.roles.mask).sum()))
        finals.append(s.final)
    assert finals[-1] and not any(finals[:-1])
    assert masks[:-1] == list(range(7, 8 - len(masks), -1)) and masks[-1] == 0


def test_sample_on_a_diffusion_model_runs_the_reverse_process(bundles):
    b = bundles["diffusion"]
    ids = torch.tensor([_chat_ids(b.tokenizer, [{"role": "user", "content": "the cat"}])])
    out = sample(b.model, ids, gen_length=8, steps=4, block_length=4)
    assert out.stats.steps == 4 and out.stats.full_forwards == 4  # 2 tokens per step, not 8 AR steps
    seen = []
    sample(b.model, ids, gen_length=8, steps=4, block_length=4, callback=lambda s: seen.append(s.step))
    assert seen == [0, 1, 2, 3]


# ---- every surface, the same answer --------------------------------------------------------------------------

QUESTION = "what is two plus two"
SAMPLED = {"steps": 8, "block_length": 4, "temperature": 1.0, "remasking": "random"}


def _cli_answer(model_dir, seed: int) -> str:
    args = ["generate", QUESTION, "--model", str(model_dir), "--device", "cpu", "--gen_length", "8", "--seed", str(seed)]
    for k, v in SAMPLED.items():
        args += [f"--{k}", str(v)]
    assert main(args) == 0
    return args


def _server_answer(bundle, body: dict) -> str:
    from fastapi.testclient import TestClient

    from llada.serve.app import create_app

    with TestClient(create_app(SimpleNamespace(model=bundle.model, tokenizer=bundle.tokenizer))) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], **body})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def _lm_eval_answer(model_dir, tok, **model_args) -> str:
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM

    lm = LLaDAEvalLM(str(model_dir), device="cpu", **model_args)
    context = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                      add_generation_prompt=True)
    req = Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 8}), 0)
    return lm.generate_until([req], disable_tqdm=True)[0]


@pytest.mark.parametrize("seed", [5, 6])
def test_cli_server_and_lm_eval_give_the_same_sample(dirs, bundles, capsys, seed):
    b = bundles["diffusion"]
    _cli_answer(dirs["diffusion"], seed)
    cli = capsys.readouterr().out.strip()
    server = _server_answer(b, {"max_tokens": 8, "seed": seed, **SAMPLED}).strip()
    harness = _lm_eval_answer(dirs["diffusion"], b.tokenizer, seed=seed, **SAMPLED).strip()
    library = sample_text(b.model, b.tokenizer, QUESTION, SamplerOptions(gen_length=8, seed=seed, **SAMPLED))[0]
    assert cli == server == harness == library and library
    other = sample_text(b.model, b.tokenizer, QUESTION, SamplerOptions(gen_length=8, seed=seed + 100, **SAMPLED))[0]
    assert other != library  # the seed decides the sample: the equality above is not vacuous


def test_presets_by_name_on_every_surface(dirs, bundles, capsys):
    b = bundles["diffusion"]
    want = sample_text(b.model, b.tokenizer, QUESTION, preset("fast").replace(gen_length=8, block_length=4))[0]
    assert want
    assert main(["generate", QUESTION, "--model", str(dirs["diffusion"]), "--device", "cpu", "--preset", "fast",
                 "--gen_length", "8", "--block_length", "4"]) == 0
    assert capsys.readouterr().out.strip() == want
    assert _server_answer(b, {"preset": "fast", "max_tokens": 8, "block_length": 4}).strip() == want
    assert _lm_eval_answer(dirs["diffusion"], b.tokenizer, preset="fast", block_length=4).strip() == want


# ---- the autoregressive baseline through every surface ---------------------------------------------------------

def test_ar_model_through_generate(dirs, bundles, capsys):
    assert main(["generate", QUESTION, "--model", str(dirs["ar"]), "--device", "cpu", "--gen_length", "8"]) == 0
    assert capsys.readouterr().out.strip() == _ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])


def test_ar_model_through_chat(dirs, bundles, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTION + "\n"))
    assert main(["chat", "--model", str(dirs["ar"]), "--device", "cpu", "--gen_length", "8"]) == 0
    replies = re.findall(r"llada> (.*)\n", capsys.readouterr().out)
    assert replies == [_ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])]


def test_ar_model_through_serve(bundles):
    want = _ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])
    assert _server_answer(bundles["ar"], {"max_tokens": 8}).strip() == want


def test_ar_model_through_lm_eval(dirs, bundles):
    want = _ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])
    assert _lm_eval_answer(dirs["ar"], bundles["ar"].tokenizer).strip() == want


def test_readme_lists_every_option_and_preset():
    from pathlib import Path

    from llada.sampling.options import markdown_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert markdown_table() in readme  # regenerate the README's table from SamplerOptions when this fails


# ---- ids that are not text are never committed ----------------------------------------------------------------

class Favouring(torch.nn.Module):
    """The same model with +`boost` on the logit of `token` everywhere (uncached and cached paths)."""

    def __init__(self, model, token: int, boost: float = 50.0):
        super().__init__()
        self.inner, self.token, self.boost, self.config = model, token, boost, model.config

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def _bias(self, logits):
        logits = logits.clone()
        logits[..., self.token] += self.boost
        return logits

    def forward(self, *a, **k):
        return self._bias(self.inner(*a, **k))

    def forward_kv(self, *a, **k):
        logits, kv = self.inner.forward_kv(*a, **k)
        return self._bias(logits), kv


MODES = [dict(), dict(threshold=0.5), dict(factor=1.0), dict(cache="prefix"), dict(cache="dual", threshold=0.5),
         dict(temperature=1.0, seed=0), dict(cfg_scale=1.0)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [False, True])
def test_the_mask_id_and_padded_rows_are_never_committed(mode, causal):
    torch.manual_seed(0)
    cfg = model_preset("debug", vocab_size=64, embedding_size=80, mask_token_id=63, eos_token_id=62,
                       pad_token_id=62, bos_token_id=61, eot_token_id=60, causal=causal)
    base = LLaDAModel(cfg).eval()
    prompt = torch.randint(0, 55, (2, 5))
    for token in (63, 67):  # the mask id, then an id past vocab_size in the padded embedding rows
        out = sample(Favouring(base, token), prompt, SamplerOptions(gen_length=8, steps=8, block_length=4, **mode))
        response = out.responses
        assert not (response == 63).any() and (response < 64).all(), (token, response)
    # and the boost is strong enough to matter: without the rule the favoured id would be everywhere
    assert (Favouring(base, 50)(prompt).argmax(-1) == 50).all()


def test_right_padded_prompts_answer_as_alone(bundles):
    """A tokenizer padding on the right puts pad slots between prompt and answer; sample re-aligns."""
    b = bundles["diffusion"]
    tok = b.tokenizer
    short, long = tok("the cat").input_ids, tok("what is two plus two and a dog ran").input_ids
    pad = b.model.config.roles.pad
    ids = torch.full((2, len(long)), pad)
    mask = torch.zeros_like(ids)
    ids[0, :len(short)], mask[0, :len(short)] = torch.tensor(short), 1  # padded on the right
    ids[1], mask[1] = torch.tensor(long), 1
    opts = SamplerOptions(gen_length=8, steps=8, block_length=4)
    alone = sample(b.model, torch.tensor([short]), opts).responses[0]
    batched = sample(b.model, ids, opts, attention_mask=mask).responses[0]
    assert torch.equal(batched, alone)
    # the reference for the claim: taken as given, the pad slots would change the answer
    from llada.sampling.core import diffusion_steps
    *_, raw = diffusion_steps(b.model, ids, opts, mask)
    assert not torch.equal(raw.canvas[0, ids.shape[1]:], alone)


def test_lm_eval_answer_holds_at_most_max_gen_toks(dirs, bundles):
    """max_gen_toks 5 with blocks of 4 samples 8 tokens; the answer is cut back to the 5 asked for."""
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM
    from llada.sampling.text import decode_response

    b = bundles["diffusion"]
    stops = b.model.config.roles.stops
    opts = SamplerOptions(gen_length=8, block_length=4, seed=1234)  # what max_gen_toks 5 is fitted to
    contexts = [c for c in ("the cat sat", "a dog ran", "four is", "what is two", "the mat", "the park")
                if not set(sample(b.model, torch.tensor([b.tokenizer(c).input_ids]), opts)
                           .responses[0, :6].tolist()) & set(stops)]  # no stop before the cut: it matters
    assert contexts
    lm = LLaDAEvalLM(str(dirs["diffusion"]), device="cpu", block_length=4)
    reqs = [Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": 5}), 0) for c in contexts]
    for context, got in zip(contexts, lm.generate_until(reqs, disable_tqdm=True), strict=True):
        full = sample(b.model, torch.tensor([b.tokenizer(context).input_ids]), opts).responses[0]
        assert got == decode_response(b.tokenizer, full[:5], stops)
        assert decode_response(b.tokenizer, full, stops) != got  # the rounding up was cut back


# ---- lengths a model cannot use are refused on every surface --------------------------------------------------

@pytest.mark.parametrize("changes,needle", [
    (dict(gen_length=32, block_length=32, steps=10**9), "steps (1000000000) must be at most gen_length (32)"),
    (dict(steps=256), "steps (256) must be at most gen_length (128)"),
    (dict(block_causal=True, gen_length=8, steps=9), "steps (9) must be at most gen_length (8)"),
    (dict(max_post_steps=10**9), "max_post_steps must be an integer in 0..1024, got 1000000000"),
    (dict(max_post_steps="1e9"), "max_post_steps must be an integer in 0..1024, got 1000000000"),
])
def test_more_steps_than_positions_are_refused(changes, needle):
    """A step decodes at least one position: steps above gen_length ran 10**9 steps (a hang); the
    editing steps of a block are capped (LLaDA 2.1 uses 16)."""
    with pytest.raises(GenerationError, match=re.escape(needle)):
        SamplerOptions().replace(**changes)
    with pytest.raises(GenerationError, match=re.escape(needle)):
        SamplerOptions.from_dict(changes)


def test_the_reference_preset_takes_any_length_and_fitting_caps_steps():
    """`--preset reference --gen_length 64` (one token per step) and a length asked for below the
    options' steps (a request's max_tokens, lm-eval's max_gen_toks, max_new_tokens) still work:
    the steps are capped at one per position, which at temperature 0 gives the same tokens."""
    assert SamplerOptions.from_dict({"preset": "reference", "gen_length": 64}).num_steps == 64
    o = SamplerOptions(gen_length=256, steps=256, block_length=32)
    assert (o.fitted(16).gen_length, o.fitted(16).num_steps) == (16, 16)
    assert SamplerOptions(block_causal=True, steps=64, gen_length=64).fitted(8).num_steps == 8


def test_a_prompt_and_answer_longer_than_the_model_is_one_check(bundles):
    """`SamplerOptions.check_room` is the one home of the length check `sample` (CLI, lm-eval) and the server use."""
    o = SamplerOptions(gen_length=8, block_length=8)
    limit = bundles["diffusion"].model.config.max_sequence_length
    o.check_room(limit - 8, limit)
    with pytest.raises(GenerationError, match=f"prompt \\({limit - 7} tokens\\) \\+ gen_length \\(8\\)"):
        o.check_room(limit - 7, limit)


def test_cli_refuses_steps_above_gen_length_at_once(dirs, capsys):
    """`llada generate --steps 1000000000 --gen_length 32` hung; now one line, exit 2."""
    rc = main(["generate", QUESTION, "--model", str(dirs["diffusion"]), "--device", "cpu", "--steps", "1000000000",
               "--gen_length", "32", "--block_length", "32"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "steps (1000000000) must be at most gen_length (32)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("entry,needle", [
    ({"steps": 10**9}, "steps (1000000000) must be at most gen_length (128)"),
    ({"max_post_steps": 10**9}, "max_post_steps must be an integer in 0..1024"),
    ({"do_sample": "false", "temperature": 5}, "do_sample must be true or false, got 'false'"),
    ({"do_sample": 1, "temperature": 5}, "do_sample must be true or false, got 1"),
])
def test_generation_config_values_are_typed_and_bounded_at_load(dirs, tmp_path, entry, needle):
    """generation_config.json "steps": 1e9 made sample(m, ids, load(d).options) hang; "do_sample":
    "false" (a string: truthy) turned sampling on at temperature 5."""
    import json
    import shutil

    from llada.errors import CheckpointError

    root = tmp_path / "m"
    shutil.copytree(dirs["diffusion"], root)
    path = root / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **entry}))
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        llada.load(root)


def test_do_sample_false_and_true_still_read_as_before(dirs, tmp_path):
    import json
    import shutil

    root = tmp_path / "m"
    shutil.copytree(dirs["diffusion"], root)
    path = root / "generation_config.json"
    base = json.loads(path.read_text())
    for do_sample, temperature, want in ((False, 5, 0.0), (True, 0.7, 0.7), (True, None, 1.0)):
        path.write_text(json.dumps({**base, "do_sample": do_sample, "temperature": temperature}))
        assert llada.load(root, tokenizer=False).options.temperature == want


# ---- sample() names its arguments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,needle", [
    ((torch.tensor([[1, 2, 3]]), {"gen_length": 4, "block_length": 4}), {},
     "options must be a SamplerOptions (SamplerOptions.from_dict(...) reads a mapping, preset(name) a preset), got dict"),
    ((torch.tensor([[1, 2, 3]]), "fast"), {}, "options must be a SamplerOptions"),
    ((torch.tensor([[1, 2, 3]]),), dict(gen_length=4, block_length=4, temperature=1.0, generator=5),
     "generator must be a torch.Generator or None, got int"),
    ((torch.zeros(0, 3, dtype=torch.long),), dict(gen_length=4, block_length=4),
     "input_ids has no rows (shape (0, 3)); give at least one prompt"),
    ((torch.tensor([[1, 2, 3]], device="meta"),), dict(gen_length=4, block_length=4),
     "input_ids is on the meta device, which holds no values"),
    ((torch.tensor([[1, 2, 3]]),), dict(gen_length=4, block_length=4, attention_mask=torch.ones(1, 3, device="meta")),
     "attention_mask is on the meta device, which holds no values"),
])
def test_sample_names_arguments_of_the_wrong_kind(bundles, args, kwargs, needle):
    """Each was an AttributeError, RuntimeError or NotImplementedError from deep inside."""
    with pytest.raises(GenerationError, match=re.escape(needle)):
        sample(bundles["diffusion"].model, *args, **kwargs)


# ---- chat templates and tokenizers from a model directory, on every surface -----------------------------------

# Pass the load check (which renders "Hello") and run away on anything else: the probe's loops, a value past the bound.
SLEEPERS = {
    "loops": "{% if messages[0]['content'] != 'Hello' %}{% for i in range(100000) %}{% for j in range(100000) %}"
             "{% endfor %}{% endfor %}{% endif %}",
    "memory": "{% if messages[0]['content'] != 'Hello' %}{{ 'x' * 1500000 }}{% endif %}",
}
PANIC_TEXT = "a" * 40 + "!"  # `(a|aa)+$` gives up on it: the Rust tokenizer panics


def _copy_with(dirs, tmp_path, template: str | None = None, normalizer: str | None = None):
    import json
    import shutil

    root = tmp_path / "m"
    shutil.copytree(dirs["diffusion"], root)
    if template is not None:
        path = root / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "chat_template": template + CHAT_TEMPLATE}))
    if normalizer is not None:
        path = root / "tokenizer.json"
        data = json.loads(path.read_text())
        data["normalizer"] = {"type": "Replace", "pattern": {"Regex": normalizer}, "content": "b"}
        path.write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("name", SLEEPERS)
def test_generate_renders_the_chat_template_within_its_budget(dirs, tmp_path, capsys, name):
    """`llada generate --model DIR hi` with such a template ran > 40 s (or built what it liked); now one line, exit 2."""
    root = _copy_with(dirs, tmp_path, template=SLEEPERS[name])
    rc = main(["generate", "hi", "--model", str(root), "--device", "cpu", "--gen_length", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "chat template" in err and len(err.splitlines()) == 1, err


def test_a_tokenizer_that_panics_is_one_line_on_generate(dirs, tmp_path, capsys):
    """A normalizer regex that gives up raised pyo3's PanicException (a BaseException) out of `llada generate`."""
    root = _copy_with(dirs, tmp_path, normalizer="(a|aa)+$")
    rc = main(["generate", PANIC_TEXT, "--model", str(root), "--device", "cpu", "--chat", "false", "--gen_length", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "the tokenizer fails on this text" in err and len(err.splitlines()) == 1, err
    bundle = llada.load(root)
    with pytest.raises(llada.errors.CheckpointError, match="tokenizer fails"):
        sample_text(bundle.model, bundle.tokenizer, PANIC_TEXT, SamplerOptions(gen_length=8))


def test_a_tokenizer_that_panics_on_plain_text_is_refused_at_load(dirs, tmp_path):
    """Encoding the load check's one-message conversation is a cheap check: a tokenizer that fails
    on "Hello" is refused where the model is opened."""
    root = _copy_with(dirs, tmp_path, normalizer="(" + "|".join(["."] * 20) + ")*l$")
    with pytest.raises(llada.errors.CheckpointError, match="tokenizer fails on this text") as info:
        llada.load(root)
    assert "\n" not in str(info.value)
