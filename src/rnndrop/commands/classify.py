"""``rnndrop classify train | eval | predict``: classifiers and regressors on a user's files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from .. import distributed
from ..classify.config import ClassifyConfig, has_dropout
from ..classify.data import load_classify_data, load_examples
from ..classify.model import build_model
from ..classify.predict import noise_variance, predict
from ..classify.report import final_report
from ..config import apply_overrides, load_config
from .. import uncertainty as U
from ..data import labeled
from ..data.labeled import LabelSpace, TextEncoder
from ..rundir import atomic_write_text
from ..train.classifier import ClassifierTrainer
from .train import run_paths, run_training, set_threads, warnings_as_lines

#: What every classifier checkpoint holds (a trainer's last.pt holds more).
CLASSIFY_KEYS = ("model", "config", "encoder", "labels")


def add_parsers(sub) -> None:
    p = sub.add_parser("classify", help="classifiers and regressors on your own labelled texts")
    csub = p.add_subparsers(dest="classify_command", metavar="{train,eval,predict}")
    csub.required = True

    t = csub.add_parser("train", help="train on labelled texts (CSV/TSV/JSONL, a folder per "
                        "class, one file per class)")
    _data_options(t, train=True)
    t.add_argument("--recipe", help="recipe file (configs/classify-*.toml); default: the "
                   "built-in defaults (variational LSTM)")
    _set(t)
    t.add_argument("--out", help="run directory (default: runs/classify-<data name>)")
    t.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                   help="continue a run (default: <out>/last.pt)")
    _run_options(t)
    t.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (with a checkpoint) after this much wall time")
    t.set_defaults(func=train_command)

    e = csub.add_parser("eval", help="accuracy / macro-F1 or RMSE / MAE, NLL, Brier, ECE, with "
                        "and without MC dropout, and a reliability diagram")
    e.add_argument("checkpoint")
    _data_options(e, train=False)
    e.add_argument("--split", choices=["test", "valid", "train"], default="test",
                   help="the run's own split to score when --data is not given")
    e.add_argument("--mc", type=int, default=0, metavar="N", help="MC-dropout samples")
    e.add_argument("--plot", metavar="PNG", help="reliability diagram (default: "
                   "<run>/reliability_<split>.png)")
    e.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks")
    _set(e)
    _run_options(e)
    e.set_defaults(func=eval_command)

    q = csub.add_parser("predict", help="one JSON line per example: label (or value), "
                        "probabilities and, with --mc, entropy, BALD or the MC std")
    q.add_argument("checkpoint")
    _data_options(q, train=False)
    q.add_argument("--mc", type=int, default=0, metavar="N", help="MC-dropout samples")
    q.add_argument("--out", required=True, metavar="FILE", help="predictions (.jsonl)")
    q.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks")
    _set(q)
    _run_options(q)
    q.set_defaults(func=predict_command)


def _set(p) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set model.scheme=naive (repeatable)")


def _data_options(p, train: bool) -> None:
    p.add_argument("--data", metavar="PATH", help="examples: a .csv/.tsv/.jsonl file or a folder "
                   "(DIR/<label>/*.txt, or DIR/name.<label> with one example per line)"
                   + ("" if train else "; for predict also a .txt file of one text per line"))
    if train:
        p.add_argument("--valid", metavar="PATH", help="validation examples (default: a "
                       "seeded stratified 10%% of --data)")
        p.add_argument("--test", metavar="PATH", help="test examples (default: another 10%%)")
        p.add_argument("--files", nargs="+", metavar="FILE:LABEL",
                       help="one plain-text file per class, one example per line")
        p.add_argument("--task", choices=labeled.TASKS, help="classification or regression "
                       "(default: auto, from the labels)")
    p.add_argument("--format", choices=labeled.FORMATS, help="input format (default: auto)")
    p.add_argument("--text-column", help="CSV/TSV column or JSON key of the text (text)")
    p.add_argument("--label-column", help="CSV/TSV column or JSON key of the label (label)")
    p.add_argument("--encoding", help="text encoding of the files (default: utf-8)")


def _run_options(p) -> None:
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's own)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (training: a log line every minute)")


def _abs(path) -> str:
    return os.path.abspath(path)


def _overrides(args, train: bool) -> list[str]:
    """The command-line options as ``--set`` overrides (after the explicit ``--set`` ones)."""
    o = list(args.set)
    for opt, key in (("format", "data.format"), ("text_column", "data.text_column"),
                     ("label_column", "data.label_column"), ("encoding", "data.encoding")):
        if getattr(args, opt, None):
            o.append(f"{key}={getattr(args, opt)}")
    if train:
        if args.task:
            o.append(f"data.task={args.task}")
        if args.device:
            o.append(f"train.device={args.device}")
        if args.threads is not None:
            o.append(f"train.threads={args.threads}")
    return o


def train_command(args) -> int:
    overrides = _overrides(args, train=True)
    # no default directory yet: it is named after the data (below)
    resume, out = run_paths(args.resume, args.out, None, "rnndrop classify train")
    state = None
    if resume is not None:
        state = ckpt.require(ckpt.load(resume), ClassifierTrainer.CHECKPOINT_KEYS, resume)
        cfg = apply_overrides(ClassifyConfig.from_dict(state["config"], str(resume),
                                                       validate=False), overrides, str(resume))
    elif args.recipe:
        cfg = load_config(args.recipe, overrides, cls=ClassifyConfig)
    else:
        cfg = apply_overrides(ClassifyConfig(), overrides, "defaults")
    d = cfg.data
    # The paths actually read go into the config, hence into every checkpoint: eval, predict
    # and --resume find the data (and split.json) without being told again.
    if args.data:
        d.path, d.files = _abs(args.data), []
    if args.files:
        d.files, d.path = [f"{_abs(f.rsplit(':', 1)[0])}:{f.rsplit(':', 1)[1]}" if ":" in f
                           else f for f in args.files], None
    if args.valid:
        d.valid = _abs(args.valid)
    if args.test:
        d.test = _abs(args.test)
    cfg.validate("command line")
    if out is None:
        name = Path(d.path).name if d.path else "files"
        out = Path("runs") / f"classify-{Path(name).stem or 'data'}"
    if resume is None and (out / "last.pt").is_file():
        raise RuntimeError(f"run directory {out} already holds a run ({out / 'last.pt'}); "
                           f"continue it with --resume, or choose another --out")
    set_threads(cfg.train.threads or None)
    # Under torchrun: the process group for the run (nothing for a single process).
    with distributed.process_group(cfg.train.device, cfg.train.dist_timeout) as world, \
            distributed.peer_errors_as_one_line(world, cfg.train.dist_timeout):
        lead = world.rank == 0          # notes, warnings and split.json once, not per rank
        with warnings_as_lines(show=lead):
            data = load_classify_data(d, out, state=state, fresh=resume is None,
                                      write=lead, log=print if lead else _quiet)
        run_training(ClassifierTrainer(cfg, data, out, progress=not args.no_progress), resume,
                     out, world, args.max_minutes)
    return 0


def _quiet(*args, **kwargs) -> None:
    pass


def open_checkpoint(path, overrides=(), device="cpu"):
    """``(config, state, model)`` of a classifier checkpoint, weights loaded."""
    path = Path(path)
    state = ckpt.load(path, map_location=device)
    if "vocab" in state and "encoder" not in state:    # before require: say what it is instead
        raise ckpt.CheckpointError(f"{path} is a language-model checkpoint: use rnndrop eval")
    ckpt.require(state, CLASSIFY_KEYS, path)
    cfg = apply_overrides(ClassifyConfig.from_dict(state["config"], str(path), validate=False),
                          list(overrides), str(path))
    enc, labels = TextEncoder.from_dict(state["encoder"]), LabelSpace.from_dict(state["labels"])
    model = build_model(cfg.model, len(enc.vocab), labels.num_outputs)
    ckpt.load_weights(model, state["model"], path)
    return cfg, state, model.to(device), enc, labels


def _examples(args, cfg, state, enc, labels, need_labels: bool, split: str = "test"):
    """``(targets or None, encoded examples, texts, name)`` of ``--data`` or the run's split."""
    if args.data:
        src, data = load_examples(cfg.data, args.data, enc, labels, need_labels=need_labels)
        has = all(lab is not None for lab in src.labels)
        return (data.targets if has else None), data, src, Path(args.data).name
    run = load_classify_data(cfg.data, Path(args.checkpoint).parent, state=state, fresh=False)
    data = getattr(run, split)
    if len(data) == 0:
        raise ValueError(f"the run has no {split} split (give --data)")
    return data.targets, data, run.texts[split], f"{split} split"


def _mc(args, cfg) -> int:
    if args.mc < 0:
        raise ValueError(f"--mc must be >= 0, got {args.mc}")
    if args.mc and not has_dropout(cfg.model):
        print(f"--mc {args.mc}: the model has no dropout (model.scheme={cfg.model.scheme!r}, "
              f"no head dropout), so MC dropout equals the standard prediction; evaluated once")
        return 0
    return args.mc


def _noise_var(model, cfg, state, args, labels, device) -> float:
    """Regression: the model's mean squared error on the run's validation split (the noise of
    the predictive Gaussian); recorded in final.json, else computed when the data is there."""
    if labels.task != "regression":
        return 0.0
    final = Path(args.checkpoint).parent / "final.json"
    if final.is_file():
        try:
            return float(json.loads(final.read_text())["noise_var"])
        except (KeyError, ValueError, TypeError):
            pass
    try:
        run = load_classify_data(cfg.data, Path(args.checkpoint).parent, state=state, fresh=False)
    except Exception:
        return 0.0
    out = predict(model, run.valid, "regression", run.target_scale, device=device)
    return noise_variance(out, run.valid.targets)


def eval_command(args) -> int:
    set_threads(args.threads)
    device = args.device or "cpu"
    cfg, state, model, enc, labels = open_checkpoint(args.checkpoint, _overrides(args, False),
                                                     device)
    targets, data, _, name = _examples(args, cfg, state, enc, labels, need_labels=True,
                                       split=args.split)
    mc = _mc(args, cfg)
    scale = tuple(state["target_scale"]) if state.get("target_scale") else None
    torch.manual_seed(args.seed)
    out = predict(model, data, labels.task, scale, batch_size=cfg.train.eval_batch_size, mc=mc,
                  mc_batch=cfg.train.mc_batch, device=device, progress=not args.no_progress)
    run_dir = Path(args.checkpoint).parent
    plot = args.plot or run_dir / f"reliability_{args.split if not args.data else Path(name).stem}.png"
    final_report(out, targets, labels.task, name,
                 _noise_var(model, cfg, state, args, labels, device), run_dir, mc=mc, plot=plot)
    return 0


def predict_command(args) -> int:
    set_threads(args.threads)
    device = args.device or "cpu"
    if not args.data:
        raise ValueError("rnndrop classify predict needs --data PATH (the texts to label)")
    cfg, state, model, enc, labels = open_checkpoint(args.checkpoint, _overrides(args, False),
                                                     device)
    targets, data, src, _ = _examples(args, cfg, state, enc, labels, need_labels=False)
    mc = _mc(args, cfg)
    scale = tuple(state["target_scale"]) if state.get("target_scale") else None
    torch.manual_seed(args.seed)
    out = predict(model, data, labels.task, scale, batch_size=cfg.train.eval_batch_size, mc=mc,
                  mc_batch=cfg.train.mc_batch, device=device, progress=not args.no_progress)
    rows = prediction_rows(out, labels, src, targets,
                           _noise_var(model, cfg, state, args, labels, device))
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # never a half-written predictions file
    atomic_write_text(dest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} predictions written to {dest}" + (f" (MC dropout, {mc} samples)" if mc else ""))
    return 0


def prediction_rows(out, labels, src, targets, noise_var: float = 0.0) -> list[dict]:
    """One dict per example: ``label`` (or ``value``), ``probabilities`` and, with MC samples,
    ``entropy`` and ``mutual_information`` (BALD), or ``std`` (regression); ``true`` when the
    example had a label."""
    rows = []
    if labels.task == "classification":
        p = out.samples.mean(0) if out.samples is not None else out.standard
        ent = U.predictive_entropy(p)
        mi = U.mutual_information(out.samples) if out.samples is not None else None
        for i in range(p.shape[0]):
            r = {"index": i, "label": labels.classes[int(p[i].argmax())],
                 "probabilities": {c: round(float(v), 6) for c, v in zip(labels.classes, p[i])},
                 "entropy": round(float(ent[i]), 6)}
            if mi is not None:
                r["mutual_information"] = round(float(mi[i]), 6)
            if src.labels[i] is not None:
                r["true"] = src.labels[i]
            rows.append(r)
        return rows
    for i in range(out.standard.shape[0]):
        if out.samples is not None:
            v = out.samples[:, i, 0]
            r = {"index": i, "value": float(v.mean()), "std": float(v.std(unbiased=False)),
                 "predictive_std": float((v.var(unbiased=False) + noise_var) ** 0.5)}
        else:
            r = {"index": i, "value": float(out.standard[i, 0])}
        if src.labels[i] is not None:
            r["true"] = float(src.labels[i])
        rows.append(r)
    return rows
