"""``rnndrop train`` and ``rnndrop eval`` end to end on tiny corpora: outputs, resume, and
errors that are one line and exit code 2."""
import json
import math

import torch

from lmrun import write_lm_corpus as write_corpus
from rnndrop import checkpoint as ckpt
from rnndrop.cli import main


def test_cli_train_eval_and_bad_checkpoint(tmp_path, capsys):
    data = write_corpus(tmp_path / "data")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[model]\nhidden_size = 8\nnum_layers = 1\nscheme = 'variational'\n"
                   "dropout_hidden = 0.2\n[train]\nepochs = 1\nbatch_size = 4\n"
                   "eval_batch_size = 2\nbptt = 5\n")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
                 "--set", "train.seed=3"]) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert (out / "learning_curve.png").stat().st_size > 0
    rec = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rec[0]["epoch"] == 1 and math.isfinite(rec[0]["valid_ppl"])
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--data", str(data), "--mc", "3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "MC dropout, 3 samples" in printed
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(tmp_path / "junk.pt"), "--data", str(data)]) == 2
    assert "corrupted" in capsys.readouterr().err


def test_sigterm_mid_run_saves_a_resumable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    data = write_corpus(tmp_path / "data", n_train=2000)
    cfg = tmp_path / "long.toml"
    cfg.write_text("[model]\nhidden_size = 8\nnum_layers = 1\n[train]\nepochs = 1000\n"
                   "batch_size = 4\neval_batch_size = 2\nbptt = 5\ncheckpoint_every = 0\n")
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "rnndrop", "train", str(cfg), "--data", str(data),
                          "--out", str(out), "--no-progress"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)            # wait until training is under way (one epoch done)
    p.send_signal(signal.SIGTERM)
    output, _ = p.communicate(timeout=60)
    assert p.returncode == 130, output
    assert "interrupted: checkpoint saved" in output
    st = ckpt.load(out / "last.pt")
    assert st["train_state"]["step"] > 0


# ------------------------------------------------------------------------------ divergence
def test_cli_diverging_run_stops_with_one_line(tmp_path, capsys):
    """The issue's command on a tiny corpus: lr 1e8, a checkpoint every 10 steps."""
    data = write_corpus(tmp_path / "data")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[model]\nhidden_size = 8\nnum_layers = 1\n[train]\nbatch_size = 4\n"
                   "eval_batch_size = 2\nbptt = 5\n")
    rc = main(["train", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
               "--no-progress", "--set", "train.max_steps=100", "--set",
               "train.checkpoint_every=10", "--set", "train.lr=1e8"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("rnndrop train: error: training diverged") and "Traceback" not in err


# ----------------------------------------------------------------- CLI errors, one line each
def _tiny_recipe(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[model]\nhidden_size = 8\nnum_layers = 1\n[train]\nbatch_size = 4\n"
                   "eval_batch_size = 2\nbptt = 5\ncheckpoint_every = 3\nepochs = 1\n")
    return cfg


def test_cli_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys,
                                                                        monkeypatch):
    import errno
    data, cfg, out = write_corpus(tmp_path / "data"), _tiny_recipe(tmp_path), tmp_path / "run"
    real, calls = torch.save, [0]

    def save(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == 3:            # the third checkpoint finds the disk full
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(ckpt.torch, "save", save)
    rc = main(["train", str(cfg), "--data", str(data), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left on device" in err and str(out) in err
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err   # + the debug hint
    assert ckpt.load(out / "last.pt")["train_state"]["step"] == 6
    assert not list(out.glob("*.tmp"))
    monkeypatch.setattr(ckpt.torch, "save", real)
    assert main(["train", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
                 "--resume"]) == 0


def test_cli_checkpoint_without_its_keys_is_one_line(tmp_path, capsys):
    ckpt.save({"model": {}}, tmp_path / "partial.pt")
    assert main(["eval", str(tmp_path / "partial.pt")]) == 2
    assert main(["train", "--resume", str(tmp_path / "partial.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("without 'config'") == 2 and "KeyError" not in err


def test_cli_bad_set_fails_before_the_data_is_read(tmp_path, capsys):
    cfg = _tiny_recipe(tmp_path)
    for bad in ("train.bptt=0", "model.hidden_size=0", "train.lr=nan", "train.lr_decay=0"):
        # no --data and no $RNNDROP_DATA: reading the corpus would fail with another message
        assert main(["train", str(cfg), "--set", bad, "--out", str(tmp_path / "r")]) == 2
        assert bad.split("=")[0] in capsys.readouterr().err


def test_threads_option_is_train_threads(tmp_path, capsys):
    data, cfg, out = write_corpus(tmp_path / "data"), _tiny_recipe(tmp_path), tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
                 "--threads", "1", "--set", "train.max_steps=2"]) == 0
    assert ckpt.load(out / "last.pt")["config"]["train"]["threads"] == 1
    assert main(["eval", str(out / "last.pt"), "--data", str(data), "--threads", "0"]) == 2
    assert "--threads must be a positive integer" in capsys.readouterr().err


def test_progress_bar_counts_tokens_and_shows_ppl_and_lr(tmp_path, monkeypatch):
    import rnndrop.train.lm as train_mod
    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.postfix, self.n = kw, {}, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **kw):
            self.postfix = kw

        def close(self):
            pass
    monkeypatch.setattr(train_mod, "tqdm", Bar)
    data, cfg, out = write_corpus(tmp_path / "data"), _tiny_recipe(tmp_path), tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(data), "--out", str(out),
                 "--set", "train.max_steps=40"]) == 0
    bar = bars[0]
    assert bar.kw["unit"] == "tok" and bar.kw["unit_scale"] is True   # tqdm shows tok/s
    assert bar.n == 40 * 5 * 4                                          # tokens: steps x T x B
    assert set(bar.postfix) == {"ppl", "lr"}
