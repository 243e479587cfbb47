"""Run configuration: dataclasses, read from TOML, overridable (language-model recipes here;
the classifier's in :mod:`rnndrop.classify.config`, on the same machinery).

A recipe (``configs/*.toml``) has three tables, ``[data]``, ``[model]`` and ``[train]``, whose
keys are the fields below. ``--set model.hidden_size=200`` overrides one value. Unknown keys,
values of the wrong type and values out of range are errors that name the key, raised while the
config is read (``RunConfig.validate``), before any data is loaded or any model is built.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class DataConfig:
    # A directory (a layout's three splits) or one text file (split below). None:
    # $RNNDROP_DATA/ptb for layout "ptb". `rnndrop train` writes the path it read here (absolute),
    # and the layout it found, so a checkpoint's eval, resume and generate need no --data.
    dir: Optional[str] = None
    # ptb | wikitext | words ({train,valid,test}.txt, word tokens) | chars (the same files, or
    # one file, every character a token) | imdb-lm. A recipe's layout that does not fit the
    # data is replaced by the one found there; one given with --set is kept.
    layout: str = "ptb"
    unk: str = "error"                  # policy when valid/test have words unseen in train
    encoding: str = "utf-8"             # of the text files (--encoding)
    max_vocab: Optional[int] = None     # imdb-lm: keep at most this many words (None: no cap)
    min_count: int = 2                  # imdb-lm: rarer train words become <unk>
    # One text file: the tokens are cut into a contiguous valid block and a contiguous test
    # block (these shares of the file; train is the rest) at a place drawn with split_seed.
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 0


@dataclass
class ModelConfig:
    hidden_size: int = 200
    emb_size: Optional[int] = None      # None: same as hidden_size
    num_layers: int = 2
    scheme: str = "none"                # none | zaremba | variational
    dropout: float = 0.0                # zaremba: non-recurrent connections
    dropout_embedding: float = 0.0      # variational: word types, per sequence
    dropout_input: float = 0.0          # variational: inputs of every layer
    dropout_hidden: float = 0.0         # variational: recurrent state h_{t-1}
    dropout_output: float = 0.0         # variational: last layer's output
    tied_masks: bool = True             # variational: one mask for all gates (False = untied)
    tie_weights: bool = False           # decoder shares the embedding matrix
    init_range: float = 0.1             # uniform(-r, r) for every parameter
    output: str = "full"                # full | sampled | adaptive
    num_sampled: int = 1024             # sampled softmax: negatives per batch
    sampler: str = "log_uniform"        # sampled softmax proposal: log_uniform | unigram
    alpha: float = 0.75                 # sampled softmax, unigram: P ∝ (train count + 1)^alpha
    unique: bool = True                 # sampled softmax: k distinct negatives (as TF)
    cutoffs: list = field(default_factory=lambda: [2000, 10000])  # adaptive softmax
    zoneout_hidden: float = 0.0         # zoneout of h (Krueger et al. 2016), any scheme
    zoneout_cell: float = 0.0           # zoneout of the LSTM cell state c
    # Concrete dropout (Gal, Hron & Kendall 2017), variational only: the dropout_* rates above
    # are where the learned rates start; the regulariser's scales are l²/N and 2/N.
    learn_dropout: bool = False
    concrete_lengthscale: float = 1e-4  # the prior length-scale l
    concrete_dataset_size: int = 0      # N; 0: the trainer sets the number of training tokens


@dataclass
class CommonTrainConfig:
    """What every trainer reads (:mod:`rnndrop.train.base`); a task's train table adds its own."""
    seed: int = 0
    epochs: int = 13
    batch_size: int = 20
    eval_batch_size: int = 10
    optimizer: str = "sgd"              # sgd | adam
    lr: float = 1.0
    clip: float = 5.0                   # global gradient-norm threshold (0: off)
    weight_decay: float = 0.0           # Gal: after the step, w -= weight_decay * w
    device: str = "cpu"
    threads: int = 0                    # 0: torch default
    checkpoint_every: int = 500         # steps between mid-epoch checkpoints (0: epoch ends only)
    mc_samples: int = 0                 # MC-dropout samples for the final test evaluation
    # Early stopping: stop after this many epochs in a row without a better validation score
    # (0: off); the final evaluation uses best.pt either way.
    patience: int = 0
    max_steps: int = 0                  # stop after this many steps in total (0: no limit)
    # A training loss per token above this counts as diverged, like NaN: the step is not applied
    # and the last good checkpoint is restored (0: 10 * ln(vocabulary size), ~92 nats on PTB;
    # a uniform guess is ln V, the large recipe's worst early step ~26).
    divergence_loss: float = 0.0
    log_every: int = 0                  # without a progress bar: a log line every N steps (0: every minute)
    # Steps between read-backs of the loss and gradient norm (divergence check, step log,
    # running perplexity). 1: every step, and a bad step is caught before it is applied. K > 1:
    # the statistics stay on the device and are read K at a time, so a CUDA loop never waits
    # for the GPU inside a step; a divergence is found up to K - 1 steps late and the last good
    # checkpoint is restored all the same (no checkpoint is written before a read-back).
    # 0: automatic, 1 on CPU (a read-back costs nothing there) and 50 on CUDA.
    sync_every: int = 0
    # TF32 matmuls on CUDA (Ampere and later), as cuDNN's RNN kernels use by default, so that
    # our fast paths run at the precision of the baseline they are compared with. No effect on
    # CPU; recorded in every metrics line.
    tf32: bool = True
    # Mixed precision: "bf16" or "fp16" autocast of forward and loss (weights, optimiser and
    # recurrent cell state stay float32); "fp16" adds a GradScaler (checkpointed). bf16 is the
    # CPU's (native with AVX512_BF16 / AMX); fp16 is for CUDA (on a CPU it runs, slowly).
    precision: str = "fp32"
    # Under torchrun: seconds a process waits for the others at a collective before it stops
    # with an error (a peer that died or hangs). A rank-0 checkpoint write must fit in it.
    dist_timeout: float = 300.0


@dataclass
class TrainConfig(CommonTrainConfig):
    """The language model's train table: the common keys and truncated BPTT's."""
    bptt: int = 20
    variable_bptt: bool = False
    lr_decay: float = 2.0               # lr /= lr_decay every epoch after decay_after
    decay_after: int = 4
    # Linear lr warm-up over the first N steps (0: off): lr * step / N. Not in Zaremba's or
    # Gal's recipes. (On the large variational recipe, 100 steps only delayed its early
    # gradient spikes; docs/results/ptb.md.)
    warmup_steps: int = 0
    # "sum_over_time": the objective is the NLL summed over the BPTT window and averaged over
    # the batch, as in Zaremba's and Gal's code, for which their lr = 1 and clip 5/10 are set.
    # "mean": NLL averaged over all tokens (PyTorch's word_language_model; needs lr ≈ 20).
    loss_reduction: str = "sum_over_time"


class SectionedConfig:
    """A recipe of three tables, ``data``, ``model`` and ``train`` (dataclass fields of the
    subclass), read from a dict / TOML and checked by ``_check(errors)``."""

    SECTIONS = ("data", "model", "train")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _check(self, errors: list) -> None:
        raise NotImplementedError

    def validate(self, source: str = "config"):
        """Check every value's range and choices; raise ``ValueError`` naming the key."""
        errors: list[str] = []
        self._check(errors)
        if errors:
            raise ValueError(f"{source}: {errors[0]}" + (f" (and {len(errors) - 1} more: "
                             + "; ".join(errors[1:]) + ")" if len(errors) > 1 else ""))
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config", validate: bool = True):
        cfg = cls()
        for section, values in d.items():
            if section not in cls.SECTIONS:
                raise ValueError(f"{source}: unknown table [{section}] (expected "
                                 + ", ".join(f"[{s}]" for s in cls.SECTIONS) + ")")
            if not isinstance(values, dict):
                raise ValueError(f"{source}: [{section}] must be a table")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, source)
        return cfg.validate(source) if validate else cfg


@dataclass
class RunConfig(SectionedConfig):
    """A language-model recipe (``configs/ptb-*.toml``)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def _check(self, errors: list) -> None:
        _check_data(self.data, errors)
        _check_model(self.model, errors)
        _check_train(self.train, errors)


def _coerce(value: Any, current: Any, key: str, source: str, ftype: str):
    if isinstance(value, str) and not isinstance(current, str) and current is not None:
        # From --set: parse by the field's type.
        try:
            if isinstance(current, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            if isinstance(current, list):
                return [int(v) for v in value.strip("[]").split(",") if v.strip()]
            return type(current)(value)
        except ValueError:
            raise ValueError(f"{source}: {key} expects {type(current).__name__}, got {value!r}") from None
    if current is None and isinstance(value, str):
        if "int" in ftype:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{source}: {key} expects int, got {value!r}") from None
        return None if value.lower() == "none" else value
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"{source}: {key} expects true/false, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"{source}: {key} expects {type(current).__name__}, got {value!r}")
    return value


def _set(cfg: SectionedConfig, dotted: str, value: Any, source: str) -> None:
    section, _, key = dotted.partition(".")
    sub = getattr(cfg, section, None) if section in cfg.SECTIONS else None
    names = {f.name: f for f in dataclasses.fields(sub)} if sub is not None else {}
    if sub is None or key not in names:
        valid = [f"{s}.{f.name}" for s in cfg.SECTIONS
                 for f in dataclasses.fields(getattr(cfg, s))]
        raise ValueError(f"{source}: unknown key {dotted!r}; valid keys: {', '.join(valid)}")
    setattr(sub, key, _coerce(value, getattr(sub, key), dotted, source, str(names[key].type)))


def load_config(path: str | Path, overrides: list[str] = (), cls=None) -> SectionedConfig:
    """A recipe file read into ``cls`` (default :class:`RunConfig`), ``--set`` overrides
    applied, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None
    cfg = (cls or RunConfig).from_dict(raw, str(path), validate=False)
    apply_overrides(cfg, overrides, source=str(path))
    return cfg


def apply_overrides(cfg: SectionedConfig, overrides: list[str], source: str = "config"):
    """Apply ``key=value`` overrides (``--set``), then validate the whole config."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        _set(cfg, key.strip(), value.strip(), "--set")
    return cfg.validate(f"{source} with --set" if overrides else source)


# Model fields that change the shape of a parameter: the ones a "does not fit" error names.
SHAPE_KEYS = ("hidden_size", "emb_size", "num_layers", "output", "cutoffs", "tie_weights",
              "learn_dropout")


def model_differences(saved: dict, cfg: RunConfig) -> str:
    """The shape-changing ``model.*`` values in which a checkpoint's config (``saved``, a dict)
    and ``cfg`` differ, as one phrase ("" when none)."""
    theirs = saved.get("model", {}) if isinstance(saved, dict) else {}
    diffs = [f"model.{k} is {theirs[k]!r} in the checkpoint and {getattr(cfg.model, k)!r} here"
             for k in SHAPE_KEYS if k in theirs and theirs[k] != getattr(cfg.model, k)]
    return "; ".join(diffs)


# ------------------------------------------------------------------------------ value checks
LAYOUTS = ("ptb", "wikitext", "words", "chars", "imdb-lm")
UNK_POLICIES = ("error", "add", "map")
SCHEMES = ("none", "zaremba", "variational")
OUTPUTS = ("full", "sampled", "adaptive")
SAMPLERS = ("log_uniform", "unigram", "uniform")
OPTIMIZERS = ("sgd", "adam")
LOSS_REDUCTIONS = ("sum_over_time", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
_MODEL_DROPOUTS = ("dropout", "dropout_embedding", "dropout_input", "dropout_hidden",
                   "dropout_output")


def _choice(errors, key, value, choices):
    if value not in choices:
        errors.append(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _int(errors, key, value, lo: int, optional: bool = False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        errors.append(f"{key} must be {what}, got {value!r}")


def _real(errors, key, value, lo: float, hi: float = math.inf, lo_open: bool = False,
          hi_open: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        if math.isinf(hi):
            rng = f"{'>' if lo_open else '>='} {lo:g}"
        else:
            rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        errors.append(f"{key} must be a finite number {rng}, got {value!r}")


def _check_encoding(errors, key, value) -> None:
    import codecs
    try:
        codecs.lookup(value)
    except (LookupError, TypeError):
        errors.append(f"{key} must be a text encoding such as 'utf-8' or 'latin-1', got {value!r}")


def _check_data(d: DataConfig, errors: list) -> None:
    _check_encoding(errors, "data.encoding", d.encoding)
    _choice(errors, "data.layout", d.layout, LAYOUTS)
    _choice(errors, "data.unk", d.unk, UNK_POLICIES)
    _int(errors, "data.max_vocab", d.max_vocab, 2, optional=True)
    _int(errors, "data.min_count", d.min_count, 1)
    _real(errors, "data.valid_fraction", d.valid_fraction, 0.0, 0.5, lo_open=True)
    _real(errors, "data.test_fraction", d.test_fraction, 0.0, 0.5, lo_open=True)
    _int(errors, "data.split_seed", d.split_seed, 0)


def has_dropout(m: ModelConfig) -> bool:
    """Whether a model of this config is stochastic in training mode (dropout or zoneout at
    some site): without, MC dropout's passes are all the deterministic one."""
    rates = {"none": (), "zaremba": (m.dropout,),
             "variational": (m.dropout_embedding, m.dropout_input, m.dropout_hidden,
                             m.dropout_output)}.get(m.scheme, ())
    return any(r > 0 for r in rates) or m.zoneout_hidden > 0 or m.zoneout_cell > 0


def _check_model(m: ModelConfig, errors: list) -> None:
    _int(errors, "model.hidden_size", m.hidden_size, 1)
    _int(errors, "model.emb_size", m.emb_size, 1, optional=True)
    _int(errors, "model.num_layers", m.num_layers, 1)
    _choice(errors, "model.scheme", m.scheme, SCHEMES)
    for name in _MODEL_DROPOUTS:
        _real(errors, f"model.{name}", getattr(m, name), 0.0, 1.0, hi_open=True)
    _real(errors, "model.init_range", m.init_range, 0.0, lo_open=True)
    _choice(errors, "model.output", m.output, OUTPUTS)
    _int(errors, "model.num_sampled", m.num_sampled, 1)
    _choice(errors, "model.sampler", m.sampler, SAMPLERS)
    _real(errors, "model.alpha", m.alpha, 0.0)
    if not (isinstance(m.cutoffs, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                                and c > 0 for c in m.cutoffs)
            and m.cutoffs == sorted(set(m.cutoffs))):
        errors.append(f"model.cutoffs must be increasing positive integers, got {m.cutoffs!r}")
    for name in ("zoneout_hidden", "zoneout_cell"):
        _real(errors, f"model.{name}", getattr(m, name), 0.0, 1.0)
    if not isinstance(m.learn_dropout, bool):
        errors.append(f"model.learn_dropout must be true or false, got {m.learn_dropout!r}")
    _real(errors, "model.concrete_lengthscale", m.concrete_lengthscale, 0.0, lo_open=True)
    _int(errors, "model.concrete_dataset_size", m.concrete_dataset_size, 0)
    if m.learn_dropout is True and m.scheme != "variational":
        errors.append(f"model.learn_dropout needs model.scheme='variational' (its dropout_* "
                      f"rates are where the learned rates start), got {m.scheme!r}")
    if m.tie_weights and m.emb_size not in (None, m.hidden_size):
        errors.append(f"model.tie_weights needs model.emb_size == model.hidden_size "
                      f"({m.emb_size} != {m.hidden_size})")
    if m.tie_weights and m.output == "adaptive":
        errors.append("model.tie_weights does not work with model.output='adaptive' (no single "
                      "output matrix to share)")
    # Which dropout keys each scheme reads; a value set for another scheme would be ignored.
    used = {"none": (), "zaremba": ("dropout",),
            "variational": ("dropout_embedding", "dropout_input", "dropout_hidden",
                            "dropout_output")}.get(m.scheme)
    if used is not None:
        stray = [f"model.{n}={getattr(m, n)}" for n in _MODEL_DROPOUTS
                 if n not in used and isinstance(getattr(m, n), (int, float)) and getattr(m, n)]
        if stray:
            takes = ", ".join(f"model.{n}" for n in used) or "no dropout"
            errors.append(f"model.scheme={m.scheme!r} takes {takes}, but {', '.join(stray)} is set")


def _check_train(t: TrainConfig, errors: list) -> None:
    check_common_train(t, errors)
    _int(errors, "train.bptt", t.bptt, 1)
    _real(errors, "train.lr_decay", t.lr_decay, 0.0, lo_open=True)
    _int(errors, "train.decay_after", t.decay_after, 0)
    _int(errors, "train.warmup_steps", t.warmup_steps, 0)
    _choice(errors, "train.loss_reduction", t.loss_reduction, LOSS_REDUCTIONS)


def check_common_train(t: CommonTrainConfig, errors: list) -> None:
    _int(errors, "train.seed", t.seed, 0)
    _int(errors, "train.epochs", t.epochs, 1)
    _int(errors, "train.batch_size", t.batch_size, 1)
    _int(errors, "train.eval_batch_size", t.eval_batch_size, 1)
    _choice(errors, "train.optimizer", t.optimizer, OPTIMIZERS)
    _real(errors, "train.lr", t.lr, 0.0, lo_open=True)
    _real(errors, "train.clip", t.clip, 0.0)
    _real(errors, "train.weight_decay", t.weight_decay, 0.0, 1.0, hi_open=True)
    if not isinstance(t.device, str) or not _valid_device(t.device):
        errors.append(f"train.device must be 'cpu', 'cuda' or 'cuda:N', got {t.device!r}")
    _int(errors, "train.threads", t.threads, 0)
    _int(errors, "train.checkpoint_every", t.checkpoint_every, 0)
    _int(errors, "train.mc_samples", t.mc_samples, 0)
    _int(errors, "train.patience", t.patience, 0)
    _int(errors, "train.max_steps", t.max_steps, 0)
    _real(errors, "train.divergence_loss", t.divergence_loss, 0.0)
    _int(errors, "train.log_every", t.log_every, 0)
    _int(errors, "train.sync_every", t.sync_every, 0)
    if not isinstance(t.tf32, bool):
        errors.append(f"train.tf32 must be true or false, got {t.tf32!r}")
    _choice(errors, "train.precision", t.precision, PRECISIONS)
    _real(errors, "train.dist_timeout", t.dist_timeout, 0.0, lo_open=True)


def _valid_device(name: str) -> bool:
    import torch
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
