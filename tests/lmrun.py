"""Helpers for tests that train tiny language models (importable from every test module:
``tests/`` is on ``sys.path`` through its conftest)."""
import json
from pathlib import Path

import torch

LM_WORDS = "the cat sat on a mat and the dog ate my hat".split()


def write_lm_corpus(root: Path, n_train: int = 300, seed: int = 0) -> Path:
    """A PTB-layout corpus of random sentences over 12 words (every word and <unk> in train)."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 40), ("test", 40)):
        lines = []
        for _ in range(n):
            k = int(torch.randint(3, 9, (1,), generator=g))
            idx = torch.randint(0, len(LM_WORDS), (k,), generator=g).tolist()
            lines.append(" ".join(LM_WORDS[i] for i in idx))
        if split == "train":
            lines.append("<unk> " + " ".join(LM_WORDS))
        (root / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def tiny_lm_config(**over):
    """A 2 x 16 LSTM LM config for seconds-long runs; ``over``: ``{"train.epochs": 3, ...}``."""
    from rnndrop.config import RunConfig, apply_overrides
    cfg = RunConfig()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.init_range = 16, 2, 0.1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.bptt = 2, 4, 2, 7
    cfg.train.checkpoint_every = 0
    return apply_overrides(cfg, [f"{k}={v}" for k, v in over.items()])


# Dropout schemes every reliability test runs through (``--set`` values).
LM_SCHEMES = {
    "none": {},
    "zaremba": {"model.scheme": "zaremba", "model.dropout": 0.3},
    "variational": {"model.scheme": "variational", "model.dropout_embedding": 0.1,
                    "model.dropout_input": 0.3, "model.dropout_hidden": 0.3,
                    "model.dropout_output": 0.3, "model.tied_masks": "false",
                    "train.weight_decay": 1e-4},
    "variable-bptt": {"model.scheme": "variational", "model.dropout_hidden": 0.3,
                      "model.dropout_output": 0.2, "train.variable_bptt": "true"},
}


QUIET = dict(progress=False, log=lambda *a: None)
TIMING = ("epoch_seconds", "tokens_per_s", "seconds")   # wall-clock fields: never compared


def _untimed(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in TIMING}


def metrics_lines(run_dir: Path) -> list:
    """``metrics.jsonl`` of a run without its wall-clock fields."""
    path = Path(run_dir) / "metrics.jsonl"
    return [_untimed(json.loads(l)) for l in path.read_text().splitlines()] if path.exists() else []


def _same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            if k not in TIMING:
                _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(a_dir: Path, b_dir: Path) -> None:
    """Two run directories hold the same run: every tensor of ``last.pt`` (model, optimiser,
    RNG, hidden state), its training state, ``metrics.jsonl`` and ``steps.jsonl`` equal, wall
    times aside."""
    from rnndrop import checkpoint as ckpt
    a, b = ckpt.load(Path(a_dir) / "last.pt"), ckpt.load(Path(b_dir) / "last.pt")
    for key in ("model", "optimizer", "rng", "hidden", "train_state", "vocab"):
        _same(a[key], b[key], key)
    assert metrics_lines(a_dir) == metrics_lines(b_dir)
    steps = [(Path(d) / "steps.jsonl").read_text() for d in (a_dir, b_dir)]
    assert steps[0] == steps[1], "steps.jsonl differs"
    assert len(steps[0].splitlines()) == a["train_state"]["step"]


def stopped_then_resumed(corpus, run_dir: Path, over: dict, steps: int):
    """A run of ``tiny_lm_config(**over)`` stopped after ``steps`` steps (``max_steps``), then
    resumed to the end in a fresh trainer; returns that trainer."""
    from rnndrop.train import LMTrainer
    part = LMTrainer(tiny_lm_config(**over, **{"train.max_steps": steps}), corpus, run_dir, **QUIET)
    part.train()
    resumed = LMTrainer(tiny_lm_config(**over), corpus, run_dir, **QUIET)
    resumed.resume(Path(run_dir) / "last.pt")
    resumed.train()
    return resumed


def assert_same_weights(a, b) -> None:
    """Two trainers (or modules) hold the same weights, bit for bit."""
    a = getattr(a, "model", a).state_dict()
    b = getattr(b, "model", b).state_dict()
    assert list(a) == list(b)
    for n in a:
        assert torch.equal(a[n], b[n]), n
