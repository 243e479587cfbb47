"""One route from a checkpoint to a model: :func:`load_run`.

Every command that reads a training checkpoint (``rnndrop eval``, ``rnndrop train --resume``,
``rnndrop diagnose``, the benchmarks) goes through these functions, so each gets the same checks
and the same one-line errors: a file that is not a checkpoint, missing entries, a config that no
longer validates, a model that does not fit the weights (naming the config values that differ),
a corpus whose vocabulary is not the checkpoint's.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from . import checkpoint as ckpt
from .config import RunConfig, apply_overrides, model_differences
from .data.lm import load_lm_corpus, resolve_data
from .data.text import Corpus, Vocabulary, check_vocab
from .models.lm import RNNLanguageModel

#: In a run directory trained on one text file: the split it used (``Corpus.split``).
SPLIT_FILE = "split.json"

#: What every language-model checkpoint holds (a trainer's ``last.pt`` holds more).
LM_KEYS = ("model", "config", "vocab")


@dataclass
class Run:
    """A checkpoint opened: its path, config (with any overrides), vocabulary, the model with
    its weights, the raw state, and the corpus when it was asked for."""
    path: Path
    config: RunConfig
    vocab: Vocabulary
    model: RNNLanguageModel
    state: dict
    corpus: Optional[Corpus] = None


def read_checkpoint(path: str | os.PathLike, device="cpu", keys: Sequence[str] = LM_KEYS) -> dict:
    """The checkpoint's state (weights-only load), with ``keys`` checked present."""
    return ckpt.require(ckpt.load(path, map_location=device), keys, path)


def config_of(state: dict, path, overrides: Sequence[str] = ()) -> RunConfig:
    """The run config a checkpoint was trained with, ``--set`` overrides applied, validated."""
    cfg = RunConfig.from_dict(state["config"], str(path), validate=False)
    return apply_overrides(cfg, list(overrides), source=str(path))


def sets_layout(overrides: Sequence[str]) -> bool:
    """Whether ``--set`` chose ``data.layout`` (then it is kept, not replaced by the one found)."""
    return any(o.split("=", 1)[0].strip() == "data.layout" for o in overrides)


def restore_weights(model: nn.Module, state: dict, path, cfg: RunConfig) -> None:
    """Load the checkpoint's weights into ``model`` (built from ``cfg``); a misfit is one line
    naming the shape-changing config values that differ."""
    ckpt.load_weights(model, state["model"], path, hint=model_differences(state["config"], cfg))


def check_split(corpus: Optional[Corpus], run_dir: str | os.PathLike) -> None:
    """Warn when a one-file corpus is not split as the run in ``run_dir`` was (its file's
    SHA-256 or token ranges differ from ``split.json``): the file was edited since, so valid
    and test are no longer the text the run was measured on."""
    rec_path = Path(run_dir) / SPLIT_FILE
    if corpus is None or corpus.split is None or not rec_path.is_file():
        return
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return
    now = corpus.split
    if any(rec.get(k) != now[k] for k in ("sha256", "valid", "test")):
        warnings.warn(f"{now['file']} is not split as in {rec_path} (the file or the split "
                      f"settings changed since the run was trained): valid and test differ from "
                      f"the run's", UserWarning, stacklevel=2)


def load_run(path: str | os.PathLike, overrides: Sequence[str] = (), *, corpus: bool = False,
             data_dir: Optional[str | os.PathLike] = None, device="cpu") -> Run:
    """Open a checkpoint: config, vocabulary, model (weights loaded, on ``device``) and, with
    ``corpus=True``, the corpus of its config (``data_dir`` overrides ``data.dir``; its layout
    is found there unless ``--set data.layout`` is among ``overrides``), checked to have the
    checkpoint's vocabulary."""
    path = Path(path)
    state = read_checkpoint(path, device)
    cfg = config_of(state, path, overrides)
    vocab = Vocabulary.from_dict(state["vocab"])
    data = None
    if corpus:
        data_cfg, _ = resolve_data(cfg.data, data_dir, strict=sets_layout(overrides))
        data = load_lm_corpus(data_cfg)
        check_split(data, path.parent)
        check_vocab(state["vocab"], data, source=str(path))
        vocab = data.vocab
    model = RNNLanguageModel.from_config(cfg.model, vocab)
    restore_weights(model, state, path, cfg)
    return Run(path, cfg, vocab, model.to(device), state, data)
