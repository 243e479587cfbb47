#!/usr/bin/env bash
# One GPU lease, one command: the CUDA tests, the GPU speed rows and the medium / large PTB
# schedules for as long as the lease allows, everything written under OUTDIR, one summary
# table at the end (OUTDIR/summary.txt).
#
#   scripts/gpu_lease.sh OUTDIR             on the lent machine (one H200, <= 9 minutes wall)
#   scripts/gpu_lease.sh --dry-run OUTDIR   the same steps on the CPU with tiny sizes (< 1 min;
#                                           tests/test_gpu_lease.py runs it in CI)
#
# Phases, each with its own time limit so that a hang in one cannot eat the lease:
#   1. tests: `pytest -m cuda` and the fast-path tests on the GPU;
#   2. speed: benchmarks/variational_lstm.py with and without --tf32, and
#      benchmarks/lm_throughput.py at medium and large, alone on the GPU (nothing else running);
#   3. PTB: ptb-medium-zaremba, ptb-medium-variational and ptb-large-variational trained at once,
#      as three processes on the one GPU (none fills an H200: a 2 x 1500 LSTM at batch 20 is a
#      few hundred MB), each stopped by --max-minutes with a checkpoint, then evaluated (test
#      perplexity, and MC dropout with the recipe's samples) before the deadline.
# Data: $RNNDROP_DATA (default ./shared/data when the checkout carries one, else ../shared/data)
# must hold ptb/. A checkpoint cannot come back from a lease to resume the schedule on the next
# one: files come back at most 16 MiB each and 64 MiB in all, and the medium model alone is 79 MB
# of float32 weights (large: 264 MB). So each lease starts the schedules afresh; the logs and
# metrics come back (OUTDIR/lease-logs.tar.gz).
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ]; then
    echo "usage: scripts/gpu_lease.sh [--dry-run] OUTDIR" >&2
    exit 2
fi
OUT=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT/logs" "$OUT/runs" || exit 2
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${RNNDROP_DATA:-}" ]; then
    if [ -d "$ROOT/shared/data/ptb" ]; then RNNDROP_DATA="$ROOT/shared/data"; else RNNDROP_DATA="$ROOT/../shared/data"; fi
fi
export RNNDROP_DATA
: > "$OUT/status.txt"

if [ $DRY = 1 ]; then
    DEVICE=cpu
    LIMIT_TESTS=60 LIMIT_BENCH=60 TRAIN_MINUTES=0.1 LIMIT_TRAIN=60 LIMIT_EVAL=60
    TESTS=(-m cuda tests/test_fast.py)
    BENCH_LSTM=(--sizes small --repeats 1 --threads 1 --skip reference)
    BENCH_LM_SIZES=(small)
    BENCH_LM=(--steps 1 --repeats 1)
    # tiny models: the same recipes, 2 x 16 units, a few steps, MC with 2 samples
    TRAIN_SET=(--set model.hidden_size=16 --set train.max_steps=3 --set train.epochs=1
               --set train.eval_batch_size=2 --set train.bptt=5 --set train.threads=1)
    MC_SET=(--mc 2 --threads 1)
else
    DEVICE=cuda
    # 9 minutes in all: tests 1.5, speed 2, training 4 (+ its final checkpoint), evaluation 1.
    LIMIT_TESTS=90 LIMIT_BENCH=60 TRAIN_MINUTES=4 LIMIT_TRAIN=300 LIMIT_EVAL=75
    TESTS=(-m cuda tests/test_fast.py tests/test_rnn.py)
    BENCH_LSTM=(--sizes medium,large --repeats 5)
    BENCH_LM_SIZES=(medium large)
    BENCH_LM=(--steps 10 --repeats 3)
    TRAIN_SET=()
    MC_SET=()
fi

phase() {   # phase NAME LIMIT_S COMMAND...: run with a time limit, log to logs/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout --signal=TERM --kill-after=15 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - t0))" >> "$OUT/status.txt"
    echo "[$(date -u +%H:%M:%S)] $name: rc=$rc, $((SECONDS - t0)) s"
    return 0
}

echo "gpu_lease: device=$DEVICE dry_run=$DRY out=$OUT data=$RNNDROP_DATA"
"$PY" -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(), 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
    > "$OUT/logs/machine.log" 2>&1
{ nvidia-smi 2>/dev/null || lscpu 2>/dev/null | head -20; } >> "$OUT/logs/machine.log"

# 1. tests
phase tests "$LIMIT_TESTS" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"

# 2. speed, alone on the device
phase bench-lstm "$LIMIT_BENCH" "$PY" benchmarks/variational_lstm.py --device "$DEVICE" "${BENCH_LSTM[@]}"
if [ $DRY = 0 ]; then
    phase bench-lstm-tf32 "$LIMIT_BENCH" "$PY" benchmarks/variational_lstm.py --device cuda --tf32 "${BENCH_LSTM[@]}"
fi
for size in "${BENCH_LM_SIZES[@]}"; do
    phase "bench-lm-$size" "$LIMIT_BENCH" "$PY" benchmarks/lm_throughput.py --device "$DEVICE" --size "$size" "${BENCH_LM[@]}"
done

# 3. the PTB schedules, at once; each stops itself (--max-minutes) with a checkpoint
RECIPES=(ptb-medium-zaremba ptb-medium-variational ptb-large-variational)
for r in "${RECIPES[@]}"; do
    phase "train-$r" "$LIMIT_TRAIN" "$PY" -m rnndrop train "configs/$r.toml" --device "$DEVICE" \
        --data "$RNNDROP_DATA/ptb" --out "$OUT/runs/$r" --max-minutes "$TRAIN_MINUTES" \
        --no-progress "${TRAIN_SET[@]}" &
done
wait
for r in "${RECIPES[@]}"; do
    ck="$OUT/runs/$r/best.pt"
    [ -f "$ck" ] || ck="$OUT/runs/$r/last.pt"
    mc=$(sed -n 's/^mc_samples *= *\([0-9]*\).*/\1/p' "configs/$r.toml")
    phase "eval-$r" "$LIMIT_EVAL" "$PY" -m rnndrop eval "$ck" --device "$DEVICE" --no-progress \
        --data "$RNNDROP_DATA/ptb" --mc "${mc:-0}" "${MC_SET[@]}" &
done
wait

# the summary table, and the logs in one file (a lease brings back at most 8 files)
"$PY" - "$OUT" "${RECIPES[@]}" > "$OUT/summary.txt" <<'EOF'
import json, pathlib, re, sys
out, recipes = pathlib.Path(sys.argv[1]), sys.argv[2:]
status = dict(l.split(" ", 1) for l in (out / "status.txt").read_text().splitlines() if l)
print("phase status:")
for name, rest in status.items():
    print(f"  {name:<34} {rest}")
print()
print(f"{'recipe':<24}{'epochs':>7}{'steps':>7}{'tok/s':>9}{'last valid':>12}{'test':>9}{'test MC':>9}")
for r in recipes:
    lines = (out / "runs" / r / "metrics.jsonl")
    recs = [json.loads(l) for l in lines.read_text().splitlines()] if lines.is_file() else []
    log = out / "logs" / f"eval-{r}.log"
    text = log.read_text() if log.is_file() else ""
    test = re.search(r"perplexity \(dropout approximation\): ([\d.]+|inf)", text)
    mc = re.search(r"perplexity \(MC dropout, \d+ samples\): ([\d.]+|inf)", text)
    last = recs[-1] if recs else {}
    steps = out / "runs" / r / "steps.jsonl"      # every step taken, the last epoch's too
    nsteps = len(steps.read_text().splitlines()) if steps.is_file() else 0
    print(f"{r:<24}{len(recs):>7}{nsteps:>7}"
          f"{last.get('tokens_per_s', float('nan')):>9.0f}{last.get('valid_ppl', float('nan')):>12.2f}"
          f"{test.group(1) if test else '-':>9}{mc.group(1) if mc else '-':>9}")
EOF
cat "$OUT/summary.txt"
tar -czf "$OUT/lease-logs.tar.gz" -C "$OUT" logs status.txt \
    $(cd "$OUT" && ls runs/*/metrics.jsonl runs/*/final.json 2>/dev/null)
echo "gpu_lease: done in $SECONDS s; summary $OUT/summary.txt, logs $OUT/lease-logs.tar.gz"
