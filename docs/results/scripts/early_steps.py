"""Summarise the first steps of LM runs from their per-step logs (steps.jsonl): the largest loss
and gradient norm, the mean loss over step windows, and how many steps were clipped.

    python docs/results/scripts/early_steps.py [--windows 0,50,100,160] RUN/steps.jsonl [...]
"""
import argparse
import json
import statistics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", default="0,50,100,160",
                    help="window edges in steps (default 0,50,100,160)")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    edges = [int(e) for e in args.windows.split(",")]
    spans = list(zip(edges, edges[1:]))
    print("| run | largest loss | largest grad norm | "
          + " | ".join(f"mean loss {a + 1}–{b}" for a, b in spans)
          + f" | clipped in {spans[-1][0] + 1}–{spans[-1][1]} |")
    print("|---" * (4 + len(spans)) + "|")
    for path in args.paths:
        rows = [json.loads(line) for line in open(path)][:edges[-1]]
        if len(rows) < edges[-1]:
            print(f"| {path} | (only {len(rows)} steps) |")
            continue
        loss = [r["loss"] for r in rows]
        a, b = spans[-1]
        print(f"| {path} | {max(loss):.1f} | {max(r['grad_norm'] for r in rows):.0f} | "
              + " | ".join(f"{statistics.mean(loss[x:y]):.2f}" for x, y in spans)
              + f" | {sum(r['clipped'] for r in rows[a:b])}/{b - a} |")


if __name__ == "__main__":
    main()
