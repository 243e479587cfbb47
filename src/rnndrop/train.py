"""Training loop for the word-level language model (truncated BPTT, Zaremba's setting).

One epoch walks the training stream (batchified into B parallel streams) in BPTT windows; the
hidden state is carried from window to window and detached. SGD with global-norm clipping and
per-epoch learning-rate decay after epoch ``decay_after``; optional Gal-style weight decay
(``w -= lr·grad``, then ``w -= wd·w``); Adam as an option.

Nothing is lost on a crash: checkpoints (model, optimiser, RNG states, hidden state, position in
the stream, metrics, config, vocabulary) are written atomically every ``checkpoint_every`` steps,
at every epoch end and on Ctrl-C, and ``resume`` continues the same trajectory bit for bit on
CPU. A non-finite loss or gradient stops the step, restores the last good checkpoint and stops
with a message instead of corrupting the run.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import RunConfig
from .diagnostics import clip_grad_norm
from .evaluate import perplexity
from .models.lm import RNNLanguageModel


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/Inf; the last good checkpoint was restored."""


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


def _windows(source, start, bptt, variable, gen):
    """Yield ``(position, x, y)`` from ``start``; variable-length BPTT as in AWD-LSTM."""
    i, n = start, source.shape[0]
    while i < n - 1:
        if variable:
            base = bptt if torch.rand(1, generator=gen).item() < 0.95 else bptt / 2
            seq = max(5, int(torch.normal(torch.tensor(float(base)), torch.tensor(5.0),
                                          generator=gen).item()))
        else:
            seq = bptt
        seq = min(seq, n - 1 - i)
        yield i, source[i:i + seq], source[i + 1:i + 1 + seq]
        i += seq


class LMTrainer:
    """Trains an :class:`RNNLanguageModel` on a corpus according to a :class:`RunConfig`.

    ``corpus`` has ``train``/``valid``/``test`` 1-D LongTensors and a ``vocab`` (with
    ``to_dict()`` and ``counts``). ``out`` is the run directory: ``last.pt``, ``best.pt``,
    ``metrics.jsonl``, ``learning_curve.png``.
    """

    def __init__(self, cfg: RunConfig, corpus, out: str | os.PathLike, progress: bool = True,
                 log=print):
        self.cfg, self.corpus, self.out, self.log = cfg, corpus, Path(out), log
        self.progress = progress
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"train.device={t.device!r} but no CUDA device is available")
        self.device = torch.device(t.device)
        torch.manual_seed(t.seed)
        self.gen = torch.Generator().manual_seed(t.seed)
        vocab_size = len(corpus.vocab)
        self.model = RNNLanguageModel.from_config(
            vocab_size, cfg.model, counts=getattr(corpus.vocab, "counts", None)).to(self.device)
        if t.loss_reduction not in ("sum_over_time", "mean"):
            raise ValueError(f"train.loss_reduction must be 'sum_over_time' or 'mean', got "
                             f"{t.loss_reduction!r}")
        if t.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=t.lr)
        elif t.optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr)
        else:
            raise ValueError(f"train.optimizer must be 'sgd' or 'adam', got {t.optimizer!r}")
        from .data.text import batchify
        self.train_data = batchify(corpus.train, t.batch_size)
        self.valid_data = batchify(corpus.valid, t.eval_batch_size)
        self.test_data = batchify(corpus.test, t.eval_batch_size)
        self.state = TrainState()
        self.hidden = None
        self._step_log: list[str] = []
        self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": _rng_state(self.gen),
            "hidden": None if self.hidden is None else [h.cpu() for h in self.hidden],
            "train_state": {"epoch": self.state.epoch, "position": self.state.position,
                            "step": self.state.step, "best_val": self.state.best_val,
                            "history": self.state.history, "epoch_stats": self.state.epoch_stats},
            "config": self.cfg.to_dict(),
            "vocab": self.corpus.vocab.to_dict(),
        }

    def save(self, name: str = "last.pt") -> Path:
        path = ckpt.save(self.state_dict(), self.out / name)
        if name == "last.pt":
            self._flush_step_log()
        return path

    def _flush_step_log(self) -> None:
        """Per-step loss and pre-clip gradient norm, written only together with a checkpoint so
        that the log and the checkpoint always agree (a resumed run appends without gaps)."""
        if self._step_log:
            with open(self.out / "steps.jsonl", "a") as f:
                f.write("\n".join(self._step_log) + "\n")
            self._step_log.clear()

    def load_state_dict(self, st: dict, path="checkpoint") -> None:
        from .data.text import check_vocab
        check_vocab(st["vocab"], self.corpus, source=str(path))
        self._step_log.clear()   # steps after the checkpoint are replayed, not kept twice
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"{path} does not fit this model: "
                                       f"{str(e).splitlines()[0]}") from None
        self.opt.load_state_dict(st["optimizer"])
        _set_rng_state(st["rng"], self.gen)
        self.hidden = None if st["hidden"] is None else tuple(h.to(self.device) for h in st["hidden"])
        ts = st["train_state"]
        self.state = TrainState(ts["epoch"], ts["position"], ts["step"], ts["best_val"],
                                list(ts["history"]), dict(ts["epoch_stats"]))

    def resume(self, path: str | os.PathLike) -> None:
        self.load_state_dict(ckpt.load(path, map_location=self.device), path)
        self.log(f"resumed from {path}: epoch {self.state.epoch}, position "
                 f"{self.state.position}/{self.train_data.shape[0] - 1}, step {self.state.step}")

    # ---------------------------------------------------------------------------- training
    def _restore_last_good(self, why: str):
        last = self.out / "last.pt"
        if last.is_file():
            self.load_state_dict(ckpt.load(last, map_location=self.device), last)
            where = f"parameters restored from {last}"
        else:
            where = "no checkpoint to restore yet"
        raise TrainingDiverged(f"{why}; the step was not applied and {where}. Lower train.lr or "
                               f"train.clip, then resume with --resume.")

    def train(self, max_minutes: float = 0.0) -> dict:
        """Train until the configured number of epochs (or ``max_steps`` / ``max_minutes``);
        returns the final metrics. Ctrl-C saves a checkpoint and re-raises."""
        t = self.cfg.train
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        try:
            while self.state.epoch <= t.epochs:
                out_of_budget = (t.max_steps and self.state.step >= t.max_steps) or \
                    (deadline is not None and time.monotonic() > deadline)
                if out_of_budget or not self._train_epoch(deadline):
                    self.save()
                    self.log(f"stopped at epoch {self.state.epoch}, position "
                             f"{self.state.position}; checkpoint {self.out / 'last.pt'}")
                    return {"stopped": True, **self.state.__dict__}
            return self.final_eval()
        except KeyboardInterrupt:
            self.save()
            self.log(f"\ninterrupted: checkpoint saved to {self.out / 'last.pt'}; continue with "
                     f"--resume")
            raise

    def _train_epoch(self, deadline) -> bool:
        t, st, model = self.cfg.train, self.state, self.model
        lr = _lr_for_epoch(t, st.epoch) if t.optimizer == "sgd" else t.lr
        for g in self.opt.param_groups:
            g["lr"] = lr
        model.train()
        if st.position == 0:
            self.hidden = None
            st.epoch_stats = {"loss": 0.0, "tokens": 0, "seconds": 0.0, "clipped": 0,
                              "grad_norm": 0.0, "steps": 0}
        es = st.epoch_stats
        n = self.train_data.shape[0] - 1
        bar = tqdm(total=n, initial=st.position, desc=f"epoch {st.epoch}/{t.epochs}",
                   unit="tok/B", disable=not self.progress, leave=False)
        tic = time.perf_counter()
        try:
            for pos, x, y in _windows(self.train_data, st.position, t.bptt, t.variable_bptt, self.gen):
                x, y = x.to(self.device), y.to(self.device)
                if self.hidden is not None:
                    self.hidden = tuple(h.detach() for h in self.hidden)
                # With a per-token mean loss, variable BPTT rescales lr by the window length as
                # AWD-LSTM does; a loss summed over the window already scales with it.
                scale = 1.0
                if t.variable_bptt and t.loss_reduction == "mean":
                    scale = x.shape[0] / t.bptt
                if st.step < t.warmup_steps:
                    scale *= (st.step + 1) / t.warmup_steps
                for g in self.opt.param_groups:
                    g["lr"] = lr * scale
                out, hidden = model(x, self.hidden)
                loss = model.loss(out, y)
                if not torch.isfinite(loss):
                    self._restore_last_good(f"non-finite loss ({loss.item()}) at epoch {st.epoch}, "
                                            f"step {st.step + 1}")
                self.opt.zero_grad(set_to_none=True)
                # Zaremba's objective sums the per-token NLL over the window (mean over batch).
                (loss * x.shape[0] if t.loss_reduction == "sum_over_time" else loss).backward()
                clip = clip_grad_norm(model.parameters(), t.clip if t.clip > 0 else math.inf)
                if not clip.finite:
                    self._restore_last_good(f"non-finite gradient norm at epoch {st.epoch}, step {st.step + 1}")
                self.opt.step()
                if t.weight_decay:
                    with torch.no_grad():
                        for p in model.parameters():
                            p.mul_(1.0 - t.weight_decay)
                self.hidden = hidden
                ntok = y.numel()
                es["loss"] += loss.item() * ntok
                es["tokens"] += ntok
                es["clipped"] += int(clip.clipped)
                es["grad_norm"] += clip.total_norm
                self._step_log.append(f'{{"step": {st.step + 1}, "loss": {loss.item():.6g}, '
                                      f'"grad_norm": {clip.total_norm:.6g}, "clipped": {str(clip.clipped).lower()}}}')
                es["steps"] += 1
                st.step += 1
                st.position = pos + x.shape[0]
                bar.update(x.shape[0])
                if es["steps"] % 20 == 0:
                    el = es["seconds"] + time.perf_counter() - tic
                    bar.set_postfix(ppl=f"{math.exp(es['loss'] / es['tokens']):.1f}",
                                    tok_s=f"{es['tokens'] / max(el, 1e-9):.0f}")
                stop = (t.max_steps and st.step >= t.max_steps) or \
                       (deadline is not None and time.monotonic() > deadline)
                if (stop or (t.checkpoint_every and st.step % t.checkpoint_every == 0)) \
                        and st.position < n:
                    es["seconds"] += time.perf_counter() - tic
                    tic = time.perf_counter()
                    if stop:
                        return False
                    self.save()
        finally:
            bar.close()
        es["seconds"] += time.perf_counter() - tic
        self._end_epoch(lr)
        return True

    def _end_epoch(self, lr: float) -> None:
        st, t = self.state, self.cfg.train
        es = st.epoch_stats
        val = perplexity(self.model, self.valid_data, t.bptt)
        rec = {"epoch": st.epoch, "lr": lr, "train_ppl": math.exp(es["loss"] / es["tokens"]),
               "valid_ppl": val, "epoch_seconds": es["seconds"],
               "tokens_per_s": es["tokens"] / max(es["seconds"], 1e-9),
               "mean_grad_norm": es["grad_norm"] / max(es["steps"], 1),
               "clipped_fraction": es["clipped"] / max(es["steps"], 1),
               "step": st.step}
        st.history.append(rec)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.log(f"epoch {st.epoch:3d} | lr {lr:.4g} | train ppl {rec['train_ppl']:8.2f} | "
                 f"valid ppl {val:8.2f} | {rec['tokens_per_s']:.0f} tok/s | "
                 f"clipped {100 * rec['clipped_fraction']:.0f}%")
        improved = val < st.best_val
        st.best_val = min(st.best_val, val)
        st.epoch += 1
        st.position = 0
        self.hidden = None
        self.save()
        if improved:
            self.save("best.pt")
        try:
            plot_learning_curve(st.history, self.out / "learning_curve.png")
        except Exception as e:  # a plotting problem must never stop training
            self.log(f"(learning-curve plot skipped: {e})")

    def final_eval(self) -> dict:
        """Test perplexity of the best checkpoint: standard and (if configured) MC dropout."""
        t = self.cfg.train
        best = self.out / "best.pt"
        if best.is_file():
            self.model.load_state_dict(ckpt.load(best, map_location=self.device)["model"])
        res = {"valid_ppl": perplexity(self.model, self.valid_data, t.bptt),
               "test_ppl": perplexity(self.model, self.test_data, t.bptt)}
        if t.mc_samples:
            torch.manual_seed(t.seed)
            res["test_ppl_mc"] = perplexity(self.model, self.test_data, t.bptt, t.mc_samples,
                                            mc_batch=default_mc_batch(self.model, t))
        res["epochs"] = len(self.state.history)
        with open(self.out / "final.json", "w") as f:
            json.dump(res, f, indent=2)
        self.log("final: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in res.items()))
        return res


def default_mc_batch(model, t) -> int:
    """MC samples per pass so that the (T, S·B, V) log-probabilities stay under ~512 MB."""
    per_sample = t.bptt * t.eval_batch_size * model.vocab_size * 4
    return max(1, int(512e6 // per_sample))


def plot_learning_curve(history: list, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=90)
    ax.plot(ep, [h["train_ppl"] for h in history], "o-", label="train")
    ax.plot(ep, [h["valid_ppl"] for h in history], "s-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def load_corpus_for(cfg: RunConfig, data_dir: Optional[str] = None):
    """The corpus a config names: ``data_dir`` (or ``cfg.data.dir``), else the data root."""
    from .data import text
    d = data_dir or cfg.data.dir
    if cfg.data.layout == "imdb-lm":          # the data root (holding imdb/), else $RNNDROP_DATA
        from .data.imdb_lm import load_imdb_lm
        return load_imdb_lm(d, max_vocab=cfg.data.max_vocab, min_count=cfg.data.min_count)
    if cfg.data.layout == "ptb" and d is None:
        return text.load_ptb()
    if d is None:
        raise ValueError(f"data.dir must be set for layout {cfg.data.layout!r}")
    if cfg.data.layout == "ptb" and not (Path(d) / "ptb.train.txt").exists() \
            and (Path(d) / "ptb" / "ptb.train.txt").exists():
        d = str(Path(d) / "ptb")
    return text.load_corpus(d, layout=cfg.data.layout, unk=cfg.data.unk)
