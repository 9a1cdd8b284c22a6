"""Flags and one-line error checks shared by the command-line tests (unit/test_cli.py and
integration/test_cli_end_to_end.py)."""

from __future__ import annotations

FLAGS = ["--device", "cpu"]


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"llada {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _command(name: str, model: str, poem: str, out: str) -> list[str]:
    """The smallest invocation of each command that takes --device, --model and (for some) --out_dir."""
    small = ["--gen_length", "4", "--steps", "4"]
    return {"generate": ["generate", "hi", "--model", model, *small, "--block_length", "4"],
            "chat": ["chat", "--model", model, *small, "--block_length", "4"],
            "eval": ["eval", "--model", model, "--tasks", "arithmetic", "--limit", "1", *small, "--block_length", "4",
                     "--mc_num", "1", "--likelihood_docs", "0", "--out_dir", out],
            "poem": ["poem", model, poem, *small, "--out_dir", out]}[name]
