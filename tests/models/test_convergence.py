"""Training the same tiny model with the reference scan and the PyTorch scan gives the same
losses step after step, and the loss falls, for the real and the complex SSM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqmodels.models import MambaConfig, MambaLM

STEPS = 30


def _batch() -> torch.Tensor:
    # A periodic DNA-like sequence (tokenizer ids A7 C8 G9 T10), each row a different phase:
    # predictable after one period, so a working model learns it within a few dozen steps.
    motif = torch.tensor([7, 8, 9, 10, 10, 9, 7])
    stream = motif.repeat(5)
    return torch.stack([stream[i : i + 21] for i in range(4)])  # [4, 21]


def _train(impl: str, complex_: bool) -> list[float]:
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=12, d_state=4, complex=complex_, scan_impl=impl)
    model = MambaLM(config).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    ids = _batch()
    losses = []
    for _ in range(STEPS):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_ref_and_torch_scans_train_alike(complex_):
    ref = _train("ref", complex_)
    fast = _train("torch", complex_)
    print("ref  ", [f"{x:.4f}" for x in ref])
    print("torch", [f"{x:.4f}" for x in fast])
    assert ref[-1] < 0.3 * ref[0]
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(ref), rtol=1e-3, atol=1e-3)
