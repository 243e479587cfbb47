"""The skeleton every study stands on.

A study module defines

- ``Settings``: a dataclass, the single source of its defaults, each field made with
  :func:`option` (default and help text), and a ``quick()`` classmethod (the ``--quick`` preset);
- ``run(settings, out, progress) -> dict``: train and measure; the dict is what ``results.json``
  holds (:func:`write_results` writes it);
- ``report(results, out) -> dict[str, Path]``: the markdown tables (key ``"markdown"``) and the
  plots (:mod:`rnndrop._plot`) made from ``results`` alone (:func:`write_report`);
- ``STUDY = Study(name, help, __doc__, Settings, run, report)``: the ``rnndrop study NAME``
  command, with an option ``--field-name`` per field of ``Settings`` (typed from the field),
  ``--out DIR``, ``--quick`` (and any other preset), ``--no-progress`` and ``--replot``.

Also here: :func:`run_jobs` (training runs in this process or in spawned processes),
:func:`save_progress`, :func:`json_safe`, :func:`loadavg` and :func:`environment`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import platform
import time
import typing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

RESULTS = "results.json"


# ============================================================================== settings
def option(default, help: str, choices: Optional[Sequence] = None):
    """A ``Settings`` field: its default, its help text and (for a scalar) its allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str):
        return None if text.strip().lower() == "none" else parse(text)
    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _comma_list(parse: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse_list(text: str) -> tuple:
        return tuple(parse(x.strip()) for x in text.split(",") if x.strip())
    parse_list.__name__ = f"comma-separated {getattr(parse, '__name__', 'value')}s"
    return parse_list


def _parser(tp) -> Callable[[str], Any]:
    """``str -> value`` for a field annotated ``tp``: int, float, str, ``Optional[X]`` ("none"
    for None) or ``tuple[X, ...]`` (comma-separated)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _none_or(_parser(inner))
    if origin is tuple:
        return _comma_list(_parser(args[0]))
    if tp in (int, float, str):
        return tp
    raise TypeError(f"no command-line form for a field of type {tp!r}")


def _show(value) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) \
        if isinstance(value, tuple) else (f"{value:g}" if isinstance(value, float) else str(value))


# ================================================================================= study
@dataclasses.dataclass(frozen=True)
class Study:
    """One study's command. ``presets``: flag name → classmethod of ``settings`` giving the
    preset (help text: its docstring); default ``{"quick": settings.quick}``. A field named like
    a preset gets no option of its own (the preset sets it)."""
    name: str
    help: str
    doc: str
    settings: type
    run: Callable[..., dict]
    report: Callable[[dict, Path], dict]
    presets: Optional[Mapping[str, Callable[[], Any]]] = None

    @property
    def default_out(self) -> str:
        return str(Path("runs") / self.name)

    def _presets(self) -> Mapping[str, Callable[[], Any]]:
        return self.presets if self.presets is not None else {"quick": self.settings.quick}

    def _fields(self) -> list:
        return [f for f in dataclasses.fields(self.settings) if f.name not in self._presets()]

    # ------------------------------------------------------------------ command line
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """One option per field (absent from the namespace unless given, so that a preset
        fills in only what was not given), then the flags every study has."""
        hints = typing.get_type_hints(self.settings)
        for f in self._fields():
            text = f.metadata.get("help", "")
            flag = "--" + f.name.replace("_", "-")
            if hints[f.name] is bool:
                if f.default:
                    p.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                                   default=argparse.SUPPRESS, help=text)
                else:
                    p.add_argument(flag, dest=f.name, action="store_true",
                                   default=argparse.SUPPRESS, help=text)
                continue
            if f.default is not None:
                text += f" (default: {_show(f.default)})"
            p.add_argument(flag, dest=f.name, type=_parser(hints[f.name]),
                           choices=f.metadata.get("choices"), default=argparse.SUPPRESS,
                           help=text)
        p.add_argument("--out", metavar="DIR", default=self.default_out,
                       help="output folder (default: %(default)s)")
        for name, preset in self._presets().items():
            p.add_argument("--" + name, action="store_true",
                           help=(preset.__doc__ or "").strip().split("\n\n")[0])
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--replot", action="store_true",
                       help=f"no training: rewrite the tables and plots from DIR/{RESULTS}")
        p.set_defaults(func=self.command)

    def add_cli(self, subparsers) -> argparse.ArgumentParser:
        """Add the ``name`` sub-command to ``subparsers``."""
        p = subparsers.add_parser(self.name, help=self.help,
                                  description=(self.doc or "").split("\n\n")[0])
        self.add_arguments(p)
        return p

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        """``argv`` parsed as ``rnndrop study NAME argv`` would be."""
        p = argparse.ArgumentParser(prog=f"rnndrop study {self.name}")
        self.add_arguments(p)
        return p.parse_args(list(argv))

    def settings_from_args(self, args: argparse.Namespace):
        """The default settings, changed by the presets given (in order), then by the options
        given."""
        base = self.settings()
        names = [f.name for f in dataclasses.fields(self.settings)]
        changes: dict = {}
        for flag, preset in self._presets().items():
            if getattr(args, flag, False):
                p = preset()
                changes.update({n: getattr(p, n) for n in names
                                if getattr(p, n) != getattr(base, n)})
        given = vars(args)
        changes.update({f.name: given[f.name] for f in self._fields() if f.name in given})
        return dataclasses.replace(base, **changes)

    def command(self, args: argparse.Namespace) -> int:
        """Run (or with ``--replot`` only report) the study; print the tables and where the
        outputs are."""
        out = Path(args.out)
        if args.replot:
            results = read_results(out)
        else:
            settings = self.settings_from_args(args)
            out.mkdir(parents=True, exist_ok=True)
            load_start, tic = loadavg(), time.perf_counter()
            results = {"study": self.name,
                       **self.run(settings, out, progress=not args.no_progress)}
            results.setdefault("wall_seconds", time.perf_counter() - tic)
            results["args"] = {k: v for k, v in vars(args).items() if k != "func"}
            results["loadavg_start"], results["loadavg_end"] = load_start, loadavg()
            write_results(results, out)
        paths = self.report(results, out)
        print("\n" + paths["markdown"].read_text())
        names = [RESULTS] + [p.name for p in paths.values()]
        print(f"wall time {results['wall_seconds']:.1f} s; outputs in {out}: " + ", ".join(names)
              + (f" (rewritten from {RESULTS})" if args.replot else ""))
        return 0


# =============================================================================== results
def json_safe(o):
    """``o`` with non-finite floats made JSON-safe (NaN → null, ±inf → "inf"/"-inf"), through
    dicts, lists and tuples."""
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def write_results(results: dict, out: Path) -> Path:
    """``out/results.json`` (:func:`json_safe`), written atomically: the one writer of it."""
    path = Path(out) / RESULTS
    tmp = path.with_name(RESULTS + ".tmp")
    tmp.write_text(json.dumps(json_safe(results), indent=1))
    tmp.replace(path)
    return path


def write_report(out: Path, name: str, tables: str, plots: Sequence[Path]) -> dict[str, Path]:
    """Write the markdown ``tables`` to ``out/name``; the paths of a ``report``: ``"markdown"``,
    then each of the ``plots`` (already saved) under its stem."""
    path = Path(out) / name
    path.write_text(tables)
    return {"markdown": path, **{p.stem: p for p in plots}}


def save_progress(results: dict, out: Path, report: Callable[[dict, Path], dict],
                  started: float) -> None:
    """``results["total_time_s"]`` since ``started`` (``time.perf_counter()``), then
    ``results.json`` and the report: for a study that trains one model after another, after
    each, so that a run cut short keeps what it measured."""
    results["total_time_s"] = time.perf_counter() - started
    write_results(results, out)
    report(results, out)


def read_results(out: Path) -> dict:
    path = Path(out) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: nothing to replot")
    return json.loads(path.read_text())


def loadavg():
    """The 1/5/15-minute load averages, or None where the platform has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def environment() -> dict:
    """Python, torch, the machine and the torch thread count, for the results."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor() or None}


# ================================================================================== jobs
def _start_worker(threads: int, initializer: Optional[Callable], initargs: tuple) -> None:
    torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


def run_jobs(labels: Sequence[str], order: Sequence[int], run_here: Callable[[int], Any],
             jobs: int, job: Callable[[Any], Any], job_arg: Callable[[int], Any],
             initializer: Optional[Callable] = None, initargs: tuple = (), threads: int = 1,
             desc: str = "runs", unit: str = "run", progress: bool = True) -> list:
    """Results of jobs ``0 … len(labels)-1``, started in ``order``, with a progress bar.

    ``jobs <= 1``: ``run_here(i)`` in this process on ``threads`` torch threads (default 1: the
    study networks are too small to gain from more, and on a busy machine intra-op threads cost
    ~10x in contention; the thread count is restored afterwards). Otherwise ``job(job_arg(i))``
    in ``jobs`` spawned processes on ``threads`` threads each, each set up by
    ``initializer(*initargs)``.
    """
    results: list = [None] * len(labels)
    bar = tqdm(total=len(labels), desc=desc, unit=unit, disable=not progress)
    try:
        if jobs <= 1:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for i in order:
                    bar.set_postfix_str(labels[i])
                    results[i] = run_here(i)
                    bar.update(1)
            finally:
                torch.set_num_threads(before)
        else:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_start_worker,
                                     initargs=(threads, initializer, initargs)) as ex:
                futs = {ex.submit(job, job_arg(i)): i for i in order}
                for fut in as_completed(futs):
                    i = futs[fut]
                    results[i] = fut.result()
                    bar.set_postfix_str(labels[i])
                    bar.update(1)
    finally:
        bar.close()
    return results
