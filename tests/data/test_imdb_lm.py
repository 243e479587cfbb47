"""The imdb-lm corpus: IMDB reviews as a large-vocabulary word-level LM corpus."""
from collections import Counter
from pathlib import Path

import pytest
import torch

from rnndrop.config import RunConfig
from rnndrop.data._download import DataError
from rnndrop.data.imdb import tokenize
from rnndrop.data.imdb_lm import imdb_root, load_imdb_lm
from rnndrop.data.lm import load_lm_corpus

# 10 training reviews (5 per class) and 4 test reviews. "the" is the most frequent word, then
# "film"; every training review has a word of its own, seen once in train (→ <unk>).
TRAIN = [f"The film was good. The plot<br />was fine; the end was good too. unique{i}"
         for i in range(5)] + \
        [f"The FILM was bad, the film was awful and the acting bad. rare{i}" for i in range(5)]
TEST = ["the film was good", "an unseen word: zebra", "the end", "BAD bad bad"]


def fake_aclimdb(root: Path) -> Path:
    """``root/imdb/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``; returns ``root``."""
    for split, texts in (("train", TRAIN), ("test", TEST)):
        half = len(texts) // 2
        for i, text in enumerate(texts):
            label = "pos" if i < half else "neg"
            d = root / "imdb" / "aclImdb" / split / label
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(text)
    return root


@pytest.fixture
def fake_root(tmp_path):
    return fake_aclimdb(tmp_path / "data")


def _docs(stream: torch.Tensor, eos: int) -> int:
    return int((stream == eos).sum())


def test_split_sizes_and_unk(fake_root):
    c = load_imdb_lm(fake_root, valid_fraction=0.2)
    v = c.vocab
    eos, unk = v.stoi["<eos>"], v.stoi["<unk>"]
    assert (_docs(c.train, eos), _docs(c.valid, eos), _docs(c.test, eos)) == (8, 2, 4)
    # Lower-cased and tokenised like the IMDB study; <br /> is a space.
    assert "The" not in v and "FILM" not in v and "<br" not in v and "plot" in v
    # Words seen once in train are <unk>, in train as in valid/test; so are words never seen.
    assert not any(w.startswith(("unique", "rare")) for w in v.itos)
    assert "zebra" not in v and "an" not in v
    # test: "the film was good" <eos> "an unseen word : zebra" <eos> ... (none of these 5 in train)
    assert c.test.tolist()[:11] == [v.stoi[w] for w in ("the", "film", "was", "good", "<eos>")] \
        + [unk] * 5 + [eos]
    # Every token of the valid and test reviews is accounted for.
    n_test = sum(len(tokenize(t)) + 1 for t in TEST)
    assert c.test.numel() == n_test
    assert c.train.numel() + c.valid.numel() == sum(len(tokenize(t)) + 1 for t in TRAIN)


def test_ids_are_frequency_sorted_and_counts_match(fake_root):
    c = load_imdb_lm(fake_root, valid_fraction=0.2)
    v = c.vocab
    # counts[i] is the train count of id i (<unk> counts the rare words it replaced) ...
    torch.testing.assert_close(torch.bincount(c.train, minlength=len(v)).double(), v.counts)
    # ... and ids run from the most to the least frequent: what log-uniform sampling assumes.
    assert bool((v.counts[:-1] >= v.counts[1:]).all())
    assert v.itos[0] == "the"
    train_words = Counter()
    for i in range(len(v)):
        train_words[v.itos[i]] = int(v.counts[i])
    assert train_words["the"] > train_words["film"] > train_words["plot"] >= 1


def test_max_vocab_and_min_count(fake_root):
    c = load_imdb_lm(fake_root, valid_fraction=0.2, max_vocab=5)
    assert len(c.vocab) == 5 and "<unk>" in c.vocab and "<eos>" in c.vocab
    assert int(c.train.max()) < 5
    c1 = load_imdb_lm(fake_root, valid_fraction=0.2, min_count=1)
    c2 = load_imdb_lm(fake_root, valid_fraction=0.2)
    assert len(c1.vocab) > len(c2.vocab)
    with pytest.raises(ValueError, match="max_vocab"):
        load_imdb_lm(fake_root, max_vocab=2)
    with pytest.raises(ValueError, match="valid_fraction"):
        load_imdb_lm(fake_root, valid_fraction=1.0)


def test_split_is_seeded(fake_root):
    a = load_imdb_lm(fake_root, valid_fraction=0.3)
    b = load_imdb_lm(fake_root, valid_fraction=0.3)
    assert torch.equal(a.valid, b.valid) and torch.equal(a.train, b.train)
    others = [load_imdb_lm(fake_root, valid_fraction=0.3, seed=s, include_test=False).valid
              for s in (1, 2, 3)]
    assert any(o.tolist() != a.valid.tolist() for o in others)
    assert others[0].numel() > 0
    assert load_imdb_lm(fake_root, include_test=False).test.numel() == 0


def test_root_may_be_the_imdb_folder(fake_root, tmp_path):
    a = load_imdb_lm(fake_root / "imdb", valid_fraction=0.2)
    assert imdb_root(fake_root) == fake_root == imdb_root(fake_root / "imdb")
    assert len(a.vocab) == len(load_imdb_lm(fake_root, valid_fraction=0.2).vocab)
    with pytest.raises(DataError, match="imdb"):
        imdb_root(tmp_path)


def test_trainer_layout_imdb_lm(fake_root):
    cfg = RunConfig()
    cfg.data.layout = "imdb-lm"
    cfg.data.max_vocab = 6
    c = load_lm_corpus(cfg.data, str(fake_root))
    assert len(c.vocab) == 6
    assert c.vocab.itos == load_imdb_lm(fake_root, max_vocab=6).vocab.itos


@pytest.mark.realdata
def test_real_imdb_lm_vocabulary(real_data):
    root = real_data("imdb/aclImdb_v1.tar.gz", "imdb/aclImdb")
    c = load_imdb_lm(root, include_test=False)      # the test reviews do not change the vocab
    v = c.vocab
    print(f"IMDB LM vocabulary (train words seen >= 2 times, with <eos>, <unk>): {len(v)}; "
          f"train {c.train.numel()} tokens, valid {c.valid.numel()}")
    assert 40_000 <= len(v) <= 150_000            # 49,240: "of order 100k" (log scale)
    assert bool((v.counts[:-1] >= v.counts[1:]).all()) and v.itos[0] == "the"
    eos = v.stoi["<eos>"]
    assert (int((c.train == eos).sum()), int((c.valid == eos).sum())) == (24_000, 1_000)


def test_train_cli_max_vocab(fake_root, tmp_path):
    import json

    from rnndrop.cli import main
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[data]\nlayout = "imdb-lm"\n[model]\nhidden_size = 8\nnum_layers = 1\n'
                   'scheme = "none"\n[train]\nepochs = 1\nbatch_size = 2\neval_batch_size = 2\n'
                   'bptt = 5\n')
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(fake_root), "--out", str(out),
                 "--max-vocab", "6", "--no-progress"]) == 0
    from rnndrop import checkpoint as ckpt
    st = ckpt.load(out / "last.pt")
    assert st["config"]["data"]["max_vocab"] == 6
    emb = [v for k, v in st["model"].items() if "embed" in k and k.endswith("weight")]
    assert emb and emb[0].shape[0] == 6          # the model was built on the capped vocabulary
    assert json.loads((out / "final.json").read_text())["epochs"] == 1
