"""Decode step: stepping selective_state_update through L positions equals selective_scan
(y and state), and the multi-step variant equals k single steps; torch/ref, and Triton (CUDA,
or CPU through the interpreter)."""

from __future__ import annotations

import os

import pytest
import torch

from seqmodels.kernels import (
    selective_scan,
    selective_state_update,
    selective_state_update_multi,
    selective_state_update_multi_ref,
    selective_state_update_ref,
)
from seqmodels.kernels.selective_scan.ref import step_bc_at

from .scan_cases import ScanCase, make_inputs

CASES = [
    ScanCase(length=9, b_layout="variable", c_layout="grouped", has_z=True, has_delta_bias=True, softplus=True,
             initial_state=True),
    ScanCase(complex=True, length=9, b_layout="grouped", c_layout="variable", has_z=True, initial_state=True),
    ScanCase(complex=True, complex_bc_dtype=True, length=6, b_layout="variable", c_layout="variable", has_D=False),
    ScanCase(dtype=torch.bfloat16, length=5, d_state=16, dim=12, groups=4, b_layout="grouped", c_layout="grouped",
             softplus=True),
]
IDS = ["real-z-bias-softplus", "complex-interleaved-grouped", "complex64-BC", "bf16-N16-grouped"]


def _impl_available(impl: str, device: torch.device) -> None:
    if impl == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton decode kernel on CPU needs TRITON_INTERPRET=1 at startup (tests/conftest.py)")


def _inputs(case: ScanCase, device: torch.device) -> dict:
    return {k: (None if v is None else v.detach()) for k, v in make_inputs(case, device).items()}


def _tol(case: ScanCase) -> dict:
    return dict(rtol=2e-2, atol=2e-2) if case.dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", ["torch", "ref", "triton"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stepping_equals_scan(case: ScanCase, impl: str, device: torch.device):
    _impl_available(impl, device)
    kw = _inputs(case, device)
    y_scan, last = selective_scan(**kw, delta_softplus=case.softplus, return_last_state=True, impl="ref")
    if kw["initial_state"] is not None:
        state = kw["initial_state"].clone()
    else:
        state = torch.zeros_like(last)
    step = selective_state_update_ref if impl == "ref" else selective_state_update
    extra = {} if impl == "ref" else {"impl": impl}
    ys = []
    for t in range(case.length):
        ys.append(
            step(
                state, kw["u"][..., t], kw["delta"][..., t], kw["A"],
                step_bc_at(kw["B"], t, case.complex), step_bc_at(kw["C"], t, case.complex),
                D=kw["D"], z=None if kw["z"] is None else kw["z"][..., t], dt_bias=kw["delta_bias"],
                dt_softplus=case.softplus, **extra,
            )
        )
    y_steps = torch.stack(ys, dim=-1)
    assert y_steps.dtype == y_scan.dtype
    torch.testing.assert_close(y_steps.float(), y_scan.float(), **_tol(case))
    torch.testing.assert_close(state, last, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", ["torch", "ref", "triton"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_multi_step_equals_single_steps(case: ScanCase, impl: str, device: torch.device):
    _impl_available(impl, device)
    kw = _inputs(case, device)
    h0 = torch.randn(kw["u"].shape[0], kw["u"].shape[1], case.d_state, device=device, dtype=kw["A"].dtype)
    args = dict(x=kw["u"], dt=kw["delta"], A=kw["A"], B=kw["B"], C=kw["C"], D=kw["D"], z=kw["z"],
                dt_bias=kw["delta_bias"], dt_softplus=case.softplus)
    state_multi = h0.clone()
    if impl == "ref":
        y_multi = selective_state_update_multi_ref(state_multi, **args)
    else:
        y_multi = selective_state_update_multi(state_multi, **args, impl=impl)
    state_single = h0.clone()
    ys = [
        selective_state_update_ref(
            state_single, kw["u"][..., t], kw["delta"][..., t], kw["A"],
            step_bc_at(kw["B"], t, case.complex), step_bc_at(kw["C"], t, case.complex),
            D=kw["D"], z=None if kw["z"] is None else kw["z"][..., t], dt_bias=kw["delta_bias"],
            dt_softplus=case.softplus,
        )
        for t in range(case.length)
    ]
    torch.testing.assert_close(y_multi.float(), torch.stack(ys, dim=-1).float(), **_tol(case))
    torch.testing.assert_close(state_multi, state_single, rtol=1e-4, atol=1e-4)


def test_state_update_advances_in_place_and_returns_new_tensor():
    kw = _inputs(ScanCase(length=1), torch.device("cpu"))
    state = torch.zeros(2, 6, 5)
    ptr = state.data_ptr()
    y = selective_state_update(state, kw["u"][..., 0], kw["delta"][..., 0], kw["A"], kw["B"][..., 0],
                               kw["C"][..., 0], impl="torch")
    assert state.data_ptr() == ptr and state.abs().sum() > 0
    assert y.shape == (2, 6)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kw = _inputs(ScanCase(length=3), torch.device("cpu"))
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        selective_state_update(torch.zeros(2, 6, 5), kw["u"][..., 0], kw["delta"][..., 0], kw["A"],
                               kw["B"][..., 0], kw["C"][..., 0], impl="triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_gpu_decode_kernel_realistic_size(complex_: bool):
    # Mamba-7M-like decode: batch 16, dim 512, N 16, 4 speculative positions.
    case = ScanCase(complex=complex_, batch=16, dim=512, d_state=16, groups=1, length=4, has_z=True,
                    has_delta_bias=True, softplus=True)
    kw = _inputs(case, torch.device("cuda"))
    h0 = torch.randn(16, 512, 16, device="cuda", dtype=kw["A"].dtype)
    args = dict(x=kw["u"], dt=kw["delta"], A=kw["A"], B=kw["B"], C=kw["C"], D=kw["D"], z=kw["z"],
                dt_bias=kw["delta_bias"], dt_softplus=True)
    s_tri, s_ref = h0.clone(), h0.clone()
    y_tri = selective_state_update_multi(s_tri, **args, impl="triton")
    y_ref = selective_state_update_multi_ref(s_ref, **args)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_tri, s_ref, rtol=1e-4, atol=1e-4)
