"""Dynamic batching: requests wait in a bounded queue; one worker thread runs them in batches.

Requests whose `SamplerOptions` are equal are run together in one batched `llada.sample_steps`
call, prompts left padded; each request gets its own row's intermediate states (for streaming) and
final tokens. A request with a seed runs in a batch of its own with its own random generator, so
its sample is the same whatever else the server is doing. Other model work (a request's
likelihoods) is a Job with `work` set: it waits in the same queue and runs alone. A
full queue refuses at once (the server answers 429); a cancelled request (timeout, client gone) is
dropped before it runs, and a batch whose every request is cancelled stops at its next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from llada.sampling.api import sample_steps
from llada.sampling.options import SamplerOptions
from llada.sampling.text import left_pad


class QueueFull(Exception):
    """The request queue is at capacity."""


@dataclass
class Job:
    """One request: prompt ids and sampler options; results arrive on `events` (an asyncio queue)."""

    prompt: list[int]
    options: SamplerOptions
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    want_states: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    # other model work, run alone in the worker thread: work(cancelled) -> the payload of "done"
    work: Callable[[threading.Event], Any] | None = None

    def key(self) -> tuple:
        # A seeded job runs alone: its noise must not depend on which other requests share the batch.
        alone = self.options.seed is not None or self.work is not None
        return (self.options, id(self)) if alone else (self.options,)

    def emit(self, kind: str, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))


class Batcher:
    """Owns the model; `submit` enqueues a Job, the worker thread runs batches of compatible jobs.

    The oldest waiting job always runs next, joined by the next-oldest jobs with the same options
    (up to max_batch); the others keep their places. A job once accepted is never dropped.
    """

    def __init__(self, model: Any, pad_id: int, *, max_batch: int = 8, max_queue: int = 64,
                 on_batch: Callable[[list[Job]], None] | None = None) -> None:
        self.model, self.pad_id, self.max_batch, self.max_queue = model, pad_id, max_batch, max_queue
        self._waiting: deque[Job] = deque()
        self._ready = threading.Condition()
        self.on_batch = on_batch
        self.batches_run = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llada-batcher", daemon=True)
        self._thread.start()

    def submit(self, *jobs: Job) -> None:
        """Queue the jobs together (one request's prompts batch together), or none of them: QueueFull."""
        with self._ready:
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull
            self._waiting.extend(jobs)
            self._ready.notify()

    def queued(self) -> int:
        """Jobs waiting to run (cancelled ones included until the worker passes them)."""
        return len(self._waiting)

    def close(self) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(timeout=5)

    # ---------------------------------------------------------------------------- worker
    def _take(self) -> list[Job]:
        """The oldest live job and up to max_batch - 1 of the next oldest with the same options."""
        with self._ready:
            while True:
                while self._waiting and self._waiting[0].cancelled.is_set():
                    self._waiting.popleft()
                if self._stop.is_set():
                    return []
                if self._waiting:
                    break
                self._ready.wait(timeout=0.5)
            first = self._waiting.popleft()
            batch, keep = [first], deque()
            while self._waiting:
                job = self._waiting.popleft()
                if job.cancelled.is_set():
                    continue
                (batch if len(batch) < self.max_batch and job.key() == first.key() else keep).append(job)
            self._waiting = keep
            return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Job]) -> None:
        if self.on_batch is not None:
            self.on_batch(batch)
        if batch[0].work is not None:
            self._run_work(batch[0])
            return
        ids, mask = left_pad([j.prompt for j in batch], self.pad_id)
        P = ids.shape[1]
        try:
            with torch.no_grad():
                for state in sample_steps(self.model, ids, batch[0].options, attention_mask=mask):
                    if all(j.cancelled.is_set() for j in batch):
                        return  # every client went away: stop at this step
                    if not state.final:
                        self._emit_states(batch, state, P)
        except Exception as e:  # noqa: BLE001 - reported to each request, the worker lives on
            for j in batch:
                j.emit("error", f"generation failed: {e}")
            return
        self.batches_run += 1  # names the batch: requests of several prompts count its passes once
        stats = {"steps": state.stats.steps, "forwards": state.stats.forwards, "batch": self.batches_run}
        for i, j in enumerate(batch):
            j.emit("done", (state.canvas[i, P:].tolist(), stats))

    @staticmethod
    def _run_work(job: Job) -> None:
        try:
            with torch.no_grad():
                result = job.work(job.cancelled)  # type: ignore[misc]
        except Exception as e:  # noqa: BLE001 - reported to the request, the worker lives on
            job.emit("error", f"scoring failed: {e}")
            return
        job.emit("done", result)

    @staticmethod
    def _emit_states(batch: list[Job], state: Any, P: int) -> None:
        watching = [i for i, j in enumerate(batch) if j.want_states and not j.cancelled.is_set()]
        if not watching:
            return
        canvas, moved = state.canvas[:, P:].tolist(), state.transferred[:, P:].tolist()  # one copy per step
        for i in watching:
            batch[i].emit("state", (state.step, canvas[i], moved[i]))
