"""Spectral norms of ``W_hh`` and exact products of per-step Jacobians ``‖∂s_T/∂s_t‖``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._rerun import (GATE_NAMES, _as_tuple, _cell_init, _is_stack, _layer_params, _like,
                     _make_step, _prepare, _run_stack, _spec)


def spectral_norm(W: Tensor, iters: int = 100, tol: float = 1e-12) -> float:
    """Largest singular value ``σ_max(W) = ‖W‖₂`` by power iteration on ``WᵀW``.

    Works in float64 from a fixed pseudo-random start (reproducible, global RNG untouched) and
    stops after ``iters`` iterations or when ``σ`` changes by less than ``tol`` relatively. The
    error of ``σ`` decays like ``(σ₂/σ₁)^(2·iters)``. Tensors with more than 2 dims are viewed
    as ``(shape[0], -1)``, as ``torch.nn.utils.spectral_norm`` does.
    """
    W = W.detach()
    if W.dim() == 1:
        return float(W.double().norm())
    W = W.reshape(W.shape[0], -1).to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(W.shape[1], generator=gen, dtype=torch.float64).to(W.device)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(max(int(iters), 1)):
        u = W @ v
        new_sigma = float(u.norm())
        if new_sigma == 0.0:
            return 0.0
        v = W.t() @ (u / new_sigma)
        v = v / v.norm()
        if abs(new_sigma - sigma) <= tol * new_sigma:
            sigma = new_sigma
            break
        sigma = new_sigma
    return float((W @ v).norm())


def gate_names(G: int) -> tuple:
    """Names of the ``G`` gate blocks of a ``weight_hh``: LSTM ``i f g o``, GRU ``r z n``."""
    return {4: GATE_NAMES["LSTM"], 3: GATE_NAMES["GRU"]}.get(G, tuple(str(g) for g in range(G)))


def spectral_norms(module: torch.nn.Module, per_gate: bool = False, iters: int = 100) -> dict[str, float]:
    """``{name: σ_max}`` for every parameter of ``module`` (recursively) whose name contains
    ``weight_hh``. With ``per_gate`` the ``(G·H, H)`` matrix is split into its ``G`` square gate
    blocks, named ``name.i`` … (LSTM ``i, f, g, o``; GRU ``r, z, n``)."""
    out = {}
    for name, p in module.named_parameters():
        if "weight_hh" not in name:
            continue
        if per_gate and p.dim() == 2 and p.shape[0] % p.shape[1] == 0 and p.shape[0] > p.shape[1]:
            G = p.shape[0] // p.shape[1]
            for g, block in zip(gate_names(G), p.detach().chunk(G, dim=0)):
                out[f"{name}.{g}"] = spectral_norm(block, iters)
        else:
            out[name] = spectral_norm(p, iters)
    return out


def _matrix_norm(P: Tensor, norm: str) -> float:
    if norm == "spectral":
        return float(torch.linalg.matrix_norm(P, ord=2))
    return float(torch.linalg.matrix_norm(P, ord="fro"))


def jacobian_products(model, x: Tensor, h0=None, *, layer: int = 0, norm: str = "spectral",
                      part: str = "full", activation: Optional[str] = None) -> Tensor:
    """Exact ``‖∂s_T/∂s_t‖`` for ``t = 0 … T`` along the trajectory of ``x``.

    ``s_t`` is the recurrent state after step ``t`` (``s_0`` the initial state): ``h_t`` for an
    RNN/GRU, ``[h_t; c_t]`` (size ``2H``) for an LSTM. Each step's Jacobian
    ``J_k = ∂s_k/∂s_{k-1}`` (``diag(f'(z_k)) W_hh`` for an Elman RNN) is computed with
    ``torch.autograd.functional.jacobian`` for one sample at a time and
    ``∂s_T/∂s_t = J_T J_{T-1} ⋯ J_{t+1}`` multiplied from the end. Meant for small models: it
    costs ``T·B`` Jacobians of size ``S×S``.

    ``model``: a recurrent stack (``x`` and ``h0`` as for its ``forward``; ``layer`` picks the
    layer, the ones below run first to make its input) or a cell ``cell(x_t, state) -> state``
    (``x`` time-major ``(T, I)`` or ``(T, B, I)``; ``h0`` unbatched or batched state).
    ``norm``: ``"spectral"`` (largest singular value) or ``"fro"``. ``part``: ``"full"`` state or
    ``"h"``, the ``∂h_T/∂h_t`` block (for an LSTM: with ``c_t`` held fixed).

    Returns ``(T + 1,)`` for an unbatched ``x``, else ``(B, T + 1)``; entry ``t`` is
    ``‖∂s_T/∂s_t‖`` (entry ``T`` is ``‖I‖``: 1 spectral, ``√S`` Frobenius).
    """
    if norm not in ("spectral", "fro"):
        raise ValueError(f"norm must be 'spectral' or 'fro', got {norm!r}")
    if part not in ("full", "h"):
        raise ValueError(f"part must be 'full' or 'h', got {part!r}")
    if _is_stack(model):
        spec = _spec(model, activation)
        if not 0 <= layer < spec.num_layers:
            raise ValueError(f"layer must be in [0, {spec.num_layers}), got {layer}")
        unbatched = x.dim() == 2
        with torch.no_grad():
            _, _, _, layer_inputs = _run_stack(model, x, h0, activation, until_layer=layer)
        _, states, _ = _prepare(model, spec, x, h0)
        seq = layer_inputs[layer].detach()                        # (T, B, I_k)
        init = tuple(s.detach() for s in states[layer])           # each (B, H)
        step_k = _make_step(spec, *_layer_params(model, layer))
        step = lambda x_t, st: step_k(x_t, st)[0]
    else:
        if activation is not None:
            raise ValueError("activation= applies to recurrent stacks, not to cells")
        unbatched = x.dim() == 2
        seq = x.unsqueeze(1) if unbatched else x
        st0 = _cell_init(model, h0, seq.shape[1], seq)
        init = tuple(s.detach() for s in _as_tuple(st0))
        if unbatched and h0 is not None:
            init = tuple(s.unsqueeze(0) for s in init)
        step = lambda x_t, st: _as_tuple(model(x_t, _like(st0, st)))
    T, B = seq.shape[0], seq.shape[1]
    sizes = [s.shape[-1] for s in init]
    H = sizes[0]
    S = sum(sizes)

    def flat_step(x_t: Tensor, s: Tensor) -> Tensor:
        parts = tuple(p.unsqueeze(0) for p in s.split(sizes))
        return torch.cat([p[0] for p in step(x_t.unsqueeze(0), parts)])

    result = torch.zeros(B, T + 1, dtype=torch.float64)
    for b in range(B):
        s = torch.cat([p[b] for p in init])
        jacs = []
        with torch.enable_grad():
            for t in range(T):
                x_t = seq[t, b]
                J = torch.autograd.functional.jacobian(lambda s_: flat_step(x_t, s_), s)
                jacs.append(J.detach().to(torch.float64))
                with torch.no_grad():
                    s = flat_step(x_t, s)
        P = torch.eye(S, dtype=torch.float64, device=s.device)
        pick = (lambda M: M[:H, :H]) if part == "h" else (lambda M: M)
        result[b, T] = _matrix_norm(pick(P), norm)
        for t in range(T, 0, -1):
            P = P @ jacs[t - 1]
            result[b, t - 1] = _matrix_norm(pick(P), norm)
    return result[0] if unbatched else result
