"""Word-level (and character-level) language-modelling corpora.

Layouts: Mikolov's PTB (``ptb.{train,valid,test}.txt``), WikiText (``wiki.{train,valid,test}.tokens``),
``words`` (any ``{train,valid,test}.txt``, whitespace-separated words) and ``chars`` (the same
files, every character a token); or one text file split into train/valid/test
(:func:`load_text_file`). One ``<eos>`` is appended per line. The vocabulary is built on train, ids sorted by descending train frequency (ties: first
appearance), so id order is the Zipfian order that sampled-softmax proposals assume.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from ._download import DataError, data_root, ensure_file

EOS, UNK = "<eos>", "<unk>"
# "auto" tries these in order: a bare train.txt is read as chars (as before "words" existed).
_LAYOUTS = {"ptb": "ptb.{}.txt", "wikitext": "wiki.{}.tokens", "chars": "{}.txt",
            "words": "{}.txt"}
SPLITS = ("train", "valid", "test")


class Vocabulary:
    """Word ↔ id. ``counts[i]`` is the train count of word ``i`` (a float tensor)."""

    def __init__(self, words: Sequence[str], counts: Optional[Sequence[float]] = None):
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("vocabulary has duplicate words")
        self.counts = torch.tensor(list(counts) if counts is not None else [0] * len(self.itos),
                                   dtype=torch.float64)

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: Optional[int] = None, min_count: int = 1,
              specials: Sequence[str] = ()) -> "Vocabulary":
        cnt = Counter(tokens)
        words = sorted(cnt, key=lambda w: -cnt[w])  # stable: ties keep first appearance
        words = [w for w in words if cnt[w] >= min_count and w not in specials]
        if max_size is not None:
            words = words[: max(0, max_size - len(specials))]
        words = list(specials) + words
        return cls(words, [cnt.get(w, 0) for w in words])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, words: Sequence[str], unk: Optional[str] = UNK) -> Tensor:
        u = self.stoi.get(unk) if unk is not None else None
        try:
            return torch.tensor([self.stoi[w] if u is None else self.stoi.get(w, u) for w in words],
                                dtype=torch.long)
        except KeyError as e:
            raise DataError(f"word {e.args[0]!r} is not in the vocabulary and it has no {UNK}") from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {"itos": self.itos, "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        return cls(d["itos"], d.get("counts"))


@dataclass
class Corpus:
    """``train``/``valid``/``test``: 1-D LongTensors of ids; ``vocab``: the train vocabulary;
    ``split``: where the splits came from in a single file (:func:`load_text_file`), else None."""
    train: Tensor
    valid: Tensor
    test: Tensor
    vocab: Vocabulary
    split: Optional[dict] = None


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    if not path.is_file():
        raise DataError(f"missing split: {path} not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty")
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (data.encoding / --encoding)") from None
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: not valid {encoding} at byte {e.start} (line {line}); pass "
                        f"--encoding latin-1 (or the file's encoding)") from None
    return text.splitlines()


def _tokens(path: Path, chars: bool, encoding: str = "utf-8") -> list[str]:
    out: list[str] = []
    for line in _read_lines(path, encoding):
        if chars:
            out.extend(line)
        else:
            out.extend(line.split())
        out.append(EOS)
    return out


def load_corpus(path: os.PathLike | str, layout: str = "auto", unk: str = "error",
                encoding: str = "utf-8") -> Corpus:
    """Read the three splits from directory ``path``.

    ``unk`` decides what happens to valid/test tokens unseen in train when the train vocabulary
    has no ``<unk>``: ``"error"`` (a DataError naming the file and a word), ``"add"`` (add
    ``<unk>`` to the vocabulary) — with ``<unk>`` present they always map to it.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"corpus directory {root} not found")
    if layout == "auto":
        layout = next((k for k, pat in _LAYOUTS.items() if (root / pat.format("train")).is_file()), None)
        if layout is None:
            raise DataError(f"{root}: no ptb.train.txt, wiki.train.tokens or train.txt found")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(_LAYOUTS)} or 'auto', got {layout!r}")
    if unk not in ("error", "add", "map"):
        raise ValueError(f"unk must be 'error', 'add' or 'map', got {unk!r}")
    files = {s: root / _LAYOUTS[layout].format(s) for s in SPLITS}
    toks = {s: _tokens(f, layout == "chars", encoding) for s, f in files.items()}
    _warn_identical(toks, {s: str(f) for s, f in files.items()})
    return _corpus(toks, unk, {s: str(f) for s, f in files.items()})


def _warn_identical(toks: dict, names: dict) -> None:
    """A warning when two splits hold the same text: valid or test perplexity would then
    measure memorisation, not generalisation (an easy slip when copying one file three times)."""
    same = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:] if toks[a] == toks[b]]
    for a, b in same:
        warnings.warn(f"{names[a]} and {names[b]} have identical contents: the {b} perplexity "
                      f"will not measure generalisation", UserWarning, stacklevel=3)


def _corpus(toks: dict, unk: str, names: dict, split: Optional[dict] = None) -> Corpus:
    """The corpus of tokenised splits: vocabulary built on train, ``unk`` policy for unseen
    valid/test tokens (``names``: what to call each split in an error)."""
    if unk not in ("error", "add", "map"):
        raise ValueError(f"unk must be 'error', 'add' or 'map', got {unk!r}")
    vocab = Vocabulary.build(toks["train"])
    if UNK not in vocab:
        unseen = {s: next((w for w in toks[s] if w not in vocab), None) for s in ("valid", "test")}
        bad = [s for s, w in unseen.items() if w is not None]
        if bad and unk in ("error", "map"):
            s = bad[0]
            raise DataError(f"{names[s]}: word {unseen[s]!r} does not occur in "
                            f"{Path(names['train']).name} and the corpus has no {UNK}; choose "
                            f"unk='add' (--set data.unk=add)")
        if unk == "add":
            vocab = Vocabulary(vocab.itos + [UNK], vocab.counts.tolist() + [0])
    ids = {s: vocab.encode(t, UNK if UNK in vocab else None) for s, t in toks.items()}
    return Corpus(ids["train"], ids["valid"], ids["test"], vocab, split)


def load_text_file(path: os.PathLike | str, chars: bool = False, valid_fraction: float = 0.05,
                   test_fraction: float = 0.05, seed: int = 0, unk: str = "error",
                   encoding: str = "utf-8") -> Corpus:
    """One text file (a novel, a code dump) as a corpus: its token stream (words, or every
    character with ``chars``; ``<eos>`` per line) cut into a contiguous valid block of
    ``valid_fraction`` of the tokens followed by a contiguous test block of ``test_fraction``,
    starting at a token drawn with ``seed``; train is everything before and after.

    Blocks keep the running text a language model is evaluated on (a shuffle of lines would
    not), and the drawn start keeps the held-out text from always being the file's ending.
    ``corpus.split`` records the token ranges, the file's size and SHA-256, so a run can show
    which split it used; the same file, fractions and seed give the same split.
    """
    path = Path(path)
    for name, f in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < f < 0.5:
            raise ValueError(f"data.{name} must be in (0, 0.5), got {f!r}")
    toks = _tokens(path, chars, encoding)
    n = len(toks)
    n_valid, n_test = max(1, round(valid_fraction * n)), max(1, round(test_fraction * n))
    if n - n_valid - n_test < 2:
        raise DataError(f"{path}: {n} tokens are too few to split off valid and test "
                        f"(data.valid_fraction={valid_fraction}, data.test_fraction={test_fraction})")
    held = n_valid + n_test
    g = torch.Generator().manual_seed(seed)
    start = int(torch.randint(0, n - held + 1, (1,), generator=g))
    parts = {"train": toks[:start] + toks[start + held:],
             "valid": toks[start:start + n_valid],
             "test": toks[start + n_valid:start + held]}
    split = {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
             "tokens": n, "valid": [start, start + n_valid], "test": [start + n_valid, start + held],
             "valid_fraction": valid_fraction, "test_fraction": test_fraction, "seed": seed,
             "chars": chars}
    names = {s: f"{path} ({s} split)" for s in SPLITS}
    return _corpus(parts, unk, names, split)


def load_ptb(root: Optional[os.PathLike | str] = None) -> Corpus:
    """PTB from ``<root>/ptb`` (verified by SHA-256; downloaded if absent)."""
    base = data_root(root)
    for s in SPLITS:
        ensure_file(base, f"ptb/ptb.{s}.txt", "ptb", "PTB")
    return load_corpus(base / "ptb", layout="ptb")


def lm_corpus_from_texts(train: Sequence[Sequence[str]], valid: Sequence[Sequence[str]],
                         test: Sequence[Sequence[str]], max_vocab: Optional[int] = None,
                         min_count: int = 2) -> Corpus:
    """A corpus from tokenised documents (each a list of words; ``<eos>`` after each document).
    Words seen fewer than ``min_count`` times in train, or beyond ``max_vocab``, become ``<unk>``."""
    def flat(docs):
        out = []
        for d in docs:
            out.extend(d)
            out.append(EOS)
        return out
    tr, va, te = flat(train), flat(valid), flat(test)
    vocab = Vocabulary.build(tr, max_size=max_vocab, min_count=min_count, specials=(EOS, UNK))
    cnt = Counter(tr)
    vocab.counts = torch.tensor([cnt.get(w, 0) for w in vocab.itos], dtype=torch.float64)
    vocab.counts[vocab.stoi[UNK]] = sum(c for w, c in cnt.items() if w not in vocab)
    # Re-sort the specials into frequency order so ids stay Zipfian.
    order = sorted(range(len(vocab)), key=lambda i: -vocab.counts[i].item())
    vocab = Vocabulary([vocab.itos[i] for i in order], [vocab.counts[i].item() for i in order])
    return Corpus(vocab.encode(tr), vocab.encode(va), vocab.encode(te), vocab)


def check_vocab(vocab_dict: dict, corpus: Corpus, source: str = "checkpoint") -> None:
    """Raise a DataError if a checkpoint's vocabulary differs from the corpus's."""
    theirs = list(vocab_dict.get("itos", []))
    ours = corpus.vocab.itos
    if theirs != ours:
        diff = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        raise DataError(f"vocabulary mismatch between {source} ({len(theirs)} words) and the corpus "
                        f"({len(ours)} words), first difference at id {diff}: was the model trained "
                        f"on another corpus?")


def batchify(data: Tensor, batch_size: int) -> Tensor:
    """Cut a 1-D stream into ``batch_size`` parallel streams: ``(N // B, B)``, time-major; the
    remainder is dropped (as PyTorch's word_language_model example)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = data.numel() // batch_size
    if n < 2:
        raise DataError(f"stream of {data.numel()} tokens is too short for batch size {batch_size}")
    return data[: n * batch_size].view(batch_size, n).t().contiguous()


def bptt_windows(source: Tensor, bptt: int, start: int = 0, variable: bool = False,
                 generator: Optional[torch.Generator] = None):
    """Yield ``(position, x, y)`` windows ``(T, B)`` of a batchified stream from ``start``; ``y``
    is ``x`` shifted by one and ``position`` the index of ``x``'s first row. Fixed-length windows
    cover every position exactly once. ``variable=True``: AWD-LSTM's variable length, ``bptt``
    with probability 0.95 else ``bptt / 2``, then ``N(that, 5)``, at least 5 (drawn from
    ``generator`` when the window is reached, so a resumed run draws the same lengths)."""
    i, n = start, source.shape[0]
    while i < n - 1:
        if variable:
            base = bptt if torch.rand(1, generator=generator).item() < 0.95 else bptt / 2
            seq = max(5, int(torch.normal(torch.tensor(float(base)), torch.tensor(5.0),
                                          generator=generator).item()))
        else:
            seq = bptt
        seq = min(seq, n - 1 - i)
        yield i, source[i:i + seq], source[i + 1:i + 1 + seq]
        i += seq
