"""Training loop for the word-level language model (truncated BPTT, Zaremba's setting).

One epoch walks the training stream (batchified into B parallel streams) in BPTT windows; the
hidden state is carried from window to window and detached. SGD with global-norm clipping and
per-epoch learning-rate decay after epoch ``decay_after``; optional Gal-style weight decay
(``w -= lr·grad``, then ``w -= wd·w``); Adam as an option.

Nothing is lost on a crash and a resumed run continues the same trajectory bit for bit on CPU
(:mod:`rnndrop.train.base`, shared with the classifier trainer); a checkpoint adds the hidden
state and the vocabulary.

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
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import _plot
from .. import distributed
from ..config import RunConfig, has_dropout
from ..data.text import batchify, bptt_windows, check_vocab
from ..evaluate import exp_or_inf, perplexity
from ..models.lm import RNNLanguageModel
from ..runs import restore_weights
from .base import Trainer, TrainingDiverged, TrainState

__all__ = ["LMTrainer", "TrainingDiverged", "TrainState", "default_mc_batch",
           "plot_learning_curve", "plot_dropout_rates"]


def _lr_for_epoch(cfg, epoch: int) -> float:
    return cfg.lr / (cfg.lr_decay ** max(epoch - cfg.decay_after, 0))


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


class LMTrainer(Trainer):
    """Trains an :class:`RNNLanguageModel` on a corpus according to a :class:`RunConfig`.

    ``corpus`` has ``train``/``valid``/``test`` 1-D LongTensors and a ``vocab`` (with
    ``to_dict()`` and ``counts``). ``out`` is the run directory: ``last.pt``, ``best.pt``,
    ``metrics.jsonl``, ``steps.jsonl``, ``learning_curve.png``. ``position`` is the index in
    the batchified training stream where the next window starts.

    ``hook``: an optional callable ``hook(point)`` called at named points of a step
    (``"window"``, ``"forward"``, ``"backward"``, ``"clip"``, ``"commit"``) and of an epoch end
    (``"epoch_end"``, ``"best_saved"``): the tests interrupt the run there.
    """

    CHECKPOINT_KEYS = ("model", "optimizer", "rng", "hidden", "train_state", "config", "vocab")
    COUNT = "tokens"
    VALID_KEY = "valid_ppl"

    def __init__(self, cfg: RunConfig, corpus, out: str | os.PathLike, progress: bool = True,
                 log=print):
        t = cfg.train
        W = distributed.world()
        if W.distributed and t.batch_size % W.size:
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the "
                             f"number of processes ({W.size}): each trains an equal block "
                             f"of the streams")
        self._setup(cfg, out, progress, log)
        self.corpus = corpus
        # The BPTT generator (variable window lengths, self.gen) is the same on every rank: all
        # ranks must walk the same windows, step for step.
        vocab_size = len(corpus.vocab)
        self.model = RNNLanguageModel.from_config(cfg.model, corpus.vocab).to(self.device)
        if W.distributed:
            # Same initial weights on every rank (seeded above); from here on each rank draws
            # its own dropout masks (the global RNG, checkpointed per rank).
            torch.manual_seed(distributed.rank_seed(t.seed, W.rank))
        self._finish_setup()
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
        self.hidden = None

    def close(self) -> None:
        """Drop the DistributedDataParallel wrapper before the process group is destroyed: its
        reducer holds the group, and a gloo group destroyed last by the reducer's destructor
        can deadlock (the destructor holds the GIL while it joins gloo's thread, which needs
        the GIL to free the tensors of a finished broadcast). A no-op in one process."""
        if self.world.distributed:
            self._loss_of = _LossOf(self.model)

    # ------------------------------------------------------------------------- checkpoints
    def _extra_state(self) -> dict:
        return {"hidden": None if self.hidden is None else [h.cpu() for h in self.hidden],
                "vocab": self.corpus.vocab.to_dict()}

    def _rank_state(self) -> dict:
        return {"hidden": None if self.hidden is None else [h.cpu() for h in self.hidden]}

    def _join_rank_states(self, ranks: list) -> dict:
        """The global hidden state: every rank's streams, in the global order."""
        if ranks[0]["hidden"] is None:
            return {"hidden": None}
        return {"hidden": [torch.cat([r["hidden"][i] for r in ranks], dim=1)   # (layers, B, H)
                           for i in range(len(ranks[0]["hidden"]))]}

    def _load_extra(self, st: dict, path) -> None:
        check_vocab(st["vocab"], self.corpus, source=str(path))

    def _load_weights(self, st: dict, path) -> None:
        restore_weights(self.model, st, path, self.cfg)

    def _load_rng(self, st: dict, path) -> None:
        super()._load_rng(st, path)
        W, h = self.world, st["hidden"]
        if h is not None and W.distributed:          # this rank's block of the streams
            b = self.cfg.train.batch_size // W.size
            h = [x[:, W.rank * b:(W.rank + 1) * b].contiguous() for x in h]
        self.hidden = None if h is None else tuple(x.to(self.device) for x in h)

    def _where(self) -> str:
        return f"position {self.state.position}/{self.train_data.shape[0] - 1}"

    def _probe_loss(self) -> float:
        """The first window of the validation stream."""
        n = min(self.cfg.train.bptt, self.valid_data.shape[0] - 1)
        x, y = self.valid_data[:n], self.valid_data[1:n + 1]
        return self.model.loss(self.model(x)[0], y).item()

    # ---------------------------------------------------------------------------- training
    def _train_epoch(self, deadline) -> bool:
        t, st, model = self.cfg.train, self.state, self.model
        lr = _lr_for_epoch(t, st.epoch) if t.optimizer == "sgd" else t.lr
        model.train()
        if st.position == 0:
            self.hidden = None
            self._start_epoch_stats()
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
                if self._stop_or_checkpoint(deadline, n):
                    return False
        finally:
            bar.close()
        self._close_epoch(lr)
        return True

    def _step(self, pos: int, x, y, lr: float) -> None:
        """One optimiser step on a window: computed first (only the RNG moves), then committed
        at once (:meth:`Trainer._apply_step`)."""
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
        # Zaremba's objective sums the per-token NLL over the window (mean over batch).
        objective = loss * x.shape[0] if t.loss_reduction == "sum_over_time" else loss
        if model.learn_dropout:  # Concrete dropout's regulariser, per token: scaled as the loss
            per_window = x.shape[0] if t.loss_reduction == "sum_over_time" else 1
            objective = objective + model.regularizer() * per_window

        def commit():
            self.hidden = hidden
            st.position = pos + x.shape[0]
        # the tokens of every rank's block (the loss is the global batch mean)
        self._apply_step(loss_g, objective, y.numel() * self.world.size, lr * scale, commit)

    def _progress_line(self, lr: float, n: int) -> str:
        """One log line for runs without a progress bar (schedulers, ``--no-progress``)."""
        st, es = self.state, self.state.epoch_stats
        secs = es["seconds"] + (time.perf_counter() - self._tic if self._tic else 0.0)
        mean = es["loss"] / max(es["tokens"], 1)
        return (f"epoch {st.epoch} | step {st.step} | {100 * st.position / n:5.1f}% of epoch | "
                f"loss {mean:.3f} | ppl {exp_or_inf(mean):.1f} | lr {lr:.4g} | "
                f"{es['tokens'] / max(secs, 1e-9):.0f} tokens/s | "
                f"clipped {100 * self.clip.fraction_clipped:.0f}%")

    # ------------------------------------------------------------------------ epoch ends
    def _reset_epoch(self) -> None:
        self.hidden = None

    def _epoch_record(self, lr: float) -> dict:
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
        return rec

    def _epoch_line(self, rec: dict) -> str:
        return (f"epoch {rec['epoch']:3d} | lr {rec['lr']:.4g} | train ppl {rec['train_ppl']:8.2f} | "
                f"valid ppl {rec['valid_ppl']:8.2f} | {rec['tokens_per_s']:.0f} tokens/s | "
                f"clipped {100 * rec['clipped_fraction']:.0f}%")

    def _plots(self) -> None:
        plot_learning_curve(self.state.history, self.out / "learning_curve.png")
        if self.model.learn_dropout:
            plot_dropout_rates(self.state.history, self.out / "dropout_rates.png")

    def final_eval(self) -> dict:
        """Test perplexity of the best checkpoint: standard and (if configured) MC dropout."""
        t = self.cfg.train
        self._load_best()
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
