"""SFT data: chat conversations rendered with the tokenizer's chat template, and their batches.

Records are `{"messages": [{"role", "content"}, ...]}` (the Hugging Face chat format) or a single
exchange as `prompt`/`response` (also `instruction`/`output`). Every assistant turn is a
response (its content and closing end-of-turn token may be masked and are learned); everything
else (BOS, role headers, user and system turns) is prompt and stays clean (paper Eq. 5, App. B.1).
The sequence ends with EOS, and a batch is padded with more EOS, which are response too: the
model learns to end its answer by filling the rest of the canvas with EOS.

A conversation is rendered only as far as the run's seq_len reaches (`render_conversation`'s
`max_tokens`), so one huge record costs what seq_len tokens cost, not what its text does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from llada.config import brief_repr
from llada.data.pretrain import _local_files, chars_per_token, load_local
from llada.data.world import WorldConfig
from llada.errors import DataError
from llada.tasks.sources import is_source, source_conversations
from llada.tokenizer import render_chat

logger = logging.getLogger(__name__)

_PAIRS = (("prompt", "response"), ("instruction", "output"))


def to_messages(record: dict[str, Any], where: str = "record") -> list[dict[str, str]]:
    """Normalise a record to a list of messages, refusing ones without an assistant turn."""
    messages = record.get("messages")
    if messages is None:
        for q, a in _PAIRS:
            if record.get(q) is not None and record.get(a) is not None:
                for name in (q, a):
                    if not isinstance(record[name], str):
                        raise DataError(f"{where}: {name!r} must be a string, got {type(record[name]).__name__} "
                                        f"{brief_repr(record[name])}")
                messages = [{"role": "user", "content": record[q]}, {"role": "assistant", "content": record[a]}]
                break
    if messages is None:
        raise DataError(f"{where}: expected a 'messages' list or prompt/response fields, "
                        f"got fields {', '.join(record)}")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in messages):
        raise DataError(f"{where}: 'messages' must be a list of {{'role', 'content'}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m["role"], str) or not isinstance(m["content"], str):
            raise DataError(f"{where}: message {i + 1} must have a string role and content, got "
                            f"{type(m['role']).__name__} and {type(m['content']).__name__}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{where}: the conversation opens with an assistant turn; a response needs a prompt "
                        "before it (a user or system turn)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_conversations(source: str | None = None, *, split: str = "train", seed: int = 0,
                       eval_fraction: float = 0.02, world: WorldConfig | None = None) -> list[list[dict[str, str]]]:
    """Conversations as lists of messages: the built-in world's (None, sized by `world`), a built-in
    task's (`task:NAME`, llada.tasks; its test split is never loaded), local files, or a Hub dataset."""
    if split not in ("train", "validation"):
        raise DataError(f"split must be 'train' or 'validation', got {split!r}")
    if is_source(source):
        return source_conversations(source, split, seed)
    if source is None:
        from llada.data.world import World

        return [c["messages"] for c in World(seed, world).sft_conversations(split)]
    files = _local_files(source)
    if files is not None:
        ds = load_local(files, ("messages", "prompt", "instruction"), any_of=True, check=to_messages)
        records = ds.to_list()
        where = [f"{files[0] if len(files) == 1 else source}:{i + 1}" for i in range(len(records))]
    else:
        import datasets

        name, _, config = source.partition(":")
        try:
            records = datasets.load_dataset(name, config or None, split=split).to_list()
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{source!r} is neither a local path nor a loadable Hub dataset ({e})") from None
        where = [f"{source}[{i}]" for i in range(len(records))]
    convs = [to_messages(r, w) for r, w in zip(records, where, strict=True)]
    if files is None:
        return convs
    # local files hold one split: hold a deterministic few out for validation
    order = torch.randperm(len(convs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, int(len(convs) * eval_fraction)) if len(convs) > 1 else 0
    keep = order[:n_eval] if split == "validation" else order[n_eval:]
    return [convs[i] for i in sorted(keep)]


def _reach(messages: list[dict[str, str]], max_tokens: int, per_token: int) -> tuple[list[dict[str, str]], bool]:
    """The messages that can reach the first `max_tokens` tokens of the rendering, each cut to what
    max_tokens + 1 tokens can hold (`per_token` characters each), and whether anything was cut. A
    message renders to a token at least (its role header), so none past the first max_tokens + 1
    counts; nor any after the kept ones hold that many characters between them."""
    budget = (max_tokens + 1) * per_token
    kept: list[dict[str, str]] = []
    held = 0
    for m in messages[: max_tokens + 1]:
        text = m["content"][:budget]
        kept.append({"role": m["role"], "content": text})
        held += len(text.strip())  # what a template that trims the content keeps of it
        if held >= budget:
            break
    return kept, len(kept) < len(messages) or any(len(k["content"]) < len(m["content"])
                                                  for k, m in zip(kept, messages, strict=False))


def render_conversation(tokenizer: Any, messages: list[dict[str, str]], max_tokens: int | None = None,
                        per_token: int | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of the chat-templated conversation plus EOS, and which of them are response.

    The text is cut at turn boundaries (which fall on special tokens, so tokenising the pieces
    gives the same ids as tokenising the whole); the tail after the last assistant turn (LLaDA-8B's
    template always appends an assistant header) is replaced by EOS.

    max_tokens: only the first max_tokens tokens are wanted (the collator cuts there), so only the
    messages and characters that can reach them are rendered (`_reach`; `per_token`: the tokenizer's
    `chars_per_token`). The first max_tokens ids and marks are then the whole rendering's (a text cut
    inside a word could tokenize differently at the cut, past max_tokens), and a conversation
    cut short still renders to more than max_tokens tokens (its prompt tail in place of EOS), so the
    collator counts it as truncated.
    """
    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return render_chat(tokenizer, msgs, add_generation_prompt=gen)  # within the template's budget

    cut = False
    if max_tokens is not None:
        messages, cut = _reach(messages, max_tokens, per_token or chars_per_token(tokenizer))

    eot = "<|eot_id|>"
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(messages[:i], True) if i else render(messages[:0], True)
        through = render(messages[: i + 1], False)
        if not before.startswith(done) or not through.startswith(before):
            raise DataError("the tokenizer's chat template does not render conversations prefix by prefix; "
                            "SFT needs one that does")
        response = through[len(before):]
        if eot in response:
            response = response[: response.index(eot) + len(eot)]
        pieces += [(before[len(done):], False), (response, True)]
        done = before + response
    if cut:  # what follows the last response, as prompt: past max_tokens, but it makes the row as long
        rest = render(messages, False)
        pieces.append((rest[len(done):] if rest.startswith(done) else "", False))
    ids: list[int] = []
    mask: list[bool] = []
    for text, is_response in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids += piece
        mask += [is_response] * len(piece)
    return ids + [tokenizer.eos_token_id], mask + [True]


@dataclass
class SFTCollator:
    """Pads a batch of rendered conversations to a common length with EOS (response, visible).

    truncation: "truncate" cuts sequences longer than seq_len (counted and warned once), "error"
    refuses them with a message naming the knob. padding: "longest" pads to the batch's longest
    conversation (LLaDA's SFT), "max_length" every conversation to seq_len (more EOS to learn).
    multiple_of: "longest" pads to the next multiple of it (at most seq_len), so that with seq_len
    a multiple too every response ends on a block boundary (block diffusion's whole blocks).
    """

    eos_id: int
    seq_len: int
    truncation: str = "truncate"
    padding: str = "longest"
    multiple_of: int = 1
    truncated: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.truncation not in ("truncate", "error"):
            raise DataError(f"truncation must be 'truncate' or 'error', got {self.truncation!r}")
        if self.padding not in ("longest", "max_length"):
            raise DataError(f"padding must be 'longest' or 'max_length', got {self.padding!r}")
        if isinstance(self.multiple_of, bool) or not isinstance(self.multiple_of, int) or self.multiple_of < 1:
            raise DataError(f"multiple_of must be a positive int, got {self.multiple_of!r}")

    def __call__(self, batch: list[dict[str, list]]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in batch)
        if longest > self.seq_len:
            if self.truncation == "error":
                raise DataError(f"a conversation has {longest} tokens, more than seq_len={self.seq_len}; "
                                "raise --seq_len or set --truncation truncate")
            n = sum(len(r["input_ids"]) > self.seq_len for r in batch)
            if self.truncated == 0:
                logger.warning("truncating conversations longer than seq_len=%d (counted in the run summary)",
                               self.seq_len)
            self.truncated += n
        L = self.seq_len if self.padding == "max_length" else min(-(-longest // self.multiple_of) * self.multiple_of,
                                                                  self.seq_len)
        ids = torch.full((len(batch), L), self.eos_id, dtype=torch.long)
        response = torch.ones((len(batch), L), dtype=torch.bool)
        prompt_lengths = torch.zeros(len(batch), dtype=torch.long)
        for b, r in enumerate(batch):
            n = min(len(r["input_ids"]), L)
            ids[b, :n] = torch.tensor(r["input_ids"][:n])
            response[b, :n] = torch.tensor(r["response_mask"][:n])
            prompt_lengths[b] = int(torch.tensor(r["response_mask"][:n]).long().argmax()) if n else 0
        return {"input_ids": ids, "response_mask": response, "attention_mask": torch.ones_like(ids),
                "prompt_lengths": prompt_lengths}


def learnable(row: dict[str, list], seq_len: int) -> bool:
    """Whether a rendered conversation keeps a response token within its first seq_len tokens (the
    collator cuts it there); one whose prompt fills seq_len has nothing to learn."""
    return any(row["response_mask"][:seq_len])


def render_plain(tokenizer: Any, messages: list[dict[str, str]], max_tokens: int | None = None,
                 per_token: int | None = None) -> tuple[list[int], list[bool]]:
    """A single-turn conversation without the chat template: BOS and the user's text (prompt), then
    the assistant's text and EOS (response), as `render_conversation` marks them. It is what
    `sample_text(..., chat=False)` asks a model: BOS and the prompt. Not LLaDA's SFT format (the
    template); a leaner one of ours for short tasks. Each text is cut to what max_tokens + 1 tokens
    can hold (`per_token` characters each). Raises DataError for other than one user and one
    assistant turn."""
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"]:
        raise DataError(f"without the chat template a conversation must be one user and one assistant turn, "
                        f"got the roles {roles}")
    budget = None if max_tokens is None else (max_tokens + 1) * (per_token or chars_per_token(tokenizer))
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt = bos + tokenizer(messages[0]["content"][:budget], add_special_tokens=False)["input_ids"]
    answer = tokenizer(messages[1]["content"][:budget], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt + answer, [False] * len(prompt) + [True] * len(answer)


def render_all(tokenizer: Any, conversations: list[list[dict[str, str]]],
               max_tokens: int | None = None, chat: bool = True) -> list[dict[str, list]]:
    """Render every conversation once (the trainer batches the results), each only as far as
    `max_tokens` (the run's seq_len) reaches when given: with the chat template
    (`render_conversation`), or without it (`render_plain`, chat=False). A conversation that cannot
    be rendered is one DataError naming it."""
    per_token = chars_per_token(tokenizer) if max_tokens is not None else None
    render = render_conversation if chat else render_plain
    out = []
    for k, messages in enumerate(conversations):
        try:
            ids, mask = render(tokenizer, messages, max_tokens, per_token)
        except DataError as e:
            raise DataError(f"conversation {k + 1} (opening {messages[0]['content'][:40]!r}): {e}") from None
        except Exception as e:  # noqa: BLE001 - a template raises whatever its code raises
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            raise DataError(f"conversation {k + 1} (opening {messages[0]['content'][:40]!r}): the chat template "
                            f"cannot render it ({type(e).__name__}: {reason})") from None
        out.append({"input_ids": ids, "response_mask": mask})
    return out
