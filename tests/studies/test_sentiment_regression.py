"""sentiment-regression study: --quick end to end on a tiny fake scale-data folder, and a short
smoke run on the real data (``realdata``)."""
import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from rnndrop.studies import sentiment_regression as study

CRITICS = ("Dennis+Schwartz", "James+Berardinelli", "Scott+Renshaw", "Steve+Rhodes")
WORDS = "the film movie plot actor scene story and a it of this that".split()


def make_fake_scaledata(root: Path, per_critic=70, seed=0) -> Path:
    """``root/scaledata/scaledata/<critic>/{subj,rating}.<critic>``, one review per line."""
    g = torch.Generator().manual_seed(seed)
    for c in CRITICS:
        d = root / "scaledata" / "scaledata" / c
        d.mkdir(parents=True)
        subj, rating = [], []
        for _ in range(per_critic):
            r = float(torch.rand(1, generator=g))
            n = int(torch.randint(10, 50, (1,), generator=g))
            toks = [WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g).tolist()]
            toks += ["great"] * int(5 * r) + ["awful"] * int(5 * (1 - r))
            subj.append(" ".join(toks))
            rating.append(f"{r:.2f}")
        (d / f"subj.{c}").write_text("\n".join(subj) + "\n")
        (d / f"rating.{c}").write_text("\n".join(rating) + "\n")
    return root


def test_quick_end_to_end_on_fake_data(tmp_path, quick_args):
    root = make_fake_scaledata(tmp_path / "data")
    out = tmp_path / "out"
    args = quick_args(study, root, out)
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    pairs = [(r["model"], r["scheme"]) for r in doc["results"]]
    assert pairs == [(m, s) for m in ("lstm", "gru") for s in ("none", "naive", "variational")]
    assert doc["data"]["train_reviews"] + doc["data"]["test_reviews"] == 240
    assert doc["data"]["train"] >= doc["data"]["train_reviews"]      # pieces of reviews
    for r in doc["results"]:
        assert len(r["history"]) == doc["settings"]["epochs"] + 1       # epoch 0 = untrained
        for h in r["history"]:
            assert 0.0 <= h["test_rmse"] <= 1.0 and 0.0 <= h["train_rmse"] <= 1.0
        assert r["min_test_rmse"] <= r["final_test_rmse"]
        assert math.isfinite(r["mean_predictor_test_rmse"])
        assert r["p"] == (0.0 if r["scheme"] == "none" else doc["settings"]["p"])
    assert "| gru | variational |" in (out / "results.md").read_text()
    assert (out / "rmse_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_wiring_and_subsets(tmp_path, quick_args):
    root = make_fake_scaledata(tmp_path / "data")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="study")
    study.STUDY.add_cli(sub)
    args = parser.parse_args(["sentiment-regression", "--data", str(root), "--out",
                              str(tmp_path / "o"), "--quick", "--no-progress", "--threads", "1",
                              "--models", "gru", "--schemes", "variational", "--epochs", "1",
                              "--p", "0.5"])
    assert args.func == study.STUDY.command and args.func(args) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [(r["model"], r["scheme"], r["p"]) for r in doc["results"]] == [("gru", "variational", 0.5)]
    s = study.STUDY.settings_from_args(study.STUDY.parse_args(["--no-chunks", "--keep", "first"]))
    assert (s.chunks, s.keep) == (False, "first") and study.Settings().chunks
    with pytest.raises(ValueError, match="unknown schemes"):
        args = quick_args(study, root, tmp_path / "x", "--schemes", "zoneout")
        args.func(args)


@pytest.mark.realdata
def test_quick_on_real_scaledata(tmp_path, quick_args, real_data):
    root = real_data("scaledata")
    out = tmp_path / "out"
    args = quick_args(study, root, out, "--models", "lstm", "--schemes", "none,variational")
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["results"]) == 2
    assert all(0.0 < r["final_test_rmse"] < 1.0 for r in doc["results"])
