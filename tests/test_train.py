"""Language model, trainer, evaluation, checkpoints and the train/eval CLI on tiny corpora."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from rnndrop import checkpoint as ckpt
from rnndrop.cli import main
from rnndrop.config import RunConfig, apply_overrides, load_config
from rnndrop.data.text import batchify, load_corpus
from rnndrop.evaluate import perplexity
from rnndrop.models.lm import RNNLanguageModel
from rnndrop.train import LMTrainer, TrainingDiverged

WORDS = "the cat sat on a mat and the dog ate my hat".split()


def write_corpus(root: Path, n_train=300, seed=0) -> Path:
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 40), ("test", 40)):
        lines = []
        for _ in range(n):
            k = int(torch.randint(3, 9, (1,), generator=g))
            idx = torch.randint(0, len(WORDS), (k,), generator=g).tolist()
            lines.append(" ".join(WORDS[i] for i in idx))
        if split == "train":
            lines.append("<unk> " + " ".join(WORDS))  # every word and <unk> seen in train
        (root / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def tiny_cfg(**over) -> RunConfig:
    cfg = RunConfig()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.init_range = 16, 2, 0.1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.bptt = 2, 4, 2, 7
    cfg.train.checkpoint_every = 0
    return apply_overrides(cfg, [f"{k}={v}" for k, v in over.items()])


@pytest.fixture
def corpus(tmp_path):
    return load_corpus(write_corpus(tmp_path / "data"), layout="ptb")


def test_uniform_model_perplexity_is_vocab_size(corpus):
    model = RNNLanguageModel(len(corpus.vocab), hidden_size=8, num_layers=1)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    ppl = perplexity(model, batchify(corpus.test, 2), bptt=5)
    assert ppl == pytest.approx(len(corpus.vocab), rel=1e-5)


def test_mc_with_p0_equals_deterministic(corpus):
    torch.manual_seed(0)
    model = RNNLanguageModel(len(corpus.vocab), hidden_size=8, num_layers=2, scheme="variational")
    data = batchify(corpus.valid, 2)
    det = perplexity(model, data, bptt=5)
    mc = perplexity(model, data, bptt=5, mc_samples=3, mc_batch=2)
    assert mc == pytest.approx(det, rel=1e-5)


def test_mc_dropout_averages_probabilities(corpus):
    torch.manual_seed(0)
    model = RNNLanguageModel(len(corpus.vocab), hidden_size=8, num_layers=1, scheme="variational",
                             dropout_hidden=0.5, dropout_output=0.5)
    data = batchify(corpus.valid, 2)
    torch.manual_seed(1)
    mc = perplexity(model, data, bptt=5, mc_samples=4, mc_batch=4)
    torch.manual_seed(1)
    mc_chunked = perplexity(model, data, bptt=5, mc_samples=4, mc_batch=4)
    assert mc == mc_chunked                       # seeded: repeatable
    assert math.isfinite(mc) and mc != perplexity(model, data, bptt=5)


def test_tiny_model_overfits_tiny_corpus(tmp_path):
    root = tmp_path / "rep"
    root.mkdir()
    text = "\n".join(["a b c d e f g"] * 60) + "\n"
    for s in ("train", "valid", "test"):
        (root / f"ptb.{s}.txt").write_text(text)
    corpus = load_corpus(root, layout="ptb", unk="add")
    cfg = tiny_cfg(**{"train.epochs": 8, "train.optimizer": "adam", "train.lr": 0.02,
                      "model.hidden_size": 24})
    res = LMTrainer(cfg, corpus, tmp_path / "run", progress=False, log=lambda *a: None).train()
    assert res["test_ppl"] < 1.5   # a deterministic cycle: almost certain after training


QUIET = dict(progress=False, log=lambda *a: None)


def _stopped_then_resumed(corpus, run_dir: Path, over: dict, steps: int) -> LMTrainer:
    """A run stopped after ``steps`` steps, then resumed to the end in a fresh trainer."""
    part = LMTrainer(tiny_cfg(**over, **{"train.max_steps": steps}), corpus, run_dir, **QUIET)
    part.train()
    resumed = LMTrainer(tiny_cfg(**over), corpus, run_dir, **QUIET)
    resumed.resume(run_dir / "last.pt")
    resumed.train()
    return resumed


def _assert_same_weights(a: LMTrainer, b: LMTrainer) -> None:
    for (n, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), n


@pytest.mark.parametrize("scheme", ["variational", "zaremba"])
def test_resume_continues_the_same_trajectory(corpus, tmp_path, scheme):
    over = {"model.scheme": scheme, "train.epochs": 2, "train.variable_bptt": "true"}
    if scheme == "variational":
        over.update({"model.dropout_embedding": 0.1, "model.dropout_hidden": 0.3,
                     "model.dropout_input": 0.3, "model.dropout_output": 0.3,
                     "model.tied_masks": "false", "train.weight_decay": 1e-4})
    else:
        over["model.dropout"] = 0.3
    full = LMTrainer(tiny_cfg(**over), corpus, tmp_path / "full", **QUIET)
    full.train()
    # Interrupted after 7 steps (mid-epoch 1), then resumed in a fresh trainer.
    resumed = _stopped_then_resumed(corpus, tmp_path / "part", over, 7)
    _assert_same_weights(full, resumed)
    assert full.state.history[-1]["valid_ppl"] == resumed.state.history[-1]["valid_ppl"]


def test_warmup_ramps_lr_linearly_and_resumes_mid_warmup(corpus, tmp_path):
    over = {"train.epochs": 1, "train.lr": 0.8, "train.warmup_steps": 4}
    tr = LMTrainer(tiny_cfg(**over), corpus, tmp_path / "a", **QUIET)
    seen = []
    step = tr.opt.step
    tr.opt.step = lambda *a, **k: seen.append(tr.opt.param_groups[0]["lr"]) or step(*a, **k)
    tr.train()
    assert seen[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    # stopped inside the warm-up and resumed: the same weights as the uninterrupted run
    _assert_same_weights(tr, _stopped_then_resumed(corpus, tmp_path / "b", over, 2))
    with pytest.raises(ValueError, match="warmup_steps"):
        LMTrainer(tiny_cfg(**{"train.warmup_steps": -1}), corpus, tmp_path / "c", **QUIET)


def test_seeded_runs_are_bitwise_repeatable(corpus, tmp_path):
    over = {"model.scheme": "variational", "model.dropout_hidden": 0.3, "train.epochs": 1}
    a = LMTrainer(tiny_cfg(**over), corpus, tmp_path / "a", **QUIET)
    a.train()
    b = LMTrainer(tiny_cfg(**over), corpus, tmp_path / "b", **QUIET)
    b.train()
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))


def test_non_finite_loss_restores_last_good_checkpoint(corpus, tmp_path):
    tr = LMTrainer(tiny_cfg(**{"train.epochs": 2}), corpus, tmp_path / "run", **QUIET)
    tr.cfg.train.epochs = 1
    tr.train()                                  # one good epoch, checkpoint written
    good = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.cfg.train.epochs = 2
    with torch.no_grad():
        tr.model.decoder.bias[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        tr.train()
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, good[k]), k


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


def test_vocabulary_mismatch_is_clear(tmp_path):
    d1 = write_corpus(tmp_path / "d1")
    d2 = tmp_path / "d2"
    d2.mkdir()
    for s in ("train", "valid", "test"):
        (d2 / f"ptb.{s}.txt").write_text("completely different words <unk>\n" * 20)
    tr = LMTrainer(tiny_cfg(**{"train.epochs": 1}), load_corpus(d1, layout="ptb"), tmp_path / "r",
                   progress=False, log=lambda *a: None)
    tr.train()
    other = LMTrainer(tiny_cfg(), load_corpus(d2, layout="ptb"), tmp_path / "r2", progress=False,
                      log=lambda *a: None)
    with pytest.raises(Exception, match="(?i)vocab"):
        other.resume(tmp_path / "r" / "last.pt")


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
def _good_then(corpus, tmp_path, steps=10):
    """A run with a good checkpoint at ``steps``; returns (trainer, its state dict copy)."""
    out = tmp_path / "run"
    tr = LMTrainer(tiny_cfg(**{"train.max_steps": steps, "train.checkpoint_every": 1}), corpus,
                   out, **QUIET)
    tr.train()
    return tr, {k: v.clone() for k, v in ckpt.load(out / "last.pt")["model"].items()}


@pytest.mark.parametrize("lr", [1e8, 1e38, float("nan")])
def test_diverged_weights_are_never_checkpointed(corpus, tmp_path, lr):
    """A huge or NaN learning rate (set behind the config's back: the config refuses NaN)
    must not overwrite the last good checkpoint, and the restore must give the good one."""
    tr, good = _good_then(corpus, tmp_path)
    tr.cfg.train.max_steps = 0
    tr.cfg.train.lr = lr
    with pytest.raises(TrainingDiverged, match="restored from .*last.pt \\(step 10\\)"):
        tr.train()
    st = ckpt.load(tmp_path / "run" / "last.pt")
    assert st["train_state"]["step"] == 10
    for k, v in st["model"].items():
        assert torch.equal(v, good[k]), k
    for k, v in tr.model.state_dict().items():      # the trainer holds the good weights again
        assert torch.equal(v, good[k]), k
    # and the run goes on from there with a sane learning rate
    tr.cfg.train.lr, tr.cfg.train.max_steps = 1.0, 14
    tr.train()
    assert tr.state.step == 14


def test_a_huge_finite_loss_counts_as_divergence(corpus, tmp_path):
    tr, _ = _good_then(corpus, tmp_path)
    tr.cfg.train.max_steps = 0
    tr.max_loss = 0.5          # any real loss of this model is above it
    with pytest.raises(TrainingDiverged, match=r"loss \S+ at epoch 1, step 11 is above the limit 0.5"):
        tr.train()
    assert tr.state.step == 10


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


def test_running_perplexity_of_a_huge_loss_is_inf_not_a_crash(corpus, tmp_path):
    lines = []
    tr = LMTrainer(tiny_cfg(**{"train.max_steps": 6, "train.log_every": 1,
                               "train.divergence_loss": 1e30}), corpus, tmp_path / "r",
                   progress=False, log=lines.append)
    with torch.no_grad():
        tr.model.decoder.bias.fill_(-2000.0)
        tr.model.decoder.bias[0] = 2000.0            # every other word at ~e^-4000
    tr.train()
    assert any("ppl inf" in l for l in lines)


def test_perplexity_past_exp_range_is_inf(corpus):
    model = RNNLanguageModel(len(corpus.vocab), hidden_size=8, num_layers=1)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(-2000.0)
        model.decoder.bias[0] = 2000.0
    assert perplexity(model, batchify(corpus.test, 2), bptt=5) == math.inf


# ----------------------------------------------------------------------------------- logging
def test_without_a_progress_bar_a_line_every_n_steps(corpus, tmp_path):
    lines = []
    tr = LMTrainer(tiny_cfg(**{"train.max_steps": 9, "train.log_every": 3}), corpus,
                   tmp_path / "r", progress=False, log=lines.append)
    tr.train()
    steps = [l for l in lines if l.startswith("epoch 1 | step")]
    assert [l.split("|")[1].strip() for l in steps] == ["step 3", "step 6", "step 9"]
    assert all("tokens/s" in l and "ppl" in l and "lr" in l for l in steps)


def test_without_a_progress_bar_a_line_every_minute_by_default(corpus, tmp_path, monkeypatch):
    import rnndrop.train as train_mod
    clock = [0.0]
    monkeypatch.setattr(train_mod.time, "monotonic", lambda: clock[0])
    lines = []
    tr = LMTrainer(tiny_cfg(**{"train.max_steps": 12}), corpus, tmp_path / "r",
                   progress=False, log=lines.append)
    tr.hook = lambda p: p == "commit" and clock.__setitem__(0, clock[0] + 25.0)  # 25 s a step
    tr.train()
    steps = [l.split("|")[1].strip() for l in lines if l.startswith("epoch 1 | step")]
    assert steps == ["step 3", "step 6", "step 9", "step 12"]   # >= 60 s apart


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
