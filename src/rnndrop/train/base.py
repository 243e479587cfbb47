"""What every rnndrop trainer shares: the run directory, crash safety, divergence, statistics.

A task's trainer (:class:`rnndrop.train.LMTrainer` for language models,
:class:`rnndrop.train.ClassifierTrainer` for a user's labelled texts) says how to draw a batch,
what its loss is and how to evaluate; :class:`Trainer` does the rest, the same way for all:

- A step is *computed* (batch drawn, forward, backward, clipping: nothing of the run's state
  changes but the RNG) and then *committed* (optimiser step, position, statistics, RNG
  snapshot). Ctrl-C and SIGTERM are held back during a commit and during a checkpoint write;
  one that lands in the compute part rolls the RNG back to the last commit, so the checkpoint
  written on the way out is that of the last completed step.
- Checkpoints (model, optimiser, RNG states, position, metrics, config, and what the task adds)
  are written atomically every ``checkpoint_every`` steps, at every epoch end and on Ctrl-C /
  SIGTERM; the step log is written (fsynced) before its checkpoint, and on resume
  ``steps.jsonl`` and ``metrics.jsonl`` are cut back to what the checkpoint holds.
- A loss or gradient that is NaN, Inf or above the divergence limit stops the step, restores the
  last good checkpoint and raises :class:`TrainingDiverged` (one line). No checkpoint is written
  unless every parameter is finite and a probe batch's loss is sane, so the last good checkpoint
  is never overwritten by a diverged model.
- ``best.pt`` holds the epoch with the best validation score; ``train.patience`` stops a run
  whose validation score has not improved for that many epochs (early stopping).
- One run per directory (:class:`rnndrop.rundir.RunLock`).

Loss and gradient norm stay on the device and are read back ``sync_every`` steps at a time
(:meth:`Trainer._settle`): on a GPU the loop never waits inside a step.
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

from .. import checkpoint as ckpt
from .. import distributed, rundir
from .._signals import StopSignals
from ..clipping import ClipMonitor, ClipStats, clip_grad_norm_tensor


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or the weights diverged (NaN, Inf, or a loss above
    ``train.divergence_loss``); the last good checkpoint was restored."""


@dataclass
class TrainState:
    epoch: int = 1          # current epoch (1-based)
    position: int = 0       # where in the epoch the next batch starts (task-defined)
    step: int = 0           # optimiser steps so far
    best_val: float = math.inf
    history: list = field(default_factory=list)   # one dict per finished epoch
    epoch_stats: dict = field(default_factory=dict)  # running sums of the current epoch


def rng_state(gen: torch.Generator) -> dict:
    st = {"torch": torch.get_rng_state(), "bptt": gen.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    gen.set_state(st["bptt"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def json_number(x: float) -> str:
    """A number for a JSON line, compact; non-finite as Python's json writes and reads it."""
    return f"{x:.6g}" if math.isfinite(x) else json.dumps(x)


class Trainer:
    """The shared machinery; a subclass builds the model and data between :meth:`_setup` and
    :meth:`_finish_setup` and provides:

    - ``_train_epoch(deadline) -> bool`` (False: stopped early; call :meth:`_apply_step` per
      batch, :meth:`_end_epoch` at the end),
    - ``_probe_loss() -> float`` (eval mode, a fixed validation batch),
    - ``_epoch_record(lr) -> dict`` with the key ``VALID_KEY`` (lower is better),
    - ``_epoch_line(rec) -> str``, ``_plots()``, ``final_eval() -> dict``,
    - optionally ``_extra_state()`` / ``_load_extra(state, path)`` (what else a checkpoint
      holds) and ``_reset_epoch()`` (at an epoch's end).

    ``hook``: an optional callable ``hook(point)`` called at named points of a step
    (``"window"``, ``"forward"``, ``"backward"``, ``"clip"``, ``"commit"``) and of an epoch end
    (``"epoch_end"``, ``"best_saved"``): the tests interrupt the run there.
    """

    CHECKPOINT_KEYS = ("model", "optimizer", "rng", "train_state", "config")
    COUNT = "tokens"            # what epoch_stats counts (the unit of the running loss)
    VALID_KEY = "valid_loss"    # the epoch record's validation score (lower is better)

    # --------------------------------------------------------------------------- set-up
    def _setup(self, cfg, out: str | os.PathLike, progress: bool, log) -> None:
        """Before the model: config, processes, threads, device, seeds."""
        cfg.validate()
        self.cfg, self.out, self.log, self.progress = cfg, Path(out), log, progress
        t = cfg.train
        # Under torchrun (an initialised process group of several): one log and one progress
        # bar, rank 0's; a world of one is a plain single-process run.
        self.world = W = distributed.world()
        if W.distributed and W.rank != 0:
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
        # The task's own generator (batch order, window lengths): the same on every rank.
        self.gen = torch.Generator().manual_seed(t.seed)

    def _finish_setup(self) -> None:
        """After the model: optimiser, precision, state, statistics."""
        t = self.cfg.train
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=t.lr)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr)
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.precision]
        self._autocast_dtype = dtype
        # fp16 needs loss scaling (its gradients underflow); bf16 has float32's range.
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        self.state = TrainState()
        self.hook = None
        self._step_log: list[str] = []
        # Committed steps whose loss and gradient norm are still device tensors (sync_every > 1):
        # (step, loss, grad norm, count); read back and booked by _settle().
        self._pending: list[tuple] = []
        self._rng_snap = None          # RNG state after the last committed step
        self._signals = StopSignals(defer=self.world.distributed)
        self._deadline = None          # monotonic time of max_minutes (None: no limit)
        self._late = False             # under torchrun: some rank passed the deadline
        self.clip = ClipMonitor()      # this epoch's clipping record (checkpointed)
        self._tic = None               # start of the time not yet added to epoch_stats
        self.out.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Release what the run holds beyond this object (a no-op here)."""

    def _autocast(self):
        """Forward passes (training, evaluation, the probe) in ``train.precision``."""
        return torch.autocast(self.device.type, dtype=self._autocast_dtype or torch.float32,
                              enabled=self._autocast_dtype is not None)

    # ------------------------------------------------------------------------- checkpoints
    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, st: dict, path) -> None:
        pass

    def _train_state_dict(self) -> dict:
        s = self.state
        return {"epoch": s.epoch, "position": s.position, "step": s.step, "best_val": s.best_val,
                "history": s.history, "epoch_stats": s.epoch_stats}

    def _rank_state(self) -> dict:
        """What each rank of a run under torchrun holds of its own beyond its RNG states and
        position (the LM: its streams' hidden state); gathered by :meth:`state_dict`."""
        return {}

    def _join_rank_states(self, ranks: list) -> dict:
        """Checkpoint entries made from every rank's :meth:`_rank_state` (rank order)."""
        return {}

    def state_dict(self) -> dict:
        """The checkpoint. Under torchrun a collective: rank 0 gets the checkpoint of all
        ranks (``ranks``: each one's RNG states, position and step), the others None."""
        W = self.world
        st = {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": rng_state(self.gen),
            "train_state": self._train_state_dict(),
            "config": self.cfg.to_dict(),
            "world_size": W.size,
            **self._extra_state(),
        }
        if not W.distributed:
            return st
        mine = {"rng": st["rng"], "position": self.state.position, "step": self.state.step,
                **self._rank_state()}
        ranks = distributed.gather_to_rank0(mine, W)
        if W.rank != 0:
            return None
        st["ranks"] = [{k: r[k] for k in ("rng", "position", "step")} for r in ranks]
        st.update(self._join_rank_states(ranks))
        return st

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

    def _check_world(self, st: dict, path) -> None:
        W, need = self.world, st.get("world_size", 1)
        if need != W.size:
            raise ckpt.CheckpointError(
                f"{path} was written by a run of {need} process{'es' if need > 1 else ''} "
                f"(world_size {need}) and this run has {W.size}: resume it with "
                + ("a single process (no torchrun)" if need == 1 else
                   f"{need} processes (torchrun --nproc_per_node={need} ..., or as many in all "
                   f"across nodes)"))

    def _load_weights(self, st: dict, path) -> None:
        ckpt.load_weights(self.model, st["model"], path)

    def load_state_dict(self, st: dict, path="checkpoint") -> None:
        ckpt.require(st, self.CHECKPOINT_KEYS, path)
        self._check_world(st, path)
        self._load_extra(st, path)          # the task's checks (vocabulary, labels) and state
        self._load_weights(st, path)
        self._step_log.clear()   # steps after the checkpoint are replayed, not kept twice
        self._pending.clear()
        self.opt.load_state_dict(st["optimizer"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self._load_rng(st, path)
        ts = st["train_state"]
        self.state = TrainState(ts["epoch"], ts["position"], ts["step"], ts["best_val"],
                                list(ts["history"]), dict(ts["epoch_stats"]))
        self.clip = ClipMonitor()
        es = self.state.epoch_stats
        if "clip" in es:
            self.clip.load_state_dict(es["clip"])
        elif "steps" in es:      # a checkpoint of rnndrop <= 2026-12-01 kept its own counters
            self.clip.steps = self.clip.finite_steps = es["steps"]
            self.clip.clipped, self.clip.norm_sum = es["clipped"], es["grad_norm"]
        self._rng_snap = rng_state(self.gen)

    def _load_rng(self, st: dict, path) -> None:
        """This process's RNG states (under torchrun: this rank's, of ``st["ranks"]``)."""
        if not self.world.distributed:
            set_rng_state(st["rng"], self.gen)
            return
        ranks, ts = st["ranks"], st["train_state"]
        if any(r["position"] != ts["position"] for r in ranks):
            raise ckpt.CheckpointError(f"{path}: the ranks' positions differ "
                                       f"({[r['position'] for r in ranks]}): damaged")
        set_rng_state(ranks[self.world.rank]["rng"], self.gen)

    def _global_loss(self, loss):
        """The step's loss for the statistics and the divergence checks (a 0-d tensor): the
        loss itself in one process. Under torchrun: the mean of the ranks' losses (each rank's
        loss being its share of the global batch mean, that mean), in an all-reduce that also
        tells every rank whether any rank got a stop signal or passed the deadline: they all
        stop at this step. (Reading those two flags waits for the device once a step, whatever
        train.sync_every; the gradient all-reduce of the step synchronises the ranks anyway.)"""
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

    def resume(self, path: str | os.PathLike) -> None:
        self.load_state_dict(self._read(path), path)
        self.log(f"resumed from {path}: epoch {self.state.epoch}, {self._where()}, "
                 f"step {self.state.step}")

    def _where(self) -> str:
        return f"position {self.state.position}"

    def _read(self, path, missing_ok: bool = False):
        """A checkpoint's state (None if ``missing_ok`` and there is none). Under torchrun rank
        0 reads it and sends it to the others (nodes need not share a file system), and a
        reading error stops every rank with the same line."""
        def read():
            if missing_ok and not Path(path).is_file():
                return None
            return ckpt.load(path, map_location="cpu" if self.world.distributed else self.device)
        return distributed.on_rank0(read, self.world) if self.world.distributed else read()

    def _load_best(self) -> None:
        """The weights of ``best.pt`` (this run's own: same config), if there is one."""
        best = self.out / "best.pt"
        st = self._read(best, missing_ok=True)
        if st is not None:
            st = ckpt.require(st, ("model",), best)
            ckpt.load_weights(self.model, st["model"], best)

    # ----------------------------------------------------------------------- divergence
    def _check_sane(self) -> None:
        """Before any checkpoint: every parameter finite and a probe batch's loss (eval mode)
        below ``max_loss``."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                self._restore_last_good(f"parameter {name} is not finite after step "
                                        f"{self.state.step}", "no checkpoint was written")
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                probe = self._probe_loss()
        finally:
            self.model.train(was)
        if not (math.isfinite(probe) and probe <= self.max_loss):
            self._restore_last_good(f"the model after step {self.state.step} has a loss of "
                                    f"{probe:.4g} on a validation batch (limit {self.max_loss:.4g})",
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

    def _check_loss(self, loss_v: float, step: int,
                    undone: str = "the step was not applied") -> None:
        if not math.isfinite(loss_v):
            self._restore_last_good(f"non-finite loss ({loss_v}) at epoch {self.state.epoch}, "
                                    f"step {step}", undone)
        if loss_v > self.max_loss:
            self._restore_last_good(f"loss {loss_v:.4g} at epoch {self.state.epoch}, step {step} "
                                    f"is above the limit {self.max_loss:.4g} "
                                    f"(train.divergence_loss)", undone)

    # ---------------------------------------------------------------------------- training
    def _at(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point)

    def _patience_exhausted(self) -> bool:
        """Early stopping: ``train.patience`` epochs in a row without a better valid score."""
        p, hist = self.cfg.train.patience, self.state.history
        if not p or not hist:
            return False
        scores = [h[self.VALID_KEY] for h in hist]
        best_epoch = min(range(len(scores)), key=lambda i: (scores[i], i))
        return len(scores) - 1 - best_epoch >= p

    def train(self, max_minutes: float = 0.0) -> dict:
        """Train until the configured number of epochs (or ``max_steps`` / ``max_minutes`` /
        early stopping); returns the final metrics. Ctrl-C / SIGTERM save a checkpoint of the
        last completed step and re-raise KeyboardInterrupt."""
        t = self.cfg.train
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        self._deadline, self._late = deadline, False
        with self._run_lock(), self._signals.installed():
            self._prepare_directory()
            self._rng_snap = rng_state(self.gen)
            try:
                while self.state.epoch <= t.epochs:
                    if self._patience_exhausted():
                        self.log(f"early stopping: no better {self.VALID_KEY} for "
                                 f"{t.patience} epochs (train.patience)")
                        break
                    out_of_budget = (t.max_steps and self.state.step >= t.max_steps) or \
                        self._past(deadline)
                    if out_of_budget or not self._train_epoch(deadline):
                        self.save()
                        self.log(f"stopped at epoch {self.state.epoch}, {self._where()}; "
                                 f"checkpoint {self.out / 'last.pt'}")
                        return {"stopped": True, **self.state.__dict__}
                return self.final_eval()
            except KeyboardInterrupt:
                # Whatever the interrupted step drew is rolled back: the checkpoint is that of
                # the last completed step, and a resume replays the same draws.
                set_rng_state(self._rng_snap, self.gen)
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

    def _start_epoch_stats(self) -> None:
        self.state.epoch_stats = {"loss": 0.0, self.COUNT: 0, "seconds": 0.0}
        self.clip.reset()

    def _apply_step(self, loss, objective, count: int, lr: float, commit) -> None:
        """The second half of a step, after the forward pass: backward, clipping, and the
        commit (optimiser step, ``commit()`` for the task's own state, statistics, RNG
        snapshot), held against Ctrl-C as one.

        ``loss``: the step's mean loss (0-d, for the statistics and the divergence checks);
        ``objective``: what is differentiated; ``count``: items the loss averages (tokens,
        examples). With ``sync_every = 1`` the loss and the gradient norm are read at once and
        a bad step is stopped before it is applied; otherwise they are booked K steps at a
        time by :meth:`_settle`, and nothing here waits for the device."""
        t, st, model = self.cfg.train, self.state, self.model
        if self.sync_every == 1:
            self._check_loss(loss.item(), st.step + 1)
        self.opt.zero_grad(set_to_none=True)
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
                g["lr"] = lr
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            if t.weight_decay:
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(1.0 - t.weight_decay)
            st.step += 1
            commit()
            self._pending.append((st.step, loss.detach(), norm.detach(), count))
            self._rng_snap = rng_state(self.gen)
        if len(self._pending) >= self.sync_every:
            self._settle()

    def _settle(self) -> None:
        """Read back the committed steps' losses and gradient norms in one transfer, check them
        (sync_every > 1: a divergence found here restores the last good checkpoint, which no
        unchecked step can have reached) and book them: running loss, clipping record, step log."""
        if not self._pending:
            return
        steps, losses, norms, counts = zip(*self._pending)
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
            for step, loss_v, norm_v, n in zip(steps, values[0], values[1], counts):
                clip = self.clip.update(ClipStats.of(norm_v, max_norm))
                es["loss"] += loss_v * n
                es[self.COUNT] += n
                self._step_log.append(f'{{"step": {step}, "loss": {loss_v:.6g}, '
                                      f'"grad_norm": {json_number(clip.total_norm)}, '
                                      f'"clipped": {str(clip.clipped).lower()}}}')

    def _log_due(self) -> bool:
        every = self.cfg.train.log_every
        if every:
            return self.state.step % every == 0
        if time.monotonic() - self._last_log >= 60.0:
            self._last_log = time.monotonic()
            return True
        return False

    def _stop_or_checkpoint(self, deadline, batches: int) -> bool:
        """After a committed step: True when the run must stop here (``max_steps``, the
        deadline); otherwise a mid-epoch checkpoint every ``checkpoint_every`` steps. (None at
        an epoch's last step: the epoch end writes its own.)"""
        t, st = self.cfg.train, self.state
        stop = (t.max_steps and st.step >= t.max_steps) or self._past(deadline)
        if (stop or (t.checkpoint_every and st.step % t.checkpoint_every == 0)) \
                and st.position < batches:
            self._account_time()
            if stop:
                return True
            self.save()
        return False

    def _close_epoch(self, lr: float) -> None:
        self._settle()
        self._account_time()
        self._tic = None
        self._end_epoch(lr)

    def _reset_epoch(self) -> None:
        pass

    def _end_epoch(self, lr: float) -> None:
        """Evaluate, record the epoch, write ``best.pt`` (if better) and ``last.pt``, append to
        ``metrics.jsonl`` and redraw the plots."""
        st = self.state
        rec = self._epoch_record(lr)
        val = rec[self.VALID_KEY]
        self._at("epoch_end")
        with self._signals.hold():
            st.history.append(rec)
            improved = val < st.best_val
            st.best_val = min(st.best_val, val)
            st.epoch += 1
            st.position = 0
            self._reset_epoch()
        # best.pt before last.pt: a kill between the two replays the epoch from the older
        # last.pt and writes best.pt again; the other order could lose this epoch's best.pt.
        if improved:
            self.save("best.pt")
        self._at("best_saved")
        self.save()
        if self.world.rank != 0:
            return
        rundir.append_lines(self.out / "metrics.jsonl", [json.dumps(rec)])
        self.log(self._epoch_line(rec))
        try:
            self._plots()
        except Exception as e:  # a plotting problem must never stop training
            self.log(f"(learning-curve plot skipped: {e})")
