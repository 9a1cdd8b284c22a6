"""Dynamic batching: requests wait in a bounded queue; one worker thread runs them in batches.

Requests whose sampler options agree (steps, gen_length, block_length, remasking, ...) are run
together in one batched `generate` call, prompts left padded; each request gets its own row's
intermediate states (for streaming) and final tokens. A full queue refuses at once (the server
answers 429); a cancelled request (timeout, client gone) is dropped before it runs, and a batch
whose every request is cancelled stops at its next step.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from llada.sampling import StepState, generate
from llada.sampling.text import left_pad


class QueueFull(Exception):
    """The request queue is at capacity."""


class _Cancelled(Exception):
    pass


@dataclass
class Job:
    """One request: prompt ids and sampler options; results arrive on `events` (an asyncio queue)."""

    prompt: list[int]
    options: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    want_states: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def key(self) -> tuple:
        return tuple(sorted(self.options.items()))

    def emit(self, kind: str, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))


class Batcher:
    """Owns the model; `submit` enqueues a Job, the worker thread runs batches of compatible jobs."""

    def __init__(self, model: Any, pad_id: int, *, max_batch: int = 8, max_queue: int = 64,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.model, self.pad_id, self.max_batch = model, pad_id, max_batch
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llada-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # ---------------------------------------------------------------------------- worker
    def _take(self) -> list[Job]:
        """The oldest live job and up to max_batch - 1 more with the same options; the others go back."""
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if first.cancelled.is_set():
                continue
            batch, rest = [first], []
            while len(batch) < self.max_batch:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job.cancelled.is_set():
                    continue
                (batch if job.key() == first.key() else rest).append(job)
            for job in rest:  # keeps their relative order behind newer arrivals; fine for a FIFO-ish server
                try:
                    self.queue.put_nowait(job)
                except queue.Full:
                    job.emit("error", "the server is overloaded; retry later")
            return batch
        return []

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Job]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        ids, mask = left_pad([j.prompt for j in batch], self.pad_id)
        P = ids.shape[1]

        def callback(state: StepState) -> None:
            if all(j.cancelled.is_set() for j in batch):
                raise _Cancelled
            for i, j in enumerate(batch):
                if j.want_states and not j.cancelled.is_set():
                    j.emit("state", (state.step, state.canvas[i, P:].tolist(), state.transferred[i, P:].tolist()))

        try:
            with torch.no_grad():
                out = generate(self.model, ids, mask, callback=callback, **batch[0].options)
        except _Cancelled:
            return
        except Exception as e:  # noqa: BLE001 - reported to each request, the worker lives on
            for j in batch:
                j.emit("error", f"generation failed: {e}")
            return
        for i, j in enumerate(batch):
            j.emit("done", (out.responses[i].tolist(), out.stats.forwards))
