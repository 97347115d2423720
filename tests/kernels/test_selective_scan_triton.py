"""The fused Triton selective scan against the sequential reference, forward and every gradient.

On a CPU-only machine the kernels run through the Triton interpreter (``TRITON_INTERPRET=1``,
set by tests/conftest.py before any kernel module is imported); rows marked ``gpu`` use realistic
sizes and run only where CUDA is present. Each row compares y, last_state and the gradients of
every input with ``assert_close``: the error against a float64 reference may be at most twice the
error of the reference run in the row's dtype, plus a small floor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

if not torch.cuda.is_available():
    # Triton picks interpreter or compiler when a kernel is decorated, i.e. at import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from seqmodels.kernels.selective_scan import selective_scan_ref  # noqa: E402
from seqmodels.kernels.selective_scan.triton_scan import selective_scan_triton  # noqa: E402
from tests.kernels.tolerance import assert_close  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Case:
    batch: int
    dim: int
    dstate: int
    L: int
    chunk: int | None
    complex: bool = False
    dtype: str = "fp32"
    b: str = "var"  # "const" | "var" | "group"
    c: str = "var"
    groups: int = 2
    has_D: bool = True
    has_z: bool = True
    has_bias: bool = True
    softplus: bool = True
    has_init: bool = False
    last: bool = True
    bc_complex: bool = False  # variable B/C of a complex scan as complex64 instead of interleaved


def _make_inputs(case: Case, device: torch.device, seed: int = 0) -> dict:
    """Inputs at typical Mamba scales: dt near softplus^-1 of [1e-3, 1e-1], S4D-style A."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    dt = DTYPES[case.dtype]
    bsz, dim, n, L = case.batch, case.dim, case.dstate, case.L

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g) * scale + shift

    if case.complex:
        A = torch.complex(-0.5 * torch.ones(dim, n) - torch.rand(dim, n, generator=g),
                          torch.pi * torch.arange(n).float().expand(dim, n) + rnd(dim, n, scale=0.1))
    else:
        A = -(torch.arange(1, n + 1).float().expand(dim, n) + torch.rand(dim, n, generator=g))

    def bc(kind: str) -> torch.Tensor:
        if kind == "const":
            if case.complex:
                return torch.complex(rnd(dim, n), rnd(dim, n))
            return rnd(dim, n)
        lead = (bsz,) if kind == "var" else (bsz, case.groups)
        if case.complex and case.bc_complex:
            return torch.complex(rnd(*lead, n, L), rnd(*lead, n, L))
        return rnd(*lead, n, 2 * L if case.complex else L).to(dt)

    # softplus: raw delta near softplus^-1 of [1e-3, 1e-1], split between delta and its bias.
    if case.softplus:
        delta = rnd(bsz, dim, L, scale=0.5, shift=0.0 if case.has_bias else -4.0)
        bias = rnd(dim, scale=0.5, shift=-4.0)
    else:
        delta = torch.rand(bsz, dim, L, generator=g) * 0.05 + 0.005
        bias = torch.rand(dim, generator=g) * 0.02
    inputs = {
        "u": rnd(bsz, dim, L).to(dt),
        "delta": delta.to(dt),
        "A": A,
        "B": bc(case.b),
        "C": bc(case.c),
        "D": rnd(dim) if case.has_D else None,
        "z": rnd(bsz, dim, L).to(dt) if case.has_z else None,
        "delta_bias": bias if case.has_bias else None,
        "initial_state": (torch.complex(rnd(bsz, dim, n), rnd(bsz, dim, n)) if case.complex
                          else rnd(bsz, dim, n)) if case.has_init else None,
    }
    return {k: (v.to(device) if v is not None else None) for k, v in inputs.items()}


_ORDER = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


def _run(fn, inputs: dict, case: Case, weights: tuple, **kw):
    """Run ``fn`` on fresh leaves; return (y, last_state, {name: grad}). The loss weighs y and
    last_state with fixed random tensors, so both backward paths are exercised."""
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    args = [leaves[k] for k in _ORDER]
    out = fn(*args[:8], case.softplus, case.last, args[8], **kw)
    y, last = out if case.last else (out, None)
    wy, wl = weights
    loss = (y.double() * wy.to(y.device)).sum()
    if last is not None:
        lr = torch.view_as_real(last) if last.is_complex() else last
        loss = loss + (lr.double() * wl.to(y.device)).sum()
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return y, last, grads


def _ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state):
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                              initial_state)


def _to64(v: torch.Tensor | None) -> torch.Tensor | None:
    if v is None:
        return None
    return v.to(torch.complex128 if v.is_complex() else torch.float64)


def check_case(case: Case, device: torch.device) -> None:
    inputs = _make_inputs(case, device)
    g = torch.Generator(device="cpu").manual_seed(1)
    wy = torch.randn(case.batch, case.dim, case.L, generator=g, dtype=torch.float64)
    wl = torch.randn(case.batch, case.dim, case.dstate, *((2,) if case.complex else ()), generator=g,
                     dtype=torch.float64)
    y, last, grads = _run(selective_scan_triton, inputs, case, (wy, wl), chunk_len=case.chunk)
    y_ref, last_ref, grads_ref = _run(_ref, inputs, case, (wy, wl))
    inputs64 = {k: _to64(v) for k, v in inputs.items()}
    y64, last64, grads64 = _run(_ref, inputs64, case, (wy, wl))

    ulp = case.dtype == "bf16"
    assert y.dtype == inputs["u"].dtype and y.shape == inputs["u"].shape
    assert_close("y", y, y_ref, y64, bf16_ulp=ulp)
    if case.last:
        assert last.dtype == (torch.complex64 if case.complex else torch.float32)
        assert_close("last_state", last, last_ref, last64, bf16_ulp=ulp)
    for name, grad in grads.items():
        assert grad is not None, name
        assert grad.dtype == inputs[name].dtype and grad.shape == inputs[name].shape, name
        assert_close(f"d{name}", grad, grads_ref[name], grads64[name], bf16_ulp=ulp)


# ---- CPU rows (interpreter) ------------------------------------------------------------------
# 36 rows covering every pair of (kind, dtype, B layout, C layout, D, z, delta_bias, softplus,
# initial_state, last_state); shapes have odd L, dims that are not powers of two, and chunks of
# 2..16 positions so every row crosses chunk boundaries.
_SHAPES = [
    dict(batch=1, dim=12, dstate=4, L=13, chunk=4, groups=3),
    dict(batch=2, dim=6, dstate=5, L=9, chunk=4, groups=2),
    dict(batch=1, dim=5, dstate=3, L=7, chunk=2, groups=5),
    dict(batch=2, dim=4, dstate=16, L=21, chunk=8, groups=2),
]
_LAYOUTS = ["const", "var", "group"]
# Row i switches on the flags whose bit is 1 (order of _FLAGS). The table was chosen so that every
# pair of flags takes all four value combinations and every flag meets both kinds, all dtypes and
# all B / C layouts with both values.
_FLAG_BITS = (
    "001011 110010 110110 010000 101001 101001 101001 011011 110101 101101 001110 101100 "
    "000011 111010 010110 111110 110000 010000 101010 011000 101111 110011 110101 010001 "
    "000110 100111 010001 001101 100001 001010 010101 110111 000101 101011 100000 000111"
).split()
_FLAGS = {"has_D": "D", "has_z": "z", "has_bias": "b", "softplus": "s", "has_init": "i", "last": "l"}


def _cpu_cases() -> list:
    rows = []
    for i in range(36):
        q, r = divmod(i % 9, 3)
        block = i // 9
        dtype = list(DTYPES)[r]
        b, c = _LAYOUTS[q], _LAYOUTS[(r + q) % 3]
        is_complex = block % 2 == 1
        bits = [ch == "1" for ch in _FLAG_BITS[i]]
        flags = dict(zip(_FLAGS, bits))
        shape = _SHAPES[(i + block) % len(_SHAPES)]
        case = Case(**shape, complex=is_complex, dtype=dtype, b=b, c=c,
                    bc_complex=is_complex and i % 4 == 3, **flags)
        name = (f"{'cplx' if is_complex else 'real'}-{dtype}-B{b}-C{c}-"
                + ("".join(_FLAGS[k] for k, v in flags.items() if v) or "none")
                + f"-d{case.dim}L{case.L}T{case.chunk}")
        rows.append(pytest.param(case, id=name))
    return rows


@pytest.mark.parametrize("case", _cpu_cases())
def test_triton_scan_matches_reference(case: Case, device: torch.device) -> None:
    check_case(case, device)


@pytest.mark.parametrize("case", _cpu_cases()[::3])
def test_triton_scan_two_pass_forward_matches_reference(case: Case, monkeypatch, device: torch.device) -> None:
    """The two-pass forward (_scan2_fwd_kernel), forced for every call, on a third of the grid
    (real and complex, every dtype, B / C layout and flag, chunks with carried states; the training
    forward saves its tile states for the backward, which the gradients check)."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_FWD_TWO_PASS", True)
    monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", False)
    check_case(case, device)


@pytest.mark.parametrize("case", [c for c in _cpu_cases()[2::3] if not c.values[0].complex])
def test_triton_scan_tile_forward_matches_reference(case: Case, monkeypatch, device: torch.device) -> None:
    """The tile forward (_scan1_fwd_kernel) of real scans, which the one-channel-per-thread kernel
    replaces wherever the launcher's rule takes it, on the real rows of a third of the grid."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", False)
    check_case(case, device)


@pytest.mark.parametrize("case", [c for c in _cpu_cases()[2::3]
                                  if not c.values[0].complex and c.values[0].dtype != "fp32"])
def test_triton_scan_tile_backward_matches_reference(case: Case, monkeypatch, device: torch.device) -> None:
    """The tile backward of real scans with 16-bit inputs, which the one-channel-per-thread
    backward replaces wherever the launcher's rule takes it, on the 16-bit real rows of a third
    of the grid."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_BWD_PER_THREAD", False)
    spy = _LaunchSpy(triton_scan._thread_bwd_kernel)
    monkeypatch.setattr(triton_scan, "_thread_bwd_kernel", spy)
    check_case(case, device)
    assert not spy.launches


@pytest.mark.parametrize("split", [None, 2])
@pytest.mark.parametrize("case", [c for c in _cpu_cases()[1::3] if not c.values[0].complex])
def test_triton_scan_per_thread_chunk_adjoints_match_reference(case: Case, split, nan_empty, monkeypatch,
                                                                device: torch.device) -> None:
    """The backward's chunk adjoints with one channel per thread (_thread_adjoint_kernel), forced,
    on the real rows of a third of the grid: over the plan's chunks, and over chunks of half
    their length with the reverse carry run over those (every second one read)."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_BWD_PER_THREAD_ADJOINT", True)
    monkeypatch.setattr(triton_scan, "_THREAD_ADJ_SPLIT", split)
    calls = []
    real = triton_scan._chunk_adjoints_per_thread
    monkeypatch.setattr(triton_scan, "_chunk_adjoints_per_thread", lambda *a: calls.append(1) or real(*a))
    check_case(case, device)
    assert calls


def test_triton_scan_tile_backward_chunk_adjoints_past_the_grid(monkeypatch, device: torch.device) -> None:
    """The tile backward's chunk adjoints take the tile kernel, not the one-channel-per-thread one,
    where the per-thread kernel's grid could not hold their chunks (its limit lowered here to 2),
    and still match."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_BWD_PER_THREAD", False)
    monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", False)
    monkeypatch.setattr(triton_scan, "_GRID_Y", 2)
    calls = []
    real = triton_scan._chunk_adjoints_per_thread
    monkeypatch.setattr(triton_scan, "_chunk_adjoints_per_thread", lambda *a: calls.append(1) or real(*a))
    check_case(Case(1, 32, 4, 48, 16, dtype="bf16", has_init=True), device)
    assert not calls


def test_triton_scan_per_thread_adjoint_rule(monkeypatch) -> None:
    """Chunk adjoints with one channel per thread: real scans with 16-bit inputs and at most 16
    states; True forces every real scan, False none."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    bf16, fp32 = torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1, dtype=torch.float32)
    assert ts._adjoint_per_thread(False, bf16, 16)
    assert not ts._adjoint_per_thread(False, fp32, 16)
    assert not ts._adjoint_per_thread(True, bf16, 16)
    assert not ts._adjoint_per_thread(False, bf16, 17)
    monkeypatch.setattr(ts, "_BWD_PER_THREAD_ADJOINT", True)
    assert ts._adjoint_per_thread(False, fp32, 4)
    assert not ts._adjoint_per_thread(True, fp32, 4)
    monkeypatch.setattr(ts, "_BWD_PER_THREAD_ADJOINT", False)
    assert not ts._adjoint_per_thread(False, bf16, 16)


def _bwd_thread_rows() -> list:
    rows = [c for c in _cpu_cases()[::3] if not c.values[0].complex]
    # groups of 32 channels, one program's worth, so that a grouped row takes the kernel too; bf16
    # B / C read as words
    rows.append(pytest.param(Case(1, 64, 16, 24, 8, dtype="bf16", b="group", c="var", groups=2, has_init=True),
                             id="real-bf16-Bgroup-Cvar-Dzbsil-d64L24T8"))
    return rows


@pytest.mark.parametrize("ring", [3, 4])
@pytest.mark.parametrize("case", _bwd_thread_rows())
def test_triton_scan_per_thread_backward_matches_reference(case: Case, ring: int, monkeypatch,
                                                           device: torch.device) -> None:
    """The backward with one channel per thread (_thread_bwd_kernel), forced, on the real rows of
    a third of the grid and a grouped bf16 row: every flag, B / C layout and dtype, chunks with
    their adjoints, ragged rows; rings of three and four loads in the state loop (``ring``: N
    taken RING indices per iteration, and a tail of N % RING). Rows whose groups are narrower than a
    program's channels keep the tile backward (the rule), and must still match."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    monkeypatch.setattr(ts, "_BWD_PER_THREAD", True)
    monkeypatch.setattr(ts, "_THREAD_BWD_RING", ring)
    spy = _LaunchSpy(ts._thread_bwd_kernel)
    monkeypatch.setattr(ts, "_thread_bwd_kernel", spy)
    check_case(case, device)
    whole_groups = all(kind != "group" or (case.dim // case.groups) % 32 == 0 for kind in (case.b, case.c))
    assert bool(spy.launches) == whole_groups


@pytest.mark.parametrize("split", [2, 4])
def test_triton_scan_per_thread_backward_fine_adjoints(split, monkeypatch, device: torch.device) -> None:
    """The per-thread backward with its chunk adjoints over chunks ``split`` times finer than its
    own (the reverse carry runs over the fine ones; the backward reads every split-th), on a bf16
    row with an initial state, a gradient of last_state and a ragged last chunk."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    case = Case(2, 64, 12, 75, 32, dtype="bf16", has_init=True)
    monkeypatch.setattr(ts, "_THREAD_ADJ_SPLIT", split)
    spy = _LaunchSpy(ts._thread_bwd_kernel)
    monkeypatch.setattr(ts, "_thread_bwd_kernel", spy)
    fine = []
    real = ts._chunk_adjoints_per_thread
    monkeypatch.setattr(ts, "_chunk_adjoints_per_thread", lambda *a: fine.append(a[-1]) or real(*a))
    check_case(case, device)
    assert spy.launches and fine == [case.chunk // split]


def test_triton_scan_per_thread_backward_rule(monkeypatch) -> None:
    """The per-thread backward runs for real scans with at most 16 states whose programs'
    channels share their group of B and C: with 16-bit inputs by default, with fp32 ones when
    forced; never when switched off."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    u = torch.zeros(1, 64, 8, dtype=torch.bfloat16)
    var, const = (None, True, 1, None), (None, False, 1, None)
    assert ts._bwd_per_thread(False, u, 16, var, var)
    assert ts._bwd_per_thread(False, u.half(), 16, var, const)
    assert not ts._bwd_per_thread(False, u.float(), 16, var, var)
    monkeypatch.setattr(ts, "_BWD_PER_THREAD", False)
    assert not ts._bwd_per_thread(False, u, 16, var, var)
    monkeypatch.setattr(ts, "_BWD_PER_THREAD", True)
    assert ts._bwd_per_thread(False, u.float(), 16, var, var)
    assert ts._bwd_per_thread(False, u, 16, var, const)
    assert ts._bwd_per_thread(False, u, 16, (None, True, 2, None), var)  # 32 channels per group
    assert not ts._bwd_per_thread(False, u, 16, (None, True, 4, None), var)  # 16
    assert ts._bwd_per_thread(False, u, 16, (None, False, 4, None), var)  # constant: no groups
    assert not ts._bwd_per_thread(True, u, 16, var, var)
    assert not ts._bwd_per_thread(False, u, 17, var, var)


def test_thread_chunks_fit_the_grid() -> None:
    """The one-channel-per-thread kernels' grid is (channel blocks, chunks, batch): a given chunk
    length is doubled until the chunks fit the grid's second axis (65,535, halved for the
    backward's finer chunk adjoints), and stays a multiple of what it was."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    cpu = torch.device("cpu")
    assert ts._thread_chunk(1, 256, 2**20, 8, 64, cpu) == 64
    chunk = ts._thread_chunk(1, 256, 2**26, 8, 64, cpu)
    assert chunk % 64 == 0 and ts._cdiv(2**26, chunk) <= ts._MAX_CHUNKS < ts._cdiv(2**26, chunk // 2)
    assert ts._thread_grid(512, 8, 2) == (8, 512, 2)
    with pytest.raises(AssertionError):
        ts._thread_grid(70000, 8, 1)


def test_triton_scan_two_pass_rule(monkeypatch) -> None:
    """The launcher takes the two-pass forward for real scans with 16-bit inputs, forward alone,
    one chunk per row; True / False force it either way."""
    from seqmodels.kernels.selective_scan import triton_scan

    class P:
        n_chunks = 1

    bf16, fp32 = torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1, dtype=torch.float32)
    assert triton_scan._two_pass(False, bf16, False, P())
    assert not triton_scan._two_pass(True, bf16, False, P())  # complex
    assert not triton_scan._two_pass(False, fp32, False, P())  # fp32
    assert not triton_scan._two_pass(False, bf16, True, P())  # a backward follows
    P.n_chunks = 2
    assert not triton_scan._two_pass(False, bf16, False, P())  # chunked
    monkeypatch.setattr(triton_scan, "_FWD_TWO_PASS", True)
    assert triton_scan._two_pass(True, fp32, True, P())
    monkeypatch.setattr(triton_scan, "_FWD_TWO_PASS", False)
    P.n_chunks = 1
    assert not triton_scan._two_pass(False, bf16, False, P())


@pytest.mark.parametrize("case", _cpu_cases()[1::3])
def test_triton_scan_two_pass_backward_matches_reference(case: Case, monkeypatch, device: torch.device) -> None:
    """The two-pass backward (_scan2_bwd_kernel), forced for every call, on a third of the grid
    (real and complex, every dtype, B / C layout and flag; chunked, which the launcher leaves to
    version 4, so the adjoint and states carried across chunks meet it too)."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_BWD_TWO_PASS", True)
    check_case(case, device)


def test_triton_scan_backward_rule(monkeypatch) -> None:
    """The launcher takes the two-pass backward over one chunk per row, version 4 when the rows
    are split into chunks; True / False force it either way."""
    from seqmodels.kernels.selective_scan import triton_scan

    class P:
        n_chunks = 1

    assert triton_scan._bwd_two_pass(P())
    P.n_chunks = 3
    assert not triton_scan._bwd_two_pass(P())
    monkeypatch.setattr(triton_scan, "_BWD_TWO_PASS", True)
    assert triton_scan._bwd_two_pass(P())
    monkeypatch.setattr(triton_scan, "_BWD_TWO_PASS", False)
    P.n_chunks = 1
    assert not triton_scan._bwd_two_pass(P())


def check_forward_alone(case: Case, device: torch.device, **kw) -> None:
    """y and last_state of a call that no gradient can follow, against the reference."""
    args = [_make_inputs(case, device)[k] for k in _ORDER]
    with torch.no_grad():
        out = selective_scan_triton(*args[:8], case.softplus, case.last, args[8], **kw)
        ref = _ref(*args[:8], case.softplus, case.last, args[8])
        ref64 = _ref(*[_to64(a) for a in args[:8]], case.softplus, case.last, _to64(args[8]))
    y, last = out if case.last else (out, None)
    y_ref, last_ref = ref if case.last else (ref, None)
    y64, last64 = ref64 if case.last else (ref64, None)
    ulp = case.dtype == "bf16"
    assert y.dtype == args[0].dtype and y.shape == args[0].shape
    assert_close("y", y, y_ref, y64, bf16_ulp=ulp)
    if case.last:
        assert last.dtype == torch.float32 and last.shape == (case.batch, case.dim, case.dstate)
        assert_close("last_state", last, last_ref, last64, bf16_ulp=ulp)


@pytest.mark.parametrize("case", [c for c in _cpu_cases() if not c.values[0].complex])
def test_triton_scan_per_thread_forward_matches_reference(case: Case, nan_empty, monkeypatch,
                                                          device: torch.device) -> None:
    """The forward alone with one channel per thread (_thread_fwd_kernel), forced, on the real
    rows of the grid: every dtype, B / C layout and flag, chunks of 2 to 16 positions (P, the
    positions per load, shrinks to the chunk) with carried states and ragged ends."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", True)
    calls = []
    real = triton_scan._fwd_per_thread
    monkeypatch.setattr(triton_scan, "_fwd_per_thread", lambda *a: calls.append(1) or real(*a))
    check_forward_alone(case, device, chunk_len=case.chunk)
    assert calls


class _LaunchSpy:
    """Stands in for a Triton kernel: records the keyword arguments of every launch."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.launches.append(kw)
            return self.kernel[grid](*args, **kw)
        return launch


@pytest.mark.parametrize("case, words, even", [
    pytest.param(Case(1, 64, 4, 64, 16, dtype="bf16", b="var", c="group", groups=2), True, True,
                 id="bf16-words-even-groups-inside-a-program"),
    pytest.param(Case(2, 12, 16, 40, 16, dtype="bf16", b="group", c="var", groups=3, has_init=True), True, False,
                 id="bf16-words-ragged-dim-and-chunk"),
    pytest.param(Case(2, 64, 5, 20, 8, dtype="bf16", b="var", c="const", has_z=False), True, False,
                 id="bf16-words-L-not-a-multiple-of-P"),
    pytest.param(Case(1, 64, 3, 48, 16, dtype="fp32", b="const", c="var", softplus=False), False, True,
                 id="fp32-even"),
    pytest.param(Case(1, 128, 4, 48, 16, dtype="fp16", b="var", c="var", has_init=True), False, True,
                 id="fp16-even"),
])
def test_triton_scan_per_thread_words_and_even(case: Case, words: bool, even: bool, nan_empty, monkeypatch,
                                               device: torch.device) -> None:
    """The per-thread forward's fast paths: bf16 B / C rows read as 32-bit words (even L), and
    loads without masks when every row and position is in range (dim a multiple of the 64
    channels of a program, L of P)."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", True)
    spy = _LaunchSpy(triton_scan._thread_fwd_kernel)
    monkeypatch.setattr(triton_scan, "_thread_fwd_kernel", spy)
    check_forward_alone(case, device, chunk_len=case.chunk)
    assert len(spy.launches) == 2  # the state-only pass and the scan
    assert all(kw["WORDS"] is words and kw["EVEN"] is even for kw in spy.launches)


def test_triton_scan_per_thread_rule(monkeypatch) -> None:
    """The launcher takes the one-channel-per-thread forward for real scans with at most 16
    states: 16-bit inputs always, fp32 ones when the rows are split into chunks; True
    forces it wherever it applies, False never. Its chunks: the given chunk_len; else whole rows
    when they give 6 warps per SM, or halved until the grid has 24."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    class P:
        n_chunks = 1

    bf16, fp16, fp32 = (torch.zeros(1, dtype=t) for t in (torch.bfloat16, torch.float16, torch.float32))
    assert ts._per_thread(False, bf16, 16, P())
    assert ts._per_thread(False, fp16, 16, P())
    assert not ts._per_thread(False, fp32, 16, P())  # fp32 over whole rows: the tile kernels
    assert not ts._per_thread(True, bf16, 16, P())  # complex
    assert not ts._per_thread(False, bf16, 17, P())  # states past the registers
    P.n_chunks = 2
    assert ts._per_thread(False, fp32, 16, P())
    monkeypatch.setattr(ts, "_FWD_PER_THREAD", True)
    P.n_chunks = 1
    assert ts._per_thread(False, fp32, 4, P())
    assert not ts._per_thread(True, fp32, 4, P())
    monkeypatch.setattr(ts, "_FWD_PER_THREAD", False)
    assert not ts._per_thread(False, bf16, 16, P())

    cpu = torch.device("cpu")
    assert ts._thread_chunk(1, 256, 1 << 20, 8, 64, cpu) == 64
    assert ts._thread_chunk(1, 256, 1 << 16, 8, 2, cpu) == 8
    assert ts._thread_chunk(1, 256, 1000, 8, None, cpu) == 1024  # no SMs (the interpreter): one chunk
    monkeypatch.setattr(ts, "_sm_count", lambda dev: 132)
    # 1 x 256 channels: 8 warps, so 396 chunks for 24 warps per SM, 512 in powers of two
    assert ts._thread_chunk(1, 256, 1 << 20, 8, None, cpu) == 2048
    assert ts._thread_chunk(8, 1536, 4096, 8, None, cpu) == 256  # 2.9 warps per SM: 16 chunks
    assert ts._thread_chunk(1, 256, 4096, 8, None, cpu) == 256  # not below _THREAD_MIN_CHUNK
    assert ts._thread_chunk(64, 512, 1000, 8, None, cpu) == 1024  # 7.8 warps per SM: whole rows


def test_triton_scan_single_chunk_and_default_chunk(device: torch.device) -> None:
    """One chunk covers the whole sequence (no carry passes), with the default chunk length."""
    check_case(Case(batch=2, dim=3, dstate=2, L=5, chunk=None, dtype="fp32", b="const", c="var",
                    has_init=True), device)


def test_triton_scan_gradient_of_last_state_only(device: torch.device) -> None:
    """When only last_state is used, y receives no gradient and the backward still runs."""
    case = Case(batch=1, dim=3, dstate=4, L=9, chunk=4, complex=True, b="var", c="const", has_init=True)
    inputs = _make_inputs(case, device)
    out = {}
    for name, fn, kw in [("triton", selective_scan_triton, {"chunk_len": 4}), ("ref", _ref, {})]:
        leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
        _, last = fn(*[leaves[k] for k in _ORDER[:8]], True, True, leaves["initial_state"], **kw)
        torch.view_as_real(last).sum().backward()
        out[name] = {k: v.grad for k, v in leaves.items() if v is not None}
    for k, grad in out["triton"].items():
        ref = out["ref"][k]
        if ref is None:  # C, D, z do not reach last_state: the fused path gives zeros
            ref = torch.zeros_like(grad)
        torch.testing.assert_close(grad, ref, atol=1e-4, rtol=1e-4, msg=k)
    # u's gradient is real information: the state depends on every position.
    assert out["triton"]["u"].abs().sum() > 0


@pytest.mark.parametrize("chunk", [None, 16], ids=["one-chunk", "3-chunks"])
def test_triton_scan_reads_z_in_place(chunk, device: torch.device) -> None:
    """z as the second half of a [B, 2D, L] tensor (the mixer's in_proj output) is read where it
    lies, by the forward, the backward and the chunked backward's first pass: the same y and
    gradients as with a contiguous copy of it."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    case = Case(batch=2, dim=3, dstate=4, L=40, chunk=chunk, b="var", c="var")
    inputs = _make_inputs(case, device)
    g = torch.Generator(device="cpu").manual_seed(1)
    wy = torch.randn(case.batch, case.dim, case.L, generator=g, dtype=torch.float64)
    runs = []
    for in_place in (False, True):
        leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
        args = [leaves[k] for k in _ORDER[:8]]
        if in_place:
            xz = torch.cat([torch.randn_like(inputs["z"]), inputs["z"]], dim=1).requires_grad_()
            args[6] = xz[:, case.dim:]
            assert ts._rows(args[6]) is args[6] and ts._extra(args[6]) == case.dim * case.L
        y = selective_scan_triton(*args, True, chunk_len=chunk)
        (y.double() * wy.to(y.device)).sum().backward()
        grads = {k: v.grad for k, v in leaves.items() if v is not None and k != "z"}
        grads["z"] = xz.grad[:, case.dim:] if in_place else leaves["z"].grad
        runs.append((y, grads))
    (y0, g0), (y1, g1) = runs
    assert not xz.grad[:, :case.dim].any()
    torch.testing.assert_close(y1, y0, rtol=1e-6, atol=1e-7)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6, msg=name)


def test_triton_scan_writes_every_output(nan_empty, device: torch.device) -> None:
    """torch.empty returns NaN here: an output or gradient the kernels forget to write shows up."""
    for is_complex in (False, True):
        case = Case(batch=2, dim=6, dstate=3, L=11, chunk=4, complex=is_complex, b="group", c="const",
                    has_init=True)
        inputs = _make_inputs(case, device)
        g = torch.Generator(device="cpu").manual_seed(1)
        wy = torch.randn(case.batch, case.dim, case.L, generator=g, dtype=torch.float64)
        wl = torch.randn(case.batch, case.dim, case.dstate, 2, generator=g, dtype=torch.float64)
        y, last, grads = _run(selective_scan_triton, inputs, case, (wy, wl if is_complex else wl[..., 0]),
                              chunk_len=4)
        for name, t in [("y", y), ("last_state", last), *grads.items()]:
            assert not torch.isnan(torch.view_as_real(t) if t.is_complex() else t).any(), name


# Chunks of several tiles (16 positions under the interpreter): the forward carries the state
# from tile to tile inside a program and saves it at every tile boundary for the backward.
_MULTI_TILE_CASES = [
    pytest.param(Case(1, 4, 4, 150, 64, b="var", c="group", groups=2), id="real-fp32-T64-3chunks"),
    pytest.param(Case(1, 3, 3, 75, 64, complex=True, b="group", c="var", groups=3, has_init=True),
                 id="cplx-fp32-T64-2chunks-init"),
    pytest.param(Case(1, 4, 4, 70, None, dtype="bf16", b="const", c="var", has_init=True),
                 id="real-bf16-default-one-chunk-3tiles"),
    pytest.param(Case(1, 3, 2, 40, 64, complex=True, dtype="fp16", b="var", c="const", has_z=False),
                 id="cplx-fp16-T64-chunk-past-L"),
]


@pytest.mark.parametrize("case", _MULTI_TILE_CASES)
def test_triton_scan_multi_tile_chunks(case: Case, nan_empty, device: torch.device) -> None:
    check_case(case, device)


@pytest.mark.parametrize("two_pass", [False, True])
@pytest.mark.parametrize("tiles, is_complex", [(4.5, False), (4, False), (4.5, True)])
def test_triton_scan_forward_on_double_tiles_saves_every_tile_state(tiles: float, is_complex: bool, two_pass: bool,
                                                                   monkeypatch, nan_empty, device: torch.device) -> None:
    """A training forward over one chunk runs on tiles of two backward tiles and saves the state
    at each tile's middle: y and every saved state equal those of single tiles (an odd tile count
    leaves the last forward tile without a middle state to save). Both forward kernels."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_FWD_TWO_PASS", two_pass)
    monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", False)

    bt = triton_scan._scan_tile(True, is_complex, False)  # the backward's tile: 16 interpreted, 128 compiled
    L = int(tiles * bt)
    case = Case(batch=2, dim=3, dstate=4, L=L, chunk=None, complex=is_complex, dtype="bf16" if is_complex else "fp32",
                b="var", c="group", groups=3, has_init=True)
    x = _make_inputs(case, device)
    Bp, Cp = triton_scan._prep_bc(x["B"], is_complex), triton_scan._prep_bc(x["C"], is_complex)
    # One chunk of 8 tiles covers the row whatever the device's SM count.
    plan = triton_scan._Plan(2, 3, L, True, is_complex, 8 * bt, torch.device(device))
    assert plan.wide
    assert plan.n_chunks == 1 and plan.n_tiles == -(-L // bt) >= 4
    out = {}
    for split in (False, True):
        monkeypatch.setattr(triton_scan, "_FWD_SPLIT", split)
        y, _, hsave = triton_scan._fwd(x["u"], x["delta"], x["A"], Bp, Cp, x["D"], x["z"], x["delta_bias"],
                                       True, x["initial_state"], plan, False, True)
        assert torch.isfinite(hsave).all()
        out[split] = (y, hsave)
    # y may differ by a rounding of its dtype (bf16 for the complex row); the fp32 states barely.
    y_tol = dict(rtol=1e-5, atol=1e-6) if out[True][0].dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out[True][0], out[False][0], **y_tol)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype, chunk, tiles", [("fp32", 32, 5.5), ("bf16", None, 3), ("fp16", 64, 6)])
def test_triton_scan_per_thread_saves_the_tile_states(dtype: str, chunk, tiles: float, nan_empty, monkeypatch,
                                                      device: torch.device) -> None:
    """A training forward on the one-channel-per-thread kernel saves the state entering every
    tile of the backward, as the tile kernels do (chunks of several tiles, one chunk, a ragged
    last tile)."""
    from seqmodels.kernels.selective_scan import triton_scan

    bt = triton_scan._scan_tile(True, False, False)
    L = int(tiles * bt)
    case = Case(batch=2, dim=70, dstate=5, L=L, chunk=chunk, dtype=dtype, b="group", c="var", groups=2,
                has_init=True)
    x = _make_inputs(case, device)
    Bp, Cp = triton_scan._prep_bc(x["B"], False), triton_scan._prep_bc(x["C"], False)
    plan = triton_scan._Plan(2, 70, L, True, False, chunk, torch.device(device))
    assert plan.n_tiles >= 3
    out = {}
    for per_thread in (True, False):
        monkeypatch.setattr(triton_scan, "_FWD_PER_THREAD", per_thread)
        y, last, hsave = triton_scan._fwd(x["u"], x["delta"], x["A"], Bp, Cp, x["D"], x["z"], x["delta_bias"],
                                          True, x["initial_state"], plan, True, True)
        assert hsave.shape == (2, 70, plan.n_tiles, 5, 1)
        out[per_thread] = (y, last, hsave)
    y_tol = dict(rtol=1e-5, atol=1e-6) if dtype == "fp32" else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out[True][0], out[False][0], **y_tol)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[True][2], out[False][2], rtol=1e-5, atol=1e-5)


def test_triton_scan_fast_math_rule(monkeypatch) -> None:
    """Compiled scans take the hardware approximations (cos / sin of complex scans, the log of
    softplus) for bf16 / fp16 inputs; fp32 inputs take them only for the cos / sin of the
    forward, whose complex tiles are then as wide as real ones; the interpreter keeps the
    accurate functions (the GPU rows check each kind against float64)."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_interpreting", lambda: False)
    assert triton_scan._fast_math(torch.zeros(1, dtype=torch.bfloat16))
    assert triton_scan._fast_math(torch.zeros(1, dtype=torch.float16))
    assert not triton_scan._fast_math(torch.zeros(1, dtype=torch.float32))
    cpu = torch.device("cpu")  # no SMs: one chunk per row
    inference, training = (triton_scan._Plan(8, 160, 1100, t, True, None, cpu) for t in (False, True))
    assert inference.bt == 256
    assert training.bt == 128 and training.wide  # the training forward: double tiles
    monkeypatch.setattr(triton_scan, "_interpreting", lambda: True)
    assert not triton_scan._fast_math(torch.zeros(1, dtype=torch.bfloat16))


def test_triton_scan_launch_heuristics() -> None:
    """Host-side choice of the chunk length for an H100-sized grid (132 SMs, 1056 programs)."""
    from seqmodels.kernels.selective_scan.triton_scan import _tiles_per_chunk

    # One chunk per row when batch x dim fills the GPU, else split the sequence.
    assert _tiles_per_chunk(32, 8 * 1536, 1056) == 32
    assert _tiles_per_chunk(8192, 256, 1056) == 1024  # 8 chunks x 256 channels = 2048 programs
    assert _tiles_per_chunk(128, 1024, 0) == 128
    assert _tiles_per_chunk(1, 1, 1056) == 1


def test_triton_scan_saves_tile_states_only_when_a_gradient_can_follow(monkeypatch, device: torch.device) -> None:
    """Under no_grad (evaluation, generation) the forward neither saves the per-tile states nor
    uses the training tile, even when the inputs require grad (parameters do)."""
    from seqmodels.kernels.selective_scan import triton_scan

    calls = []
    real_fwd = triton_scan._fwd

    def spy(*args):
        calls.append(args[-1])  # want_states
        return real_fwd(*args)

    monkeypatch.setattr(triton_scan, "_fwd", spy)
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(1, 4, 40, generator=g).to(device).requires_grad_() for _ in range(3))
    A = -torch.rand(4, 3, generator=g).to(device).requires_grad_()
    B, C = (torch.randn(1, 3, 40, generator=g).to(device) for _ in range(2))
    with torch.no_grad():
        selective_scan_triton(u, delta, A, B, C, z=z)
    selective_scan_triton(u, delta, A, B, C, z=z).sum().backward()
    assert calls == [False, True]
    assert u.grad is not None and torch.isfinite(u.grad).all()


def test_triton_scan_forward_alone_skips_the_autograd_function(monkeypatch, device: torch.device) -> None:
    """With nothing to differentiate (grad mode off, or no input requiring grad) the call runs the
    forward without the autograd Function (its host time counts in a whole call), and returns
    what the Function returns; with an input requiring grad it goes through the Function."""
    from seqmodels.kernels.selective_scan import triton_scan

    case = Case(batch=2, dim=4, dstate=4, L=21, chunk=None, dtype="bf16", b="group", c="var", has_init=True)
    inputs = _make_inputs(case, device)
    args = [inputs[k] for k in _ORDER]
    # the Function's own forward, as a call with grad mode off used to run it
    y_ref, last_ref = triton_scan._SelectiveScanTriton.apply(*args, True, True, None, False)
    assert torch.isfinite(y_ref).all()

    def refuse(*a):
        raise AssertionError("the autograd Function ran")

    monkeypatch.setattr(triton_scan._SelectiveScanTriton, "apply", refuse)
    y, last = selective_scan_triton(*args[:8], True, True, args[8])
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(last, last_ref, rtol=0, atol=0)
    u = args[0].clone().requires_grad_()
    with torch.no_grad():
        y = selective_scan_triton(u, *args[1:8], True, False, args[8])
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    with pytest.raises(AssertionError, match="autograd Function ran"):
        selective_scan_triton(u, *args[1:8], True, False, args[8])


def test_triton_scan_host_helpers() -> None:
    """The launchers' integer helpers agree with Triton's, and a real variable B / C keeps its
    data and gets the planar strides the kernels read (contiguous copy of a strided input)."""
    import triton

    from seqmodels.kernels.selective_scan.triton_scan import _cdiv, _next_pow2, _prep_bc

    for x in range(1, 3000):
        assert _next_pow2(x) == triton.next_power_of_2(x), x
        assert _cdiv(x, 7) == triton.cdiv(x, 7) and _cdiv(x, 128) == triton.cdiv(x, 128), x
    B = torch.randn(2, 5, 9)
    X, var, groups, strides = _prep_bc(B, False)
    assert var and groups == 1 and X.shape == (2, 1, 5, 1, 9) and strides == (45, 45, 9, 9)
    assert X.data_ptr() == B.data_ptr()
    G = torch.randn(2, 9, 3, 5).transpose(1, 3)  # (2, 5, 3, 9) grouped, not contiguous
    X, var, groups, strides = _prep_bc(G, False)
    assert groups == 5 and X.shape == (2, 5, 3, 1, 9) and strides == (135, 27, 9, 9)
    torch.testing.assert_close(X[:, :, :, 0], G)


# ---- GPU rows (realistic sizes) ----------------------------------------------------------------
_GPU_CASES = [
    pytest.param(Case(2, 256, 16, 4096, None, dtype="bf16", b="var", c="var"), id="real-bf16-var-4k"),
    pytest.param(Case(2, 256, 16, 4096, None, dtype="fp32", b="group", c="group", groups=4,
                      has_init=True), id="real-fp32-group-4k"),
    pytest.param(Case(2, 256, 16, 4096, None, complex=True, dtype="bf16", b="var", c="group", groups=2),
                 id="cplx-bf16-var-group-4k"),
    pytest.param(Case(2, 256, 16, 4096, None, complex=True, dtype="fp32", b="const", c="var",
                      has_init=True), id="cplx-fp32-const-var-4k"),
    pytest.param(Case(2, 128, 16, 2000, 64, dtype="fp16", b="var", c="const", has_z=False),
                 id="real-fp16-var-const-2000-T64"),
    pytest.param(Case(1, 32, 16, 65536, None, dtype="bf16", b="var", c="var"), id="real-bf16-64k-many-chunks"),
    # One chunk per row (batch x dim fills the GPU): the training forward runs on double tiles;
    # 9 backward tiles leave the last forward tile without a middle state.
    pytest.param(Case(8, 160, 16, 1100, None, dtype="bf16", b="var", c="var"), id="real-bf16-one-chunk-9tiles"),
    pytest.param(Case(8, 160, 16, 1024, None, dtype="fp32", b="group", c="var", groups=4, has_init=True),
                 id="real-fp32-one-chunk-8tiles"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", _GPU_CASES)
def test_triton_scan_matches_reference_gpu(case: Case, device: torch.device) -> None:
    check_case(case, device)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    pytest.param(Case(8, 160, 16, 1100, None, dtype="bf16", b="var", c="var"), id="real-bf16"),
    pytest.param(Case(8, 160, 16, 1100, None, complex=True, dtype="bf16", b="var", c="group", groups=4),
                 id="cplx-bf16"),
    pytest.param(Case(8, 160, 16, 1100, None, complex=True, dtype="fp32", b="var", c="var", has_init=True),
                 id="cplx-fp32"),
])
def test_triton_scan_inference_forward_matches_reference_gpu(case: Case, device: torch.device) -> None:
    """The forward alone (no gradient can follow) over one chunk per row: 256-position tiles, and
    the hardware cos / sin for complex scans, fp32 ones included (the rows above run the
    training tiles); the real row takes the one-channel-per-thread kernel."""
    from seqmodels.kernels.selective_scan import triton_scan

    plan = triton_scan._Plan(case.batch, case.dim, case.L, False, case.complex, None, device)
    assert plan.bt == 256 and plan.n_chunks == 1
    args = [_make_inputs(case, device)[k] for k in _ORDER]
    args64 = [_to64(a) for a in args]
    with torch.no_grad():
        y, last = selective_scan_triton(*args[:8], case.softplus, True, args[8])
        y_ref, last_ref = _ref(*args[:8], case.softplus, True, args[8])
        y64, last64 = _ref(*args64[:8], case.softplus, True, args64[8])
    assert_close("y", y, y_ref, y64, bf16_ulp=True)
    assert_close("last_state", last, last_ref, last64, bf16_ulp=True)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    pytest.param(Case(1, 256, 16, 65536, None, dtype="bf16", b="var", c="var"), id="real-bf16-64k"),
    pytest.param(Case(2, 128, 16, 10000, None, dtype="fp32", b="group", c="const", groups=4, has_init=True),
                 id="real-fp32-group-const-init"),
    pytest.param(Case(1, 200, 16, 30001, None, dtype="fp16", b="var", c="var"), id="real-fp16-ragged"),
    pytest.param(Case(2, 64, 8, 4096, None, dtype="bf16", b="const", c="var", has_z=False),
                 id="real-bf16-const-B-N8"),
])
@pytest.mark.parametrize("ring", [3, 4])
def test_triton_scan_per_thread_backward_matches_reference_gpu(case: Case, ring: int, monkeypatch,
                                                               device: torch.device) -> None:
    """The per-thread backward (_thread_bwd_kernel), forced and compiled: rows split into chunks,
    grouped and constant B / C, ragged rows and channels, rings of three and four loads; the
    variable dB / dC summed by the reduce-scatter across the warp (``SHFL``, which the
    interpreter cannot run)."""
    from seqmodels.kernels.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_BWD_PER_THREAD", True)
    monkeypatch.setattr(triton_scan, "_THREAD_BWD_RING", ring)
    spy = _LaunchSpy(triton_scan._thread_bwd_kernel)
    monkeypatch.setattr(triton_scan, "_thread_bwd_kernel", spy)
    check_case(case, device)
    assert len(spy.launches) == 1 and spy.launches[0]["SHFL"] is True


@pytest.mark.gpu
def test_triton_scan_per_thread_backward_fine_adjoints_gpu(monkeypatch, device: torch.device) -> None:
    """The launcher's own finer chunk adjoints (`_THREAD_ADJ_FINE`), compiled: a backward over
    chunks of 2,048 positions takes its adjoints over chunks of 1,024 and reads every second."""
    from seqmodels.kernels.selective_scan import triton_scan

    case = Case(1, 256, 16, 65536, 2048, dtype="bf16", has_init=True)
    fine = []
    real = triton_scan._chunk_adjoints_per_thread
    monkeypatch.setattr(triton_scan, "_chunk_adjoints_per_thread", lambda *a: fine.append(a[-1]) or real(*a))
    check_case(case, device)
    assert fine == [1024]


@pytest.mark.gpu
@pytest.mark.parametrize("case, words, even", [
    pytest.param(Case(1, 256, 16, 65536, None, dtype="bf16", b="var", c="var"), True, True, id="real-bf16-64k"),
    pytest.param(Case(2, 128, 16, 10000, None, dtype="fp32", b="group", c="const", groups=4, has_init=True),
                 False, True, id="real-fp32-group-const-init"),
    pytest.param(Case(1, 200, 16, 30001, None, dtype="fp16", b="var", c="group", groups=4), False, False,
                 id="real-fp16-ragged"),
    pytest.param(Case(1, 64, 16, 40002, None, dtype="bf16", b="group", c="var", groups=2, has_z=False), True, False,
                 id="real-bf16-L-not-a-multiple-of-P"),
])
def test_triton_scan_per_thread_forward_matches_reference_gpu(case: Case, words: bool, even: bool, monkeypatch,
                                                              device: torch.device) -> None:
    """The forward alone of a scan with few channels and long rows takes the one-channel-per-thread
    kernel on its own (rows split into chunks, 16 states), compiled: bf16 rows read as words,
    unmasked loads, ragged rows and channels."""
    from seqmodels.kernels.selective_scan import triton_scan

    spy = _LaunchSpy(triton_scan._thread_fwd_kernel)
    monkeypatch.setattr(triton_scan, "_thread_fwd_kernel", spy)
    check_forward_alone(case, device)
    assert len(spy.launches) == 2
    assert all(kw["WORDS"] is words and kw["EVEN"] is even for kw in spy.launches)
