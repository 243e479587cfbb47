import pytest
import torch

from rnndrop.data import _download
from rnndrop.data._download import DataError
from rnndrop.data.text import (Vocabulary, batchify, bptt_windows, check_vocab, load_corpus,
                               load_ptb, lm_corpus_from_texts)


def write(root, files):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def ptb(tmp_path, train="a b c\nb c <unk>\n", valid="a b\n", test="c d\n"):
    return write(tmp_path / "ptb", {"ptb.train.txt": train, "ptb.valid.txt": valid, "ptb.test.txt": test})


def test_vocabulary_counts_eos_and_unk(tmp_path):
    c = load_corpus(ptb(tmp_path), layout="ptb")
    assert c.vocab.itos[:2] == ["b", "c"]                       # frequency order
    assert len(c.train) == 8 and c.vocab.decode(c.train[-1:]) == ["<eos>"]
    assert c.vocab.decode(c.test) == ["c", "<unk>", "<eos>"]    # d unseen in train -> <unk>
    assert c.vocab.counts[c.vocab.stoi["b"]] == 2
    v2 = Vocabulary.from_dict(c.vocab.to_dict())
    assert v2.itos == c.vocab.itos


def test_unseen_word_without_unk_is_an_error_or_added(tmp_path):
    root = ptb(tmp_path, train="a b c\n")
    with pytest.raises(DataError, match="ptb.test.txt: word 'd'"):
        load_corpus(root, layout="ptb")
    c = load_corpus(root, layout="ptb", unk="add")
    assert c.vocab.decode(c.test[1:2]) == ["<unk>"]


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_corpus(ptb(tmp_path / "e", train=" \n"), layout="ptb")
    with pytest.raises(DataError, match="not valid utf-8 at byte 4 \\(line 2\\); pass --encoding latin-1"):
        load_corpus(ptb(tmp_path / "u", train=b"a b\n\xff\xfe c\n"), layout="ptb")
    # the encoding named, it reads: two Latin-1 characters, one word
    c = load_corpus(ptb(tmp_path / "l", train=b"a b\n\xff\xfe c\n"), layout="ptb", unk="add",
                    encoding="latin-1")
    assert "\xff\xfe" in c.vocab
    root = ptb(tmp_path / "m")
    (root / "ptb.valid.txt").unlink()
    with pytest.raises(DataError, match="missing split.*ptb.valid.txt"):
        load_corpus(root, layout="ptb")
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path / "nowhere")


def test_wikitext_and_chars_layouts(tmp_path):
    w = write(tmp_path / "w", {f"wiki.{s}.tokens": "x y <unk>\n" for s in ("train", "valid", "test")})
    with pytest.warns(UserWarning, match="identical contents"):   # the same text three times
        assert len(load_corpus(w).vocab) == 4
    ch = write(tmp_path / "c", {f"{s}.txt": "abca\n" for s in ("train", "valid", "test")})
    with pytest.warns(UserWarning, match="identical contents"):
        c = load_corpus(ch, layout="chars")
    assert c.vocab.decode(c.train) == ["a", "b", "c", "a", "<eos>"]


def test_batchify_and_windows_cover_stream_once():
    data = torch.arange(103)
    src = batchify(data, 4)
    assert src.shape == (25, 4) and src[0, 1] == 25      # column b is stream b
    _, xs, ys = zip(*bptt_windows(src, 7))
    assert torch.equal(torch.cat(xs), src[:-1]) and torch.equal(torch.cat(ys), src[1:])
    assert torch.equal(torch.cat([x for _, x, _ in bptt_windows(src, 7, start=14)]), src[14:-1])
    with pytest.raises(DataError, match="too short"):
        batchify(torch.arange(3), 4)


def test_check_vocab_mismatch(tmp_path):
    c = load_corpus(ptb(tmp_path), layout="ptb")
    check_vocab(c.vocab.to_dict(), c)
    with pytest.raises(DataError, match="vocabulary mismatch between ckpt.pt"):
        check_vocab({"itos": ["x"]}, c, source="ckpt.pt")


def test_lm_corpus_from_texts_sorted_and_unk():
    c = lm_corpus_from_texts([["a", "a", "b", "rare"], ["a", "b"]], [["a", "zzz"]], [["b"]])
    assert "rare" not in c.vocab and c.vocab.itos[0] == "a"
    counts = c.vocab.counts
    assert bool((counts[:-1] >= counts[1:]).all())           # ids in frequency order
    assert c.vocab.decode(c.valid) == ["a", "<unk>", "<eos>"]


def test_checksum_mismatch_and_offline_message(tmp_path, monkeypatch):
    ptb(tmp_path / "r")          # not the real PTB: checksums fail
    with pytest.raises(DataError, match="checksum mismatch"):
        load_ptb(tmp_path / "r")

    def offline(url, dest_dir, fname):
        dest_dir.mkdir(parents=True)        # as pooch does before it tries the network
        raise OSError("network unreachable")
    monkeypatch.setattr(_download, "_download", offline)
    with pytest.raises(DataError) as e:
        load_ptb(tmp_path / "empty")
    msg = str(e.value)
    assert "ptb.train.txt not found" in msg and "download" in msg and "RNNDROP_DATA" in msg
    assert "\n" not in msg
    assert not (tmp_path / "empty").exists()    # a failed download leaves no empty folders


@pytest.mark.realdata
def test_real_ptb_counts(real_root):
    c = load_ptb(real_root)
    assert (len(c.train), len(c.valid), len(c.test), len(c.vocab)) == (929589, 73760, 82430, 10000)
