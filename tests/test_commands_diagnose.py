"""``rnndrop diagnose``: recipes (random tokens or a tiny corpus), checkpoints, clear errors."""
import pytest
import torch

from rnndrop import checkpoint as ckpt
from rnndrop import diagnostics as D
from rnndrop.cli import main
from rnndrop.config import RunConfig

from rnndrop.models.lm import RNNLanguageModel

RECIPE = """
[data]
dir = "{data}"

[model]
hidden_size = 8
num_layers = 2
scheme = "variational"
dropout_input = 0.2
dropout_hidden = 0.2
init_range = 0.1

[train]
batch_size = 3
bptt = 5
"""


@pytest.fixture(autouse=True)
def _no_env_data_one_thread(monkeypatch):
    monkeypatch.delenv("RNNDROP_DATA", raising=False)
    threads = torch.get_num_threads()   # tiny models: extra threads only add contention
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe(tmp_path, data="nowhere"):
    p = tmp_path / "tiny.toml"
    p.write_text(RECIPE.format(data=(tmp_path / data).as_posix()))
    return p


def _rows(out: str) -> dict:
    """Per-layer rows of the printed table: {layer: [columns]}."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip().startswith("layer"))
    rows = {}
    for l in lines[start + 2:]:
        cols = l.split()
        if not cols or not cols[0].isdigit():
            break
        rows[int(cols[0])] = cols
    return rows


def test_recipe_with_random_tokens(tmp_path, capsys):
    png = tmp_path / "plots" / "grad_norms.png"
    rc = main(["diagnose", str(_recipe(tmp_path)), "--vocab-size", "40", "--bptt", "12",
               "--batch-size", "4", "--out", str(png.parent)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "random tokens" in cap.err and "not found" in cap.err
    assert "recipe" in cap.out and "vocabulary 40" in cap.out and "T = 12" in cap.out
    rows = _rows(cap.out)
    assert sorted(rows) == [0, 1]
    for cols in rows.values():
        decay, n1, nT = float(cols[1]), float(cols[2]), float(cols[3])
        assert 0 < decay < 10 and n1 > 0 and nT > 0
        assert len(cols) == 6 + 5            # + saturation of i, f, g, o, c
    assert png.is_file() and png.stat().st_size > 0


def test_recipe_numbers_match_the_library(tmp_path, capsys):
    """The table is grad_norms_over_time on model.rnn with the embedding as input and the LM
    loss, on the same freshly initialised model (seeded) and random tokens."""
    rc = main(["diagnose", str(_recipe(tmp_path)), "--vocab-size", "30", "--bptt", "9",
               "--batch-size", "2", "--out", str(tmp_path / "d"), "--seed", "5"])
    out = capsys.readouterr().out
    assert rc == 0
    from rnndrop.config import load_config
    cfg = load_config(_recipe(tmp_path))
    torch.manual_seed(5)
    model = RNNLanguageModel.from_config(cfg.model, 30).eval()
    tokens = torch.randint(0, 30, (10, 2), generator=torch.Generator().manual_seed(5))
    emb = model.embedding(tokens[:-1]).detach()
    gn = D.grad_norms_over_time(model.rnn, emb, lambda o: model.loss(o, tokens[1:]))
    rows = _rows(out)
    for k in (0, 1):
        assert rows[k][1] == f"{D.decay_rate(gn.norms[k]):.4f}"
        assert rows[k][2] == f"{float(gn.norms[k, 0]):.3e}"
        assert rows[k][5] == f"{D.spectral_norm(getattr(model.rnn, f'weight_hh_l{k}')):.4f}"
    assert f"{gn.loss:.4f}" in out


def test_loss_on_the_last_step_only(tmp_path, capsys):
    """--loss last: only h_T feeds the loss, so the norms match the library on that loss and
    (for this small init) shrink going back in time."""
    rc = main(["diagnose", str(_recipe(tmp_path)), "--vocab-size", "30", "--bptt", "9",
               "--batch-size", "2", "--out", str(tmp_path / "d"), "--loss", "last"])
    out = capsys.readouterr().out
    assert rc == 0 and "last step only" in out
    from rnndrop.config import load_config
    torch.manual_seed(0)
    model = RNNLanguageModel.from_config(load_config(_recipe(tmp_path)).model, 30).eval()
    tokens = torch.randint(0, 30, (10, 2), generator=torch.Generator().manual_seed(0))
    emb = model.embedding(tokens[:-1]).detach()
    gn = D.grad_norms_over_time(model.rnn, emb, lambda o: model.loss(o[-1:], tokens[-1:]))
    rows = _rows(out)
    for k in (0, 1):
        assert rows[k][1] == f"{D.decay_rate(gn.norms[k]):.4f}"
        assert rows[k][3] == f"{float(gn.norms[k, -1]):.3e}"
    assert float(rows[1][1]) < 1.0


def test_sampled_softmax_recipe_with_unigram_sampler(tmp_path, capsys):
    """No corpus means no training counts: the unigram proposal falls back to uniform (it only
    matters for the sampled training loss; the analysis runs in eval mode, full softmax)."""
    p = tmp_path / "sampled.toml"
    p.write_text(RECIPE.format(data=(tmp_path / "nowhere").as_posix()).replace(
        "init_range = 0.1", 'init_range = 0.1\noutput = "sampled"\nsampler = "unigram"\n'
        "num_sampled = 5"))
    rc = main(["diagnose", str(p), "--vocab-size", "40", "--bptt", "6", "--batch-size", "2",
               "--out", str(tmp_path / "d")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert sorted(_rows(cap.out)) == [0, 1]


def test_recipe_without_vocab_size_or_data_is_a_clear_error(tmp_path, capsys):
    rc = main(["diagnose", str(_recipe(tmp_path)), "--out", str(tmp_path / "d")])
    assert rc == 2
    assert "--vocab-size" in capsys.readouterr().err


def _checkpoint(tmp_path, vocab=25, hidden=8, layers=2, seed=3):
    cfg = RunConfig()
    cfg.model.hidden_size, cfg.model.num_layers = hidden, layers
    cfg.data.dir = str(tmp_path / "nodata")
    torch.manual_seed(seed)
    model = RNNLanguageModel.from_config(cfg.model, vocab)
    with torch.no_grad():   # make it differ from any fresh initialisation
        model.rnn.weight_hh_l0.mul_(3.0)
    path = ckpt.save({"model": model.state_dict(), "config": cfg.to_dict(),
                      "vocab": {"itos": [f"w{i}" for i in range(vocab)]}}, tmp_path / "last.pt")
    return path, model


def test_checkpoint(tmp_path, capsys):
    path, model = _checkpoint(tmp_path)
    png = tmp_path / "d" / "grad_norms.png"
    rc = main(["diagnose", str(path), "--bptt", "10", "--batch-size", "2", "--out", str(png.parent)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "checkpoint" in cap.out and "vocabulary 25" in cap.out
    rows = _rows(cap.out)
    # the checkpoint's weights are the ones diagnosed
    assert rows[0][5] == f"{D.spectral_norm(model.rnn.weight_hh_l0):.4f}"
    assert rows[1][5] == f"{D.spectral_norm(model.rnn.weight_hh_l1):.4f}"
    assert png.is_file()


def test_corrupt_and_missing_files_are_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    assert main(["diagnose", str(bad), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "corrupted" in err and "bad.pt" in err and "Traceback" not in err

    assert main(["diagnose", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err

    toml = tmp_path / "broken.toml"
    toml.write_text("[model\nhidden_size = ")
    assert main(["diagnose", str(toml), "--vocab-size", "5"]) == 2
    assert "invalid TOML" in capsys.readouterr().err

    other = ckpt.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert main(["diagnose", str(other)]) == 2
    assert "not a language-model checkpoint" in capsys.readouterr().err


def test_checkpoint_that_does_not_fit_its_config(tmp_path, capsys):
    path, model = _checkpoint(tmp_path)
    st = ckpt.load(path)
    st["config"]["model"]["hidden_size"] = 12
    ckpt.save({k: v for k, v in st.items() if k != "format"}, path)
    assert main(["diagnose", str(path), "--out", str(tmp_path / "d")]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_recipe_with_a_tiny_corpus(tmp_path, capsys):
    pytest.importorskip("rnndrop.data.text")
    words = "the cat sat on a mat and the dog ate my hat".split()
    g = torch.Generator().manual_seed(0)
    d = tmp_path / "corpus"
    d.mkdir()
    for split, n in (("train", 200), ("valid", 20), ("test", 20)):
        lines = [" ".join(words[i] for i in torch.randint(0, len(words), (6,), generator=g).tolist())
                 for _ in range(n)]
        if split == "train":
            lines.append("<unk> " + " ".join(words))
        (d / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    rc = main(["diagnose", str(_recipe(tmp_path, data="corpus")), "--bptt", "15", "--batch-size", "3",
               "--out", str(tmp_path / "d")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "corpus training split" in cap.out and "random tokens" not in cap.err
