"""Training across processes: DDP and FSDP on two CPU processes, and a SIGKILL mid-write then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def _losses(out_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "llada", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_inside_checkpoint_writes_then_resume_retraces_the_loss_curve(tmp_path, corpus):
    """Real processes and real SIGKILLs, each landing while a checkpoint is being written (its
    temporary directory exists), with --keep_last 2: the resumed run logs the uninterrupted run's
    losses and gradient norms step for step, and ends with its weights, bit for bit. The in-process
    test_killed_anywhere_then_resumed_ends_with_the_uninterrupted_weights covers every kill point."""
    args = ["train", "--model", "debug", "--data", str(corpus), "--seq_len", "32", "--batch_size", "4",
            "--max_steps", "40", "--save_every", "4", "--keep_last", "2", "--log_every", "1", "--eval_every", "0",
            "--vocab_size", "300", "--progress", "false", "--tensorboard", "false", "--variable_length_prob", "0.2"]
    ref = _run_cli([*args, "--out_dir", str(tmp_path / "ref")])
    for writing, delay in (("step-000008", 0.0), ("step-000020", 0.02), ("step-000028", 0.05)):
        killed = _run_cli([*args, "--out_dir", str(tmp_path / "killed")])
        tmp = tmp_path / "killed" / "checkpoints" / f".tmp-{writing}"
        deadline = time.time() + 300
        while not tmp.exists() and killed.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = _run_cli([*args, "--out_dir", str(tmp_path / "killed")])
    assert resumed.wait() == 0, resumed.stderr.read()
    assert ref.wait() == 0, ref.stderr.read()
    rows = {d: [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("killed", "ref")}
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in rows["killed"]] == \
           [(r["step"], r["loss"], r["grad_norm"]) for r in rows["ref"]]  # exactly, step for step
    a = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    b = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("objective", [
    [],
    # each process noises its rows of the global batch with one t per block, and adds their complements
    ["--objective", "block_diffusion", "--block_size", "8", "--complementary_masking", "true", "--document_mask", "true"],
], ids=["eq3", "block-diffusion"])
def test_two_process_ddp_matches_one_process(tmp_path, corpus, objective):
    common = ["train", "--model", "debug", "--data", str(corpus), "--seq_len", "32", "--max_steps", "3",
              "--log_every", "1", "--eval_every", "0", "--save_every", "0", "--vocab_size", "300",
              "--progress", "false", "--tensorboard", "false", "--warmup_steps", "1", *objective]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llada",
                          *common, "--batch_size", "2", "--out_dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "llada", *common, "--batch_size", "4", "--out_dir",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert l1 == pytest.approx(l2, rel=1e-5)
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in a:  # equal up to the order in which the all-reduce sums
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)


@pytest.mark.parametrize("lora_r", [4, 0], ids=["lora", "full"])
def test_fsdp_matches_one_process_and_resumes_exactly(tmp_path, corpus, lora_r):
    """Two processes under accelerate's FSDP2 (each Transformer block sharded, `fsdp_on_cpu.py`):
    the saved model, gathered from the shards (LoRA: merged), equals a one-process run with the same
    global batch up to the order of the reductions; a run stopped at its step-2 checkpoint and resumed
    from the sharded optimizer state ends with the uninterrupted run's weights, bit for bit. The
    checkpoint holds the weights once (its model directory), not again as shards in trainer/."""
    common = ["train", "--model", "debug", "--data", str(corpus), "--seq_len", "32", "--log_every", "1",
              "--eval_every", "0", "--save_every", "2", "--vocab_size", "300", "--progress", "false",
              "--tensorboard", "false", "--lora_r", str(lora_r)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fsdp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            str(Path(__file__).with_name("fsdp_on_cpu.py")), *common, "--batch_size", "2"]
    runs = {"whole": ["--max_steps", "4"], "stopped": ["--max_steps", "2"],
            "resumed": ["--max_steps", "4", "--resume", "auto"]}
    for name, extra in runs.items():
        out = tmp_path / ("resumed" if name == "stopped" else name)
        done = subprocess.run([*fsdp, *extra, "--out_dir", str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "llada", *common, "--batch_size", "4", "--max_steps", "4",
                          "--out_dir", str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    trainer_files = {p.name for p in (tmp_path / "resumed" / "checkpoints" / "step-000002" / "trainer").iterdir()}
    assert "optimizer_0" in trainer_files and not any("model" in f for f in trainer_files), trainer_files  # weights once
    a, b, c = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "one", "resumed"))
    assert set(a) == set(b) and not any(".lora_" in k or "base_layer" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
        assert torch.equal(a[k], c[k]), k
    assert _losses(tmp_path / "whole") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "whole")
    if lora_r:  # the adapters are whole too, not one process's shard
        adapters = load_file(tmp_path / "whole" / "model" / "adapter" / "adapter_model.safetensors")
        want = load_file(tmp_path / "one" / "model" / "adapter" / "adapter_model.safetensors")
        assert {k: v.shape for k, v in adapters.items()} == {k: v.shape for k, v in want.items()}
