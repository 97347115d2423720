"""Inputs for selective-scan tests: a case description, random inputs, and a pairwise grid.

Shared by the kernel tests (chunked, Triton, reference)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ScanCase:
    complex: bool = False
    dtype: torch.dtype = torch.float32
    b_layout: str = "variable"  # "constant" (dim, N) | "variable" (batch, N, L) | "grouped" (batch, G, N, L)
    c_layout: str = "variable"
    has_D: bool = True
    has_z: bool = False
    has_delta_bias: bool = False
    softplus: bool = False
    initial_state: bool = False
    length: int = 7
    batch: int = 2
    dim: int = 6  # not a power of two; divisible by the group count 3
    d_state: int = 5
    groups: int = 3
    complex_bc_dtype: bool = False  # complex scan: B/C as complex (.., L) instead of real (.., 2L)

    @property
    def id(self) -> str:
        parts = ["cplx" if self.complex else "real", str(self.dtype).removeprefix("torch."),
                 f"B{self.b_layout[0]}", f"C{self.c_layout[0]}", f"L{self.length}"]
        for flag, name in ((self.has_D, "D"), (self.has_z, "z"), (self.has_delta_bias, "bias"),
                           (self.softplus, "softplus"), (self.initial_state, "h0")):
            if flag:
                parts.append(name)
        return "-".join(parts)


def _bc(case: ScanCase, layout: str, g: torch.Generator) -> Tensor:
    b, d, n, L = case.batch, case.dim, case.d_state, case.length
    if layout == "constant":
        if case.complex:
            return torch.randn(d, n, dtype=torch.complex128, generator=g)
        return torch.randn(d, n, dtype=torch.float64, generator=g)
    lead = (b,) if layout == "variable" else (b, case.groups)
    if case.complex and case.complex_bc_dtype:
        return torch.randn(*lead, n, L, dtype=torch.complex128, generator=g)
    return torch.randn(*lead, n, 2 * L if case.complex else L, dtype=torch.float64, generator=g)


def make_inputs(case: ScanCase, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Tensor | None]:
    """Keyword arguments of ``selective_scan`` for ``case``: u, delta, z, real B/C in ``case.dtype``;
    A, D, delta_bias, initial_state float32 (complex64); leaves with requires_grad."""
    g = torch.Generator().manual_seed(seed)
    b, d, n, L = case.batch, case.dim, case.d_state, case.length
    low = case.dtype
    wide = torch.complex64 if case.complex else torch.float32
    u = torch.randn(b, d, L, dtype=torch.float64, generator=g)
    if case.softplus:
        delta = torch.randn(b, d, L, dtype=torch.float64, generator=g) * 0.5 - 1.0
    else:
        delta = torch.rand(b, d, L, dtype=torch.float64, generator=g) * 0.5 + 0.01
    # S4D-style A: decaying real part, oscillating imaginary part for the complex scan.
    A = -(0.5 + torch.rand(d, n, dtype=torch.float64, generator=g))
    if case.complex:
        A = torch.complex(A, torch.randn(d, n, dtype=torch.float64, generator=g) * 3)
    out: dict[str, Tensor | None] = {
        "u": u.to(low),
        "delta": delta.to(low),
        "A": A.to(wide),
        "B": _bc(case, case.b_layout, g),
        "C": _bc(case, case.c_layout, g),
        "D": torch.randn(d, dtype=torch.float64, generator=g).float() if case.has_D else None,
        "z": torch.randn(b, d, L, dtype=torch.float64, generator=g).to(low) if case.has_z else None,
        "delta_bias": (torch.rand(d, dtype=torch.float64, generator=g) * 0.2).float() if case.has_delta_bias else None,
        "initial_state": torch.randn(b, d, n, dtype=torch.float64, generator=g).to(wide) if case.initial_state else None,
    }
    for key in ("B", "C"):
        t = out[key]
        out[key] = t.to(wide) if t.is_complex() or (case.complex and t.dim() == 2) else t.to(low)
    return {k: (None if v is None else v.to(device).requires_grad_()) for k, v in out.items()}


def to_float64(inputs: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    """The same values in float64 / complex128, as fresh leaves: the ground-truth inputs."""
    def wide(t: Tensor) -> Tensor:
        return t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_()

    return {k: None if v is None else wide(v) for k, v in inputs.items()}


def pairwise(factors: dict[str, list]) -> list[dict]:
    """A small set of rows covering every pair of values of every two factors (greedy)."""
    names = list(factors)
    uncovered = {
        (a, va, b, vb)
        for a, b in itertools.combinations(names, 2)
        for va in factors[a]
        for vb in factors[b]
    }
    rows = []
    while uncovered:
        # Seed with an uncovered pair, then fill the other factors greedily.
        a, va, b, vb = min(uncovered, key=repr)
        row = {a: va, b: vb}
        for name in names:
            if name in row:
                continue
            row[name] = max(
                factors[name],
                key=lambda v: sum((m, row[m], name, v) in uncovered or (name, v, m, row[m]) in uncovered for m in row),
            )
        uncovered -= {(x, row[x], y, row[y]) for x, y in itertools.combinations(names, 2)}
        rows.append(row)
    return rows
