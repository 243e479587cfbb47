"""A user's own LM corpus: the layout of a folder found (and the error when none fits), one
text file split into contiguous seeded blocks, identical splits warned about."""
import warnings

import pytest
import torch

from lmrun import write_lm_corpus
from rnndrop.config import LAYOUTS, DataConfig, ModelConfig, has_dropout
from rnndrop.data import DataError
from rnndrop.data.lm import find_layout, load_lm_corpus, resolve_data
from rnndrop.data.text import EOS, _tokens, load_text_file


def _copy_as(src, dst, pattern):
    dst.mkdir(parents=True)
    for s in ("train", "valid", "test"):
        (dst / pattern.format(s)).write_text((src / f"ptb.{s}.txt").read_text())
    return dst


@pytest.fixture
def ptb(tmp_path):
    return write_lm_corpus(tmp_path / "ptb-named", n_train=40)


def test_each_layout_is_found(tmp_path, ptb):
    assert find_layout(ptb) == ("ptb", ptb)
    nested = tmp_path / "root"
    _copy_as(ptb, nested / "ptb", "ptb.{}.txt")
    assert find_layout(nested) == ("ptb", nested / "ptb")            # <root>/ptb/ptb.*.txt
    wiki = _copy_as(ptb, tmp_path / "wiki", "wiki.{}.tokens")
    assert find_layout(wiki) == ("wikitext", wiki)
    plain = _copy_as(ptb, tmp_path / "plain", "{}.txt")
    assert find_layout(plain) == ("words", plain)                    # word tokens by default
    assert find_layout(plain, preferred="chars") == ("chars", plain)
    (tmp_path / "imdbroot" / "imdb").mkdir(parents=True)
    assert find_layout(tmp_path / "imdbroot") == ("imdb-lm", tmp_path / "imdbroot")
    # a recipe's layout that does not fit is replaced; the corpus then reads as that layout
    cfg, note = resolve_data(DataConfig(layout="ptb"), wiki)
    assert (cfg.layout, cfg.dir) == ("wikitext", str(wiki.resolve()))
    assert "wikitext" in note
    c = load_lm_corpus(cfg)
    ref = load_lm_corpus(DataConfig(layout="ptb"), ptb)
    assert c.vocab.itos == ref.vocab.itos and torch.equal(c.test, ref.test)


def test_no_layout_fits_lists_what_was_looked_for(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.md").write_text("hello\n")
    with pytest.raises(DataError) as e:
        resolve_data(DataConfig(), tmp_path / "stuff")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "stuff") in msg
    for looked in ("ptb.{train,valid,test}.txt", "wiki.{train,valid,test}.tokens",
                   "{train,valid,test}.txt", "imdb/"):
        assert looked in msg
    assert "data.layout=" + "|".join(LAYOUTS) in msg
    with pytest.raises(DataError, match="no such file or directory"):
        resolve_data(DataConfig(), tmp_path / "nowhere")


def test_layout_given_with_set_is_kept(tmp_path, ptb):
    wiki = _copy_as(ptb, tmp_path / "wiki", "wiki.{}.tokens")
    cfg, note = resolve_data(DataConfig(layout="ptb"), wiki, strict=True)
    assert cfg.layout == "ptb" and note == ""
    with pytest.raises(DataError, match="missing split"):
        load_lm_corpus(cfg)
    plain = _copy_as(ptb, tmp_path / "plain", "{}.txt")
    cfg, _ = resolve_data(DataConfig(layout="chars"), plain, strict=True)
    assert "c" in load_lm_corpus(cfg).vocab and "cat" not in load_lm_corpus(cfg).vocab


def _novel(path, n_lines=200):
    g = torch.Generator().manual_seed(1)
    words = "a b c d e f g h".split()
    lines = [" ".join(words[i] for i in torch.randint(0, 8, (6,), generator=g).tolist())
             for _ in range(n_lines)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_file_is_split_into_seeded_contiguous_blocks(tmp_path):
    f = _novel(tmp_path / "novel.txt")
    toks = _tokens(f, chars=False)
    n = len(toks)
    c = load_text_file(f, valid_fraction=0.05, test_fraction=0.1, seed=3)
    s = c.split
    a, b = s["valid"]
    assert s["test"][0] == b and s["tokens"] == n
    assert b - a == round(0.05 * n) and s["test"][1] - b == round(0.1 * n)
    # contiguous: each held-out split is exactly one block of the file's token stream
    assert c.vocab.decode(c.valid) == toks[a:b]
    assert c.vocab.decode(c.test) == toks[b:s["test"][1]]
    assert c.vocab.decode(c.train) == toks[:a] + toks[s["test"][1]:]
    # seeded: the same seed gives the same split, other seeds other places
    again = load_text_file(f, valid_fraction=0.05, test_fraction=0.1, seed=3)
    assert again.split == s and torch.equal(again.train, c.train)
    starts = {load_text_file(f, seed=k).split["valid"][0] for k in range(5)}
    assert len(starts) > 1
    chars = load_text_file(f, chars=True)
    assert chars.split["tokens"] == len(f.read_text())     # every character, newline = <eos>
    assert EOS in chars.vocab and " " in chars.vocab
    with pytest.raises(ValueError, match="data.valid_fraction"):
        load_text_file(f, valid_fraction=0.0)
    (tmp_path / "tiny.txt").write_text("a b\n")
    with pytest.raises(DataError, match="too few"):
        load_text_file(tmp_path / "tiny.txt")


def test_a_file_resolves_to_words_or_chars_and_loads_the_recorded_split(tmp_path):
    f = _novel(tmp_path / "novel.txt")
    cfg, note = resolve_data(DataConfig(), f)
    assert cfg.layout == "words" and cfg.dir == str(f.resolve()) and "one text file" in note
    cfg = DataConfig(layout="chars", split_seed=7, valid_fraction=0.1)
    cfg, note = resolve_data(cfg, f)
    assert cfg.layout == "chars" and note == ""
    c = load_lm_corpus(cfg)
    assert c.split["seed"] == 7 and c.split["valid_fraction"] == 0.1 and c.split["chars"]


def test_identical_splits_draw_a_warning(tmp_path, ptb):
    same = tmp_path / "same"
    same.mkdir()
    for s in ("train", "valid", "test"):
        (same / f"ptb.{s}.txt").write_text((ptb / "ptb.train.txt").read_text())
    with pytest.warns(UserWarning, match="identical contents") as rec:
        load_lm_corpus(DataConfig(), same)
    assert len(rec) == 3                      # train=valid, train=test, valid=test
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # distinct splits: no warning
        load_lm_corpus(DataConfig(), ptb)


def test_has_dropout():
    assert not has_dropout(ModelConfig())
    assert has_dropout(ModelConfig(scheme="zaremba", dropout=0.1))
    assert not has_dropout(ModelConfig(scheme="variational"))
    assert has_dropout(ModelConfig(scheme="variational", dropout_hidden=0.2))
    assert has_dropout(ModelConfig(zoneout_cell=0.1))
