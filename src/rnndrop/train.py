"""Training loop for the word-level language model (truncated BPTT, Zaremba's setting).

One epoch walks the training stream (batchified into B parallel streams) in BPTT windows; the
hidden state is carried from window to window and detached. SGD with global-norm clipping and
per-epoch learning-rate decay after epoch ``decay_after``; optional Gal-style weight decay
(``w -= lr·grad``, then ``w -= wd·w``); Adam as an option.

Nothing is lost on a crash, and a resumed run continues the same trajectory bit for bit on CPU:

- A step is *computed* (window drawn, forward, backward, clipping: nothing of the run's state
  changes but the RNG) and then *committed* (optimiser step, hidden state, position, statistics,
  RNG snapshot). Ctrl-C and SIGTERM are held back during a commit and during a checkpoint
  write; one that lands in the compute part rolls the RNG back to the last commit, so the
  checkpoint written on the way out is that of the last completed step.
- Checkpoints (model, optimiser, RNG states, hidden state, position, metrics, config,
  vocabulary) are written atomically every ``checkpoint_every`` steps, at every epoch end and
  on Ctrl-C / SIGTERM; the step log is written (fsynced) before its checkpoint, and on resume
  ``steps.jsonl`` and ``metrics.jsonl`` are cut back to what the checkpoint holds.
- A loss or gradient that is NaN, Inf or above ``divergence_loss`` stops the step, restores
  the last good checkpoint and raises :class:`TrainingDiverged` (one line). No checkpoint is
  written unless every parameter is finite and a probe window's loss is sane, so the last good
  checkpoint is never overwritten by a diverged model.
- One run per directory (:class:`rnndrop.rundir.RunLock`).

Under ``torchrun`` (:mod:`rnndrop.distributed`) ``train.batch_size`` is the global number of
streams: rank r trains the r-th contiguous block of them with its own hidden state and its own
dropout generator, gradients are averaged by DistributedDataParallel, and one update is the
single-process update at the same global batch. Every rank evaluates the whole validation and
test streams (identical weights give identical numbers, and no rank waits on another through a
long evaluation); rank 0 alone writes files and logs. A stop signal on any rank, and the
``max_minutes`` deadline, are agreed on at the per-step all-reduce, so every rank stops after
the same step and the checkpoint holds one consistent state of all ranks.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import _plot
from . import checkpoint as ckpt
from . import distributed, rundir
from ._signals import StopSignals
from .clipping import ClipMonitor, ClipStats, clip_grad_norm_tensor
from .config import RunConfig, has_dropout
from .data.text import batchify, bptt_windows, check_vocab
from .evaluate import exp_or_inf, perplexity
from .models.lm import RNNLanguageModel
from .runs import restore_weights


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or the weights diverged (NaN, Inf, or a loss above
    ``train.divergence_loss``); the last good checkpoint was restored."""


@dataclass
class TrainState:
    epoch: int = 1          # current epoch (1-based)
    position: int = 0       # index in the batchified stream where the next window starts
    step: int = 0           # optimiser steps so far
    best_val: float = math.inf
    history: list = field(default_factory=list)   # one dict per finished epoch
    epoch_stats: dict = field(default_factory=dict)  # running sums of the current epoch


def _lr_for_epoch(cfg, epoch: int) -> float:
    return cfg.lr / (cfg.lr_decay ** max(epoch - cfg.decay_after, 0))


def _rng_state(gen: torch.Generator) -> dict:
    st = {"torch": torch.get_rng_state(), "bptt": gen.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    gen.set_state(st["bptt"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class _LossOf(nn.Module):
    """``(tokens, state, targets) -> (mean loss, state)``: the forward pass and the loss in one
    module, so that DistributedDataParallel sees every parameter the loss uses (the output
    layer's are used only in ``model.loss``)."""

    def __init__(self, model: RNNLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, x, hidden, y):
        out, hidden = self.model(x, hidden)
        return self.model.loss(out, y), hidden


class LMTrainer:
    """Trains an :class:`RNNLanguageModel` on a corpus according to a :class:`RunConfig`.

    ``corpus`` has ``train``/``valid``/``test`` 1-D LongTensors and a ``vocab`` (with
    ``to_dict()`` and ``counts``). ``out`` is the run directory: ``last.pt``, ``best.pt``,
    ``metrics.jsonl``, ``steps.jsonl``, ``learning_curve.png``.

    ``hook``: an optional callable ``hook(point)`` called at named points of a step
    (``"window"``, ``"forward"``, ``"backward"``, ``"clip"``, ``"commit"``) and of an epoch end
    (``"epoch_end"``, ``"best_saved"``): the tests interrupt the run there.
    """

    CHECKPOINT_KEYS = ("model", "optimizer", "rng", "hidden", "train_state", "config", "vocab")

    def __init__(self, cfg: RunConfig, corpus, out: str | os.PathLike, progress: bool = True,
                 log=print):
        cfg.validate()
        self.cfg, self.corpus, self.out, self.log = cfg, corpus, Path(out), log
        self.progress = progress
        t = cfg.train
        # Under torchrun (an initialised process group of several): one log and one progress
        # bar, rank 0's; a world of one is a plain single-process run.
        self.world = W = distributed.world()
        if W.distributed:
            if t.batch_size % W.size:
                raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the "
                                 f"number of processes ({W.size}): each trains an equal block "
                                 f"of the streams")
            if W.rank != 0:
                self.log, self.progress = (lambda *a, **k: None), False
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"train.device={t.device!r} but no CUDA device is available")
        self.device = distributed.device_for(t.device, W)
        # TF32 is a process-wide switch in torch; cuDNN's RNN kernels use it by default.
        self.tf32 = self.device.type == "cuda" and t.tf32
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = t.tf32
            torch.backends.cudnn.allow_tf32 = t.tf32
        self.sync_every = t.sync_every or (50 if self.device.type == "cuda" else 1)
        torch.manual_seed(t.seed)
        # The BPTT generator (variable window lengths) is the same on every rank: all ranks
        # must walk the same windows, step for step.
        self.gen = torch.Generator().manual_seed(t.seed)
        vocab_size = len(corpus.vocab)
        self.model = RNNLanguageModel.from_config(cfg.model, corpus.vocab).to(self.device)
        if W.distributed:
            # Same initial weights on every rank (seeded above); from here on each rank draws
            # its own dropout masks (the global RNG, checkpointed per rank).
            torch.manual_seed(distributed.rank_seed(t.seed, W.rank))
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=t.lr)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr)
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.precision]
        self._autocast_dtype = dtype
        # fp16 needs loss scaling (its gradients underflow); bf16 has float32's range.
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        # The streams live on the device (PTB's training stream is 7 MB of int64): a window is
        # a slice there, not a host-to-device copy at every step.
        self.train_data = batchify(corpus.train, t.batch_size).to(self.device)
        if self.model.learn_dropout and not self.model.concrete_dataset_size:
            self.model.concrete_dataset_size = self.train_data.numel()  # N of the regulariser
        self._loss_of = _LossOf(self.model)
        if W.distributed:
            # Rank r owns streams [r*b, (r+1)*b) of the global batch (time-major columns).
            b = t.batch_size // W.size
            self.train_data = self.train_data[:, W.rank * b:(W.rank + 1) * b].contiguous()
            # Why the averaged gradient is the single-process one: each rank's loss is the mean
            # over its T*b tokens (times T for sum_over_time, with the same T on every rank: the
            # windows are shared), and DDP averages the W ranks' gradients, so the update is
            # 1/W * sum_r 1/(T*b) * sum_{tokens of r} = 1/(T*B) * sum_{all tokens}, the global
            # mean's gradient; this needs equal blocks (hence B divisible by W). Clipping runs
            # after the all-reduce, on the averaged gradient: the same norm on every rank.
            self._loss_of = DistributedDataParallel(
                self._loss_of, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # adaptive softmax: a tail cluster without targets in a window gets no gradient
                find_unused_parameters=cfg.model.output == "adaptive",
                **distributed.NO_BUFFER_SYNC)
        self.valid_data = batchify(corpus.valid, t.eval_batch_size).to(self.device)
        self.test_data = batchify(corpus.test, t.eval_batch_size).to(self.device)
        # A loss above this (nats per token) is a divergence; ln V is a uniform guess.
        self.max_loss = t.divergence_loss or 10.0 * math.log(max(vocab_size, 2))
        self.state = TrainState()
        self.hidden = None
        self.hook = None
        self._step_log: list[str] = []
        # Committed steps whose loss and gradient norm are still device tensors (sync_every > 1):
        # (step, loss, grad norm, tokens); read back and booked by _settle().
        self._pending: list[tuple] = []
        self._rng_snap = None          # RNG state after the last committed step
        self._signals = StopSignals(defer=W.distributed)
        self._deadline = None          # monotonic time of max_minutes (None: no limit)
        self._late = False             # under torchrun: some rank passed the deadline
        self.clip = ClipMonitor()      # this epoch's clipping record (checkpointed)
        self._tic = None               # start of the time not yet added to epoch_stats
        self.out.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Drop the DistributedDataParallel wrapper before the process group is destroyed: its
        reducer holds the group, and a gloo group destroyed last by the reducer's destructor
        can deadlock (the destructor holds the GIL while it joins gloo's thread, which needs
        the GIL to free the tensors of a finished broadcast). A no-op in one process."""
        if self.world.distributed:
            self._loss_of = _LossOf(self.model)

    # ------------------------------------------------------------------------- checkpoints
    def _autocast(self):
        """Forward passes (training, evaluation, the probe) in ``train.precision``."""
        return torch.autocast(self.device.type, dtype=self._autocast_dtype or torch.float32,
                              enabled=self._autocast_dtype is not None)

    def state_dict(self) -> dict:
        if self.world.distributed:
            return self._distributed_state_dict()
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": _rng_state(self.gen),
            "hidden": None if self.hidden is None else [h.cpu() for h in self.hidden],
            "train_state": {"epoch": self.state.epoch, "position": self.state.position,
                            "step": self.state.step, "best_val": self.state.best_val,
                            "history": self.state.history, "epoch_stats": self.state.epoch_stats},
            "config": self.cfg.to_dict(),
            "vocab": self.corpus.vocab.to_dict(),
            "world_size": 1,
        }

    def _distributed_state_dict(self) -> dict:
        """A collective: rank 0 gets the checkpoint of all ranks, with ``hidden`` the global
        state (every stream, in the global order) and ``ranks`` each rank's RNG states and
        position; the others get None."""
        W = self.world
        mine = {"rng": _rng_state(self.gen), "position": self.state.position,
                "step": self.state.step,
                "hidden": None if self.hidden is None else [h.cpu() for h in self.hidden]}
        ranks = distributed.gather_to_rank0(mine, W)
        if W.rank != 0:
            return None
        hidden = None if ranks[0]["hidden"] is None else [
            torch.cat([r["hidden"][i] for r in ranks], dim=1)     # (layers, B, H): dim 1
            for i in range(len(ranks[0]["hidden"]))]
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": mine["rng"],
            "hidden": hidden,
            "train_state": {"epoch": self.state.epoch, "position": self.state.position,
                            "step": self.state.step, "best_val": self.state.best_val,
                            "history": self.state.history, "epoch_stats": self.state.epoch_stats},
            "config": self.cfg.to_dict(),
            "vocab": self.corpus.vocab.to_dict(),
            "world_size": W.size,
            "ranks": [{k: r[k] for k in ("rng", "position", "step")} for r in ranks],
        }

    def save(self, name: str = "last.pt") -> Path:
        """Write a checkpoint of the state as it is now (a step boundary). Refuses, restoring
        the last good one, when the model has diverged."""
        self._settle()
        self._check_sane()
        self.state.epoch_stats["clip"] = self.clip.state_dict()
        with self._signals.hold():
            if not self.world.distributed:
                if name == "last.pt":
                    self._flush_step_log()  # the log first: a resume cuts it back if need be
                return ckpt.save(self.state_dict(), self.out / name)
            state = self.state_dict()       # a collective: every rank's part, on rank 0

            def write():
                if name == "last.pt":
                    self._flush_step_log()
                return ckpt.save(state, self.out / name)
            if self.world.rank != 0:
                self._step_log.clear()      # rank 0 writes the log (the others' copy is the same)
            return distributed.on_rank0(write, self.world)

    def _flush_step_log(self) -> None:
        """Per-step loss and pre-clip gradient norm, written (fsynced) just before the
        checkpoint that covers them; a resumed run cuts the file back to its checkpoint."""
        rundir.append_lines(self.out / "steps.jsonl", self._step_log)
        self._step_log.clear()

    def load_state_dict(self, st: dict, path="checkpoint") -> None:
        ckpt.require(st, self.CHECKPOINT_KEYS, path)
        W, need = self.world, st.get("world_size", 1)
        if need != W.size:
            raise ckpt.CheckpointError(
                f"{path} was written by a run of {need} process{'es' if need > 1 else ''} "
                f"(world_size {need}) and this run has {W.size}: resume it with "
                + ("a single process (no torchrun)" if need == 1 else
                   f"{need} processes (torchrun --nproc_per_node={need} ..., or as many in all "
                   f"across nodes)"))
        check_vocab(st["vocab"], self.corpus, source=str(path))
        restore_weights(self.model, st, path, self.cfg)
        self._step_log.clear()   # steps after the checkpoint are replayed, not kept twice
        self._pending.clear()
        self.opt.load_state_dict(st["optimizer"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        ts = st["train_state"]
        if W.distributed:
            mine = st["ranks"][W.rank]
            if any(r["position"] != ts["position"] for r in st["ranks"]):
                raise ckpt.CheckpointError(f"{path}: the ranks' stream positions differ "
                                           f"({[r['position'] for r in st['ranks']]}): damaged")
            _set_rng_state(mine["rng"], self.gen)
            b = self.cfg.train.batch_size // W.size
            self.hidden = None if st["hidden"] is None else tuple(
                h[:, W.rank * b:(W.rank + 1) * b].contiguous().to(self.device) for h in st["hidden"])
        else:
            _set_rng_state(st["rng"], self.gen)
            self.hidden = None if st["hidden"] is None else tuple(h.to(self.device) for h in st["hidden"])
        self.state = TrainState(ts["epoch"], ts["position"], ts["step"], ts["best_val"],
                                list(ts["history"]), dict(ts["epoch_stats"]))
        self.clip = ClipMonitor()
        es = self.state.epoch_stats
        if "clip" in es:
            self.clip.load_state_dict(es["clip"])
        elif "steps" in es:      # a checkpoint of rnndrop <= 2026-12-01 kept its own counters
            self.clip.steps = self.clip.finite_steps = es["steps"]
            self.clip.clipped, self.clip.norm_sum = es["clipped"], es["grad_norm"]
        self._rng_snap = _rng_state(self.gen)

    def resume(self, path: str | os.PathLike) -> None:
        self.load_state_dict(self._read(path), path)
        self.log(f"resumed from {path}: epoch {self.state.epoch}, position "
                 f"{self.state.position}/{self.train_data.shape[0] - 1}, step {self.state.step}")

    def _read(self, path, missing_ok: bool = False):
        """A checkpoint's state (None if ``missing_ok`` and there is none). Under torchrun rank
        0 reads it and sends it to the others (nodes need not share a file system), and a
        reading error stops every rank with the same line."""
        def read():
            if missing_ok and not Path(path).is_file():
                return None
            return ckpt.load(path, map_location="cpu" if self.world.distributed else self.device)
        return distributed.on_rank0(read, self.world) if self.world.distributed else read()

    # ----------------------------------------------------------------------- divergence
    def _check_sane(self) -> None:
        """Before any checkpoint: every parameter finite and a probe window's loss (eval mode,
        first window of the validation stream) below ``max_loss``."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                self._restore_last_good(f"parameter {name} is not finite after step "
                                        f"{self.state.step}", "no checkpoint was written")
        n = min(self.cfg.train.bptt, self.valid_data.shape[0] - 1)
        x = self.valid_data[:n].to(self.device)
        y = self.valid_data[1:n + 1].to(self.device)
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                probe = self.model.loss(self.model(x)[0], y).item()
        finally:
            self.model.train(was)
        if not (math.isfinite(probe) and probe <= self.max_loss):
            self._restore_last_good(f"the model after step {self.state.step} has a loss of "
                                    f"{probe:.4g} on a validation window (limit {self.max_loss:.4g})",
                                    "no checkpoint was written")

    def _restore_last_good(self, why: str, undone: str = "the step was not applied"):
        last = self.out / "last.pt"
        good = self._read(last, missing_ok=True)
        if good is not None:
            self.load_state_dict(good, last)
            where = (f"parameters restored from {last} (step {self.state.step}); lower "
                     f"train.lr or train.clip, then continue with --resume")
        else:
            where = "no checkpoint had been written yet; start again with a lower train.lr or train.clip"
        raise TrainingDiverged(f"training diverged: {why}; {undone} and {where}")

    # ---------------------------------------------------------------------------- training
    def _at(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point)

    def train(self, max_minutes: float = 0.0) -> dict:
        """Train until the configured number of epochs (or ``max_steps`` / ``max_minutes``);
        returns the final metrics. Ctrl-C / SIGTERM save a checkpoint of the last completed
        step and re-raise KeyboardInterrupt."""
        t = self.cfg.train
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        self._deadline, self._late = deadline, False
        with self._run_lock(), self._signals.installed():
            self._prepare_directory()
            self._rng_snap = _rng_state(self.gen)
            try:
                while self.state.epoch <= t.epochs:
                    out_of_budget = (t.max_steps and self.state.step >= t.max_steps) or \
                        self._past(deadline)
                    if out_of_budget or not self._train_epoch(deadline):
                        self.save()
                        self.log(f"stopped at epoch {self.state.epoch}, position "
                                 f"{self.state.position}; checkpoint {self.out / 'last.pt'}")
                        return {"stopped": True, **self.state.__dict__}
                return self.final_eval()
            except KeyboardInterrupt:
                # Whatever the interrupted step drew is rolled back: the checkpoint is that of
                # the last completed step, and a resume replays the same draws.
                _set_rng_state(self._rng_snap, self.gen)
                self._account_time()
                self.save()
                self.log(f"\ninterrupted: checkpoint saved to {self.out / 'last.pt'} (step "
                         f"{self.state.step}); continue with --resume")
                raise

    def _run_lock(self):
        """The run directory's lock; under torchrun rank 0 holds it and every rank stops if it
        cannot."""
        if not self.world.distributed:
            return rundir.RunLock(self.out)
        return self._rank0_lock()

    @contextmanager
    def _rank0_lock(self):
        lock = rundir.RunLock(self.out)
        distributed.on_rank0(lambda: lock.acquire() and None, self.world)
        try:
            yield
        finally:
            if self.world.rank == 0:
                lock.release()

    def _past(self, deadline) -> bool:
        if deadline is None:
            return False
        if self.world.distributed:
            return self._late     # agreed by all ranks at the last step's all-reduce
        return time.monotonic() > deadline

    def _prepare_directory(self) -> None:
        if self.world.distributed:
            distributed.on_rank0(self._prepare_directory_here, self.world)
        else:
            self._prepare_directory_here()

    def _prepare_directory_here(self) -> None:
        """Under the lock: refuse to start a new run over an old one, remove temp files a kill
        left behind, and cut the logs back to what this run's state holds."""
        last = self.out / "last.pt"
        if self.state.step == 0 and not self.state.history and last.is_file():
            raise RuntimeError(f"run directory {self.out} already holds a run ({last}); continue "
                               f"it with --resume, or choose another --out")
        ckpt.remove_stale_temp_files(self.out)
        rundir.rewrite_metrics(self.out / "metrics.jsonl", self.state.history)
        rundir.truncate_steps(self.out / "steps.jsonl", self.state.step)

    def _account_time(self) -> None:
        if self._tic is not None:
            now = time.perf_counter()
            self.state.epoch_stats["seconds"] += now - self._tic
            self._tic = now

    def _train_epoch(self, deadline) -> bool:
        t, st, model = self.cfg.train, self.state, self.model
        lr = _lr_for_epoch(t, st.epoch) if t.optimizer == "sgd" else t.lr
        model.train()
        if st.position == 0:
            self.hidden = None
            st.epoch_stats = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
            self.clip.reset()
        es = st.epoch_stats
        n = self.train_data.shape[0] - 1
        B = self.train_data.shape[1] * self.world.size      # global: tokens of all ranks
        bar = tqdm(total=n * B, initial=st.position * B, desc=f"epoch {st.epoch}/{t.epochs}",
                   unit="tok", unit_scale=True, disable=not self.progress, leave=False)
        self._tic = time.perf_counter()
        self._last_log = time.monotonic()
        windows = bptt_windows(self.train_data, t.bptt, start=st.position, variable=t.variable_bptt,
                               generator=self.gen)
        try:
            for pos, x, y in windows:
                self._at("window")
                self._step(pos, x.to(self.device), y.to(self.device), lr)
                self._at("commit")
                bar.update(x.numel() * self.world.size)
                if st.step % 20 == 0:     # host counters only: no read-back here
                    bar.set_postfix(ppl=f"{exp_or_inf(es['loss'] / es['tokens']):.1f}",
                                    lr=f"{self.opt.param_groups[0]['lr']:.3g}")
                if not self.progress and self._log_due():
                    self.log(self._progress_line(lr, n))
                stop = (t.max_steps and st.step >= t.max_steps) or self._past(deadline)
                if (stop or (t.checkpoint_every and st.step % t.checkpoint_every == 0)) \
                        and st.position < n:
                    self._account_time()
                    if stop:
                        return False
                    self.save()
        finally:
            bar.close()
        self._settle()
        self._account_time()
        self._tic = None
        self._end_epoch(lr)
        return True

    def _step(self, pos: int, x, y, lr: float) -> None:
        """One optimiser step: computed first (only the RNG moves), then committed at once.

        With ``sync_every = 1`` the loss and the gradient norm are read at once and a bad step
        is stopped before it is applied; otherwise they are booked K steps at a time by
        :meth:`_settle`, and nothing here waits for the device."""
        t, st, model = self.cfg.train, self.state, self.model
        hidden = None if self.hidden is None else tuple(h.detach() for h in self.hidden)
        # With a per-token mean loss, variable BPTT rescales lr by the window length as
        # AWD-LSTM does; a loss summed over the window already scales with it.
        scale = 1.0
        if t.variable_bptt and t.loss_reduction == "mean":
            scale = x.shape[0] / t.bptt
        if st.step < t.warmup_steps:
            scale *= (st.step + 1) / t.warmup_steps
        with self._autocast():
            loss, hidden = self._loss_of(x, hidden, y)
        loss_g = self._global_loss(loss)     # this rank's loss under torchrun is for backward
        self._at("forward")
        if self.sync_every == 1:
            self._check_loss(loss_g.item(), st.step + 1)
        self.opt.zero_grad(set_to_none=True)
        # Zaremba's objective sums the per-token NLL over the window (mean over batch).
        objective = loss * x.shape[0] if t.loss_reduction == "sum_over_time" else loss
        if model.learn_dropout:  # Concrete dropout's regulariser, per token: scaled as the loss
            per_window = x.shape[0] if t.loss_reduction == "sum_over_time" else 1
            objective = objective + model.regularizer() * per_window
        (self.scaler.scale(objective) if self.scaler is not None else objective).backward()
        self._at("backward")
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)     # clip the true gradients
        norm = clip_grad_norm_tensor(model.parameters(), t.clip if t.clip > 0 else math.inf)
        # With a GradScaler an overflow is expected now and then: that step is skipped and the
        # scale lowered (torch's GradScaler); without one it is a divergence.
        if self.sync_every == 1 and self.scaler is None and not math.isfinite(norm.item()):
            self._restore_last_good(f"non-finite gradient norm at epoch {st.epoch}, step {st.step + 1}")
        self._at("clip")
        with self._signals.hold():
            for g in self.opt.param_groups:
                g["lr"] = lr * scale
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            if t.weight_decay:
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(1.0 - t.weight_decay)
            self.hidden = hidden
            st.step += 1
            st.position = pos + x.shape[0]
            # the tokens of every rank's block (the loss is the global batch mean)
            self._pending.append((st.step, loss_g.detach(), norm.detach(),
                                  y.numel() * self.world.size))
            self._rng_snap = _rng_state(self.gen)
        if len(self._pending) >= self.sync_every:
            self._settle()

    def _check_loss(self, loss_v: float, step: int,
                    undone: str = "the step was not applied") -> None:
        if not math.isfinite(loss_v):
            self._restore_last_good(f"non-finite loss ({loss_v}) at epoch {self.state.epoch}, "
                                    f"step {step}", undone)
        if loss_v > self.max_loss:
            self._restore_last_good(f"loss {loss_v:.4g} at epoch {self.state.epoch}, step {step} "
                                    f"is above the limit {self.max_loss:.4g} "
                                    f"(train.divergence_loss)", undone)

    def _settle(self) -> None:
        """Read back the committed steps' losses and gradient norms in one transfer, check them
        (sync_every > 1: a divergence found here restores the last good checkpoint, which no
        unchecked step can have reached) and book them: running loss, clipping record, step log."""
        if not self._pending:
            return
        steps, losses, norms, ntoks = zip(*self._pending)
        values = torch.stack([torch.stack(losses).float(), torch.stack(norms).float()]).tolist()
        t, es = self.cfg.train, self.state.epoch_stats
        max_norm = t.clip if t.clip > 0 else math.inf
        undone = (f"steps {steps[0]}-{steps[-1]} (read back together, train.sync_every = "
                  f"{self.sync_every}) are undone")
        if self.sync_every > 1:
            for step, loss_v, norm_v in zip(steps, values[0], values[1]):
                self._check_loss(loss_v, step, undone)
                if self.scaler is None and not math.isfinite(norm_v):
                    self._restore_last_good(f"non-finite gradient norm at epoch "
                                            f"{self.state.epoch}, step {step}", undone)
        with self._signals.hold():      # booked whole or not at all, like a commit
            self._pending.clear()
            for step, loss_v, norm_v, ntok in zip(steps, values[0], values[1], ntoks):
                clip = self.clip.update(ClipStats.of(norm_v, max_norm))
                es["loss"] += loss_v * ntok
                es["tokens"] += ntok
                self._step_log.append(f'{{"step": {step}, "loss": {loss_v:.6g}, '
                                      f'"grad_norm": {_json_number(clip.total_norm)}, '
                                      f'"clipped": {str(clip.clipped).lower()}}}')

    def _global_loss(self, loss):
        """The step's loss for the statistics and the divergence checks (a 0-d tensor): the
        loss itself in one process. Under torchrun: the mean of the ranks' batch means (the
        global batch mean, the blocks being equal), in an all-reduce that also tells every rank
        whether any rank got a stop signal or passed the deadline: they all stop at this step.
        (Reading those two flags waits for the device once a step, whatever train.sync_every;
        the gradient all-reduce of the step synchronises the ranks anyway.)"""
        if not self.world.distributed:
            return loss
        late = self._deadline is not None and time.monotonic() > self._deadline
        mean, (stop, late) = distributed.step_sync(loss, self._signals.requested, late,
                                                   size=self.world.size)
        self._late = self._late or late
        if stop:                   # in the compute part: train() rolls back and saves
            self._signals.clear()
            raise KeyboardInterrupt
        return mean

    def _log_due(self) -> bool:
        every = self.cfg.train.log_every
        if every:
            return self.state.step % every == 0
        if time.monotonic() - self._last_log >= 60.0:
            self._last_log = time.monotonic()
            return True
        return False

    def _progress_line(self, lr: float, n: int) -> str:
        """One log line for runs without a progress bar (schedulers, ``--no-progress``)."""
        st, es = self.state, self.state.epoch_stats
        secs = es["seconds"] + (time.perf_counter() - self._tic if self._tic else 0.0)
        mean = es["loss"] / max(es["tokens"], 1)
        return (f"epoch {st.epoch} | step {st.step} | {100 * st.position / n:5.1f}% of epoch | "
                f"loss {mean:.3f} | ppl {exp_or_inf(mean):.1f} | lr {lr:.4g} | "
                f"{es['tokens'] / max(secs, 1e-9):.0f} tokens/s | "
                f"clipped {100 * self.clip.fraction_clipped:.0f}%")

    def _end_epoch(self, lr: float) -> None:
        st, t = self.state, self.cfg.train
        es = st.epoch_stats
        with self._autocast():
            val = perplexity(self.model, self.valid_data, t.bptt)
        rec = {"epoch": st.epoch, "lr": lr, "train_ppl": exp_or_inf(es["loss"] / es["tokens"]),
               "valid_ppl": val, "epoch_seconds": es["seconds"],
               "tokens_per_s": es["tokens"] / max(es["seconds"], 1e-9),
               "mean_grad_norm": self.clip.mean_norm if self.clip.steps else 0.0,
               "clipped_fraction": self.clip.fraction_clipped,
               "precision": t.precision, "tf32": self.tf32,
               "world_size": self.world.size,
               "step": st.step}
        if self.model.learn_dropout:
            rec["dropout_rates"] = self.model.dropout_rates()
        if self.cfg.data.layout == "chars":      # a character model: bits per character too
            rec["valid_bpc"] = math.log2(val)
        self._at("epoch_end")
        with self._signals.hold():
            st.history.append(rec)
            improved = val < st.best_val
            st.best_val = min(st.best_val, val)
            st.epoch += 1
            st.position = 0
            self.hidden = None
        # best.pt before last.pt: a kill between the two replays the epoch from the older
        # last.pt and writes best.pt again; the other order could lose this epoch's best.pt.
        if improved:
            self.save("best.pt")
        self._at("best_saved")
        self.save()
        if self.world.rank != 0:
            return
        rundir.append_lines(self.out / "metrics.jsonl", [json.dumps(rec)])
        self.log(f"epoch {rec['epoch']:3d} | lr {lr:.4g} | train ppl {rec['train_ppl']:8.2f} | "
                 f"valid ppl {val:8.2f} | {rec['tokens_per_s']:.0f} tokens/s | "
                 f"clipped {100 * rec['clipped_fraction']:.0f}%")
        try:
            plot_learning_curve(st.history, self.out / "learning_curve.png")
            if self.model.learn_dropout:
                plot_dropout_rates(st.history, self.out / "dropout_rates.png")
        except Exception as e:  # a plotting problem must never stop training
            self.log(f"(learning-curve plot skipped: {e})")

    def final_eval(self) -> dict:
        """Test perplexity of the best checkpoint: standard and (if configured) MC dropout."""
        t = self.cfg.train
        best = self.out / "best.pt"
        st = self._read(best, missing_ok=True)
        if st is not None:
            st = ckpt.require(st, ("model",), best)
            ckpt.load_weights(self.model, st["model"], best)   # this run's own: same config
        # Under torchrun every rank evaluates the whole test stream with the same weights and
        # (reseeded here) the same MC-dropout masks: each gets the single-process numbers.
        with self._autocast():
            res = {"valid_ppl": perplexity(self.model, self.valid_data, t.bptt),
                   "test_ppl": perplexity(self.model, self.test_data, t.bptt)}
            if t.mc_samples and not has_dropout(self.cfg.model):
                # every MC pass would be the deterministic one: say so, do not repeat it S times
                res["test_ppl_mc"] = res["test_ppl"]
                self.log(f"train.mc_samples={t.mc_samples}: the model has no dropout, so MC "
                         f"dropout equals the test perplexity; evaluated once")
            elif t.mc_samples:
                torch.manual_seed(t.seed)
                res["test_ppl_mc"] = perplexity(self.model, self.test_data, t.bptt,
                                                t.mc_samples,
                                                mc_batch=default_mc_batch(self.model, t))
        if self.cfg.data.layout == "chars":
            res.update({k.replace("_ppl", "_bpc"): math.log2(v) for k, v in list(res.items())})
        res["epochs"] = len(self.state.history)
        if self.world.rank != 0:
            return res
        with open(self.out / "final.json", "w") as f:
            json.dump(res, f, indent=2)
        self.log("final: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in res.items()))
        return res


def _json_number(x: float) -> str:
    """A number for a JSON line, compact; non-finite as Python's json writes and reads it."""
    return f"{x:.6g}" if math.isfinite(x) else json.dumps(x)


def default_mc_batch(model, t) -> int:
    """MC samples per pass so that a window's largest blocks, the LSTM layers' gates and their
    activations (each ``(T, S·B, 4H)`` float32), stay under ~512 MB. (The output layer no longer
    counts: its ``(T, S·B, V)`` logits are made a few rows at a time, ``target_log_prob``.)"""
    per_sample = t.bptt * t.eval_batch_size * 4 * model.hidden_size * model.num_layers * 2 * 4
    return max(1, int(512e6 // per_sample))


def plot_learning_curve(history: list, path) -> Path:
    """Train and valid perplexity per epoch, log scale."""
    fig, (ax,) = _plot.figure(size=(5, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_ppl"] for h in history], "o-", label="train")
    ax.plot(ep, [h["valid_ppl"] for h in history], "s-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _plot.save(fig, path)


def plot_dropout_rates(history: list, path) -> Path:
    """The learned (Concrete) drop probability of each site per epoch (``learn_dropout``)."""
    fig, (ax,) = _plot.figure(size=(5, 3.5))
    ep = [h["epoch"] for h in history]
    for site in history[-1].get("dropout_rates", {}):
        ax.plot(ep, [h.get("dropout_rates", {}).get(site, float("nan")) for h in history],
                "o-", label=site)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learned drop probability p")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _plot.save(fig, path)
