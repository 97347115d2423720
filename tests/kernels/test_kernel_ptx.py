"""``python -m benchmarks.kernel_ptx``: the scan kernels compile ahead of time for sm_90 on a
machine without a GPU, and the report counts the state loop's instructions.

Runs in a subprocess: the tests' conftest turns on the Triton interpreter, under which the
kernels cannot be compiled."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "benchmarks.kernel_ptx", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_reports_registers_and_loop_mix() -> None:
    r = run_tool("--kernels", "fwd", "bwd")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {m.group(1): m for m in re.finditer(
        r"^\s+(fwd|bwd)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", r.stdout, re.M)}
    assert set(rows) == {"fwd", "bwd"}, r.stdout
    for kernel, m in rows.items():
        regs, loop_ops, shuffles = int(m.group(2)), int(m.group(6)), int(m.group(7))
        assert 0 < regs <= 255, (kernel, regs)
        # the state loop exists and does its scan across the warp with shuffles
        assert loop_ops > 50 and 0 < shuffles < loop_ops, (kernel, loop_ops, shuffles)
        assert "ex2:" in m.group(8), r.stdout  # the exponentials of the decay run in the loop
    # the backward runs two scans per state index (recompute and adjoint): more work per state
    assert int(rows["bwd"].group(6)) > int(rows["fwd"].group(6))


def test_refuses_interpreter_and_bad_tile() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "benchmarks.kernel_ptx"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unset TRITON_INTERPRET" in r.stderr
    r = run_tool("--tile", "48")
    assert r.returncode != 0 and "--tile must be a power of two" in r.stderr


def test_complex_backward_compiles() -> None:
    r = run_tool("--complex", "--kernels", "bwd")
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"^\s+bwd\s+\d+", r.stdout, re.M), r.stdout


def test_two_pass_backward_needs_fewer_shuffles() -> None:
    """The two-pass backward scans across the warp once per direction over [R] rows; version 4
    runs two scans over [T] vectors per state index, the reverse one between reversals."""
    r = run_tool("--kernels", "bwd", "bwd2")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {m.group(1): m for m in re.finditer(
        r"^\s+(bwd2?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", r.stdout, re.M)}
    assert set(rows) == {"bwd", "bwd2"}, r.stdout
    assert int(rows["bwd2"].group(3)) == 0, r.stdout  # no spills
    assert int(rows["bwd2"].group(7)) < int(rows["bwd"].group(7)) / 2, r.stdout
    assert int(rows["bwd2"].group(6)) < int(rows["bwd"].group(6)), r.stdout
