"""A classifier run's data: a user's files read, split, tokenised and encoded.

``load_classify_data`` reads ``data.path`` (any format of :mod:`rnndrop.data.labeled`) and, if
given, ``data.valid`` / ``data.test``. What is not given is cut from ``data.path`` by a seeded,
stratified split, written to ``<run>/split.json`` with a fingerprint of the data, so that
``classify eval``, ``classify predict`` and ``--resume`` use the same examples, and a changed
file is an error rather than a silently different test set. The label space and the tokeniser
(vocabulary of the training split only) are built on a fresh run and come from the checkpoint
otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import checkpoint as ckpt
from ..data._download import DataError
from ..data.batching import Encoded
from ..data.labeled import (LabeledTexts, LabelSpace, TextEncoder, fingerprint,
                            infer_label_space, load_split, read_labeled, read_texts,
                            save_split, stratified_split)
from .config import ClassifyDataConfig

SPLIT_FILE = "split.json"


@dataclass
class ClassifyData:
    train: Encoded
    valid: Encoded
    test: Encoded
    encoder: TextEncoder
    labels: LabelSpace
    target_scale: Optional[tuple] = None     # regression: (mean, std) of the train targets
    texts: dict = field(default_factory=dict)   # split -> LabeledTexts

    @property
    def task(self) -> str:
        return self.labels.task

    @property
    def num_outputs(self) -> int:
        return len(self.labels.classes) if self.task == "classification" else 1

    def checkpoint_entries(self) -> dict:
        """What a checkpoint needs to rebuild the model's input and output: plain types only
        (checkpoints are read with ``weights_only=True``)."""
        return {"encoder": self.encoder.to_dict(), "labels": self.labels.to_dict(),
                "target_scale": None if self.target_scale is None else list(self.target_scale)}

    def check_checkpoint(self, st: dict, path) -> None:
        """A checkpoint to resume must have this run's vocabulary and labels."""
        if st["labels"] != self.labels.to_dict():
            raise ckpt.CheckpointError(f"{path} was trained on other labels "
                                       f"({LabelSpace.from_dict(st['labels']).classes}) than "
                                       f"these ({self.labels.classes})")
        if st["encoder"] != self.encoder.to_dict():
            raise ckpt.CheckpointError(f"{path} has another vocabulary or tokeniser than the "
                                       f"one built from this data")


def _read(d: ClassifyDataConfig, path, files=(), log=print) -> LabeledTexts:
    return read_labeled(path, format=d.format, text_column=d.text_column,
                        label_column=d.label_column, encoding=d.encoding, files=files,
                        skip_dirs=d.skip_dirs, log=log)


def read_source(d: ClassifyDataConfig, log=print) -> LabeledTexts:
    """The examples of ``data.path`` / ``data.files``."""
    if not d.path and not d.files:
        raise DataError("no data: give --data PATH (a CSV/TSV/JSONL file or a folder) or "
                        "--files a.txt:label_a b.txt:label_b")
    return _read(d, d.path, d.files, log)


def _split(d: ClassifyDataConfig, source: LabeledTexts, labels: LabelSpace, run_dir: Path,
           fresh: bool, write: bool, log) -> dict:
    vf = 0.0 if d.valid else d.valid_fraction
    tf = 0.0 if d.test else d.test_fraction
    fp = fingerprint(source)
    path = run_dir / SPLIT_FILE
    if path.is_file():
        split = load_split(path, fp)
    elif not fresh:
        raise DataError(f"{path} not found: the run's split of {d.path} is not known "
                        f"(give --data for the examples to score)")
    else:
        split = stratified_split(source.labels, vf, tf, d.split_seed, labels.task)
        if not write:                # the same seeded draw as the process that writes it
            return split
        run_dir.mkdir(parents=True, exist_ok=True)
        save_split(path, split, fp, {"source": source.source, "valid_fraction": vf,
                                     "test_fraction": tf, "seed": d.split_seed})
        log(f"split {len(source)} examples: {len(split['train'])} train, "
            f"{len(split['valid'])} valid, {len(split['test'])} test (seed {d.split_seed}; "
            f"{path})")
    return split


def load_classify_data(d: ClassifyDataConfig, run_dir: str | os.PathLike, *, state: dict = None,
                       fresh: bool = True, write: bool = True, log=print) -> ClassifyData:
    """The run's splits, encoded. ``state``: a checkpoint whose encoder, labels and target scale
    are used (resume, eval); ``fresh``: a new run may draw its split, and writes it to
    ``split.json`` unless ``write`` is False (the ranks but rank 0 of a run under torchrun)."""
    run_dir = Path(run_dir)
    source = read_source(d, log)
    if state is not None:
        labels = LabelSpace.from_dict(state["labels"])
    else:
        labels = infer_label_space(source.labels, d.task, source=source.source)
        log(f"task: {labels.task}" + (f" ({len(labels.classes)} classes: "
                                      f"{', '.join(labels.classes[:10])}"
                                      f"{', ...' if len(labels.classes) > 10 else ''})"
                                      if labels.task == "classification" else
                                      " (set data.task to choose)"))
    parts = {"train": source}
    if not (d.valid and d.test):
        split = _split(d, source, labels, run_dir, fresh, write, log)
        parts = {k: source.subset(v) for k, v in split.items()}
    if d.valid:
        parts["valid"] = _read(d, d.valid, log=log)
    if d.test:
        parts["test"] = _read(d, d.test, log=log)
    if state is not None:
        encoder = TextEncoder.from_dict(state["encoder"])
    else:
        encoder = TextEncoder(level=d.level, lower=d.lower, max_len=d.max_len, keep=d.keep,
                              min_count=d.min_count, max_vocab=d.max_vocab).fit(parts["train"].texts)
    enc = {k: encoder.encode(v.texts, labels.encode(v.labels, source=v.source))
           for k, v in parts.items()}
    scale = None
    if labels.task == "regression":
        if state is not None and state.get("target_scale") is not None:
            scale = tuple(state["target_scale"])
        else:
            y = enc["train"].targets.double()
            scale = (float(y.mean()), max(float(y.std()) if len(y) > 1 else 1.0, 1e-8))
    return ClassifyData(enc["train"], enc["valid"], enc["test"], encoder, labels, scale, parts)


def load_examples(d: ClassifyDataConfig, path, encoder: TextEncoder, labels: LabelSpace,
                  need_labels: bool = True, log=print) -> tuple[LabeledTexts, Encoded]:
    """Other examples (``classify eval --data`` / ``predict --data``), encoded with the run's
    tokeniser. Without ``need_labels`` the file may have no labels: a CSV/TSV/JSONL without the
    label column, or a ``.txt`` file of one text per line (targets are then 0)."""
    p = Path(path)
    if not need_labels and p.is_file() and p.suffix.lower() == ".txt":
        src = read_texts(p, d.encoding)
    else:
        try:
            src = _read(d, path, log=log)
        except DataError as e:
            if need_labels or repr(d.label_column) not in str(e):   # only a missing label
                raise
            src = read_labeled(path, format=d.format, text_column=d.text_column,
                               label_column=None, encoding=d.encoding, skip_dirs=d.skip_dirs,
                               log=log)
    if all(lab is not None for lab in src.labels):
        return src, encoder.encode(src.texts, labels.encode(src.labels, source=src.source))
    return src, encoder.encode(src.texts)
