"""The token-weighted mean loss of the next-token tasks: its value, its NaN, and no host wait."""

from __future__ import annotations

import math

import pytest
import torch

from seqmodels.tasks.next_token import TokenWeightedMean


def test_weighted_mean_of_batches():
    metric = TokenWeightedMean()
    for value, n in ((2.0, 10), (1.0, 30), (4.0, 0)):
        metric.update(torch.tensor(value), torch.tensor(n))
    assert metric.compute().item() == pytest.approx((2.0 * 10 + 1.0 * 30) / 40)
    metric.reset()
    metric.update(torch.tensor(3.0), torch.tensor(5))
    assert metric.compute().item() == pytest.approx(3.0)


def test_nan_loss_shows_in_the_mean():
    metric = TokenWeightedMean()
    metric.update(torch.tensor(1.0), torch.tensor(4))
    metric.update(torch.tensor(float("nan")), torch.tensor(4))
    assert math.isnan(metric.compute().item())


@pytest.mark.gpu
def test_update_never_waits_for_the_gpu():
    metric = TokenWeightedMean().to("cuda")
    loss, n = torch.tensor(1.5, device="cuda"), torch.tensor(7, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(loss, n)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert metric.compute().item() == pytest.approx(1.5)
