#!/usr/bin/env bash
# `rnndrop train` against PyTorch's own word_language_model example, end to end, as a user runs
# each (issue 16): one epoch of PTB, 2 x 200 LSTM, no dropout, batch 20, bptt 35, torch's default
# threads, each program's whole run timed (start, data, the epoch, its validation and test
# evaluation). Interleaved pairs, the order alternating; prints the wall and CPU seconds of every
# run and each program's own tokens/s. Measures only.
#
#   docs/results/scripts/example_end_to_end.sh EXAMPLE_DIR PTB_DIR [PAIRS]
#
# EXAMPLE_DIR: a checkout of pytorch/examples' word_language_model (main.py, model.py, data.py);
# PTB_DIR: the folder of ptb.{train,valid,test}.txt. Run from the repository root (python -m
# rnndrop from src/ or the installed package).
set -euo pipefail
ex=$(cd "$1" && pwd); ptb=$(cd "$2" && pwd); pairs=${3:-3}
py=${PYTHON:-python}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ptb"                       # the example reads DIR/{train,valid,test}.txt
for s in train valid test; do ln -s "$ptb/ptb.$s.txt" "$work/ptb/$s.txt"; done
TIMEFORMAT='%R %U %S'

example() {   # its defaults but dropout 0 and one epoch: lr 20, clip 0.25, batch 20, bptt 35
    local t
    { t=$( { time (cd "$ex" && $py main.py --data "$work/ptb" --epochs 1 --dropout 0 \
        --save "$work/model.pt" > "$work/example.log" 2>&1) ; } 2>&1 ); } || { cat "$work/example.log"; exit 1; }
    # tokens/s from its ms/batch lines (200 batches of 20 x 35 tokens each)
    local ms; ms=$(grep -o 'ms/batch *[0-9.]*' "$work/example.log" | awk '{s+=$2; n++} END {print s/n}')
    echo "example  wall/user/sys s: $t  train tokens/s: $(awk -v m="$ms" 'BEGIN {printf "%.0f", 700000/m}')" \
         "  $(grep -o 'test ppl *[0-9.]*' "$work/example.log")"
}

ours() {      # the small recipe (no dropout) at the example's window length
    local t out="$work/run"; rm -rf "$out"
    { t=$( { time ($py -m rnndrop train configs/ptb-small-zaremba.toml --data "$ptb" \
        --set train.bptt=35 --set train.epochs=1 --set train.checkpoint_every=0 \
        --out "$out" --no-progress > "$work/ours.log" 2>&1) ; } 2>&1 ); } || { cat "$work/ours.log"; exit 1; }
    echo "rnndrop  wall/user/sys s: $t  train tokens/s: $($py -c "import json,sys; print(round(json.loads(open(sys.argv[1]).readline())['tokens_per_s']))" "$out/metrics.jsonl")" \
         "  test ppl $($py -c "import json,sys; print(round(json.load(open(sys.argv[1]))['test_ppl'], 2))" "$out/final.json")"
}

echo "# $(date -u) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
     "torch $($py -c 'import torch; print(torch.__version__, torch.get_num_threads(), "threads")'), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$pairs"); do
    if (( i % 2 )); then example; ours; else ours; example; fi
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
