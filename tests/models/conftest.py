"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Run the model tests on one intra-op thread: their tensors are tiny, so handing work to a
    second thread costs more than it saves (a 2-layer, d_model 16 training step took 0.03 s on one
    thread and 1.1 s on two, on a 2-core machine shared with other jobs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
