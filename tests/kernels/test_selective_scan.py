"""selective_scan (chunked torch path) against a float64 run of the reference: forward,
last_state and every gradient, over a pairwise-covering grid of options."""

from __future__ import annotations

import pytest
import torch

from seqmodels.kernels import selective_scan, selective_scan_ref
from seqmodels.kernels.selective_scan.checks import check_scan_args
from seqmodels.kernels.selective_scan.chunked import selective_scan_chunked

from .scan_cases import ScanCase, make_inputs, pairwise, to_float64
from .tolerance import assert_close

GRID = pairwise(
    {
        "length": [1, 7, 127, 1000],
        "complex": [False, True],
        "dtype": [torch.float32, torch.bfloat16, torch.float16],
        "b_layout": ["constant", "variable", "grouped"],
        "c_layout": ["constant", "variable", "grouped"],
        "has_D": [True, False],
        "has_z": [True, False],
        "has_delta_bias": [True, False],
        "softplus": [True, False],
        "initial_state": [True, False],
    }
)
CASES = [ScanCase(**row) for row in GRID]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def run_with_grads(fn, inputs: dict, case: ScanCase, seed: int = 1) -> dict:
    """Forward with return_last_state, backward of a random linear function of (y, last_state);
    returns y, last_state and the gradient of every tensor input."""
    y, last = fn(**inputs, delta_softplus=case.softplus, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device, y.dtype)
    last_r = torch.view_as_real(last) if last.is_complex() else last
    gs = torch.randn(last_r.shape, generator=g, dtype=torch.float64).to(last.device, last_r.dtype)
    loss = (y * gy).float().sum() + (last_r * gs).sum()
    leaves = [v for v in inputs.values() if v is not None]
    grads = torch.autograd.grad(loss, leaves)
    out = {"y": y, "last_state": last}
    names = [k for k, v in inputs.items() if v is not None]
    out.update({f"d{k}": gr for k, gr in zip(names, grads)})
    return out


def check_against_reference(fn, case: ScanCase, device: torch.device | str = "cpu", bf16_ulp: bool = False):
    inputs = make_inputs(case, device)
    tested = run_with_grads(fn, inputs, case)
    ref = run_with_grads(selective_scan_ref, inputs, case)
    ref64 = run_with_grads(selective_scan_ref, to_float64(inputs), case)
    assert set(tested) == set(ref64)
    for name in tested:
        assert_close(f"{case.id} {name}", tested[name], ref[name], ref64[name], bf16_ulp=bf16_ulp)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_torch_path_matches_float64_reference(case: ScanCase):
    check_against_reference(lambda **kw: selective_scan(**kw, impl="torch"), case)


def test_grid_covers_every_pair():
    # The grid above must exercise each option together with each other option at least once.
    assert len(CASES) < 40
    for a in ("complex", "dtype", "b_layout", "length"):
        for b in ("c_layout", "initial_state", "softplus", "has_z"):
            seen = {(row[a], row[b]) for row in GRID}
            assert len(seen) == len({r[a] for r in GRID}) * len({r[b] for r in GRID})


@pytest.mark.parametrize(
    "case",
    [ScanCase(complex=True, complex_bc_dtype=True, length=33, has_z=True, initial_state=True),
     ScanCase(complex=True, complex_bc_dtype=True, b_layout="grouped", c_layout="constant", length=20)],
    ids=["complex64-BC", "complex64-B-grouped"],
)
def test_complex_bc_tensors(case: ScanCase):
    check_against_reference(lambda **kw: selective_scan(**kw, impl="torch"), case)


def _closed_form(u, delta, A, B, C, D, h0):
    """y_t = sum_{s<=t} sum_n C_t exp(sum_{s<r<=t} delta_r A) delta_s B_s u_s + decayed h0: the
    scan written as a sum, not a recurrence; float64, B/C input-dependent (batch, N, L)."""
    L = u.shape[-1]
    cum = torch.cumsum(delta[..., None] * A[:, None, :], dim=2)  # (batch, dim, L, N): S_t
    y = torch.zeros(u.shape, dtype=cum.dtype)
    for t in range(L):
        decay = torch.exp(cum[:, :, t : t + 1] - cum[:, :, : t + 1])  # exp(S_t - S_s), s <= t
        x = (delta[:, :, : t + 1] * u[:, :, : t + 1])[..., None] * B[:, None, :, : t + 1].transpose(-1, -2)
        h = (decay * x).sum(2) + torch.exp(cum[:, :, t]) * h0
        y[:, :, t] = (h * C[:, None, :, t]).sum(-1)
    y = 2 * y.real if y.is_complex() else y
    return y + D[:, None] * u


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_reference_matches_closed_form(complex_: bool):
    # An independent check of the reference itself (which the other tests treat as ground truth).
    g = torch.Generator().manual_seed(3)
    b, d, n, L = 2, 3, 4, 9
    f = dict(dtype=torch.float64, generator=g)
    u, delta = torch.randn(b, d, L, **f), torch.rand(b, d, L, **f)
    A = -torch.rand(d, n, **f)
    B, C = torch.randn(b, n, L, **f), torch.randn(b, n, L, **f)
    if complex_:
        A = torch.complex(A, torch.randn(d, n, **f))
        B = torch.complex(B, torch.randn(b, n, L, **f))
        C = torch.complex(C, torch.randn(b, n, L, **f))
    h0 = torch.randn(b, d, n, **f).to(A.dtype)
    D = torch.randn(d, **f)
    y = selective_scan_ref(u, delta, A, B, C, D=D, initial_state=h0)
    torch.testing.assert_close(y, _closed_form(u, delta, A, B, C, D, h0), rtol=1e-10, atol=1e-10)


def test_interleaved_equals_complex_layout():
    # Real (.., 2L) interleaving real/imag parts is the same input as complex (.., L).
    case = ScanCase(complex=True, complex_bc_dtype=True, length=11)
    kw = {k: (v.detach() if v is not None else None) for k, v in make_inputs(case).items()}
    y_complex = selective_scan(**kw, impl="torch")
    kw["B"] = torch.view_as_real(kw["B"]).flatten(-2)
    kw["C"] = torch.view_as_real(kw["C"]).flatten(-2)
    torch.testing.assert_close(selective_scan(**kw, impl="torch"), y_complex)
    torch.testing.assert_close(selective_scan(**kw, impl="ref"), y_complex)


@pytest.mark.parametrize("chunk_len", [1, 3, 16, 50, 64])
def test_chunk_length_does_not_change_result(chunk_len: int):
    case = ScanCase(complex=True, length=50, initial_state=True, b_layout="grouped")
    kw = {k: (v.detach() if v is not None else None) for k, v in make_inputs(case).items()}
    s = check_scan_args(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], None, None, kw["initial_state"])
    args = (kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], None, None, False, True, kw["initial_state"])
    y, last = selective_scan_chunked(s, *args, chunk_len=chunk_len, block_elems=64)
    y_ref, last_ref = selective_scan_ref(*args)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, last_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_large_decay_stays_finite(complex_: bool):
    # |delta * A| up to ~800 per position: exp(+|S|) would overflow float32 many times over; the
    # segment-relative exponents of the chunked path never form it.
    g = torch.Generator().manual_seed(0)
    b, d, n, L = 1, 4, 8, 300
    u = torch.randn(b, d, L, generator=g)
    delta = torch.rand(b, d, L, generator=g) * 50
    A = -torch.linspace(1, 16, n).repeat(d, 1)
    if complex_:
        A = torch.complex(A, torch.randn(d, n, generator=g))
    B, C = torch.randn(b, n, 2 * L if complex_ else L, generator=g), torch.randn(b, n, 2 * L if complex_ else L, generator=g)
    leaves = [t.requires_grad_() for t in (u, delta, A, B, C)]
    y = selective_scan(u, delta, A, B, C, impl="torch")
    grads = torch.autograd.grad(y.sum(), leaves)
    y_ref = selective_scan_ref(*(t.detach().double() if not t.is_complex() else t.detach().to(torch.complex128)
                                 for t in (u, delta, A, B, C)))
    assert torch.isfinite(y).all() and all(torch.isfinite(gr).all() for gr in grads)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)


def test_impl_ref_dispatches_to_reference():
    kw = {k: (v.detach() if v is not None else None) for k, v in make_inputs(ScanCase(length=5)).items()}
    torch.testing.assert_close(selective_scan(**kw, impl="ref"), selective_scan_ref(**kw), rtol=0, atol=0)
    # On CPU, auto is the chunked torch path.
    torch.testing.assert_close(selective_scan(**kw, impl="auto"), selective_scan(**kw, impl="torch"), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize(
    "case",
    [
        ScanCase(dtype=torch.bfloat16, batch=2, dim=96, d_state=16, groups=1, length=2048, has_z=True,
                 has_delta_bias=True, softplus=True),
        ScanCase(dtype=torch.float16, batch=2, dim=96, d_state=16, groups=2, b_layout="grouped", c_layout="grouped",
                 length=1000, initial_state=True),
        ScanCase(complex=True, dtype=torch.float32, batch=2, dim=64, d_state=8, groups=1, length=4096, has_z=True),
        ScanCase(dtype=torch.float32, batch=1, dim=48, d_state=64, groups=1, b_layout="constant", length=777),
    ],
    ids=["bf16-real-2048", "fp16-grouped-1000", "fp32-complex-4096", "fp32-N64-constB-777"],
)
def test_gpu_matches_float64_reference(case: ScanCase, impl: str):
    check_against_reference(lambda **kw: selective_scan(**kw, impl=impl), case, device="cuda")
