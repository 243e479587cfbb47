"""Training loop for classifiers and regressors on labelled texts (``rnndrop classify train``).

An epoch is one pass over the training examples in batches of similar lengths (shuffled pools
of ``train.bucket`` batches, each sorted by length), run on each example's real tokens only.
The batch order of epoch e is drawn from a generator seeded with ``(train.seed, e)``, so a run
resumed mid-epoch redraws the same order and skips the batches it has done: ``position`` is the
number of batches of the epoch already trained. Loss: cross-entropy (classes) or the squared
error of standardised targets (regression). Adam by default.

Checkpoints, resume, divergence, early stopping (``train.patience``) and the statistics are
those of every trainer (:mod:`rnndrop.train.base`); a checkpoint adds the tokeniser with its
vocabulary (``encoder``), the label space (``labels``) and the regression target scale. After
the last epoch the best checkpoint is scored on the test split, with MC dropout when
``train.mc_samples`` > 0: ``final.json`` and a reliability diagram.

Under ``torchrun`` (:mod:`rnndrop.distributed`) ``train.batch_size`` stays the global batch:
every rank draws the same batches in the same order, rank r trains rows r, r + W, r + 2W, ...
of each (the rows are sorted by length in a bucket, so the ranks get alike lengths) with its own
dropout generator, and DistributedDataParallel averages the gradients. Each rank's loss is the
sum over its rows times W / B, so the average of the W ranks' gradients is the gradient of the
batch mean over all B rows: one update is the single-process update on the same batch. Every
rank scores the validation split at the epoch ends (identical weights, identical scores, the
same best.pt decision); rank 0 alone writes files, logs and scores the test split.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import _plot, distributed
from ..classify.config import ClassifyConfig, has_dropout
from ..classify.model import build_model
from ..classify.predict import noise_variance, predict, scores
from ..classify.report import final_report
from ..data.batching import iterate_batches
from .base import Trainer

__all__ = ["ClassifierTrainer", "plot_classifier_curve"]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A fresh generator per epoch (not the run's own): its order is known again at any
    # position of the epoch, from the seed and the epoch alone.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _loss(model, task: str, target_scale, tokens, lengths, targets, reduction: str = "mean"):
    """Cross-entropy (classes) or the squared error of the standardised targets (regression)."""
    out = model(tokens, lengths)
    if task == "classification":
        return F.cross_entropy(out.float(), targets, reduction=reduction)
    mean, std = target_scale
    return F.mse_loss(out.float().squeeze(-1), (targets.float() - mean) / std, reduction=reduction)


class _RankLoss(nn.Module):
    """``(tokens, lengths, targets, weight) -> weight * Σ_rows loss``: this rank's share of a
    batch's mean loss, the forward pass and the loss in one module for
    DistributedDataParallel."""

    def __init__(self, model, task: str, target_scale):
        super().__init__()
        self.model, self.task, self.target_scale = model, task, target_scale

    def forward(self, tokens, lengths, targets, weight: float):
        return weight * _loss(self.model, self.task, self.target_scale, tokens, lengths,
                              targets, "sum")


class ClassifierTrainer(Trainer):
    """Trains ``build_model(cfg.model, ...)`` on ``data`` (:class:`rnndrop.classify.data.ClassifyData`:
    encoded train/valid/test splits, the tokeniser, the label space, the target scale).
    ``out``: the run directory (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``steps.jsonl``,
    ``learning_curve.png``, ``final.json``, ``reliability.png``)."""

    CHECKPOINT_KEYS = ("model", "optimizer", "rng", "train_state", "config", "encoder", "labels")
    COUNT = "examples"
    VALID_KEY = "valid_loss"

    def __init__(self, cfg: ClassifyConfig, data, out: str | os.PathLike, progress: bool = True,
                 log=print):
        self._setup(cfg, out, progress, log)
        W = self.world
        self.data = data
        self.task = data.labels.task
        self.model = build_model(cfg.model, len(data.encoder.vocab), data.num_outputs).to(self.device)
        t = cfg.train
        if W.distributed:
            # Same initial weights on every rank (seeded in _setup); from here on each rank
            # draws its own dropout masks (the global RNG, checkpointed per rank).
            torch.manual_seed(distributed.rank_seed(t.seed, W.rank))
            self._rank_loss = DistributedDataParallel(
                _RankLoss(self.model, self.task, data.target_scale),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **distributed.NO_BUFFER_SYNC)
        self._finish_setup()
        # A loss above this is a divergence: 10 × a uniform guess's ln C; for standardised
        # regression targets a squared error of 100 (ten standard deviations).
        self.max_loss = t.divergence_loss or (10.0 * math.log(max(data.num_outputs, 2))
                                              if self.task == "classification" else 100.0)
        if len(data.valid) == 0:
            raise ValueError("no validation examples: give --valid, or set "
                             "data.valid_fraction above 0")

    def close(self) -> None:
        """Drop the DistributedDataParallel wrapper before the process group is destroyed (see
        :meth:`rnndrop.train.LMTrainer.close`). A no-op in one process."""
        self._rank_loss = None

    # ------------------------------------------------------------------------- checkpoints
    def _extra_state(self) -> dict:
        return self.data.checkpoint_entries()

    def _load_extra(self, st: dict, path) -> None:
        self.data.check_checkpoint(st, path)

    def _where(self) -> str:
        return f"batch {self.state.position}/{self._batches_per_epoch()}"

    def _batches_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.cfg.train.batch_size)

    # ----------------------------------------------------------------------------- loss
    def _loss(self, tokens, lengths, targets):
        return _loss(self.model, self.task, self.data.target_scale, tokens, lengths, targets)

    def _share(self, x, lengths, y):
        """This rank's rows of a batch of B (rows rank, rank + W, ...), trimmed to their
        longest, and their weight W / B. A rank left without a row (a last batch of fewer rows
        than ranks) takes the first row at weight 0: it must still join the step's gradient
        all-reduce, with a zero gradient."""
        W, B = self.world, len(y)
        idx, weight = torch.arange(W.rank, B, W.size), W.size / B
        if len(idx) == 0:
            idx, weight = torch.zeros(1, dtype=torch.long), 0.0
        L = lengths[idx]
        rows = idx.to(x.device)
        return x[rows, :int(L.max())], L, y[rows], weight

    def _probe_loss(self) -> float:
        """The first ``eval_batch_size`` validation examples."""
        v = self.data.valid
        n = min(len(v), self.cfg.train.eval_batch_size)
        L = v.lengths[:n]
        x = v.tokens[:n, :int(L.max())].to(self.device)
        return self._loss(x, L, v.targets[:n].to(self.device)).item()

    # ---------------------------------------------------------------------------- training
    def _train_epoch(self, deadline) -> bool:
        t, st = self.cfg.train, self.state
        self.model.train()
        if st.position == 0:
            self._start_epoch_stats()
        es = st.epoch_stats
        batches = iterate_batches(self.data.train, t.batch_size, shuffle=True,
                                  generator=_epoch_generator(t.seed, st.epoch), bucket=t.bucket)
        n = self._batches_per_epoch()
        bar = tqdm(total=len(self.data.train), desc=f"epoch {st.epoch}/{t.epochs}", unit="ex",
                   disable=not self.progress, leave=False)
        self._tic = time.perf_counter()
        self._last_log = time.monotonic()
        try:
            for i, (x, lengths, y) in enumerate(batches):
                if i < st.position:         # done before the checkpoint this run resumed from
                    bar.update(len(y))
                    continue
                self._at("window")
                self._step(x.to(self.device), lengths, y.to(self.device), t.lr)
                self._at("commit")
                bar.update(len(y))
                if st.step % 20 == 0:
                    bar.set_postfix(loss=f"{es['loss'] / max(es['examples'], 1):.3f}")
                if not self.progress and self._log_due():
                    self.log(self._progress_line(n))
                if self._stop_or_checkpoint(deadline, n):
                    return False
        finally:
            bar.close()
        self._close_epoch(t.lr)
        return True

    def _step(self, x, lengths, y, lr: float) -> None:
        with self._autocast():
            if self.world.distributed:
                objective = self._rank_loss(*self._share(x, lengths, y))
                loss = self._global_loss(objective)      # the batch mean, all ranks' rows
            else:
                loss = objective = self._loss(x, lengths, y)
        self._at("forward")

        def commit():
            self.state.position += 1
        self._apply_step(loss, objective, len(y), lr, commit)

    def _progress_line(self, n: int) -> str:
        st, es = self.state, self.state.epoch_stats
        secs = es["seconds"] + (time.perf_counter() - self._tic if self._tic else 0.0)
        return (f"epoch {st.epoch} | step {st.step} | batch {st.position}/{n} | "
                f"loss {es['loss'] / max(es['examples'], 1):.4f} | "
                f"{es['examples'] / max(secs, 1e-9):.0f} examples/s")

    # ------------------------------------------------------------------------ evaluation
    def _predict(self, split: str, mc: int = 0):
        return predict(self.model, getattr(self.data, split), self.task, self.data.target_scale,
                       batch_size=self.cfg.train.eval_batch_size, mc=mc,
                       mc_batch=self.cfg.train.mc_batch, device=self.device,
                       autocast=self._autocast)

    def _valid_loss(self, s: dict) -> float:
        """The selection score from the valid split's standard scores ``s``: NLL (classes) or
        the standardised squared error (regression)."""
        if self.task == "classification":
            return s["nll"]
        return (s["rmse"] / self.data.target_scale[1]) ** 2

    def _epoch_record(self, lr: float) -> dict:
        st, t = self.state, self.cfg.train
        es = st.epoch_stats
        out = self._predict("valid")
        s = scores(out, self.data.valid.targets, self.task)["standard"]
        rec = {"epoch": st.epoch, "lr": lr, "train_loss": es["loss"] / max(es["examples"], 1),
               "valid_loss": self._valid_loss(s),
               **{f"valid_{k}": v for k, v in s.items()},
               "epoch_seconds": es["seconds"],
               "examples_per_s": es["examples"] / max(es["seconds"], 1e-9),
               "mean_grad_norm": self.clip.mean_norm if self.clip.steps else 0.0,
               "clipped_fraction": self.clip.fraction_clipped,
               "precision": t.precision, "step": st.step}
        return rec

    def _epoch_line(self, rec: dict) -> str:
        main = (f"valid acc {rec['valid_accuracy']:.4f} | valid nll {rec['valid_nll']:.4f}"
                if self.task == "classification" else f"valid rmse {rec['valid_rmse']:.4f}")
        return (f"epoch {rec['epoch']:3d} | train loss {rec['train_loss']:.4f} | {main} | "
                f"{rec['examples_per_s']:.0f} examples/s | "
                f"clipped {100 * rec['clipped_fraction']:.0f}%")

    def _plots(self) -> None:
        plot_classifier_curve(self.state.history, self.task, self.out / "learning_curve.png")

    def noise_var(self) -> float:
        """Regression: the deterministic model's mean squared error on the validation split,
        the noise variance of the predictive Gaussian (0 for classes)."""
        if self.task == "classification":
            return 0.0
        return noise_variance(self._predict("valid"), self.data.valid.targets)

    def final_eval(self) -> dict:
        """Scores of ``best.pt`` on the test split (valid when there is no test split):
        standard and, with ``train.mc_samples``, MC dropout; ``final.json``, ``reliability.png``."""
        t = self.cfg.train
        self._load_best()               # under torchrun a collective: every rank
        if self.world.rank != 0:        # the scores and their files are rank 0's
            return {}
        split = "test" if len(self.data.test) else "valid"
        mc = t.mc_samples
        if mc and not has_dropout(self.cfg.model):
            self.log(f"train.mc_samples={mc}: the model has no dropout, so MC dropout equals "
                     f"the standard prediction; evaluated once")
            mc = 0
        torch.manual_seed(t.seed)
        out = self._predict(split, mc)
        res = final_report(out, getattr(self.data, split).targets, self.task, split,
                           self.noise_var(), self.out, log=self.log, mc=mc)
        res["epochs"] = len(self.state.history)
        with open(self.out / "final.json", "w") as f:
            json.dump(res, f, indent=2)
        return res


def plot_classifier_curve(history: list, task: str, path) -> Path:
    """Train and valid loss per epoch, and the valid accuracy (classes) or RMSE (regression)."""
    fig, (ax, ax2) = _plot.figure(1, 2, size=(9, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(ep, [h["valid_loss"] for h in history], "s-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL" if task == "classification" else "squared error (standardised)")
    ax.grid(alpha=0.3)
    ax.legend()
    key = "valid_accuracy" if task == "classification" else "valid_rmse"
    ax2.plot(ep, [h[key] for h in history], "s-", color="C1")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(key.replace("_", " "))
    ax2.grid(alpha=0.3)
    return _plot.save(fig, path)
