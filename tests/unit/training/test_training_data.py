"""Training data: small corpora, short ones, SFT prompts and the tokenizer left in out_dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.train import _cfg

from llada.errors import UserError
from llada.training.trainer import Trainer


def _notes(n: int) -> list[str]:
    return [f"Note {i}: the lamp in room {i} is {'red' if i % 2 else 'blue'}." for i in range(n)]


def test_a_small_corpus_trains_with_a_note_instead_of_a_held_out_loss(tmp_path, caplog):
    """40 short documents: the one held out packs to no seq_len block. The run trains, says there is
    no held-out loss, and logs none (no NaN)."""
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in _notes(40)))
    cfg = _cfg(tmp_path, path, max_steps=2, eval_every=1)
    with caplog.at_level("WARNING", logger="llada"):
        Trainer(cfg).fit()
    assert "reports no held-out loss" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and not any("eval_loss" in r for r in rows)


def test_a_corpus_shorter_than_one_block_says_how_much_is_needed(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Note 0: the lamp is blue.\n\nNote 1: the lamp is red.")  # well under 32 tokens
    with pytest.raises(UserError, match=r"too short for one --seq_len 32 block: 1 document\(s\), \d+ tokens, "
                                        r"and at least 32 tokens are needed"):
        Trainer(_cfg(tmp_path, path))


def _chat(prompt_words: int, i: int) -> dict:
    prompt = " ".join(["tell me about the lamp"] * prompt_words)
    return {"messages": [{"role": "user", "content": f"{i}: {prompt}"},
                         {"role": "assistant", "content": f"lamp {i} is red"}]}


def test_sft_refuses_prompts_that_fill_seq_len(tmp_path):
    """Every prompt longer than seq_len: no response token is left, which used to train at loss 0."""
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(_chat(20, i)) + "\n" for i in range(12)))
    with pytest.raises(UserError, match=r"every training conversation's prompt fills --seq_len 32 \(the shortest "
                                        r"prompt has \d+ tokens\), so no response token is left to learn"):
        Trainer(_cfg(tmp_path, path, stage="sft"))


def test_sft_drops_the_conversations_with_nothing_to_learn_and_counts_them(tmp_path, caplog):
    from llada.data.sft import load_conversations

    path = tmp_path / "chat.jsonl"
    chats = [_chat(20 if i % 3 == 0 else 1, i) for i in range(30)]
    path.write_text("".join(json.dumps(c) + "\n" for c in chats))
    train = load_conversations(str(path), split="train")
    long = sum(len(c[0]["content"]) > 100 for c in train)
    with caplog.at_level("WARNING", logger="llada"):
        trainer = Trainer(_cfg(tmp_path, path, stage="sft", seq_len=32))
    assert f"dropped {long} of {len(train)} training conversation(s) whose prompt fills --seq_len 32" in caplog.text
    assert len(trainer.data.train) == len(train) - long
    m = trainer.train_step()
    assert m["loss"] > 0 and m["grad_norm"] > 0


def test_a_tokenizer_left_in_out_dir_is_reused_only_when_whole_and_trained_for_these_settings(tmp_path, corpus,
                                                                                             caplog, monkeypatch):
    """A failed run leaves out_dir/tokenizer (and no checkpoint). The next run reuses it for the same
    settings, trains a new one when --vocab_size changed or it is damaged (saying which), and a kill
    while it is saved leaves no half-written tokenizer behind."""
    from transformers import PreTrainedTokenizerFast

    tok_dir = tmp_path / "run" / "tokenizer"
    first = Trainer(_cfg(tmp_path, corpus)).tokenizer
    with caplog.at_level("WARNING", logger="llada"):
        assert Trainer(_cfg(tmp_path, corpus)).tokenizer.get_vocab() == first.get_vocab()
        assert "tokenizer" not in caplog.text
        bigger = Trainer(_cfg(tmp_path, corpus, vocab_size=400)).tokenizer
    assert "was trained for other settings (--vocab_size 300, now 400); no checkpoint uses it, so a new " \
           "tokenizer is trained in its place" in caplog.text
    assert len(bigger) == 400 and len(first) == 300
    text = (tok_dir / "tokenizer.json").read_text()
    (tok_dir / "tokenizer.json").write_text(text[: len(text) // 2])  # cut short
    caplog.clear()
    with caplog.at_level("WARNING", logger="llada"):
        again = Trainer(_cfg(tmp_path, corpus, vocab_size=400)).tokenizer
    assert f"{tok_dir} is damaged or unfinished (" in caplog.text
    assert again.get_vocab() == bigger.get_vocab()

    def killed(self, path, *a, **kw):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "tokenizer_config.json").write_text("{")
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tmp_path, corpus, vocab_size=350))
    assert (tok_dir / "tokenizer.json").read_text() == text  # the whole one it was replacing is untouched


def test_sft_without_the_chat_template_trains_on_bos_prompt_answer_eos(tmp_path):
    """--chat_template false: every row is BOS, the problem, its answer and EOS (no role headers), and
    only the answer and EOS are learned; a resume with the other format is refused."""
    from llada.errors import CheckpointError
    from llada.tasks.sources import source_items

    cfg = _cfg(tmp_path, "task:addition:n=40", stage="sft", chat_template=False, save_every=2, max_steps=3)
    trainer = Trainer(cfg)
    tok = trainer.tokenizer
    _, items = source_items("task:addition:n=40")
    want = [[tok.bos_token_id] + tok(it.prompt, add_special_tokens=False)["input_ids"]
            + tok(it.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for it in items]
    assert sorted(r["input_ids"] for r in trainer.data.train) == sorted(want)
    equals = tok.convert_tokens_to_ids("=")
    for r in trainer.data.train:  # the prompt ends at "=": what follows it is learned
        end = r["input_ids"].index(equals)
        assert r["response_mask"] == [i > end for i in range(len(r["input_ids"]))]
    trainer.fit()
    with pytest.raises(CheckpointError, match="chat_template"):
        Trainer(_cfg(tmp_path, "task:addition:n=40", stage="sft", chat_template=True, save_every=2, max_steps=6))
