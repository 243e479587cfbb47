"""The language-model trainer on tiny corpora: training, warm-up, determinism, divergence,
logging. Resume and interrupts: test_train_resume.py; the commands: test_commands_train.py."""
import pytest
import torch

from rnndrop import checkpoint as ckpt
from rnndrop.data.text import load_corpus
from rnndrop.train import LMTrainer, TrainingDiverged

from lmrun import (LM_SCHEMES, QUIET, assert_same_run, assert_same_weights, metrics_lines,
                   stopped_then_resumed, tiny_lm_config)

tiny_cfg = tiny_lm_config


@pytest.fixture
def corpus(lm_corpus):
    return lm_corpus


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


def test_warmup_ramps_lr_linearly_and_resumes_mid_warmup(corpus, tmp_path):
    over = {"train.epochs": 1, "train.lr": 0.8, "train.warmup_steps": 4}
    tr = LMTrainer(tiny_cfg(**over), corpus, tmp_path / "a", **QUIET)
    seen = []
    step = tr.opt.step
    tr.opt.step = lambda *a, **k: seen.append(tr.opt.param_groups[0]["lr"]) or step(*a, **k)
    tr.train()
    assert seen[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    # stopped inside the warm-up and resumed: the same weights as the uninterrupted run
    assert_same_weights(tr, stopped_then_resumed(corpus, tmp_path / "b", over, 2))
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
    import rnndrop.train.base as train_mod
    clock = [0.0]
    monkeypatch.setattr(train_mod.time, "monotonic", lambda: clock[0])
    lines = []
    tr = LMTrainer(tiny_cfg(**{"train.max_steps": 12}), corpus, tmp_path / "r",
                   progress=False, log=lines.append)
    tr.hook = lambda p: p == "commit" and clock.__setitem__(0, clock[0] + 25.0)  # 25 s a step
    tr.train()
    steps = [l.split("|")[1].strip() for l in lines if l.startswith("epoch 1 | step")]
    assert steps == ["step 3", "step 6", "step 9", "step 12"]   # >= 60 s apart


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32_and_resumes(corpus, tmp_path, precision):
    """bf16 / fp16 autocast: the loss follows the fp32 run's closely; fp16's GradScaler state is
    checkpointed, so a resumed run continues the same trajectory."""
    over = {"model.scheme": "variational", "model.dropout_hidden": 0.2, "train.epochs": 1,
            "train.precision": precision}
    ref = LMTrainer(tiny_cfg(**{**over, "train.precision": "fp32"}), corpus, tmp_path / "fp32",
                    **QUIET)
    ref.train()
    run = LMTrainer(tiny_cfg(**over), corpus, tmp_path / "mixed", **QUIET)
    run.train()
    a, b = ref.state.history[0], run.state.history[0]
    assert b["precision"] == precision
    assert abs(a["train_ppl"] - b["train_ppl"]) / a["train_ppl"] < 0.02
    assert abs(a["valid_ppl"] - b["valid_ppl"]) / a["valid_ppl"] < 0.02
    st = ckpt.load(tmp_path / "mixed" / "last.pt")
    assert (st["scaler"]["scale"] > 0) if precision == "fp16" else st["scaler"] is None
    # (this caught the autocast dtype probe drawing from the masks' RNG on its first call)
    assert_same_weights(run, stopped_then_resumed(corpus, tmp_path / "part", over, 9))


@pytest.mark.parametrize("scheme", ["none", "variational"])
def test_reading_back_every_k_steps_is_the_same_run(corpus, tmp_path, scheme):
    """train.sync_every = 7 (the statistics read back 7 steps at a time, as on CUDA) gives the
    run of sync_every = 1 bit for bit: weights, RNG, step log, metrics; and so does a run
    stopped between two read-backs and resumed."""
    over = {**LM_SCHEMES[scheme], "train.epochs": 2, "train.checkpoint_every": 4}
    LMTrainer(tiny_cfg(**over), corpus, tmp_path / "a", **QUIET).train()
    k7 = {**over, "train.sync_every": 7}
    b = LMTrainer(tiny_cfg(**k7), corpus, tmp_path / "b", **QUIET)
    assert b.sync_every == 7
    b.train()
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert metrics_lines(tmp_path / "a")[0]["tf32"] is False        # no TF32 on a CPU
    stopped_then_resumed(corpus, tmp_path / "c", k7, 5)
    assert_same_run(tmp_path / "a", tmp_path / "c")


def test_sync_every_defaults_to_every_step_on_cpu(corpus, tmp_path):
    assert LMTrainer(tiny_cfg(), corpus, tmp_path / "a", **QUIET).sync_every == 1
    with pytest.raises(ValueError, match="train.sync_every"):
        LMTrainer(tiny_cfg(**{"train.sync_every": -1}), corpus, tmp_path / "b", **QUIET)
    with pytest.raises(ValueError, match="train.tf32"):
        LMTrainer(tiny_cfg(**{"train.tf32": 3}), corpus, tmp_path / "c", **QUIET)


def test_a_divergence_read_back_late_still_restores_the_last_good_checkpoint(corpus, tmp_path):
    """With sync_every = 5 a NaN learning rate ruins the weights at step 11 unseen; the losses
    of steps 12-15 are NaN and are read back after step 15: the last good checkpoint (step
    10) is restored, untouched, and the message says which steps were undone."""
    tr, good = _good_then(corpus, tmp_path)
    tr.cfg.train.max_steps, tr.cfg.train.checkpoint_every = 0, 0
    tr.sync_every = 5
    tr.cfg.train.lr = float("nan")
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(nan\) at epoch 1, step 12; "
                       r"steps 11-15 \(read back together, train.sync_every = 5\) are undone "
                       r"and parameters restored from .*last.pt \(step 10\)"):
        tr.train()
    st = ckpt.load(tmp_path / "run" / "last.pt")
    assert st["train_state"]["step"] == 10 and tr.state.step == 10
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, good[k]), k


def test_mc_samples_on_a_model_without_dropout_evaluates_once(corpus, tmp_path):
    """train.mc_samples on scheme 'none': MC would repeat the deterministic pass S times; the
    trainer says so in one line and reports the test perplexity as the MC one."""
    lines = []
    tr = LMTrainer(tiny_cfg(**{"train.epochs": 1, "train.mc_samples": 5}), corpus,
                   tmp_path / "run", progress=False, log=lines.append)
    res = tr.train()
    assert res["test_ppl_mc"] == res["test_ppl"]
    assert sum("the model has no dropout" in l for l in lines) == 1
