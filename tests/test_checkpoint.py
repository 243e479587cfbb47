"""Checkpoints: atomic writes, a full disk, corrupt or foreign files, weights-only loading."""
import errno
import os
import pickle
import shutil
import warnings

import pytest
import torch
from torch import nn

from rnndrop import checkpoint as ckpt


def test_checkpoint_atomic_and_corruption_is_clear(tmp_path):
    p = ckpt.save({"x": torch.ones(3)}, tmp_path / "c.pt")
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]       # no temp file left
    assert torch.equal(ckpt.load(p)["x"], torch.ones(3))
    data = p.read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="corrupted"):
        ckpt.load(tmp_path / "bad.pt")
    torch.save({"y": 1}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not an rnndrop checkpoint"):
        ckpt.load(tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load(tmp_path / "missing.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_refuses_pickled_code(tmp_path):
    torch.save({"format": ckpt.FORMAT, "payload": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    for name in ("evil.pt", "text.pt"):
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.load(tmp_path / name)
        assert "weights_only" not in str(err.value)     # never advise loading unsafely


def test_raw_pickle_gives_our_error_and_no_torch_warning(tmp_path, capsys):
    with open(tmp_path / "raw.pt", "wb") as f:
        pickle.dump({"format": ckpt.FORMAT, "model": {}}, f, protocol=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ckpt.CheckpointError, match="not an rnndrop checkpoint"):
            ckpt.load(tmp_path / "raw.pt")
    assert [str(w.message) for w in seen] == []
    assert capsys.readouterr().err == ""


def _torch_disk_full(*args, **kwargs):
    """What torch.save raises on a full disk: its own error, the OSError only as context."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")


@pytest.mark.parametrize("how", ["errno", "free-space"])
def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, how):
    ckpt.save({"w": torch.arange(4.0)}, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    if how == "errno":
        monkeypatch.setattr(ckpt.torch, "save", _torch_disk_full)
    else:   # no errno to be found: the free space tells
        def torch_error(*a, **k):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        monkeypatch.setattr(ckpt.torch, "save", torch_error)
        monkeypatch.setattr(ckpt.shutil, "disk_usage",
                            lambda p: shutil._ntuple_diskusage(10 << 20, 10 << 20, 1000))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save({"w": torch.zeros(100_000)}, tmp_path / "last.pt")
    msg = str(err.value)
    assert "no space left on device" in msg and str(tmp_path) in msg
    assert "the previous last.pt is kept" in msg and "enforce fail" not in msg
    assert "\n" not in msg
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]        # temp file removed
    assert (tmp_path / "last.pt").read_bytes() == before


def test_other_write_failures_name_the_file(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("something else\nwith a second line")
    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(ckpt.CheckpointError, match=r"could not write checkpoint .*c\.pt "
                                                    r"\(something else\); no c.pt was written"):
        ckpt.save({}, tmp_path / "c.pt")


def test_remove_stale_temp_files_only_removes_ours(tmp_path):
    (tmp_path / "last.pt.x1y2.tmp").write_text("")
    (tmp_path / "best.pt.zz.tmp").write_text("")
    (tmp_path / "mine.tmp").write_text("")
    removed = ckpt.remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == ["best.pt.zz.tmp", "last.pt.x1y2.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine.tmp"]


def test_require_names_missing_keys():
    with pytest.raises(ckpt.CheckpointError, match="without 'config', 'vocab'"):
        ckpt.require({"format": ckpt.FORMAT, "model": {}}, ("model", "config", "vocab"), "x.pt")


def test_load_weights_says_which_tensor_does_not_fit():
    small, big = nn.Linear(3, 4), nn.Linear(3, 5)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_weights(small, big.state_dict(), "x.pt", hint="out is 5 there")
    msg = str(err.value)
    assert msg.startswith("x.pt does not fit this model: out is 5 there (weight has shape (5, 3)")
    assert "and 1 more tensors differ" in msg
    with pytest.raises(ckpt.CheckpointError, match="missing bias"):
        ckpt.load_weights(small, {"weight": small.weight.detach()}, "x.pt")
    ckpt.load_weights(small, nn.Linear(3, 4).state_dict(), "x.pt")     # fits: loads
