"""imdb-activations study: gradient-norm measurement, --quick end to end on a tiny fake
aclImdb folder, and a short smoke run on the real data (``realdata``)."""
import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnndrop.data.batching import Encoded
from rnndrop.models.classifiers import ENCODERS, SentimentClassifier
from rnndrop.studies import imdb_activations as study

POS = "good great wonderful loved superb fine enjoyable".split()
NEG = "bad awful boring hated terrible poor dull".split()
FILLER = "the movie film plot actor scene story was and a it this of".split()


def _review(g, words, n):
    idx = torch.randint(0, len(FILLER), (n,), generator=g).tolist()
    toks = [FILLER[i] for i in idx]
    for j in torch.randint(0, n, (3,), generator=g).tolist():
        toks[j] = words[j % len(words)]
    return " ".join(toks) + " .<br /><br />" + words[n % len(words)] + "!"


def make_fake_imdb(root: Path, n_train=60, n_test=40, seed=0) -> Path:
    """``root/imdb/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` (the extracted layout)."""
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, words, ratings in (("pos", POS, (7, 10)), ("neg", NEG, (1, 4))):
            d = root / "imdb" / "aclImdb" / split / label
            d.mkdir(parents=True)
            for i in range(n):
                length = int(torch.randint(5, 40, (1,), generator=g))
                (d / f"{i}_{ratings[i % 2]}.txt").write_text(_review(g, words, length))
    return root


def _data(n=20, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    tokens = torch.randint(2, 30, (n, T), generator=g)
    tokens[torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return Encoded(tokens, lengths, torch.randint(0, 2, (n,), generator=g))


def test_grad_batch_prefers_full_length_reviews():
    data = _data(n=8, T=12)
    data.lengths[:] = torch.tensor([3, 12, 5, 12, 12, 7, 1, 12])
    b = study.grad_batch(data, 3, 12)
    assert b.lengths.tolist() == [12, 12, 12]
    assert torch.equal(b.tokens, data.tokens[[1, 3, 4]])
    b = study.grad_batch(data, 6, 12)            # too few full-length reviews: the longest
    assert b.lengths.tolist() == [12, 12, 12, 12, 7, 5]


def test_measure_grad_norms_matches_manual_unroll():
    torch.manual_seed(0)
    m = SentimentClassifier(40, "rnn_tanh", embedding_dim=5, hidden_size=6, head_size=7).eval()
    T = 9
    data = Encoded(torch.randint(2, 40, (3, T)), torch.full((3,), T), torch.tensor([0, 1, 1]))
    res = study.measure_grad_norms(m, data)
    assert len(res["norms"]) == T and res["steps"] == T
    assert all(p.grad is None for p in m.parameters()) and not m.training   # model untouched
    # independent check: unroll h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) by hand
    enc = m.encoder
    x = m.embed(data.tokens).detach()
    h = torch.zeros(3, 6)
    hs = []
    for t in range(T):
        h = torch.tanh(x[:, t] @ enc.weight_ih_l0.T + enc.bias_ih_l0 + h @ enc.weight_hh_l0.T + enc.bias_hh_l0)
        h.retain_grad()
        hs.append(h)
    F.cross_entropy(m.head(hs[-1]), data.targets).backward()
    manual = torch.stack([hh.grad.norm() for hh in hs]).double()
    torch.testing.assert_close(torch.tensor(res["norms"], dtype=torch.float64), manual,
                               rtol=1e-4, atol=1e-12)
    assert res["ratio_first_last"] == pytest.approx(float(manual[0] / manual[-1]), rel=1e-4)


def test_quick_end_to_end_on_fake_data(tmp_path, quick_args):
    root = make_fake_imdb(tmp_path / "data")
    out = tmp_path / "out"
    args = quick_args(study, root, out, "--encoders", "rnn_tanh,rnn_sigmoid,lstm")
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [r["encoder"] for r in doc["results"]] == ["rnn_tanh", "rnn_sigmoid", "lstm"]
    assert doc["data"] == {"train": 64, "val": 32, "test": 64, "vocab": doc["data"]["vocab"]}
    for r in doc["results"]:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["epoch_time_s"] > 0
        assert len(r["grad_norms_trained"]["norms"]) == doc["settings"]["max_len"]
        assert r["grad_norms_init"]["first"] > 0
    md = (out / "results.md").read_text()
    assert "| rnn_sigmoid |" in md and "test acc" in md
    for png in ("accuracy.png", "grad_norms.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_all_encoders_quick_and_cli_wiring(tmp_path):
    root = make_fake_imdb(tmp_path / "data")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="study")
    study.STUDY.add_cli(sub)
    args = parser.parse_args(["imdb-activations", "--data", str(root), "--out",
                              str(tmp_path / "o"), "--quick", "--no-progress", "--threads", "1"])
    assert args.func == study.STUDY.command
    assert args.func(args) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["encoder"] for r in doc["results"]] == list(study.UNIDIRECTIONAL)
    assert set(ENCODERS) - set(study.UNIDIRECTIONAL) == {"bilstm", "bigru"}


@pytest.mark.parametrize("packed", ["--packed", "--no-packed"])
def test_bidirectional_with_recurrent_dropout_quick(tmp_path, quick_args, packed):
    root = make_fake_imdb(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--encoders", "bilstm,gru", "--dropout-hidden", "0.25"]
    args = quick_args(study, root, out, *argv, *([packed] if packed == "--no-packed" else []))
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["dropout_hidden"] == 0.25
    assert doc["settings"]["packed"] is (packed == "--packed")
    bi, gru = doc["results"]
    assert bi["grad_norms_trained"] is None and gru["grad_norms_trained"]["first"] > 0
    assert 0.0 <= bi["test_acc"] <= 1.0
    assert "| bilstm |" in (out / "results.md").read_text()
    assert (out / "grad_norms.png").exists()


def test_full_defaults_and_explicit_options_win(tmp_path):
    settings = lambda *argv: study.STUDY.settings_from_args(study.STUDY.parse_args(argv))
    s = settings("--full")
    assert s.full and (s.max_len, s.epochs) == (400, 8)
    s = settings("--full", "--max-len", "200", "--epochs", "3")
    assert (s.max_len, s.epochs) == (200, 3)
    assert settings().max_len == 200 and not settings().full
    s = settings("--quick", "--full")                  # presets apply in order, then options
    assert s.full and (s.max_len, s.epochs, s.train_size) == (400, 8, 64)


def test_bad_encoder_name(tmp_path, quick_args):
    with pytest.raises(ValueError, match="unknown encoder"):
        args = quick_args(study, tmp_path, tmp_path / "o", "--encoders", "lstm,cnn")
        args.func(args)


@pytest.mark.realdata
def test_quick_on_real_imdb(tmp_path, quick_args, real_data):
    root = real_data("imdb/aclImdb_v1.tar.gz", "imdb/aclImdb")
    out = tmp_path / "out"
    args = quick_args(study, root, out, "--encoders", "lstm")
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    r = doc["results"][0]
    assert doc["data"]["train"] == 64 and doc["data"]["test"] == 64
    assert 0.0 <= r["test_acc"] <= 1.0
    assert len(r["grad_norms_trained"]["norms"]) == doc["settings"]["max_len"]


def test_zoneout_and_learned_rates_quick(tmp_path, quick_args):
    """--zoneout/--zoneout-cell reach the encoder; --learn-dropout learns the recurrent rate
    (started at --dropout-hidden) and logs it every epoch."""
    root = make_fake_imdb(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--encoders", "lstm,gru", "--dropout-hidden", "0.5", "--zoneout", "0.1",
            "--zoneout-cell", "0.5", "--learn-dropout", "--epochs", "2"]
    args = quick_args(study, root, out, *argv)
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["learn_dropout"] is True and doc["settings"]["zoneout"] == 0.1
    for r in doc["results"]:
        rates = [h["dropout_rates"]["hidden_l0"] for h in r["history"]]
        assert len(rates) == 2 and all(0 < p < 1 for p in rates) and rates[1] != 0.5
    s = study.Settings(zoneout=0.1, zoneout_cell=0.5, learn_dropout=True, dropout_hidden=0.5)
    assert study.encoder_options("gru", s) == dict(dropout_hidden=0.5, variational=True,
                                                   zoneout=0.1, learn_dropout=True)
    assert study.encoder_options("lstm", s)["zoneout_cell"] == 0.5
