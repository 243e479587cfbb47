"""The PTB rows of docs/results/regularizers.md from the runs of the ptb-400-* recipes: valid and
test perplexity (final.json), mean seconds per epoch and, for the learned arm, the rates after
the last epoch (metrics.jsonl). Reads only; a run that is missing or unfinished is a row
saying so.

    python docs/results/scripts/regularizers_table.py runs
"""
import argparse
import json
from pathlib import Path

ARMS = ("none", "zaremba", "variational", "zoneout", "both", "learned")

ap = argparse.ArgumentParser()
ap.add_argument("runs", nargs="?", default="runs", help="folder holding runs/ptb-400-<arm>")
args = ap.parse_args()
print("| arm | epochs | valid ppl | test ppl | s / epoch | learned rates (last epoch) |")
print("|---|---|---|---|---|---|")
for arm in ARMS:
    run = Path(args.runs) / f"ptb-400-{arm}"
    metrics = run / "metrics.jsonl"
    recs = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    final = json.loads((run / "final.json").read_text()) if (run / "final.json").is_file() else None
    if final is None:
        print(f"| {arm} | {len(recs)} | not yet measured | | | |")
        continue
    secs = sum(r["epoch_seconds"] for r in recs) / max(len(recs), 1)
    rates = recs[-1].get("dropout_rates", {}) if recs else {}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in rates.items()) or "—"
    print(f"| {arm} | {len(recs)} | {final['valid_ppl']:.2f} | {final['test_ppl']:.2f} | "
          f"{secs:.0f} | {shown} |")
