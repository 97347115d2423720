"""CPU checks of the reference-kernel harness of the scan benchmark (the build itself and the
timings need a GPU and the fetched sources: benchmarks/RESULTS.md)."""

from __future__ import annotations

import sys

import pytest
import torch

from benchmarks import reference_scan


def test_build_names_a_folder_without_the_sources(tmp_path) -> None:
    (tmp_path / "csrc" / "selective_scan").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"--reference-src .*no csrc/selective_scan/selective_scan.cpp"):
        reference_scan.build(tmp_path)


def test_reference_scan_before_build_is_an_error() -> None:
    x = torch.zeros(1, 2, 3)
    with pytest.raises(RuntimeError, match="build"):
        reference_scan.reference_scan(x, x, torch.zeros(2, 4), torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))


def test_benchmark_asks_for_the_sources_with_impl_cuda(monkeypatch) -> None:
    from benchmarks import selective_scan as bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sys, "argv", ["selective_scan", "--impls", "triton", "cuda"])
    with pytest.raises(SystemExit, match="--impls cuda needs --reference-src"):
        bench.main()
