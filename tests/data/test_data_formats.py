import gzip
import struct
import tarfile

import pytest
import torch

from rnndrop.data._download import DataError
from rnndrop.data.fashion_mnist import load_fashion_mnist, read_idx, to_float
from rnndrop.data.imdb import PAD, UNK, encode_reviews, load_imdb, tokenize
from rnndrop.data.scaledata import CRITICS, load_scaledata, train_test_split
from rnndrop.data.text import Vocabulary


def idx_bytes(magic, dims, payload):
    return gzip.compress(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload)


def fake_fmnist(root, n=5, truncate=False, magic=2051):
    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = bytes(n * 28 * 28 - (10 if truncate else 0))
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_bytes(magic, (n, 28, 28), img))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_bytes(2049, (n,), bytes(range(n))))
    return root


def test_fashion_mnist_idx(tmp_path, monkeypatch):
    import rnndrop.data._download as dl
    monkeypatch.setattr(dl, "KNOWN_SHA256", {})   # fake files: only the format is under test
    x, y = load_fashion_mnist(fake_fmnist(tmp_path / "ok"), "train")
    assert x.shape == (5, 28, 28) and x.dtype == torch.uint8 and y.tolist() == [0, 1, 2, 3, 4]
    assert to_float(x).shape == (5, 784)
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_fashion_mnist(fake_fmnist(tmp_path / "trunc", truncate=True), "test")
    with pytest.raises(DataError, match="bad IDX magic"):
        load_fashion_mnist(fake_fmnist(tmp_path / "magic", magic=1234), "train")
    (tmp_path / "junk.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="junk.gz"):
        read_idx(tmp_path / "junk.gz", 2051)


def fake_imdb_dir(root, n=3):
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            d = root / "imdb" / "aclImdb" / split / lab
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}_{8 if lab == 'pos' else 2}.txt").write_text(f"Review {i} is {lab}!<br />Great.")
    return root


def test_imdb_dir_and_tar_agree(tmp_path):
    root = fake_imdb_dir(tmp_path / "dir")
    recs = load_imdb(root, "train")
    assert len(recs) == 6 and sorted(r[1] for r in recs) == [0, 0, 0, 1, 1, 1]
    troot = tmp_path / "tar"
    (troot / "imdb").mkdir(parents=True)
    with tarfile.open(troot / "imdb" / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(root / "imdb" / "aclImdb", arcname="aclImdb")
    # The fake archive is not the canonical one: its checksum must be refused...
    with pytest.raises(DataError, match="checksum mismatch"):
        load_imdb(troot, "train")


def test_imdb_tar_reader(tmp_path, monkeypatch):
    import rnndrop.data._download as dl
    root = fake_imdb_dir(tmp_path / "dir")
    troot = tmp_path / "tar"
    (troot / "imdb").mkdir(parents=True)
    with tarfile.open(troot / "imdb" / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(root / "imdb" / "aclImdb", arcname="aclImdb")
    monkeypatch.setitem(dl.KNOWN_SHA256, "imdb/aclImdb_v1.tar.gz", dl.sha256(troot / "imdb" / "aclImdb_v1.tar.gz"))
    assert load_imdb(troot, "test") == load_imdb(root, "test")
    sub = load_imdb(root, "train", limit=4, seed=1)
    assert len(sub) == 4 and sum(r[1] for r in sub) == 2


def test_tokenize_vocab_encode_truncates_not_drops():
    toks = tokenize("It's GREAT!<br />Don't miss it.")
    assert toks == ["it's", "great", "!", "don't", "miss", "it", "."]
    vocab = Vocabulary.build(toks + ["great"], max_size=4, specials=(PAD, UNK))
    assert vocab.stoi["<pad>"] == 0 and vocab.stoi["<unk>"] == 1 and len(vocab) == 4
    assert vocab.itos[2] == "great"                  # the most frequent word first
    ids, lengths = encode_reviews([toks, ["great"], []], vocab, max_len=5)
    assert ids.shape == (3, 5) and lengths.tolist() == [5, 1, 1]
    assert ids[1, 1:].eq(0).all()


def fake_scaledata(root, mismatch=False):
    for c in CRITICS:
        d = root / "scaledata" / "scaledata" / c
        d.mkdir(parents=True)
        (d / f"subj.{c}").write_text("good film\nbad film\n")
        (d / f"rating.{c}").write_text("0.9\n" if mismatch else "0.9\n0.1\n")
    return root


def test_scaledata(tmp_path):
    texts, ratings, critics = load_scaledata(fake_scaledata(tmp_path / "ok"))
    assert len(texts) == 8 and ratings.tolist()[:2] == pytest.approx([0.9, 0.1])
    with pytest.raises(DataError, match="2 reviews but .* 1 ratings"):
        load_scaledata(fake_scaledata(tmp_path / "bad", mismatch=True))
    tr, te = train_test_split(100, 0.1, seed=0)
    assert len(te) == 10 and len(set(tr.tolist()) | set(te.tolist())) == 100
    assert torch.equal(te, train_test_split(100, 0.1, seed=0)[1])


@pytest.mark.realdata
def test_real_fashion_mnist_scaledata(real_root):
    x, y = load_fashion_mnist(real_root, "train")
    assert x.shape == (60000, 28, 28) and int(y.max()) == 9
    assert load_fashion_mnist(real_root, "test")[0].shape[0] == 10000
    texts, ratings, _ = load_scaledata(real_root)
    assert len(texts) == 5006 and 0 <= ratings.min() and ratings.max() <= 1


@pytest.mark.realdata
@pytest.mark.slow
def test_real_imdb(real_root):
    tr = load_imdb(real_root, "train")
    assert len(tr) == 25000 and sum(r[1] for r in tr) == 12500


def test_encode_reviews_keeps_first_or_last_tokens():
    from rnndrop.data.imdb import encode_reviews
    vocab = Vocabulary(["<pad>", "<unk>", "a", "b", "c"])
    first, n1 = encode_reviews([["a", "b", "c"], ["c"]], vocab, max_len=2)
    last, n2 = encode_reviews([["a", "b", "c"], ["c"]], vocab, max_len=2, keep="last")
    assert first.tolist() == [[2, 3], [4, 0]] and n1.tolist() == [2, 1]
    assert last.tolist() == [[3, 4], [4, 0]] and n2.tolist() == [2, 1]
    with pytest.raises(ValueError, match="keep"):
        encode_reviews([["a"]], vocab, max_len=2, keep="middle")


def test_split_into_chunks_covers_every_token_once():
    from rnndrop.data.imdb import split_into_chunks
    reviews = [list("abcdefg"), [], list("xy")]
    pieces, owner = split_into_chunks(reviews, 3)
    assert pieces == [list("abc"), list("def"), ["g"], [], list("xy")]
    assert owner == [0, 0, 0, 1, 2]
    with pytest.raises(ValueError, match="max_len"):
        split_into_chunks(reviews, 0)
