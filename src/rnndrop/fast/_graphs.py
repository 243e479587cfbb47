"""Replay a whole per-step loop as one CUDA graph (launch overhead gone).

``call(kind, fn, inputs, use, **flags)`` runs ``fn(*inputs, **flags)`` through the graph of
``key(kind, *inputs, **flags)`` when ``use`` is true, and eagerly otherwise or when capture fails.
``run(key, fn, inputs)`` captures ``fn(*static_inputs)`` once per ``key`` (shapes, dtypes, flags)
on static buffers, then for every call copies the inputs in, replays the graph and returns clones
of the outputs (the static outputs are overwritten by the next replay, e.g. the next layer of the
same size). Any failure while capturing disables graphs for that key and the caller runs eagerly.
Turned on/off with ``rnndrop.fast.set_cuda_graphs(bool)`` or ``RNNDROP_FAST_CUDA_GRAPHS=0/1``.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import torch

_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_FAILED: set = set()
_MAX = 16
_ENABLED = [os.environ.get("RNNDROP_FAST_CUDA_GRAPHS", "1") not in ("0", "")]


def enabled() -> bool:
    return _ENABLED[0]


def set_enabled(flag: bool) -> None:
    _ENABLED[0] = bool(flag)


def clear() -> None:
    """Drop every cached graph and its static buffers."""
    _CACHE.clear()
    _FAILED.clear()


def cache_bytes() -> int:
    """Bytes held by the static input/output buffers of the cached graphs."""
    total = 0
    for _, static_in, static_out in _CACHE.values():
        total += sum(t.nbytes for t in list(static_in) + list(static_out) if t is not None)
    return total


def key(kind, *tensors, **flags):
    """One graph per loop kind, input shapes/dtypes/devices and flags."""
    return (kind,) + tuple(None if t is None else (tuple(t.shape), t.dtype, t.device)
                           for t in tensors) + tuple(sorted(flags.items()))


def call(kind, fn, inputs, use: bool, **flags):
    """``fn(*inputs, **flags)`` (a tuple), replayed as a cached graph when ``use`` and capture
    works for this key, else run eagerly."""
    res = None
    if use:
        res = run(key(kind, *inputs, **flags), lambda *a: fn(*a, **flags), inputs)
    return fn(*inputs, **flags) if res is None else res


def _clone(x):
    return None if x is None else x.clone()


def run(key, fn, inputs):
    """Returns the outputs of ``fn(*inputs)`` (a tuple) through a cached graph, or ``None`` when
    graphs can't be used for this key (the caller then runs ``fn`` itself)."""
    if key in _FAILED:
        return None
    entry = _CACHE.get(key)
    if entry is None:
        try:
            static_in = [_clone(x) for x in inputs]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn(*static_in)  # compiles kernels, warms cuBLAS
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = fn(*static_in)
            entry = (graph, static_in, static_out)
        except Exception as e:  # capture unsupported here: remember and run eagerly
            _FAILED.add(key)
            warnings.warn(f"rnndrop.fast: CUDA graph capture failed ({type(e).__name__}: {e}); "
                          "running the loop eagerly", RuntimeWarning, stacklevel=4)
            return None
        _CACHE[key] = entry
        while len(_CACHE) > _MAX:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    graph, static_in, static_out = entry
    for s, x in zip(static_in, inputs):
        if x is not None:
            s.copy_(x)
    graph.replay()
    return tuple(_clone(o) for o in static_out)
