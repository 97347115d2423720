"""Bad inputs raise a ValueError naming the argument, before any computation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from seqmodels.kernels import MAX_D_STATE, selective_scan, selective_state_update, selective_state_update_multi

b, d, n, L = 2, 6, 4, 5


def good(complex_: bool = False) -> dict:
    kw = dict(u=torch.randn(b, d, L), delta=torch.rand(b, d, L), A=-torch.rand(d, n),
              B=torch.randn(b, n, L), C=torch.randn(b, n, L))
    if complex_:
        kw["A"] = torch.complex(kw["A"], torch.randn(d, n))
        kw["B"], kw["C"] = torch.randn(b, n, 2 * L), torch.randn(b, 3, n, 2 * L)
    return kw


BAD = [
    ("u-2d", "u", dict(u=torch.randn(d, L))),
    ("u-int", "u", dict(u=torch.ones(b, d, L, dtype=torch.int64))),
    ("delta-shape", "delta", dict(delta=torch.rand(b, d, L + 1))),
    ("delta-dtype", "delta", dict(delta=torch.rand(b, d, L, dtype=torch.float16))),
    ("A-dim", "A", dict(A=-torch.rand(d + 1, n))),
    ("A-int", "A", dict(A=torch.ones(d, n, dtype=torch.int32))),
    ("A-N-too-large", "A", dict(A=-torch.rand(d, MAX_D_STATE + 1), B=torch.randn(b, MAX_D_STATE + 1, L),
                               C=torch.randn(b, MAX_D_STATE + 1, L))),
    ("B-length", "B", dict(B=torch.randn(b, n, L - 1))),
    ("B-N", "B", dict(B=torch.randn(b, n + 1, L))),
    ("B-groups", "B", dict(B=torch.randn(b, 4, n, L))),
    ("B-complex-for-real-A", "B", dict(B=torch.randn(b, n, L, dtype=torch.complex64))),
    ("C-const-shape", "C", dict(C=torch.randn(d, n + 1))),
    ("C-5d", "C", dict(C=torch.randn(b, 1, 1, n, L))),
    ("D-shape", "D", dict(D=torch.randn(d + 1))),
    ("z-shape", "z", dict(z=torch.randn(b, d, L + 2))),
    ("delta_bias-shape", "delta_bias", dict(delta_bias=torch.randn(1, d))),
    ("initial_state-shape", "initial_state", dict(initial_state=torch.randn(b, d, n + 1))),
    ("initial_state-complex", "initial_state", dict(initial_state=torch.randn(b, d, n, dtype=torch.complex64))),
    ("impl-name", "impl", dict(impl="cuda")),
    ("float64-triton", "u", dict(u=torch.randn(b, d, L, dtype=torch.float64),
                                 delta=torch.rand(b, d, L, dtype=torch.float64), impl="triton")),
]


@pytest.mark.parametrize("arg,changes", [(a, c) for _, a, c in BAD], ids=[i for i, _, _ in BAD])
def test_bad_scan_argument_is_named(arg: str, changes: dict, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so the float64 row fails on dtype, not on device
    kw = good() | changes
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        selective_scan(**kw)


@pytest.mark.parametrize(
    "arg,changes",
    [("B", dict(B=torch.randn(b, n, 2 * L + 1))), ("C", dict(C=torch.randn(b, 3, n, 2 * L - 1)))],
    ids=["B-odd-interleaved", "C-odd-interleaved"],
)
def test_complex_odd_interleaved_axis(arg: str, changes: dict):
    with pytest.raises(ValueError, match=rf"^{arg}:.*odd"):
        selective_scan(**(good(complex_=True) | changes))


def test_mixed_devices_are_refused():
    kw = good()
    kw["C"] = kw["C"].to("meta")
    with pytest.raises(ValueError, match="^C:.*device"):
        selective_scan(**kw)


def test_validation_runs_before_computation(monkeypatch):
    # A bad argument at the end of the list must fail before the scan touches the good ones.
    calls = []
    monkeypatch.setattr(torch, "exp", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="^initial_state:"):
        selective_scan(**good(), initial_state=torch.randn(3), impl="torch")
    assert not calls


STEP_BAD = [
    ("state-int", "state", dict(state=torch.zeros(b, d, n, dtype=torch.int32))),
    ("x-shape", "x", dict(x=torch.randn(b, d + 1))),
    ("dt-shape", "dt", dict(dt=torch.randn(b))),
    ("A-shape", "A", dict(A=-torch.rand(d, n + 1))),
    ("A-complex-real-state", "A", dict(A=torch.randn(d, n, dtype=torch.complex64))),
    ("B-groups", "B", dict(B=torch.randn(b, 4, n))),
    ("C-N", "C", dict(C=torch.randn(b, n + 2))),
    ("z-shape", "z", dict(z=torch.randn(b, d, 1))),
    ("dt_bias-shape", "dt_bias", dict(dt_bias=torch.randn(d, 1))),
]


@pytest.mark.parametrize("arg,changes", [(a, c) for _, a, c in STEP_BAD], ids=[i for i, _, _ in STEP_BAD])
def test_bad_step_argument_is_named(arg: str, changes: dict):
    kw = dict(state=torch.zeros(b, d, n), x=torch.randn(b, d), dt=torch.rand(b, d), A=-torch.rand(d, n),
              B=torch.randn(b, n), C=torch.randn(b, n)) | changes
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        selective_state_update(**kw)


def test_bad_multi_step_arguments():
    state = torch.zeros(b, d, n, dtype=torch.complex64)
    A = torch.complex(-torch.rand(d, n), torch.randn(d, n))
    x, dt = torch.randn(b, d, 3), torch.rand(b, d, 3)
    with pytest.raises(ValueError, match="^B:.*odd"):
        selective_state_update_multi(state, x, dt, A, torch.randn(b, n, 5), torch.randn(b, n, 6))
    with pytest.raises(ValueError, match="^C:"):
        selective_state_update_multi(state, x, dt, A, torch.randn(b, n, 6), torch.randn(b, n, 3, 6))
    with pytest.raises(ValueError, match="^B:.*odd"):
        selective_state_update(state, x[..., 0], dt[..., 0], A, torch.randn(b, 2 * n + 1), torch.randn(b, 2 * n))


def test_kernels_do_not_import_lightning():
    code = "import sys, seqmodels.kernels; assert not any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
