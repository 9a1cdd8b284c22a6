"""What a run reports: metrics.jsonl (one JSON record a line: step, loss, grad_norm, lr, tokens/s, epoch,
or eval_loss), TensorBoard events in out_dir/tb, Weights & Biases with --wandb, and curves.png at the end.

A resumed run first drops the records it will redo (and a line a kill cut short), and TensorBoard
hides the events past its step, so each step is reported once however often a run was killed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from llada.errors import UserError
from llada.training.config import TrainConfig

logger = logging.getLogger(__name__)


class Metrics:
    """The metrics of the run in `out` from step `step` on. Only the main process writes (`main`);
    on the others every call does nothing."""

    def __init__(self, out: Path, cfg: TrainConfig, step: int, main: bool):
        self.path = out / "metrics.jsonl"
        self.cfg, self.main = cfg, main
        self.file: Any = None
        self.writer: Any = None
        self._tokens, self._since = 0, time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        if main:
            truncate(self.path, step)  # a resumed run drops what it will redo; a fresh one starts clean
            self.writer = _tensorboard(out / "tb", step) if cfg.tensorboard else None
            self.file = open(self.path, "a")  # noqa: SIM115 - closed by `close`

    def count(self, tokens: int) -> None:
        """Add the tokens of a step to the throughput window."""
        self._tokens += tokens

    def throughput(self) -> float:
        """Tokens per second since the last call (or the start), and a new window from now."""
        now = time.perf_counter()
        rate = self._tokens / max(now - self._since, 1e-9)
        self._tokens, self._since = 0, now
        return rate

    def log(self, record: dict[str, Any]) -> None:
        """Write `record` (it has a "step") to metrics.jsonl, TensorBoard (its numbers) and W&B."""
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, float | int):
                    self.writer.add_scalar(k, v, record["step"])
        if self.cfg.wandb:
            import wandb  # an optional package, only with --wandb

            if wandb.run is None:
                wandb.init(project="llada", config=dataclasses.asdict(self.cfg))
            wandb.log(record, step=record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()

    def plot(self) -> None:
        """curves.png beside metrics.jsonl (main process)."""
        if self.main:
            plot_curves(self.path, self.path.with_name("curves.png"))


def truncate(path: Path, step: int) -> None:
    """Drop the records of metrics file `path` logged after `step`: a resumed run drops what it will
    redo, a run started afresh (step 0) all of them. A line a kill cut short is dropped too, and the
    file is replaced atomically, so that a kill during this loses nothing. Anything but a regular
    file there (a FIFO would block the read) is one error."""
    if not path.exists():
        return
    if not path.is_file():
        raise UserError(f"{path} is not a regular file (a FIFO, socket, device or directory); move it away, "
                        "and the run writes its metrics there anew")
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # cut short by a kill
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    tmp = path.with_name(".tmp-metrics.jsonl")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _tensorboard(directory: Path, step: int) -> Any:
    """A TensorBoard writer into `directory` that hides events a killed run logged past `step` (a run
    started afresh: all of them); None, with a warning, when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (the train extra)
    except ImportError:
        logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(directory), purge_step=step + 1)


def plot_curves(metrics_path: Path, png: Path) -> None:
    """Training and held-out loss against step, as a PNG (matplotlib, no display needed)."""
    try:
        import matplotlib  # an optional package (the train extra)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no %s", png)
        return
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
    if held:
        ax.plot(*zip(*held, strict=True), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (Eq. 3/5 bound, nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
