"""The service without a server: sendable prefixes, batch order and the page's assets."""

from __future__ import annotations

import threading
import time

from llada.sampling import SamplerOptions


def test_sendable_prefix():
    from llada.serve.service import _sendable

    assert _sendable("caf\ufffd", []) == "caf"
    assert _sendable("a\ufffdb", []) == "a\ufffdb"  # an invalid byte inside the text is final
    assert _sendable("abc#", ["###"]) == "abc" and _sendable("abc##", ["###"]) == "abc"
    assert _sendable("abc###def", ["###"]) == "abc" and _sendable("a#b", ["###"]) == "a#b"
    assert _sendable("end.", ["\n\n", "."]) == "end"


def test_page_needs_no_network():
    """No script, style, font or image from elsewhere: the page works on a machine without internet."""
    import re
    from importlib import resources

    page = resources.files("llada.serve").joinpath("page.html").read_text()
    assert not re.search(r"(src|href)\s*=|@import|url\(|https?://|//[a-z0-9.-]+\.[a-z]{2,}", page, re.I)


def test_batcher_keeps_arrival_order_across_option_groups(bundle):
    """The oldest waiting job runs next with the next-oldest of its options; none is lost or overtaken."""
    import asyncio

    from llada.serve.batcher import Batcher, Job

    tok = bundle.tokenizer
    names = ["x0", "a1", "b1", "a2", "a3", "b2"]  # a* and b* differ in their sampler options
    prompt = {n: [tok.bos_token_id] * (k + 1) for k, n in enumerate(names)}  # each job known by its prompt
    batches: list[list[str]] = []
    gate = threading.Event()

    def record(jobs):
        batches.append([next(n for n in names if prompt[n] == j.prompt) for j in jobs])
        gate.wait(timeout=30)  # the worker holds its first batch until every other job is waiting

    loop = asyncio.new_event_loop()
    batcher = Batcher(bundle.model, tok.pad_token_id, max_batch=2, max_queue=8, on_batch=record)
    try:
        jobs = {n: Job(prompt[n], SamplerOptions(steps=1 if n[0] == "b" else 2, gen_length=2, block_length=2), loop)
                for n in names}
        batcher.submit(jobs["x0"])
        while not batches:
            time.sleep(0.01)
        for n in names[1:]:
            batcher.submit(jobs[n])
        gate.set()
        deadline = time.monotonic() + 30
        while sum(map(len, batches)) < len(names) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        batcher.close()
        loop.close()
    assert batches == [["x0"], ["a1", "a2"], ["b1", "b2"], ["a3"]]
