"""Seed spread of the D2L 3.13 reproduction: both MLP forms, dropout (0.2, 0.5), 10 epochs,
seeds 0-4, trained by the d2l-dropout study's own code on 2 worker processes.

    RNNDROP_DATA=../shared/data python docs/results/scripts/d2l_seeds.py
"""
import statistics

from rnndrop.studies import d2l_dropout as D


def main():
    s = D.Settings(jobs=2)
    specs = [D.RunSpec(form=f, seed=i, epochs=10) for f in ("scratch", "concise") for i in range(5)]
    study = D.run(s, specs=specs, progress=False)
    out = {}
    for sp, r in zip(specs, study["runs"]):
        acc = r["history"]["test_acc"][-1]
        out.setdefault(sp.form, []).append(acc)
        print(sp.form, sp.seed, f"{acc:.4f}")
    for f, a in out.items():
        print(f, "mean %.4f sd %.4f min %.4f max %.4f"
              % (statistics.mean(a), statistics.stdev(a), min(a), max(a)))


if __name__ == "__main__":
    main()
