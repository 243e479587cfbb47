"""The helpers the study CLIs share (rnndrop.studies._cli, _plot)."""
import argparse
import json
import operator

import torch

from rnndrop.studies import _cli, _plot


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


def test_prepare_and_run_arguments(tmp_path):
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    _cli.add_run_arguments(p, quick_help="smoke")
    args = p.parse_args(["--out", str(tmp_path / "o" / "p"), "--no-progress", "--seed", "3"])
    assert (args.seed, args.device, args.threads, args.quick) == (3, "cpu", None, False)
    s, out, progress = _cli.prepare(args, lambda a: ("settings", a.seed))
    assert s == ("settings", 3) and out.is_dir() and progress is False


def test_figure_and_save(tmp_path):
    fig, axes = _plot.figure(1, 2)
    assert len(axes) == 2
    axes[0].plot([0, 1], [1, 0])
    path = _plot.save(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
