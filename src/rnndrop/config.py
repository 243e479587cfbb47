"""Run configuration for language-model recipes: dataclasses, read from TOML, overridable.

A recipe (``configs/*.toml``) has three tables, ``[data]``, ``[model]`` and ``[train]``, whose
keys are the fields below. ``--set model.hidden_size=200`` overrides one value; unknown keys and
values of the wrong type are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class DataConfig:
    dir: Optional[str] = None           # None: $RNNDROP_DATA/ptb for layout "ptb"
    layout: str = "ptb"                 # ptb | wikitext | chars | imdb-lm
    unk: str = "error"                  # policy when valid/test have words unseen in train
    max_vocab: Optional[int] = None     # imdb-lm: keep at most this many words (None: no cap)
    min_count: int = 2                  # imdb-lm: rarer train words become <unk>


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


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 13
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 20
    variable_bptt: bool = False
    optimizer: str = "sgd"              # sgd | adam
    lr: float = 1.0
    lr_decay: float = 2.0               # lr /= lr_decay every epoch after decay_after
    decay_after: int = 4
    clip: float = 5.0                   # global gradient-norm threshold (0: off)
    # Linear lr warm-up over the first N steps (0: off): lr * step / N. Not in Zaremba's or
    # Gal's recipes. (On the large variational recipe, 100 steps only delayed its early
    # gradient spikes; docs/results/ptb.md.)
    warmup_steps: int = 0
    # "sum_over_time": the objective is the NLL summed over the BPTT window and averaged over
    # the batch, as in Zaremba's and Gal's code, for which their lr = 1 and clip 5/10 are set.
    # "mean": NLL averaged over all tokens (PyTorch's word_language_model; needs lr ≈ 20).
    loss_reduction: str = "sum_over_time"
    weight_decay: float = 0.0           # Gal: after the step, w -= weight_decay * w
    device: str = "cpu"
    threads: int = 0                    # 0: torch default
    checkpoint_every: int = 500         # steps between mid-epoch checkpoints (0: epoch ends only)
    mc_samples: int = 0                 # MC-dropout samples for the final test evaluation
    max_steps: int = 0                  # stop after this many steps in total (0: no limit)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RunConfig":
        cfg = cls()
        for section, values in d.items():
            if section not in ("data", "model", "train"):
                raise ValueError(f"{source}: unknown table [{section}] (expected [data], [model], [train])")
            if not isinstance(values, dict):
                raise ValueError(f"{source}: [{section}] must be a table")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, source)
        return cfg


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


def _set(cfg: RunConfig, dotted: str, value: Any, source: str) -> None:
    section, _, key = dotted.partition(".")
    sub = getattr(cfg, section, None) if section in ("data", "model", "train") else None
    names = {f.name: f for f in dataclasses.fields(sub)} if sub is not None else {}
    if sub is None or key not in names:
        valid = [f"{s}.{f.name}" for s in ("data", "model", "train")
                 for f in dataclasses.fields(getattr(cfg, s))]
        raise ValueError(f"{source}: unknown key {dotted!r}; valid keys: {', '.join(valid)}")
    setattr(sub, key, _coerce(value, getattr(sub, key), dotted, source, str(names[key].type)))


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None
    cfg = RunConfig.from_dict(raw, str(path))
    apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        _set(cfg, key.strip(), value.strip(), "--set")
    return cfg
