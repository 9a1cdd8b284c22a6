"""Loading, packing and SFT rendering, on files the tests write."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llada.data.pretrain import load_texts, pack
from llada.data.sft import SFTCollator, load_conversations, render_conversation, to_messages
from llada.errors import DataError
from llada.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["alpha beta gamma delta", "what is two plus two", "four"] * 30, vocab_size=300)


def _docs(n=20):
    return [f"document number {i} says hello" for i in range(n)]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_local_formats(tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    if kind == "txt":
        path.write_text("\n\n".join(_docs()))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps({"text": d}) for d in _docs()))
    else:
        pd.DataFrame({"text": _docs()}).to_parquet(path)
    train, val = load_texts(str(path), split="train"), load_texts(str(path), split="validation")
    assert sorted(list(train["text"]) + list(val["text"])) == sorted(_docs())
    assert len(val) == 1


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        load_texts(str(tmp_path / "empty.txt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:2: the record has no 'text' field"):
        load_texts(str(bad))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="unsupported file type .csv"):
        load_texts(str(tmp_path / "*.csv"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl:2: not valid JSON"):
        load_texts(str(broken))


def test_pack_preserves_tokens_and_inserts_eos(tok):
    import datasets

    docs = _docs(50)
    packed = pack(tok, datasets.Dataset.from_dict({"text": docs}), seq_len=16)
    rows = packed["input_ids"]
    assert all(len(r) == 16 for r in rows)
    stream = [i for r in rows for i in r]
    expected = []
    for d in docs:
        expected += [tok.bos_token_id] + tok(d, add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert stream == expected[: len(stream)] and len(expected) - len(stream) < 16
    assert stream.count(tok.eos_token_id) >= len(docs) - 2


messages_strategy = st.lists(
    st.tuples(st.sampled_from(["alpha beta", "what is two", "gamma", " delta  "]),
              st.sampled_from(["four", "alpha gamma delta", "two plus"])), min_size=1, max_size=4)


@settings(max_examples=30, deadline=None)
@given(turns=messages_strategy, system=st.booleans())
def test_render_matches_template_and_marks_assistant_turns(tok, turns, system):
    messages = [{"role": "system", "content": "be brief"}] if system else []
    for q, a in turns:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    ids, mask = render_conversation(tok, messages)
    whole = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False).input_ids
    assert ids == whole + [tok.eos_token_id]
    # the response tokens, decoded, are exactly the assistant contents each closed by <|eot_id|>
    response = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert response == "".join(a.strip() + "<|eot_id|>" for _, a in turns) + "<|endoftext|>"


def test_collator_pads_with_learned_eos(tok):
    convs = [[{"role": "user", "content": "what is two"}, {"role": "assistant", "content": "four"}],
             [{"role": "user", "content": "alpha"}, {"role": "assistant", "content": "alpha gamma delta gamma"}]]
    rows = [dict(zip(("input_ids", "response_mask"), render_conversation(tok, c), strict=True)) for c in convs]
    batch = SFTCollator(tok.eos_token_id, seq_len=64)(rows)
    short = len(rows[0]["input_ids"])
    assert (batch["input_ids"][0, short:] == tok.eos_token_id).all()
    assert batch["response_mask"][0, short:].all()
    assert batch["attention_mask"].all()
    assert batch["prompt_lengths"][0] == rows[0]["response_mask"].index(True)
    with pytest.raises(DataError, match="raise --seq_len or set --truncation truncate"):
        SFTCollator(tok.eos_token_id, seq_len=5, truncation="error")(rows)
    c = SFTCollator(tok.eos_token_id, seq_len=5)
    assert c(rows)["input_ids"].shape[1] == 5 and c.truncated == 2


def test_sft_records_and_errors(tmp_path):
    assert to_messages({"prompt": "q", "response": "a"})[1] == {"role": "assistant", "content": "a"}
    with pytest.raises(DataError, match="no assistant turn"):
        to_messages({"messages": [{"role": "user", "content": "q"}]}, "f.jsonl:3")
    path = tmp_path / "chat.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
             for i in range(10)] + [{"instruction": "x", "output": "y"}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    train, val = load_conversations(str(path)), load_conversations(str(path), split="validation")
    assert len(train) + len(val) == 11
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"question": "?"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:2: the record has no 'messages or prompt or instruction' field \\(it has: question\\)"):
        load_conversations(str(bad))
    noassist = tmp_path / "noassist.jsonl"
    noassist.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match="noassist.jsonl:1: the conversation has no assistant turn"):
        load_conversations(str(noassist))


def test_builtin_sources():
    assert len(load_texts(None)) > 1000
    assert len(load_conversations(None)) > 1000


@pytest.mark.parametrize("kind", ["txt", "jsonl", "json"])
def test_non_utf8_bytes_are_named_by_file_and_line(tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    latin1 = "café".encode("latin-1")  # é is the single byte 0xe9, not UTF-8
    if kind == "txt":
        path.write_bytes(b"first document\n\nsecond " + latin1 + b"\n")
        line = 3
    elif kind == "jsonl":
        path.write_bytes(b'{"text": "ok"}\n{"text": "' + latin1 + b'"}\n')
        line = 2
    else:
        path.write_bytes(b'[\n{"text": "ok"},\n{"text": "' + latin1 + b'"}\n]\n')
        line = 3
    with pytest.raises(DataError, match=f"data.{kind}:{line}: not UTF-8 text \\(byte 0xe9 at column"):
        load_texts(str(path))


def test_a_text_that_is_not_a_string_is_named_by_file_and_line(tmp_path):
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": 5}) + "\n")
    with pytest.raises(DataError, match="data.jsonl:2: 'text' must be a string, got int 5"):
        load_texts(str(jsonl))
    listed = tmp_path / "data.json"
    listed.write_text(json.dumps([{"text": "ok"}, {"text": ["a", "list"]}]))
    with pytest.raises(DataError, match="data.json: record 2: 'text' must be a string, got list"):
        load_texts(str(listed))
    numbers = tmp_path / "data.parquet"
    pd.DataFrame({"text": [1, 2, 3]}).to_parquet(numbers)
    with pytest.raises(DataError, match="data.parquet: the 'text' column holds int64 values, not text"):
        load_texts(str(numbers))


def test_sft_records_with_bad_bytes_or_types_are_named_by_file_and_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "user", "content": 7},
                                                                      {"role": "assistant", "content": "a"}]}) + "\n")
    with pytest.raises(DataError, match="chat.jsonl:2: message 1 must have a string role and content, got str and int"):
        load_conversations(str(chat))
    chat.write_bytes(json.dumps(good).encode() + b'\n{"prompt": "\xff", "response": "a"}\n')
    with pytest.raises(DataError, match="chat.jsonl:2: not UTF-8 text \\(byte 0xff at column 13\\)"):
        load_conversations(str(chat))


def test_a_conversation_that_opens_with_the_assistant_is_named_by_file_and_line(tmp_path):
    """Its response would have no prompt before it (the template cannot render an empty one)."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps({"messages": m}) for m in [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]]) + "\n")
    with pytest.raises(DataError, match="chat.jsonl:2: the conversation opens with an assistant turn"):
        load_conversations(str(chat))


@pytest.mark.parametrize("kind", ["sft jsonl", "text jsonl", "text json"])
def test_a_line_nested_too_deep_is_named_by_file_and_line(tmp_path, kind):
    deep = "[" * 100_000 + "]" * 100_000
    if kind == "text json":
        path = tmp_path / "data.json"
        path.write_text(f'[{{"text": "ok"}}, {{"text": {deep}}}]\n')
        where = "data.json"
    else:
        path = tmp_path / "data.jsonl"
        path.write_text(json.dumps({"text": "ok", "prompt": "q", "response": "a"}) + "\n" + deep + "\n")
        where = "data.jsonl:2"
    with pytest.raises(DataError, match=f"{where}: JSON nested too deeply"):
        load_conversations(str(path)) if kind == "sft jsonl" else load_texts(str(path))


long_text = st.integers(1, 300).map(lambda n: "alpha beta gamma " * n)


@settings(max_examples=40, deadline=None)
@given(turns=st.lists(st.tuples(st.one_of(st.sampled_from(["what is two", " delta  "]), long_text),
                                st.one_of(st.sampled_from(["four", "two plus"]), long_text)), min_size=1, max_size=6),
       seq_len=st.integers(2, 80))
def test_rendering_up_to_seq_len_keeps_what_the_collator_keeps(tok, turns, seq_len):
    """Rendered with max_tokens=seq_len (messages cut to what seq_len + 1 tokens can hold, those past
    them left out), a conversation has the whole rendering's first seq_len ids and response marks, and
    is longer than seq_len exactly when the whole is (the collator counts it as truncated)."""
    messages = [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    whole_ids, whole_mask = render_conversation(tok, messages)
    ids, mask = render_conversation(tok, messages, max_tokens=seq_len)
    assert ids[:seq_len] == whole_ids[:seq_len] and mask[:seq_len] == whole_mask[:seq_len]
    assert (len(ids) > seq_len) == (len(whole_ids) > seq_len)


def test_a_20_mb_line_costs_memory_by_seq_len_not_by_its_size(tok, tmp_path):
    """One 20 MB JSONL line took 5.3 GB at --seq_len 64 (its whole text rendered and tokenized). The SFT
    data now renders each conversation only as far as seq_len tokens reach: at --seq_len 64 and at most
    19 characters a token (this tokenizer's longest entry) that is about 1,200 characters a message, so
    the Python memory rendering takes stays under 2 MB, a tenth of the line (whose text the loaded
    conversation holds once, before and after), whatever the line's length."""
    import tracemalloc
    from types import SimpleNamespace

    from llada.training.data import Conversations

    big = "alpha beta gamma delta " * 900_000  # 20.7 MB
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                       {"role": "assistant", "content": a}]})
                              for q, a in [("what is two", big), (big, "four"), ("what is two", "four")]) + "\n")
    data = Conversations(SimpleNamespace(data=str(path), seq_len=64, seed=0, world=None, truncation="truncate",
                                         padding="longest", chat_template=True))
    data.load()
    tracemalloc.start()
    try:
        data.prepare(tok)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"rendering took {peak / 1e6:.1f} MB"
    # the long answer stays longer than seq_len (counted as truncated); the long question fills seq_len (dropped)
    assert sorted(len(r["input_ids"]) > 64 for r in data.train + data.eval) == [False, True]


@pytest.mark.parametrize("record", [{"prompt": {"a": [1, 2]}, "response": [3, 4]}, {"prompt": float("nan"), "response": "a"},
                                    {"prompt": "q", "response": 4}, {"instruction": ["q"], "output": "a"}],
                         ids=["object and list", "NaN", "number", "list instruction"])
def test_a_prompt_or_response_that_is_not_a_string_is_named_by_file_and_line(tmp_path, record):
    """Such values were str()-ed and trained on ("{'a': [1, 2]}", "nan")."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"chat.jsonl:2: .* must be a string, got ") as refused:
        load_conversations(str(chat))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("kind", ["text", "sft"])
def test_a_directory_named_like_a_data_file_is_not_read_as_one(tmp_path, kind):
    data = tmp_path / "data"
    (data / "sub.jsonl").mkdir(parents=True)
    records = [{"text": d, "prompt": d, "response": "a"} for d in _docs()]
    (data / "part.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    if kind == "text":
        assert len(load_texts(str(data))) + len(load_texts(str(data), split="validation")) == len(_docs())
    else:
        assert len(load_conversations(str(data))) + len(load_conversations(str(data), split="validation")) == 20


class _Spy:
    """A tokenizer that records the characters of each call."""

    def __init__(self, tok):
        self.tok, self.calls = tok, []
        self.eos_token_id, self.bos_token_id = tok.eos_token_id, tok.bos_token_id

    def get_vocab(self):
        return self.tok.get_vocab()

    def __call__(self, texts, **kw):
        self.calls.append(sum(map(len, texts if isinstance(texts, list) else [texts])))
        return self.tok(texts, **kw)


def test_packing_a_long_document_tokenizes_it_in_pieces_bounded_by_seq_len(tok):
    """One 28 MB line of a .txt took 5.5 GB at --seq_len 32: it was tokenized whole. Each tokenizer call
    now covers at most max(seq_len, 1024) tokens' worth of characters, cut where a run of whitespace
    starts (where the byte-level pre-tokenizer splits anyway), so the ids are those of the whole."""
    import datasets

    from llada.data.pretrain import chars_per_token

    long_doc = " ".join(f"alpha{i % 97} beta  gamma\n\ndelta" for i in range(20_000))  # 610,000 characters
    texts = datasets.Dataset.from_dict({"text": ["short one", long_doc, "what is two"]})
    spy = _Spy(tok)
    packed = pack(spy, texts, 32)
    bound = 1024 * chars_per_token(tok)
    assert max(spy.calls) <= bound < len(long_doc) and len(spy.calls) > len(long_doc) // bound
    whole = [ids for t in texts["text"] for ids in ([tok.bos_token_id] if tok.bos_token_id is not None else [])
             + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert [i for row in packed["input_ids"] for i in row] == whole[: len(whole) // 32 * 32]


def test_without_the_chat_template_a_turn_is_bos_prompt_then_answer_and_eos(tok):
    """chat=False: what sample_text(..., chat=False) asks (BOS and the prompt), then the answer and
    EOS as the response; rows are far shorter than the templated ones."""
    from llada.data.sft import render_all

    conversation = [{"role": "user", "content": "37+45="}, {"role": "assistant", "content": "82"}]
    (plain,) = render_all(tok, [conversation], max_tokens=64, chat=False)
    prompt = [tok.bos_token_id] + tok("37+45=", add_special_tokens=False)["input_ids"]
    answer = tok("82", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert plain["input_ids"] == prompt + answer
    assert plain["response_mask"] == [False] * len(prompt) + [True] * len(answer)
    (templated,) = render_all(tok, [conversation], max_tokens=64)
    assert len(templated["input_ids"]) > len(plain["input_ids"]) + 5
    two_turns = conversation + [{"role": "user", "content": "and 1+1="}, {"role": "assistant", "content": "2"}]
    with pytest.raises(DataError, match=r"conversation 2 \(opening '37\+45='\): without the chat template a "
                                        r"conversation must be one user and one assistant turn"):
        render_all(tok, [conversation, two_turns], chat=False)
