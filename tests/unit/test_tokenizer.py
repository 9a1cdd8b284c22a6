"""Byte-level BPE with LLaDA's special tokens and chat format."""

from __future__ import annotations

import pytest

from llada.tokenizer import config_ids, special_token_ids, train_tokenizer

CORPUS = ["the cat sat on the mat", "Ünïcödé text ☃ and emoji 🙂", "numbers 12 + 30 = 42"] * 50


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.mark.parametrize("text", ["hello  world\n\tx", "Ünïcödé ☃ 🙂 — never seen: ЖЖЖ", " leading space", ""])
def test_round_trip(tok, text):
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_special_ids_and_config(tok):
    ids = special_token_ids(tok)
    assert tok.convert_ids_to_tokens(ids["mask"]) == "<|mdm_mask|>"
    assert tok.convert_ids_to_tokens(ids["eot"]) == "<|eot_id|>"
    assert ids["pad"] == ids["eos"] == tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = config_ids(tok)
    assert cfg["vocab_size"] == max(tok.get_vocab().values()) + 1 <= 300
    # special tokens are atomic: text containing them encodes them as single ids
    assert tok("<|eot_id|>", add_special_tokens=False).input_ids == [ids["eot"]]


def test_chat_template_is_llada_format(tok):
    messages = [{"role": "user", "content": " hi there "}, {"role": "assistant", "content": "hello"}]
    expected = ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi there<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>")
    assert tok.apply_chat_template(messages, tokenize=False) == expected
    assert tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_save_and_reload_keeps_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.chat_template == tok.chat_template
    assert special_token_ids(again) == special_token_ids(tok)


def test_too_small_vocab():
    with pytest.raises(ValueError, match="at least 262"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_saved_tokenizer_config_opens_on_every_allowed_transformers(tok, tmp_path):
    """save_tokenizer writes what transformers 4.46 (the lowest pyproject.toml allows) reads as well
    as 5.x: the class by a name both have, the chat template inside tokenizer_config.json, 4.x's
    name for the extra special tokens; and it pads on the left and knows the model's length.
    (tests/unit/test_hf.py opens such a directory in an actual 4.46 install: pytest -m slow.)"""
    import json

    from transformers import PreTrainedTokenizerFast

    from llada.tokenizer import CHAT_TEMPLATE, save_tokenizer

    save_tokenizer(tok, tmp_path, model_max_length=256)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert saved["padding_side"] == "left" and saved["model_max_length"] == 256
    assert saved["chat_template"] == CHAT_TEMPLATE and not (tmp_path / "chat_template.jinja").exists()
    assert saved["additional_special_tokens"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert not isinstance(saved.get("extra_special_tokens"), list)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)  # the class named, loaded directly
    assert special_token_ids(again) == special_token_ids(tok)
    assert again.chat_template == CHAT_TEMPLATE and again.model_max_length == 256
    batch = again(["the cat", "the cat sat on the mat"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1  # pads on the left


def test_fresh_tokenizer_pads_on_the_left(tok):
    assert tok.padding_side == "left"


HELLO = [{"role": "user", "content": "Hello"}]


# each builds 100 MB to 1 GB at once (a single C-level operation, or an output that adds up)
HOSTILE = {
    "repeat content": "{% for m in messages %}{{ m['content'] * 2*10**7 }}{% endfor %}",
    "repeat literal": "{{ 'x' * 10**8 }}",
    "output adds up": "{% for i in range(10000) %}{{ 'x' * 20000 }}{% endfor %}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(27) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(27) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "center filter": "{{ 'x'|center(10**8) }}",
    "indent filter": "{{ 'a\nb'|indent(5*10**7, true)|length }}",
    "replace filter": "{{ ('a' * 10000)|replace('', 'b' * 10000)|length }}",
    "ljust method": "{{ 'x'.ljust(10**8)|length }}",
    "join method": "{{ ('y' * 100000).join(range(1000)|map('string'))|length }}",
    "percent format": "{{ '%100000000s' % 'x' }}",
    "format method": "{{ '{:>100000000}'.format('x')|length }}",
    "batch filter": "{{ [1]|batch(2*10**7, 'x')|list|length }}",
    "tojson indent": "{{ {'a': [[1]] * 100}|tojson(indent=10**6)|length }}",
    "to_bytes": "{{ (1).to_bytes(10**8, 'big')|length }}",
    "power": "{{ (7 ** (3 * 10**7)) % 10 }}",
}


# the probe's own (each 2 to 6 GB before the bound: not run unbounded)
PROBE = {
    "probe repeat content": "{% for m in messages %}{{ m['content'] * 10**9 }}{% endfor %}",
    "probe repeat literal": "{{ 'x' * 2*10**9 }}",
    "probe output adds up": "{% for i in range(100000) %}{{ 'x'*20000 }}{% endfor %}",
}


def _templated(tok, template: str):
    from llada.tokenizer import train_tokenizer as fresh

    t = fresh(CORPUS, vocab_size=300)
    t.chat_template = template
    return t


@pytest.mark.parametrize("name", [*HOSTILE, *PROBE])
def test_a_chat_template_is_refused_before_it_builds_much(tok, name):
    """A render is held to about a million characters per value and in its output: each of these
    stops with one line, having allocated a few MB (tracemalloc), not the 100 MB to 6 GB it asks for."""
    import tracemalloc

    from llada.errors import CheckpointError
    from llada.tokenizer import render_chat

    template = {**HOSTILE, **PROBE}[name]
    t = _templated(tok, template)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="chat template") as info:
            render_chat(t, HELLO)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"{peak / 2**20:.0f} MB"
    assert "characters" in str(info.value) and "\n" not in str(info.value), info.value


def test_templates_within_the_bound_render_as_plain_jinja_does(tok):
    """LLaDA's template and one using loops, namespaces, filters, `~`, `+`, `%` and format render
    exactly as jinja's own sandbox renders them; a long conversation is no problem."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from llada.tokenizer import CHAT_TEMPLATE, render_chat

    rich = ("{% set ns = namespace(n=0, sys='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
            "{% if m.role == 'system' %}{% set ns.sys = ns.sys ~ m.content|trim %}{% endif %}{% endfor %}"
            "{{ bos_token }}{{ '[%d turns]' % ns.n }}{{ '{}|{}'.format(ns.sys, messages|length) }}"
            "{% for m in messages %}{{ '<' + m.role + '>' }}{{ m.content|replace('cat', 'dog')|indent(2) }}"
            "{{ (m.content|wordcount * 3)|string|center(9) }}{{ m.content|tojson }}{% endfor %}"
            "{% if add_generation_prompt %}{{ ['<a>', '</a>']|join(' ') * 2 }}{% endif %}")
    long = [{"role": "system", "content": "be brief " * 3000}] + [
        {"role": ["user", "assistant"][i % 2], "content": f"the cat sat {i} " * 200} for i in range(40)]
    for template in (CHAT_TEMPLATE, rich):
        reference = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
        t = _templated(tok, template)
        for messages in (HELLO, long):
            want = reference.render(messages=messages, add_generation_prompt=True, bos_token=t.bos_token)
            assert render_chat(t, messages) == want


def test_the_bound_holds_inside_a_render_only(tok):
    """The same template renders unbounded outside `render_chat` (transformers' other users see no change)."""
    from llada.errors import CheckpointError
    from llada.tokenizer import render_chat

    t = _templated(tok, "{{ 'x' * 2*10**6 }}")
    with pytest.raises(CheckpointError, match="characters"):
        render_chat(t, HELLO)
    assert len(t.apply_chat_template(HELLO, tokenize=False)) == 2 * 10**6


def test_a_render_outside_the_sandbox_is_refused(tok, monkeypatch):
    """Should transformers stop compiling with the class render_chat installs, rendering fails closed."""
    import jinja2.sandbox
    from transformers.utils import chat_template_utils

    from llada import template_sandbox
    from llada.errors import CheckpointError
    from llada.tokenizer import CHAT_TEMPLATE, render_chat

    monkeypatch.setattr(template_sandbox, "install", lambda: None)
    monkeypatch.setattr(chat_template_utils, "ImmutableSandboxedEnvironment",
                        jinja2.sandbox.ImmutableSandboxedEnvironment)
    chat_template_utils._compile_jinja_template.cache_clear()
    try:
        with pytest.raises(CheckpointError, match="outside"):
            render_chat(_templated(tok, CHAT_TEMPLATE), HELLO)
    finally:
        chat_template_utils._compile_jinja_template.cache_clear()


def test_sft_renders_conversations_within_the_template_budget(tok):
    """SFT rendered with apply_chat_template directly: a template that passes the load check built
    what it liked on a data line. Now that line is one DataError naming it."""
    from llada.data.sft import render_all
    from llada.errors import DataError
    from llada.tokenizer import CHAT_TEMPLATE, check_chat_template

    t = _templated(tok, "{% if messages[0]['content'] != 'Hello' %}{{ 'x' * 1500000 }}{% endif %}" + CHAT_TEMPLATE)
    check_chat_template(t)  # the load check renders "Hello": it passes
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the cat"}]
    with pytest.raises(DataError, match="conversation 1 .*chat template builds a value of about 1,500,000 characters"):
        render_all(t, [conversation], max_tokens=64)


@pytest.mark.parametrize("texts,vocab_size", [
    (CORPUS, 300),  # little text: the role names would be spelled letter by letter
    (None, 400),  # the built-in world, a full vocabulary: the rarest merges make room
    (None, 2000),
])
def test_chat_roles_are_one_token_and_digits_one_each(texts, vocab_size):
    from llada.data.world import World
    from llada.tokenizer import CHAT_ROLES, render_chat

    tok = train_tokenizer(texts or World(0).pretrain_documents()[:3000], vocab_size=vocab_size)
    assert len(tok.get_vocab()) <= vocab_size
    messages = [{"role": role, "content": f"{role} asks 1237+45= 2024"} for role in CHAT_ROLES]
    text = render_chat(tok, messages)
    tokens = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    for role in CHAT_ROLES:
        header = ["<|start_header_id|>", role, "<|end_header_id|>"]
        assert any(tokens[i:i + 3] == header for i in range(len(tokens))), (role, tokens)
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits and all(len(t) == 1 for t in digits), digits  # "1237" is 1, 2, 3, 7
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_the_smallest_vocabulary_still_decodes_what_it_encodes():
    tok = train_tokenizer(CORPUS, vocab_size=262)
    assert len(tok.get_vocab()) == 262
    text = "<|start_header_id|>assistant<|end_header_id|>\n\nthe 42 cats"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
