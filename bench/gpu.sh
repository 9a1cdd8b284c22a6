#!/usr/bin/env bash
# The whole device run in one command (`make bench-gpu`): GPU tests first, then the benchmarks,
# each under its own time limit, every result under $OUT (default runs/gpu). Sized for ~8 minutes
# on one H100/H200. Run from the repository root; needs only torch, transformers, safetensors,
# accelerate, einops (for the reference code) and pytest, which the lent machine has.
#
#   OUT=/tmp/out bash bench/gpu.sh            # .ref/ (ignored) holds the public reference files
#                                             # for side_by_side.py, when present
#   REHEARSAL=1 OUT=/tmp/out bash bench/gpu.sh   # the same commands on this CPU with tiny shapes
#                                                # (`make rehearse-gpu`): a typo costs no device time
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/steps.txt"; }

# The shapes of each step: the issue's on a GPU, tiny ones in a rehearsal.
DEV=cuda
TEST_DTYPES="bfloat16 float32"
SIDE="--preset llada-8b --dtype bfloat16"                    # side_by_side.py's model
PROMPTS="128 1024"
SHAPE_8B="--preset llada-8b --vocab 126464 --dtype bfloat16"  # bench/generate.py's model
GEN="--prompt-len 128 --gen-length 256"
BATCHES=1,8,32
TRAIN="--preset 1b --seq-len 2048 --batch 8 --vocab 32000 --measure-peak"
LIKELIHOOD="--preset llada-8b --dtype bfloat16 --mc-num 128 --mc-batch 32,64"
LIKELIHOOD_MEMORY="--preset llada-8b --dtype bfloat16 --lengths 1024,2048,4000 --mc-batch 32"
LOSS="--batch 8 --seq-len 2048 --vocab 126464"
BUDGET="--preset small --steps 4000 --every 500"               # steps to learn 2-digit addition
if [ -n "${REHEARSAL:-}" ]; then
  DEV=cpu
  TEST_DTYPES=float32
  SIDE="--preset debug --overrides max_sequence_length=512,vocab_size=1024,mask_token_id=1023,eos_token_id=1022,pad_token_id=1022,bos_token_id=1021,eot_token_id=1020 --dtype float32"
  PROMPTS=16
  SHAPE_8B="--preset debug --vocab 1024 --dtype float32"
  GEN="--prompt-len 16 --gen-length 32"
  BATCHES=1,2
  TRAIN="--preset debug --seq-len 64 --batch 2 --vocab 1024 --steps 2 --warmup 1"
  LIKELIHOOD="--preset debug --dtype float32 --mc-num 8 --mc-batch 4,8 --items 2"
  LIKELIHOOD_MEMORY="--preset debug --dtype float32 --lengths 64,128 --mc-batch 4"
  LOSS="--batch 2 --seq-len 64 --vocab 1024 --repeats 1"
  BUDGET="--preset debug --steps 20 --every 10 --n_eval 8"
fi

log "imports"  # a missing package should cost seconds, not the session's device time
$PY - <<'PY' 2>&1 | tee "$OUT/env.txt" || exit 1
import torch, transformers, safetensors, accelerate
import llada, llada.model, llada.sampling, llada.likelihood, llada.diffusion
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
PY

log "tests on the device: $TEST_DTYPES"
for dtype in $TEST_DTYPES; do
  LLADA_TEST_DEVICE=$DEV LLADA_TEST_DTYPE=$dtype timeout 180 $PY -m pytest --noconftest -q -p no:cacheprovider \
    -o addopts="" tests/unit/test_device.py 2>&1 | tee "$OUT/tests-$dtype.txt"
done

if [ -f .ref/side_by_side.py ]; then
  log "side by side with LLaDA generate.py and Fast-dLLM, LLaDA-8B shape, bf16, 4 tokens per step"
  for prompt in $PROMPTS; do
    timeout 240 $PY .ref/side_by_side.py .ref $SIDE --device $DEV \
      --prompt-len $prompt --gen 256 --block 32 --steps 64 --reps 3 2>&1 | tee "$OUT/side-by-side-$prompt.txt"
  done
fi

log "sampler throughput, LLaDA-8B shape, bf16, batch $BATCHES"
timeout 240 $PY bench/generate.py $SHAPE_8B --device $DEV $GEN --batch $BATCHES 2>&1 | tee "$OUT/generate.txt"

log "training step, 1B shape (d2048 x 16, vocab 32k, seq 2048), bf16: MFU and peak memory"
timeout 180 $PY bench/train.py $TRAIN --device $DEV --variants eager,compile 2>&1 | tee "$OUT/train.txt"

log "the training loss alone: time and peak memory against logits[masked]"
timeout 60 $PY bench/loss.py $LOSS --device $DEV 2>&1 | tee "$OUT/loss.txt"

log "Eq. 6 likelihood, LLaDA-8B shape, bf16, mc_num 128"
timeout 120 $PY bench/likelihood.py $LIKELIHOOD --device $DEV 2>&1 | tee "$OUT/likelihood.txt"
timeout 120 $PY bench/likelihood_memory.py $LIKELIHOOD_MEMORY --device $DEV 2>&1 | tee "$OUT/likelihood-memory.txt"

log "steps to learn 2-digit addition, small preset, diffusion vs AR (BENCHMARKS.md: the tiny preset's table)"
timeout 240 $PY bench/task_budget.py --task addition $BUDGET --device $DEV --out "$OUT/task_budget" 2>&1 \
  | tee "$OUT/task-budget.txt"

log "sampler at batch 1 with each block compiled (runtime.compile_blocks), against generate.txt (last: compilation may run long)"
timeout 200 $PY bench/generate.py $SHAPE_8B --device $DEV $GEN --batch 1 --settings "reference,dual+thr 0.9" --compile \
  2>&1 | tee "$OUT/generate-compiled.txt"

log "done"
