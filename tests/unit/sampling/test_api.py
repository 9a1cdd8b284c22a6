"""The one entry point `llada.sample`: the model choosing its own sampler, what is never committed,
padded rows, lengths and arguments refused, generation_config.json and the chat template at load.
(tests/integration/test_surfaces.py checks that every surface gives the same answer.)"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT
from support.api import _chat_ids, _copy_with

import llada
from llada.config import preset as model_preset
from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions, sample, sample_steps
from llada.sampling.autoregressive import generate_autoregressive


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


def test_readme_lists_every_option_and_preset():

    from llada.sampling.options import markdown_table

    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme  # regenerate the README's table from SamplerOptions when this fails


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


def test_a_prompt_and_answer_longer_than_the_model_is_one_check(bundles):
    """`SamplerOptions.check_room` is the one home of the length check `sample` (CLI, lm-eval) and the server use."""
    o = SamplerOptions(gen_length=8, block_length=8)
    limit = bundles["diffusion"].model.config.max_sequence_length
    o.check_room(limit - 8, limit)
    with pytest.raises(GenerationError, match=f"prompt \\({limit - 7} tokens\\) \\+ gen_length \\(8\\)"):
        o.check_room(limit - 7, limit)


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


def test_a_tokenizer_that_panics_on_plain_text_is_refused_at_load(dirs, tmp_path):
    """Encoding the load check's one-message conversation is a cheap check: a tokenizer that fails
    on "Hello" is refused where the model is opened."""
    root = _copy_with(dirs, tmp_path, normalizer="(" + "|".join(["."] * 20) + ")*l$")
    with pytest.raises(llada.errors.CheckpointError, match="tokenizer fails on this text") as info:
        llada.load(root)
    assert "\n" not in str(info.value)
