"""Counting host synchronisations on any device, the CPU included.

On a GPU `torch.cuda.set_sync_debug_mode` reports every call that waits for the device. The CPU
has no such wait, so this module records the calls that would make one: a dispatch mode sees the
ATen operators whose output size or value must reach the host (`.item()`, `bool(t)`, `nonzero`,
boolean indexing, `masked_select`, `unique`, `repeat_interleave` without an output size), and the
Tensor methods that copy to host memory (`tolist`, `cpu`, `numpy`) are wrapped, since on a CPU
tensor they dispatch nothing.

    with syncs_on(device) as syncs:    # HostSyncs on a CPU, CudaSyncs on a GPU
        run()
    assert syncs.count == 0, syncs.events
"""

from __future__ import annotations

import contextlib
import traceback
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# operators that read a value or a data-dependent size back to the host
def _ops(*names: str) -> set:
    """The operators of these names that this torch build has (the GPU machine's may be older)."""
    return {getattr(aten, n) for n in names if hasattr(aten, n)}


_SYNCING = _ops("_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
                "unique_consecutive", "argwhere")
_BOOL_INDEXED = _ops("index", "index_put", "index_put_", "_index_put_impl_")
_HOST_COPIES = ("tolist", "cpu", "numpy")


def _where() -> str:
    """The innermost frame of llada's own code that made the call (what a report should name)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/llada/" in frame.filename and "/tests/" not in frame.filename:
            return f"{frame.filename.rsplit('/llada/', 1)[-1]}:{frame.lineno} {frame.line}"
    return "(outside llada)"


def _bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class HostSyncs(TorchDispatchMode):
    """A context that records, in `events`, every operation that would synchronise a GPU with the
    host, each as "operator at llada/file.py:line"."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self._saved: dict[str, object] = {}

    @property
    def count(self) -> int:
        return len(self.events)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in _SYNCING or (packet in _BOOL_INDEXED and _bool_index(args)) or (
                packet is aten.repeat_interleave and (kwargs or {}).get("output_size") is None):
            self.events.append(f"{packet.__name__} at {_where()}")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in _HOST_COPIES:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def wrapped(tensor, *a, _name=name, _original=original, **k):
                self.events.append(f"Tensor.{_name} at {_where()}")
                return _original(tensor, *a, **k)

            setattr(torch.Tensor, name, wrapped)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        return super().__exit__(*exc)


class CudaSyncs:
    """On a CUDA device: every synchronising call torch reports (`set_sync_debug_mode("warn")`),
    in `events`, as HostSyncs records them on the CPU."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._caught: contextlib.ExitStack | None = None

    @property
    def count(self) -> int:
        return len(self.events)

    def __enter__(self):
        self._caught = contextlib.ExitStack()
        self._log = self._caught.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self.events = [str(w.message).splitlines()[0] for w in self._log if "synchroniz" in str(w.message)]
        self._caught.close()
        return False


def syncs_on(device: torch.device | str) -> HostSyncs | CudaSyncs:
    """The sync counter for `device`: torch's own report on CUDA, `HostSyncs` elsewhere."""
    return CudaSyncs() if torch.device(device).type == "cuda" else HostSyncs()
