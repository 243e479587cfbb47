"""ClassifierTrainer: learns, resumes bit for bit mid-epoch, stops early, and its MC dropout at
p = 0 is the deterministic prediction."""
import pytest
import torch

from rnndrop import checkpoint as ckpt
from rnndrop.classify.config import ClassifyConfig
from rnndrop.classify.data import load_classify_data
from rnndrop.classify.predict import predict
from rnndrop.config import apply_overrides
from rnndrop.train import ClassifierTrainer

from clfdata import write_reviews

QUIET = dict(progress=False, log=lambda *a, **k: None)


def _cfg(*extra):
    return apply_overrides(ClassifyConfig(), [
        "model.hidden_size=8", "model.embedding_dim=8", "model.head_size=8",
        "train.batch_size=16", "train.lr=0.01", "train.epochs=3", "train.checkpoint_every=0",
        *extra])


def _trainer(cfg, path, out, state=None, fresh=True):
    cfg.data.path = str(path)
    data = load_classify_data(cfg.data, out, state=state, fresh=fresh, log=lambda *a: None)
    return ClassifierTrainer(cfg, data, out, **QUIET)


def test_learns_the_sentiment_words(tmp_path):
    path = write_reviews(tmp_path / "r.csv", n=400)
    tr = _trainer(_cfg("train.epochs=12"), path, tmp_path / "run")
    res = tr.train()
    assert res["standard"]["accuracy"] >= 0.85       # chance is ~0.5
    hist = tr.state.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    for f in ("best.pt", "last.pt", "metrics.jsonl", "steps.jsonl", "learning_curve.png",
              "final.json", "reliability.png", "split.json"):
        assert (tmp_path / "run" / f).is_file(), f


def _kbi():
    raise KeyboardInterrupt


@pytest.mark.parametrize("scheme", ["variational", "naive"])
def test_resume_mid_epoch_continues_the_same_trajectory(tmp_path, scheme):
    path = write_reviews(tmp_path / "r.csv")
    cfg = _cfg(f"model.scheme={scheme}", "train.mc_samples=3", "model.dropout_head=0.2")
    whole = _trainer(cfg, path, tmp_path / "a")
    res_a = whole.train()
    cut = _trainer(_cfg(f"model.scheme={scheme}", "train.mc_samples=3",
                        "model.dropout_head=0.2"), path, tmp_path / "b")
    cut.hook = lambda p: p == "commit" and cut.state.step == 17 and _kbi()   # epoch 2, batch 5
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    state = ckpt.load(tmp_path / "b" / "last.pt")
    assert state["train_state"]["step"] == 17 and state["train_state"]["position"] == 5
    again = _trainer(_cfg(f"model.scheme={scheme}", "train.mc_samples=3",
                          "model.dropout_head=0.2"), path, tmp_path / "b", state=state,
                     fresh=False)
    again.resume(tmp_path / "b" / "last.pt")
    res_b = again.train()
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    assert res_a["standard"] == res_b["standard"] and res_a["mc"] == res_b["mc"]
    lines = lambda d: (tmp_path / d / "steps.jsonl").read_text()
    assert lines("a") == lines("b")


def test_mc_dropout_without_dropout_is_the_deterministic_prediction(tmp_path):
    path = write_reviews(tmp_path / "r.csv")
    tr = _trainer(_cfg("model.scheme=none", "train.epochs=1"), path, tmp_path / "run")
    out = predict(tr.model, tr.data.test, "classification", mc=4, mc_batch=3)
    assert out.samples.shape == (4, len(tr.data.test), 2)
    for s in out.samples:
        torch.testing.assert_close(s, out.standard, rtol=1e-5, atol=1e-6)
    # with dropout the passes differ from each other
    tr = _trainer(_cfg("model.scheme=variational", "model.dropout=0.5", "train.epochs=1"),
                  path, tmp_path / "run2")
    out = predict(tr.model, tr.data.test, "classification", mc=4)
    assert not torch.allclose(out.samples[0], out.samples[1])


def test_mc_batched_passes_are_the_passes_one_by_one(tmp_path):
    """The S copies of a batch in one pass draw the masks S separate passes would."""
    path = write_reviews(tmp_path / "r.csv")
    tr = _trainer(_cfg("model.dropout=0.5", "train.epochs=1"), path, tmp_path / "run")
    torch.manual_seed(3)
    a = predict(tr.model, tr.data.test, "classification", mc=6, mc_batch=6, batch_size=1000)
    assert torch.isfinite(a.samples).all()
    assert (a.samples.mean(0).sum(-1) - 1).abs().max() < 1e-5


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    path = write_reviews(tmp_path / "r.csv")
    tr = _trainer(_cfg("train.patience=2"), path, tmp_path / "run")
    tr.state.history = [{"valid_loss": v} for v in (0.5, 0.4, 0.45, 0.41)]
    assert tr._patience_exhausted()
    tr.state.history = [{"valid_loss": v} for v in (0.5, 0.4, 0.45)]
    assert not tr._patience_exhausted()
    # a run whose lr is 0 never improves after epoch 1: it stops after 1 + patience epochs
    tr = _trainer(_cfg("train.patience=2", "train.epochs=10", "train.lr=1e-12"), path,
                  tmp_path / "run2")
    tr.train()
    assert len(tr.state.history) <= 3 + 1


def test_regression_learns_and_reports_rmse(tmp_path):
    path = write_reviews(tmp_path / "r.csv", n=400, regression=True)
    tr = _trainer(_cfg("train.epochs=10", "train.mc_samples=5", "data.task=regression"), path,
                  tmp_path / "run")
    assert tr.data.task == "regression" and tr.data.num_outputs == 1
    res = tr.train()
    y = tr.data.test.targets
    baseline = float(((y - tr.data.target_scale[0]) ** 2).mean().sqrt())   # predict the mean
    assert res["standard"]["rmse"] < 0.8 * baseline
    assert {"rmse", "mae", "nll"} <= set(res["mc"]) and res["noise_var"] > 0
