"""Fixtures for the waveform-model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """One intra-op thread: the tensors are tiny, and a second thread on a shared 2-core machine
    costs more than it saves (see tests/models/conftest.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
