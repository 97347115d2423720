"""Plain PyTorch references for the selective scan and the decode step: one position at a time.

Short and sequential on purpose; autograd through the torch ops gives the gradients. The fused
and chunked implementations are tested against a float64 run of these functions.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import ScanShapes, check_scan_args, check_step_args

SCAN_DOC = """
    Shapes (batch, dim = channels D, L = length, N = state size, G = groups):
        u, delta, z: (batch, dim, L). A: (dim, N), float32 (real scan) or complex64 (complex scan).
        B, C: constant (dim, N); input-dependent (batch, N, L); or grouped (batch, G, N, L), where
            channel d reads group d // (dim // G). In a complex scan, input-dependent B / C are
            either complex (.., L) or real (.., 2L) with real and imaginary parts interleaved
            along the last axis; constant B / C are complex (dim, N).
        D, delta_bias: (dim,). initial_state: (batch, dim, N), real or complex like A.
    Returns y: (batch, dim, L) in the dtype of u, and with ``return_last_state`` also
        last_state: (batch, dim, N), float32 or complex64, the state after position L - 1.

    Recurrence (arithmetic in float32; float64 when u is float64), per channel d and state n:
        delta = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
        h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,  h_{-1} = initial_state or 0
        y_t = sum_n C_t[n] * h_t[n]   (a complex scan takes 2 * Re(...)),  then y_t += D * u_t
        y *= silu(z) when z is given.
    These are the conventions of state-spaces/mamba's ``selective_scan_fn``; gradients flow into
    every tensor argument, including ``initial_state``, and through ``last_state``.
"""

STEP_DOC = """
    Shapes (batch, dim = channels D, N = state size, G = groups; k = steps of the multi-step variant):
        state: (batch, dim, N), float32 or complex64; advanced in place.
        x, dt, z: (batch, dim) [multi-step: (batch, dim, k)]. A: (dim, N) real or complex like state.
        B, C: (batch, N) or (batch, G, N) [multi-step: (batch, N, k) or (batch, G, N, k)]; complex
            steps take complex tensors or real ones interleaving real and imaginary parts along the
            last axis: (batch, [G,] 2N) [multi-step: (batch, [G,] N, 2k)].
        D, dt_bias: (dim,).
    Returns y: (batch, dim) [multi-step: (batch, dim, k)] in the dtype of x.
    One step of the ``selective_scan`` recurrence (same conventions), starting from ``state``.
"""

_F = TypeVar("_F", bound=Callable)


def with_doc(summary: str, shared: str) -> Callable[[_F], _F]:
    """Give a function a one-paragraph summary followed by the shared shape docstring."""

    def wrap(fn: _F) -> _F:
        fn.__doc__ = summary + "\n" + shared
        return fn

    return wrap


def compute_dtypes(x: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) dtype of the arithmetic: float64 only when the inputs are float64."""
    if x.dtype == torch.float64:
        return torch.float64, torch.complex128
    return torch.float32, torch.complex64


def prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, rdt: torch.dtype) -> Tensor:
    """(batch, dim, L) step sizes after bias and softplus, in the compute dtype."""
    delta = delta.to(rdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(rdt)[:, None]
    if delta_softplus:
        # softplus(x) = log1p(exp(x)), linear above 20 (torch's threshold, also mamba's).
        delta = F.softplus(delta)
    return delta


def bc_operand(X: Tensor, layout: str, is_complex: bool, rdt: torch.dtype, cdt: torch.dtype) -> Tensor:
    """B or C in the compute dtype: constant (dim, N), or (batch, G, N, L) for the other layouts;
    a real interleaved (.., 2L) tensor becomes complex (.., L)."""
    if layout == "variable":
        X = X.unsqueeze(1)
    if not is_complex:
        return X.to(rdt)
    if X.is_complex():
        return X.to(cdt)
    # torch.complex of the strided halves is differentiable and needs no contiguity.
    return torch.complex(X[..., 0::2].to(rdt), X[..., 1::2].to(rdt))


def expand_groups(X: Tensor, dim: int) -> Tensor:
    """(batch, G, N, ...) -> (batch, dim, N, ...): channel d reads group d // (dim // G)."""
    return X.repeat_interleave(dim // X.shape[1], dim=1)


def _scan_ref(
    s: ScanShapes,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
    initial_state: Tensor | None,
) -> Tensor | tuple[Tensor, Tensor]:
    rdt, cdt = compute_dtypes(u)
    sdt = cdt if s.is_complex else rdt
    uc = u.to(rdt)
    dt = prepare_delta(delta, delta_bias, delta_softplus, rdt)
    A = A.to(sdt)
    B = bc_operand(B, s.b_layout, s.is_complex, rdt, cdt)
    C = bc_operand(C, s.c_layout, s.is_complex, rdt, cdt)
    if B.dim() == 4:
        B = expand_groups(B, s.dim)  # (batch, dim, N, L)
    if C.dim() == 4:
        C = expand_groups(C, s.dim)
    if initial_state is None:
        h = torch.zeros(s.batch, s.dim, s.d_state, dtype=sdt, device=u.device)
    else:
        h = initial_state.to(sdt)
    # unbind, not indexing per position: its backward is one stack instead of L full-size scatters.
    dts, dus = dt.unbind(-1), (dt * uc).unbind(-1)
    Bs = [B] * s.length if B.dim() == 2 else B.unbind(-1)  # (dim, N) or (batch, dim, N) each
    Cs = [C] * s.length if C.dim() == 2 else C.unbind(-1)
    ys = []
    for dt_t, du_t, B_t, C_t in zip(dts, dus, Bs, Cs):
        h = torch.exp(dt_t[..., None] * A) * h + du_t[..., None] * B_t
        y_t = (h * C_t).sum(-1)  # (batch, dim)
        ys.append(2 * y_t.real if s.is_complex else y_t)
    y = torch.stack(ys, dim=-1)  # (batch, dim, L)
    if D is not None:
        y = y + D.to(rdt)[:, None] * uc
    if z is not None:
        y = y * F.silu(z.to(rdt))
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y


@with_doc("Selective scan, plain PyTorch reference: one position at a time (slow; for tests).", SCAN_DOC)
def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    s = check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    return _scan_ref(s, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)


def step_bc(X: Tensor, dim: int, is_complex: bool, rdt: torch.dtype, cdt: torch.dtype) -> Tensor:
    """Decode-step B or C (batch, [G,] N) / interleaved (batch, [G,] 2N) -> (batch, dim, N)."""
    if is_complex and not X.is_complex():
        X = torch.complex(X[..., 0::2].to(rdt), X[..., 1::2].to(rdt))
    X = X.to(cdt if is_complex else rdt)
    if X.dim() == 2:
        return X[:, None, :]  # broadcasts over dim
    return X.repeat_interleave(dim // X.shape[1], dim=1)


def _step_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    dt_softplus: bool,
) -> Tensor:
    """One position; ``state`` is advanced in place. x, dt, z: (batch, dim); B, C: (batch, [G,] N|2N)."""
    rdt, cdt = compute_dtypes(x)
    is_complex = state.is_complex()
    xc = x.to(rdt)
    delta = prepare_delta(dt[..., None], dt_bias, dt_softplus, rdt)[..., 0]  # (batch, dim)
    dim = state.shape[1]
    B = step_bc(B, dim, is_complex, rdt, cdt)
    C = step_bc(C, dim, is_complex, rdt, cdt)
    h = state.to(cdt if is_complex else rdt)
    h = torch.exp(delta[..., None] * A.to(h.dtype)) * h + (delta * xc)[..., None] * B
    state.copy_(h)
    y = (h * C).sum(-1)
    if is_complex:
        y = 2 * y.real
    if D is not None:
        y = y + D.to(rdt) * xc
    if z is not None:
        y = y * F.silu(z.to(rdt))
    return y.to(x.dtype)


@with_doc("Decode step, plain PyTorch reference: advance ``state`` by one position.", STEP_DOC)
def selective_state_update_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, multi=False)
    return _step_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


def step_bc_at(X: Tensor, t: int, is_complex: bool) -> Tensor:
    """Position t of a multi-step B / C (batch, [G,] N, k) or interleaved (batch, [G,] N, 2k),
    in the single-step layout (batch, [G,] N) or interleaved (batch, [G,] 2N)."""
    if is_complex and not X.is_complex():
        return X[..., 2 * t : 2 * t + 2].flatten(-2)
    return X[..., t]


def _multi_step_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    dt_softplus: bool,
) -> Tensor:
    is_complex = state.is_complex()
    ys = [
        _step_ref(
            state, x[..., t], dt[..., t], A, step_bc_at(B, t, is_complex), step_bc_at(C, t, is_complex),
            D, None if z is None else z[..., t], dt_bias, dt_softplus,
        )
        for t in range(x.shape[-1])
    ]
    return torch.stack(ys, dim=-1)


@with_doc("Multi-step decode, plain PyTorch reference: advance ``state`` by k positions.", STEP_DOC)
def selective_state_update_multi_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, multi=True)
    return _multi_step_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
