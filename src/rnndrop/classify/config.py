"""The classifier's recipe (``configs/classify-*.toml``): ``[data]``, ``[model]``, ``[train]``.

Read and overridden (``--set model.scheme=naive``) like the language model's recipes
(:mod:`rnndrop.config`: unknown keys, wrong types and out-of-range values are one-line errors
naming the key); ``[train]`` has the keys every trainer reads plus the classifier's own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..config import (CommonTrainConfig, SectionedConfig, _check_encoding, _choice, _int,
                      _real, check_common_train)
from ..data.labeled import FORMATS, TASKS
from ..models.classifiers import ENCODERS, HEAD_ACTIVATIONS

LEVELS = ("word", "char")
SCHEMES = ("none", "naive", "variational")


@dataclass
class ClassifyDataConfig:
    # Training examples: a CSV/TSV/JSONL file, a folder per class (DIR/<label>/*.txt) or a
    # folder of one file per class (DIR/name.<label>, one example per line); `files` instead:
    # ["a.txt:label_a", "b.txt:label_b"]. `rnndrop classify train` writes absolute paths here.
    path: Optional[str] = None
    files: list = field(default_factory=list)
    valid: Optional[str] = None     # separate validation / test data (same format); when
    test: Optional[str] = None      # absent, a seeded stratified split of `path` (split.json)
    format: str = "auto"
    text_column: str = "text"       # CSV / TSV / JSONL
    label_column: str = "label"
    encoding: str = "utf-8"
    skip_dirs: list = field(default_factory=lambda: ["unsup"])   # folder layout: not classes
    task: str = "auto"              # numbers that are not few integers: regression
    level: str = "word"             # word (lower-case words and punctuation) | char
    lower: bool = True
    max_len: int = 400              # tokens kept per example
    keep: str = "first"             # of a longer example: its first or last max_len tokens
    min_count: int = 1              # rarer train words become <unk>
    max_vocab: Optional[int] = 20000
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class ClassifyModelConfig:
    encoder: str = "lstm"           # rnn_tanh | rnn_relu | rnn_sigmoid | rnn_leaky_relu | gru | lstm | bigru | bilstm
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    # none | naive (Zaremba-style: fresh masks every step on the encoder's input and output) |
    # variational (Gal & Ghahramani: one mask per sequence on input, recurrent state and
    # output, plus word-type embedding dropout)
    scheme: str = "variational"
    dropout: float = 0.25           # the scheme's probability
    dropout_embedding: Optional[float] = None   # variational word-type dropout (None: dropout)
    tied_masks: bool = True         # variational: one mask for all gates (False: untied)
    head_size: int = 128
    head_activation: str = "relu"
    dropout_head: float = 0.0       # dropout in the head (its input and hidden layer)


@dataclass
class ClassifyTrainConfig(CommonTrainConfig):
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    checkpoint_every: int = 200
    mc_samples: int = 0             # MC-dropout samples for the final test evaluation
    mc_batch: int = 0               # samples per batched pass (0: automatic)
    # Batches of similar lengths: the shuffled examples are cut into pools of `bucket` batches,
    # each sorted by length (less padding to run over; 0 or 1: plain shuffling).
    bucket: int = 50


@dataclass
class ClassifyConfig(SectionedConfig):
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    model: ClassifyModelConfig = field(default_factory=ClassifyModelConfig)
    train: ClassifyTrainConfig = field(default_factory=ClassifyTrainConfig)

    def _check(self, errors: list) -> None:
        d, m, t = self.data, self.model, self.train
        _choice(errors, "data.format", d.format, FORMATS)
        _check_encoding(errors, "data.encoding", d.encoding)
        _choice(errors, "data.task", d.task, TASKS)
        _choice(errors, "data.level", d.level, LEVELS)
        _choice(errors, "data.keep", d.keep, ("first", "last"))
        _int(errors, "data.max_len", d.max_len, 1)
        _int(errors, "data.min_count", d.min_count, 1)
        _int(errors, "data.max_vocab", d.max_vocab, 3, optional=True)
        _real(errors, "data.valid_fraction", d.valid_fraction, 0.0, 0.5, hi_open=True)
        _real(errors, "data.test_fraction", d.test_fraction, 0.0, 0.5, hi_open=True)
        _int(errors, "data.split_seed", d.split_seed, 0)
        if not all(isinstance(f, str) and ":" in f for f in d.files):
            errors.append(f"data.files must be a list of 'path:label' strings, got {d.files!r}")
        _choice(errors, "model.encoder", m.encoder, ENCODERS)
        for k in ("embedding_dim", "hidden_size", "num_layers", "head_size"):
            _int(errors, f"model.{k}", getattr(m, k), 1)
        _choice(errors, "model.scheme", m.scheme, SCHEMES)
        _real(errors, "model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
        if m.dropout_embedding is not None:
            _real(errors, "model.dropout_embedding", m.dropout_embedding, 0.0, 1.0, hi_open=True)
        _real(errors, "model.dropout_head", m.dropout_head, 0.0, 1.0, hi_open=True)
        _choice(errors, "model.head_activation", m.head_activation, sorted(HEAD_ACTIVATIONS))
        check_common_train(t, errors)
        _int(errors, "train.mc_batch", t.mc_batch, 0)
        _int(errors, "train.bucket", t.bucket, 0)


def has_dropout(m: ClassifyModelConfig) -> bool:
    """Whether the model is stochastic in training mode (else MC dropout = one pass)."""
    return (m.scheme != "none" and m.dropout > 0) or m.dropout_head > 0 or \
        (m.scheme == "variational" and (m.dropout_embedding or 0) > 0)
