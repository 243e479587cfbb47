"""``rnndrop classify train | eval | predict`` as a user runs them: every input format, one-line
errors, the run's own split reused, and a resumed run predicting as an uninterrupted one."""
import json
import shutil

import pytest

from rnndrop.cli import main

from clfdata import TINY, write_reviews


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1].startswith("(set RNNDROP_DEBUG"), err   # one line + hint
    for f in fragments:
        assert f in err[0], err[0]
    return err[0]


def _train(tmp_path, capsys, data_args, out="run", extra=()):
    argv = ["classify", "train", *data_args, "--out", str(tmp_path / out), *TINY,
            "--set", "train.epochs=2", *extra]
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_train_eval_predict_on_a_csv(tmp_path, capsys, reviews):
    out = _train(tmp_path, capsys, ["--data", str(reviews)], extra=["--set", "train.mc_samples=3"])
    assert "task: classification (2 classes: neg, pos)" in out
    assert "192 train, 24 valid, 24 test" in out and "MC dropout" in out
    run = tmp_path / "run"
    # eval of the run's own test split (split.json), without --data
    assert main(["classify", "eval", str(run / "best.pt"), "--mc", "4", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test split (24 examples, MC dropout with 4 samples)" in text
    assert "accuracy  macro_f1       nll     brier       ece" in text
    assert (run / "reliability_test.png").stat().st_size > 1000
    # predict on texts without labels, one per line
    new = tmp_path / "new.txt"
    new.write_text("a great film\nboring and awful\n")
    assert main(["classify", "predict", str(run / "best.pt"), "--data", str(new), "--mc", "5",
                 "--out", str(tmp_path / "p.jsonl"), "--no-progress"]) == 0
    rows = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    for r in rows:
        assert r["label"] in ("neg", "pos") and "true" not in r
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert 0 <= r["mutual_information"] <= r["entropy"] + 1e-6


def test_every_format_trains(tmp_path, capsys, reviews):
    import csv
    rows = list(csv.reader(open(reviews)))[1:]
    folder = tmp_path / "folder"
    for i, (text, label) in enumerate(rows):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i}.txt").write_text(text)
    (folder / "unsup").mkdir()
    (folder / "unsup" / "0.txt").write_text("no label")
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps({"review": t, "y": l}) + "\n" for t, l in rows))
    for label in ("pos", "neg"):
        (tmp_path / f"{label}.txt").write_text("".join(t + "\n" for t, l in rows if l == label))
    for name, args in [("folder", ["--data", str(folder)]),
                       ("jsonl", ["--data", str(jsonl), "--text-column", "review",
                                  "--label-column", "y"]),
                       ("files", ["--files", f"{tmp_path / 'pos.txt'}:pos",
                                  f"{tmp_path / 'neg.txt'}:neg"])]:
        out = _train(tmp_path, capsys, args, out=name)
        assert "2 classes: neg, pos" in out and "192 train, 24 valid, 24 test" in out, name


def test_separate_valid_and_test_files_are_used_as_given(tmp_path, capsys):
    tr = write_reviews(tmp_path / "train.csv", n=200, seed=1)
    va = write_reviews(tmp_path / "valid.csv", n=30, seed=2)
    te = write_reviews(tmp_path / "test.csv", n=50, seed=3)
    out = _train(tmp_path, capsys, ["--data", str(tr), "--valid", str(va), "--test", str(te)])
    assert "split" not in out.split("run directory")[0]       # nothing was split
    assert "test (50 examples" in out


@pytest.mark.parametrize("case", ["not_utf8", "empty", "one_class", "no_label_column"])
def test_bad_data_is_one_line(tmp_path, capsys, case):
    f = tmp_path / "d.csv"
    if case == "not_utf8":
        f.write_bytes(b"text,label\nnice,pos\ncaf\xe9,neg\n")
        msg = _one_line_error(capsys, ["classify", "train", "--data", str(f), *TINY],
                              "d.csv", "not valid utf-8 at byte 23", "--encoding latin-1")
        assert msg
        # and with the encoding named, it reads (then stops at the tiny data's split)
        main(["classify", "train", "--data", str(f), "--encoding", "latin-1",
              "--out", str(tmp_path / "r"), *TINY])
        assert "not valid" not in capsys.readouterr().err
        return
    f.write_text({"empty": "",
                  "one_class": "text,label\n" + "a b,pos\n" * 20,
                  "no_label_column": "text,stars\n" + "a b,3\n" * 20}[case])
    _one_line_error(capsys, ["classify", "train", "--data", str(f), "--out",
                             str(tmp_path / "r"), *TINY],
                    "d.csv", {"empty": "empty", "one_class": "only one class",
                              "no_label_column": "no column 'label'"}[case])


def test_resumed_run_predicts_as_the_uninterrupted_one(tmp_path, capsys, reviews):
    _train(tmp_path, capsys, ["--data", str(reviews)], out="whole")
    # the same run stopped after 7 steps (mid-epoch 1) and continued
    _train(tmp_path, capsys, ["--data", str(reviews)], out="cut",
           extra=["--set", "train.max_steps=7"])
    assert main(["classify", "train", "--resume", str(tmp_path / "cut" / "last.pt"),
                 "--set", "train.max_steps=0", "--no-progress"]) == 0
    capsys.readouterr()
    preds = {}
    for run in ("whole", "cut"):
        assert main(["classify", "predict", str(tmp_path / run / "best.pt"), "--data",
                     str(reviews), "--mc", "3", "--out", str(tmp_path / f"{run}.jsonl"),
                     "--no-progress"]) == 0
        preds[run] = (tmp_path / f"{run}.jsonl").read_text()
        capsys.readouterr()
        assert main(["classify", "eval", str(tmp_path / run / "best.pt"), "--mc", "3",
                     "--no-progress"]) == 0
        preds[run + "_eval"] = capsys.readouterr().out.split("plot:")[0]
    assert preds["whole"] == preds["cut"]
    assert preds["whole_eval"] == preds["cut_eval"]


def test_changed_data_after_the_split_is_an_error(tmp_path, capsys, reviews):
    _train(tmp_path, capsys, ["--data", str(reviews)])
    shutil.copy(write_reviews(tmp_path / "other.csv", seed=9), reviews)
    _one_line_error(capsys, ["classify", "eval", str(tmp_path / "run" / "best.pt")],
                    "changed")


def test_new_run_over_an_old_one_is_refused(tmp_path, capsys, reviews):
    _train(tmp_path, capsys, ["--data", str(reviews)])
    _one_line_error(capsys, ["classify", "train", "--data", str(reviews), "--out",
                             str(tmp_path / "run"), *TINY], "already holds a run", "--resume")


def test_mc_on_a_model_without_dropout_runs_once(tmp_path, capsys, reviews):
    _train(tmp_path, capsys, ["--data", str(reviews)], extra=["--set", "model.scheme=none"])
    assert main(["classify", "eval", str(tmp_path / "run" / "best.pt"), "--mc", "10",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "has no dropout" in out and "MC dropout" not in out.split("evaluated once")[1]


def test_regression_predict_has_value_and_std(tmp_path, capsys):
    data = write_reviews(tmp_path / "r.csv", n=200, regression=True)
    out = _train(tmp_path, capsys, ["--data", str(data)])
    assert "task: regression" in out and "rmse" in out
    assert main(["classify", "predict", str(tmp_path / "run" / "best.pt"), "--data", str(data),
                 "--mc", "4", "--out", str(tmp_path / "p.jsonl"), "--no-progress"]) == 0
    r = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert {"value", "std", "predictive_std", "true"} <= set(r)
    assert r["predictive_std"] >= r["std"] >= 0


def test_a_language_model_checkpoint_is_named_as_such(tmp_path, capsys):
    from rnndrop import checkpoint as ckpt
    ckpt.save({"model": {}, "config": {}, "vocab": {"itos": ["a"]}}, tmp_path / "lm.pt")
    _one_line_error(capsys, ["classify", "eval", str(tmp_path / "lm.pt")],
                    "is a language-model checkpoint: use rnndrop eval")
