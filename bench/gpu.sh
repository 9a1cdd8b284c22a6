#!/usr/bin/env bash
# The whole device run in one command (`make bench-gpu`): GPU tests first, then the benchmarks,
# each under its own time limit, every result under $OUT (default runs/gpu). Sized for ~8 minutes
# on one H100/H200. Run from the repository root; needs only torch, transformers, safetensors,
# accelerate, einops (for the reference code) and pytest, which the lent machine has.
#
#   OUT=/tmp/out bash bench/gpu.sh            # .ref/ (ignored) holds the public reference files
#                                             # for side_by_side.py, when present
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/steps.txt"; }

log "imports"  # a missing package should cost seconds, not the session's device time
$PY - <<'PY' 2>&1 | tee "$OUT/env.txt" || exit 1
import torch, transformers, safetensors, accelerate
import llada, llada.model, llada.sampling, llada.likelihood, llada.diffusion
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
PY

log "tests on the GPU: bfloat16, then float32"
for dtype in bfloat16 float32; do
  LLADA_TEST_DEVICE=cuda LLADA_TEST_DTYPE=$dtype timeout 180 $PY -m pytest --noconftest -q -p no:cacheprovider \
    -o addopts="" tests/test_device.py 2>&1 | tee "$OUT/tests-$dtype.txt"
done

if [ -f .ref/side_by_side.py ]; then
  log "side by side with LLaDA generate.py and Fast-dLLM, LLaDA-8B shape, bf16, 4 tokens per step"
  for prompt in 128 1024; do
    timeout 240 $PY .ref/side_by_side.py .ref --preset llada-8b --device cuda --dtype bfloat16 \
      --prompt-len $prompt --gen 256 --block 32 --steps 64 --reps 3 2>&1 | tee "$OUT/side-by-side-$prompt.txt"
  done
fi

log "sampler throughput, LLaDA-8B shape, bf16, batch 1/8/32"
timeout 240 $PY bench/generate.py --preset llada-8b --vocab 126464 --dtype bfloat16 --device cuda \
  --prompt-len 128 --gen-length 256 --batch 1,8,32 2>&1 | tee "$OUT/generate.txt"

log "training step, 1B shape (d2048 x 16, vocab 32k, seq 2048), bf16: MFU and peak memory"
timeout 180 $PY bench/train.py --preset 1b --seq-len 2048 --batch 8 --vocab 32000 --measure-peak \
  --variants eager,compile 2>&1 | tee "$OUT/train.txt"

log "Eq. 6 likelihood, LLaDA-8B shape, bf16, mc_num 128"
timeout 120 $PY bench/likelihood.py --preset llada-8b --dtype bfloat16 --device cuda --mc-num 128 \
  --mc-batch 32,64 2>&1 | tee "$OUT/likelihood.txt"
timeout 120 $PY bench/likelihood_memory.py --preset llada-8b --dtype bfloat16 --device cuda \
  --lengths 1024,2048,4000 --mc-batch 32 2>&1 | tee "$OUT/likelihood-memory.txt"
log "sampler at batch 1 with each block compiled (runtime.compile_blocks), against generate.txt (last: compilation may run long)"
timeout 200 $PY bench/generate.py --preset llada-8b --vocab 126464 --dtype bfloat16 --device cuda \
  --prompt-len 128 --gen-length 256 --batch 1 --settings "reference,dual+thr 0.9" --compile 2>&1 | tee "$OUT/generate-compiled.txt"

log "done"
