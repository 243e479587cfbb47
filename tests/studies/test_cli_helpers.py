"""The skeleton the studies share (rnndrop.studies._cli) and the plot helpers (rnndrop._plot)."""
import argparse
import json
import operator
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from rnndrop import _plot
from rnndrop.studies import _cli


def test_run_jobs_in_process_keeps_index_order_and_restores_threads():
    torch.set_num_threads(2)
    seen = []

    def here(i):
        seen.append((i, torch.get_num_threads()))
        return -i
    res = _cli.run_jobs(["a", "b", "c"], [2, 0, 1], here, 1, operator.neg, lambda i: i,
                        progress=False)
    assert res == [0, -1, -2]
    assert seen == [(2, 1), (0, 1), (1, 1)]          # started in order, on one thread
    assert torch.get_num_threads() == 2


def test_run_jobs_in_spawned_processes():
    res = _cli.run_jobs(["a", "b", "c"], [1, 2, 0], None, 2, operator.neg, lambda i: i + 1,
                        progress=False)
    assert res == [-1, -2, -3]


def test_json_safe_makes_non_finite_floats_valid_json():
    o = {"a": float("nan"), "b": [float("inf"), (1.5, -float("inf"))], "c": "x"}
    s = json.dumps(_cli.json_safe(o), allow_nan=False)
    assert json.loads(s) == {"a": None, "b": ["inf", [1.5, "-inf"]], "c": "x"}


# ---------------------------------------------------------------- a toy study on the skeleton
@dataclass
class ToySettings:
    steps: int = _cli.option(5, "steps")
    lr: Optional[float] = _cli.option(None, "learning rate (none: automatic)")
    sizes: tuple[float, ...] = _cli.option((0.5, 1.0), "sizes")
    chunks: bool = _cli.option(True, "one piece only")
    verbose: bool = _cli.option(False, "say more")
    mode: str = _cli.option("a", "mode", choices=("a", "b"))
    seed: int = _cli.option(0, "seed")
    device: str = _cli.option("cpu", "cpu or cuda")
    threads: int = _cli.option(0, "torch threads (0: torch's)")

    @classmethod
    def quick(cls):
        """tiny"""
        return cls(steps=1, sizes=(2.0,))


def _toy(calls):
    def run(settings, out, progress=True):
        calls.append((settings, out, progress))
        return {"settings": {"steps": settings.steps}, "value": float("nan")}

    def report(results, out):
        (out / "r.md").write_text(f"steps {results['settings']['steps']}\n")
        return {"markdown": out / "r.md"}
    return _cli.Study("toy", "a toy", "Toy study.\n\nMore.", ToySettings, run, report)


def test_settings_from_args_presets_and_explicit_options(tmp_path):
    study = _toy([])
    s = study.settings_from_args(study.parse_args([]))
    assert s == ToySettings()
    s = study.settings_from_args(study.parse_args(["--quick"]))
    assert (s.steps, s.sizes) == (1, (2.0,))
    # an explicit value wins over the preset, also an explicit 0 (not swallowed as "not given")
    s = study.settings_from_args(study.parse_args(["--quick", "--steps", "0", "--sizes", "1,2.5"]))
    assert (s.steps, s.sizes) == (0, (1.0, 2.5))
    s = study.settings_from_args(study.parse_args(["--lr", "0.1", "--no-chunks", "--verbose",
                                                   "--mode", "b"]))
    assert (s.lr, s.chunks, s.verbose, s.mode) == (0.1, False, True, "b")
    assert study.settings_from_args(study.parse_args(["--lr", "none"])).lr is None
    with pytest.raises(SystemExit):
        study.parse_args(["--mode", "c"])
    with pytest.raises(SystemExit):
        study.parse_args(["--batch", "3"])                  # not an option of this study


def test_command_runs_writes_results_and_replots(tmp_path, capsys):
    calls = []
    study = _toy(calls)
    args = study.parse_args(["--out", str(tmp_path / "o" / "p"), "--no-progress", "--seed", "3"])
    assert (args.quick, args.no_progress, args.out) == (False, True, str(tmp_path / "o" / "p"))
    assert args.func(args) == 0
    s, out, progress = calls[0]
    assert (s.seed, s.device, s.threads) == (3, "cpu", 0)
    assert out.is_dir() and progress is False
    res = json.loads((out / "results.json").read_text())    # json_safe: NaN is null
    assert res["study"] == "toy" and res["value"] is None and res["args"]["seed"] == 3
    assert "wall_seconds" in res and "loadavg_start" in res
    assert "steps 5" in capsys.readouterr().out
    (out / "r.md").unlink()
    args = study.parse_args(["--out", str(out), "--replot"])
    assert args.func(args) == 0 and len(calls) == 1       # no second run
    assert (out / "r.md").read_text() == "steps 5\n"


def test_add_cli_makes_a_subcommand():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="study")
    _toy([]).add_cli(sub)
    args = p.parse_args(["toy", "--steps", "2"])
    assert args.out == "runs/toy" and args.steps == 2


def test_figure_and_save(tmp_path):
    fig, axes = _plot.figure(1, 2)
    assert len(axes) == 2
    axes[0].plot([0, 1], [1, 0])
    path = _plot.save(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
