"""Argument validation for the selective scan and the decode step, in one place.

Every public entry point calls these checks before any computation, so a bad argument raises a
``ValueError`` that names it and the expected shape. The checks read only shapes, dtypes and
devices: no host synchronisation, so they are safe inside CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .._triton_env import check_triton_device

# Largest state size N the kernels support. The Triton kernels keep a [channels, N] state tile
# in registers; beyond 256 that tile no longer fits. The PyTorch paths share the limit so that
# every impl accepts the same inputs.
MAX_D_STATE = 256

Impl = Literal["auto", "triton", "torch", "ref"]
IMPLS = ("auto", "triton", "torch", "ref")

_REAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128)
# The Triton kernels compute in float32; float64 runs only through the PyTorch paths.
_TRITON_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class ScanShapes:
    """Sizes of a validated scan call.

    ``b_layout`` / ``c_layout``: ``"constant"`` (dim, N), ``"variable"`` (batch, N, L') or
    ``"grouped"`` (batch, G, N, L'), where L' is L, or 2L for a real tensor that interleaves the
    real and imaginary parts of a complex scan.
    """

    batch: int
    dim: int
    length: int
    d_state: int
    is_complex: bool
    b_layout: str
    c_layout: str
    b_groups: int
    c_groups: int


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_tensor(name: str, t: Tensor, ndims: tuple[int, ...], allow_complex: bool = False) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    allowed = _REAL_FLOATS + (_COMPLEX if allow_complex else ())
    if t.dtype not in allowed:
        kinds = "floating-point or complex" if allow_complex else "floating-point"
        raise ValueError(f"{name}: expected a {kinds} tensor, got dtype {t.dtype}")
    if t.dim() not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))} dimensions, got shape {_fmt(tuple(t.shape))}")


def _check_shape(name: str, t: Tensor, expected: tuple, what: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {what} = {_fmt(expected)}, got {_fmt(tuple(t.shape))}")


def _check_devices(named: dict[str, Tensor | None]) -> None:
    ref_name, ref_dev = None, None
    for name, t in named.items():
        if t is None:
            continue
        if ref_dev is None:
            ref_name, ref_dev = name, t.device
        elif t.device != ref_dev:
            raise ValueError(f"{name}: is on {t.device} but {ref_name} is on {ref_dev}; all tensors must share one device")


def _bc_layout(
    name: str, t: Tensor, *, batch: int, dim: int, d_state: int, length: int, is_complex: bool, step: bool
) -> tuple[str, int]:
    """Layout and group count of B or C. ``length`` is L (scan) or k (multi-step decode)."""
    L_name = "k" if step else "L"
    if t.dim() == 2 and not step:
        _check_shape(name, t, (dim, d_state), "(dim, N)")
        if t.is_complex() != is_complex:
            kind = "complex" if is_complex else "real"
            raise ValueError(f"{name}: a constant {name} must be {kind} like A, got dtype {t.dtype}")
        return "constant", 1
    if t.dim() not in (3, 4):
        expected = f"(batch, N, {L_name}) or (batch, G, N, {L_name})"
        if not step:
            expected = f"(dim, N), {expected}"
        raise ValueError(f"{name}: expected shape {expected}, got {_fmt(tuple(t.shape))}")
    if t.is_complex() and not is_complex:
        raise ValueError(f"{name}: got a complex tensor but A is real")
    groups = 1 if t.dim() == 3 else t.shape[1]
    if groups < 1 or dim % groups != 0:
        raise ValueError(f"{name}: the group axis G = {groups} must divide dim = {dim}")
    last = length
    interleaved = is_complex and not t.is_complex()
    if interleaved:
        if t.shape[-1] % 2 != 0:
            raise ValueError(
                f"{name}: a complex scan needs a real {name} whose last axis interleaves real and imaginary "
                f"parts, of even length 2*{L_name} = {2 * length}, got odd length {t.shape[-1]}"
            )
        last = 2 * length
    lead = (batch,) if t.dim() == 3 else (batch, groups)
    expected = lead + (d_state, last)
    what = f"(batch, N, {'2*' if interleaved else ''}{L_name})" if t.dim() == 3 else (
        f"(batch, G, N, {'2*' if interleaved else ''}{L_name})"
    )
    _check_shape(name, t, expected, what)
    return ("variable" if t.dim() == 3 else "grouped"), groups


def check_impl(impl: str, device: torch.device, dtypes: dict[str, torch.dtype]) -> str:
    """Resolve ``impl`` ("auto" -> "triton" on CUDA, "torch" otherwise) and check it can run here."""
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if impl == "triton":
        check_triton_device(device)
        for name, dt in dtypes.items():
            if dt not in _TRITON_FLOATS + (torch.complex64,):
                raise ValueError(
                    f"{name}: impl='triton' supports float16, bfloat16 and float32 inputs (complex64 for complex), "
                    f"got {dt}; use impl='torch' or 'ref' for float64"
                )
    return impl


def check_scan_args(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> ScanShapes:
    """Validate the arguments of ``selective_scan``; raise ``ValueError`` naming the first bad one."""
    _check_tensor("u", u, (3,))
    batch, dim, length = u.shape
    if length < 1:
        raise ValueError(f"u: the length axis must be at least 1, got shape {_fmt(tuple(u.shape))}")
    _check_tensor("delta", delta, (3,))
    _check_shape("delta", delta, (batch, dim, length), "(batch, dim, L)")
    if delta.dtype != u.dtype:
        raise ValueError(f"delta: must have the dtype of u ({u.dtype}), got {delta.dtype}")
    _check_tensor("A", A, (2,), allow_complex=True)
    if A.dtype not in (torch.float32, torch.float64) + _COMPLEX:
        raise ValueError(f"A: expected float32/float64 or complex64/complex128, got {A.dtype}")
    if A.shape[0] != dim:
        raise ValueError(f"A: expected shape (dim, N) with dim = {dim}, got {_fmt(tuple(A.shape))}")
    d_state = A.shape[1]
    if not 1 <= d_state <= MAX_D_STATE:
        raise ValueError(f"A: the state size N = {d_state} must be between 1 and MAX_D_STATE = {MAX_D_STATE}")
    is_complex = A.is_complex()
    _check_tensor("B", B, (2, 3, 4), allow_complex=True)
    _check_tensor("C", C, (2, 3, 4), allow_complex=True)
    common = dict(batch=batch, dim=dim, d_state=d_state, length=length, is_complex=is_complex, step=False)
    b_layout, b_groups = _bc_layout("B", B, **common)
    c_layout, c_groups = _bc_layout("C", C, **common)
    if D is not None:
        _check_tensor("D", D, (1,))
        _check_shape("D", D, (dim,), "(dim,)")
    if z is not None:
        _check_tensor("z", z, (3,))
        _check_shape("z", z, (batch, dim, length), "(batch, dim, L)")
        if z.dtype != u.dtype:
            raise ValueError(f"z: must have the dtype of u ({u.dtype}), got {z.dtype}")
    if delta_bias is not None:
        _check_tensor("delta_bias", delta_bias, (1,))
        _check_shape("delta_bias", delta_bias, (dim,), "(dim,)")
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, (3,), allow_complex=True)
        _check_shape("initial_state", initial_state, (batch, dim, d_state), "(batch, dim, N)")
        if initial_state.is_complex() != is_complex:
            kind = "complex" if is_complex else "real"
            raise ValueError(f"initial_state: must be {kind} like A, got dtype {initial_state.dtype}")
    _check_devices(dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state))
    return ScanShapes(batch, dim, length, d_state, is_complex, b_layout, c_layout, b_groups, c_groups)


def check_step_args(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    multi: bool,
) -> ScanShapes:
    """Validate the arguments of ``selective_state_update`` (``multi=False``: x (batch, dim), B (batch, [G,] N))
    or of ``selective_state_update_multi`` (x (batch, dim, k), B (batch, [G,] N, k))."""
    _check_tensor("state", state, (3,), allow_complex=True)
    batch, dim, d_state = state.shape
    if state.dtype not in (torch.float32, torch.float64) + _COMPLEX:
        raise ValueError(f"state: expected float32/float64 or complex64/complex128, got {state.dtype}")
    _check_tensor("x", x, (3,) if multi else (2,))
    if multi:
        k = x.shape[-1]
        if k < 1:
            raise ValueError(f"x: the step axis k must be at least 1, got shape {_fmt(tuple(x.shape))}")
        xshape, xwhat = (batch, dim, k), "(batch, dim, k)"
    else:
        k = 1
        xshape, xwhat = (batch, dim), "(batch, dim)"
    _check_shape("x", x, xshape, xwhat)
    _check_tensor("dt", dt, (len(xshape),))
    _check_shape("dt", dt, xshape, xwhat)
    if dt.dtype != x.dtype:
        raise ValueError(f"dt: must have the dtype of x ({x.dtype}), got {dt.dtype}")
    _check_tensor("A", A, (2,), allow_complex=True)
    _check_shape("A", A, (dim, d_state), "(dim, N)")
    if A.is_complex() != state.is_complex():
        raise ValueError(f"A: must be complex exactly when state is complex, got A {A.dtype} and state {state.dtype}")
    if not 1 <= d_state <= MAX_D_STATE:
        raise ValueError(f"state: the state size N = {d_state} must be between 1 and MAX_D_STATE = {MAX_D_STATE}")
    is_complex = A.is_complex()
    layouts = []
    for name, t in (("B", B), ("C", C)):
        _check_tensor(name, t, (3, 4) if multi else (2, 3), allow_complex=True)
        # The single step has no length axis: add one so both variants share the scan's layout rules.
        tt = t if multi else _with_step_axis(name, t, is_complex)
        layouts.append(
            _bc_layout(name, tt, batch=batch, dim=dim, d_state=d_state, length=k, is_complex=is_complex, step=True)
        )
    if D is not None:
        _check_tensor("D", D, (1,))
        _check_shape("D", D, (dim,), "(dim,)")
    if z is not None:
        _check_tensor("z", z, (len(xshape),))
        _check_shape("z", z, xshape, xwhat)
    if dt_bias is not None:
        _check_tensor("dt_bias", dt_bias, (1,))
        _check_shape("dt_bias", dt_bias, (dim,), "(dim,)")
    _check_devices(dict(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias))
    (b_layout, b_groups), (c_layout, c_groups) = layouts
    return ScanShapes(batch, dim, k, d_state, is_complex, b_layout, c_layout, b_groups, c_groups)


def _with_step_axis(name: str, t: Tensor, is_complex: bool) -> Tensor:
    """(batch, [G,] N) -> (batch, [G,] N, 1); real interleaved (batch, [G,] 2N) -> (batch, [G,] N, 2)."""
    if is_complex and not t.is_complex():
        if t.shape[-1] % 2 != 0:
            raise ValueError(
                f"{name}: a complex step needs a real {name} of shape (batch, [G,] 2*N) interleaving real and "
                f"imaginary parts, got odd last axis {t.shape[-1]}"
            )
        return t.unflatten(-1, (t.shape[-1] // 2, 2))
    return t.unsqueeze(-1)
