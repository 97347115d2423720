"""Shared fixtures: the device under test and GPU-only marking.

Tests marked ``gpu`` are skipped when no CUDA device is present, so CPU CI runs the rest;
run them on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import os

import pytest
import torch

# Triton 3.6 picks interpreter or compiler when @triton.jit decorates a kernel (at import), from
# TRITON_INTERPRET; set it before any test imports a kernel, so CPU machines run Triton kernels
# through the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def nan_empty(monkeypatch):
    """Make ``torch.empty`` / ``torch.empty_like`` return NaN-filled tensors, so outputs a kernel
    forgets to write show up as NaN instead of stale memory."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def _fill(t):
        if t.is_floating_point() or t.is_complex():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _fill(real_empty_like(*a, **k)))
    yield
