"""A user's own corpus end to end: ``rnndrop train --data`` on a WikiText folder and on one text
file; the checkpoint remembers path, layout and split, so eval, --resume and generate need no
--data; bits per character; --mc on a model without dropout; the large-vocabulary hint."""
import json
import math
import re

from lmrun import write_lm_corpus
from rnndrop import checkpoint as ckpt
from rnndrop.cli import main
from rnndrop.commands.train import _large_vocab_hint
from rnndrop.config import RunConfig
from rnndrop.data.text import load_text_file
from rnndrop.runs import load_run

RECIPE = ("[data]\nlayout = \"ptb\"\n[model]\nhidden_size = 8\nnum_layers = 1\n[train]\n"
          "epochs = 1\nbatch_size = 4\neval_batch_size = 2\nbptt = 5\ncheckpoint_every = 0\n")


def _recipe(tmp_path):
    (tmp_path / "tiny.toml").write_text(RECIPE)
    return str(tmp_path / "tiny.toml")


def _wikitext(tmp_path):
    ptb = write_lm_corpus(tmp_path / "ptb", n_train=100)
    wiki = tmp_path / "wikitext-2"
    wiki.mkdir()
    for s in ("train", "valid", "test"):
        (wiki / f"wiki.{s}.tokens").write_text((ptb / f"ptb.{s}.txt").read_text())
    return wiki


def test_wikitext_folder_run_needs_no_data_afterwards(tmp_path, capsys, monkeypatch):
    wiki, out = _wikitext(tmp_path), tmp_path / "run"
    assert main(["train", _recipe(tmp_path), "--data", str(wiki), "--out", str(out),
                 "--no-progress"]) == 0
    assert "has the wikitext layout, not ptb" in capsys.readouterr().out
    data = ckpt.load(out / "best.pt")["config"]["data"]
    assert data["dir"] == str(wiki.resolve()) and data["layout"] == "wikitext"
    final = json.loads((out / "final.json").read_text())
    monkeypatch.chdir(tmp_path / "ptb")      # another working directory: the path is absolute
    monkeypatch.delenv("RNNDROP_DATA", raising=False)
    assert main(["eval", str(out / "best.pt"), "--no-progress", "--mc", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"test perplexity (dropout approximation): {final['test_ppl']:.2f}\n" in printed
    # no dropout: one evaluation and a line saying why, not three identical passes
    assert "--mc 3: the model has no dropout" in printed and "MC dropout, 3 samples" not in printed
    assert "bits per character" not in printed                  # a word model
    assert main(["generate", str(out / "best.pt"), "--tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["train", "--resume", str(out / "last.pt"), "--set", "train.epochs=2",
                 "--no-progress"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_layout_given_with_set_is_kept_by_train(tmp_path, capsys):
    wiki = _wikitext(tmp_path)
    assert main(["train", _recipe(tmp_path), "--data", str(wiki), "--out", str(tmp_path / "r"),
                 "--set", "data.layout=ptb"]) == 2
    assert "missing split" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", _recipe(tmp_path), "--data", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no language-model corpus found; looked for ptb.{train,valid,test}.txt" in err
    assert len(err.strip().splitlines()) == 2


def test_one_file_chars_run_records_its_split_for_eval_and_resume(tmp_path, capsys, monkeypatch):
    ptb = write_lm_corpus(tmp_path / "ptb", n_train=60)
    novel = tmp_path / "novel.txt"
    novel.write_text("".join((ptb / f"ptb.{s}.txt").read_text() for s in ("train", "valid", "test"))
                     .replace("<unk> ", ""))
    out = tmp_path / "run"
    assert main(["train", _recipe(tmp_path), "--data", str(novel), "--out", str(out),
                 "--no-progress", "--set", "data.layout=chars", "--set", "data.split_seed=4",
                 "--set", "data.unk=add"]) == 0
    ref = load_text_file(novel, chars=True, seed=4)
    assert json.loads((out / "split.json").read_text()) == ref.split
    data = ckpt.load(out / "last.pt")["config"]["data"]
    assert (data["dir"], data["layout"], data["split_seed"]) == (str(novel.resolve()), "chars", 4)
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert math.isclose(rec["valid_bpc"], math.log2(rec["valid_ppl"]))
    final = json.loads((out / "final.json").read_text())
    assert math.isclose(final["test_bpc"], math.log2(final["test_ppl"]))
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "ptb")
    # eval without --data reads the same file and the same split
    run = load_run(out / "last.pt", corpus=True)
    for s in ("train", "valid", "test"):
        assert getattr(run.corpus, s).tolist() == getattr(ref, s).tolist()
    assert main(["eval", str(out / "best.pt"), "--no-progress"]) == 0
    m = re.search(r"test perplexity \(dropout approximation\): ([\d.]+), ([\d.]+) bits per "
                  r"character", capsys.readouterr().out)
    assert m and math.isclose(float(m.group(2)), math.log2(float(m.group(1))), abs_tol=2e-3)
    assert abs(float(m.group(1)) - final["test_ppl"]) < 0.006
    assert main(["train", "--resume", str(out / "last.pt"), "--set", "train.epochs=2",
                 "--no-progress"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "split.json").read_text()) == ref.split
    capsys.readouterr()
    # the file edited after training: eval says its split is not the run's
    novel.write_text(novel.read_text() + "the cat sat on the mat\n" * 20)
    main(["eval", str(out / "best.pt"), "--no-progress"])
    err = capsys.readouterr().err
    assert f"warning: {novel.resolve()} is not split as in {out / 'split.json'}" in err


def test_identical_splits_warn_in_one_line(tmp_path, capsys):
    ptb = write_lm_corpus(tmp_path / "ptb", n_train=60)
    same = tmp_path / "same"
    same.mkdir()
    for s in ("train", "valid", "test"):
        (same / f"{s}.txt").write_text((ptb / "ptb.train.txt").read_text())
    assert main(["train", _recipe(tmp_path), "--data", str(same), "--out", str(tmp_path / "r"),
                 "--no-progress", "--set", "train.max_steps=1"]) == 0
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if "identical contents" in l]
    assert len(lines) == 3 and all(l.startswith("warning: ") for l in lines)
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_large_vocabulary_full_softmax_on_cpu_prints_one_hint(capsys):
    cfg = RunConfig()
    _large_vocab_hint(cfg, 19_999)
    assert capsys.readouterr().out == ""
    _large_vocab_hint(cfg, 33_278)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "33,278" in out and 'model.output="adaptive"' in out
    cfg.model.output = "adaptive"
    _large_vocab_hint(cfg, 33_278)
    assert capsys.readouterr().out == ""


def test_a_latin1_text_file_needs_and_honours_encoding(tmp_path, capsys):
    novel = tmp_path / "novel.txt"
    novel.write_bytes(("caf\xe9 au lait et cr\xe8me\n" * 60).encode("latin-1"))
    argv = ["train", _recipe(tmp_path), "--data", str(novel), "--out", str(tmp_path / "r"),
            "--set", "data.layout=chars", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "novel.txt: not valid utf-8 at byte 3 (line 1); pass --encoding latin-1" in err
    assert main(argv + ["--encoding", "latin-1"]) == 0
    run = ckpt.load(tmp_path / "r" / "best.pt")
    assert run["config"]["data"]["encoding"] == "latin-1" and "\xe9" in run["vocab"]["itos"]
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r" / "best.pt"), "--no-progress"]) == 0   # remembered
