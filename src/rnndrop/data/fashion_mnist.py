"""Fashion-MNIST (Xiao et al. 2017) from its IDX ``.gz`` files.

Looked for in ``<root>/fashion-mnist``, then ``/usr/share/datasets/fashion-mnist`` (Debian's
``dataset-fashion-mnist``), then downloaded. Magic numbers, shapes and byte counts are checked, so
a truncated or foreign file is a clear error naming it.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ._download import DataError, data_root, ensure_file, verify

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path, expected_magic: int) -> Tensor:
    """Parse a gzipped IDX file (uint8 data) into a tensor, checking magic and size."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    if len(data) < 8:
        raise DataError(f"{path}: truncated IDX header")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise DataError(f"{path}: bad IDX magic number {magic} (expected {expected_magic})")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    n = 1
    for d in dims:
        n *= d
    if len(data) - offset != n:
        raise DataError(f"{path}: expected {n} bytes of data for shape {dims}, found "
                        f"{len(data) - offset} (truncated or corrupted)")
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).view(*dims)


def _locate(name: str, root: Optional[os.PathLike | str]) -> Path:
    base = data_root(root)
    rel = f"fashion-mnist/{name}"
    if (base / rel).is_file():
        return verify(base / rel, rel)
    if root is None and (DEBIAN_DIR / name).is_file():
        return verify(DEBIAN_DIR / name, rel)
    return ensure_file(base, rel, "fashion-mnist", "Fashion-MNIST")


def load_fashion_mnist(root: Optional[os.PathLike | str] = None, split: str = "train"):
    """Return ``(images uint8 (N, 28, 28), labels int64 (N,))`` for ``split`` train or test."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_name, lbl_name = _FILES[split]
    images = read_idx(_locate(img_name, root), 2051)
    labels = read_idx(_locate(lbl_name, root), 2049).long()
    if images.dim() != 3 or images.shape[0] != labels.shape[0]:
        raise DataError(f"Fashion-MNIST {split}: {tuple(images.shape)} images but "
                        f"{tuple(labels.shape)} labels")
    return images, labels


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, 28, 28) → float32 (N, 784) in [0, 1]."""
    return images.reshape(images.shape[0], -1).float().div_(255.0)
