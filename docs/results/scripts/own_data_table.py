"""The tables of docs/results/own-data.md from the run directories of own_data.sh:
    python docs/results/scripts/own_data_table.py OUTDIR"""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])


def finished(prefix):
    """(scheme, final.json, metrics.jsonl records, mean s / epoch) of every finished run
    ``OUTDIR/<prefix>-<scheme>``, in the table's scheme order."""
    for scheme in ("none", "naive", "variational"):
        run = out / f"{prefix}-{scheme}"
        if not (run / "final.json").is_file():
            continue
        final = json.loads((run / "final.json").read_text())
        hist = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        yield scheme, final, hist, sum(r["epoch_seconds"] for r in hist) / len(hist)


print("IMDB (test: 25,000 reviews)\n")
print("| scheme | prediction | accuracy | macro-F1 | NLL | Brier | ECE | entropy correct / wrong (nats) | AUROC of entropy for errors | s / epoch |")
print("|---|---|---|---|---|---|---|---|---|---|")
for scheme, f, h, secs in finished("imdb"):
    u = f["uncertainty"]
    for kind in ("standard", "mc"):
        if kind not in f:
            continue
        s = f[kind]
        unc = (f"{u['entropy_correct']:.3f} / {u['entropy_wrong']:.3f} | {u['auroc_entropy']:.3f}"
               if (kind == "mc") == ("auroc_bald" in u) else
               f"– | {u['auroc_entropy_standard']:.3f}")
        name = "standard" if kind == "standard" else f"MC dropout ({f['mc_samples']})"
        print(f"| {scheme} | {name} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['nll']:.4f} | "
              f"{s['brier']:.4f} | {s['ece']:.4f} | {unc} | {secs:.0f} |")

print("\nPang & Lee ratings (test: 20 % of 5,006 reviews)\n")
print("| scheme | prediction | RMSE | MAE | Gaussian NLL | epochs (best) | s / epoch |")
print("|---|---|---|---|---|---|---|")
for scheme, f, h, secs in finished("ratings"):
    best = min(range(len(h)), key=lambda i: h[i]["valid_loss"]) + 1
    for kind in ("standard", "mc"):
        if kind not in f:
            continue
        s = f[kind]
        name = "standard" if kind == "standard" else f"MC dropout ({f['mc_samples']})"
        print(f"| {scheme} | {name} | {s['rmse']:.4f} | {s['mae']:.4f} | {s.get('nll', float('nan')):.3f} | "
              f"{len(h)} ({best}) | {secs:.0f} |")
