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
from llada.tokenizer import config_ids, train_tokenizer

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
