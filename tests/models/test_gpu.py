"""The model on the fused Triton scan (CUDA only): same outputs and gradients as the PyTorch scan,
and step-by-step decoding through the fused update equals the full forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqmodels.models import MambaConfig, MambaLM

pytestmark = pytest.mark.gpu


def _pair(complex_: bool, device: torch.device) -> tuple[MambaLM, MambaLM]:
    """The same weights on the PyTorch scan and on the Triton scan."""
    torch.manual_seed(0)
    config = MambaConfig(d_model=64, n_layer=2, vocab_size=12, complex=complex_, scan_impl="torch")
    reference = MambaLM(config).to(device)
    fused = MambaLM(MambaConfig.from_dict({**config.to_dict(), "scan_impl": "triton"})).to(device)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_triton_matches_torch_forward_and_gradients(complex_, device):
    reference, fused = _pair(complex_, device)
    ids = torch.randint(0, 12, (2, 300), device=device, generator=torch.Generator(device).manual_seed(1))
    losses = []
    for model in (reference, fused):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    fused_params = dict(fused.named_parameters())
    for name, p in reference.named_parameters():
        torch.testing.assert_close(fused_params[name].grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_triton_step_equals_forward(complex_, device):
    _, fused = _pair(complex_, device)
    fused.eval()
    ids = torch.randint(0, 12, (3, 40), device=device, generator=torch.Generator(device).manual_seed(2))
    with torch.no_grad():
        full = fused(ids)
        cache = fused.allocate_inference_cache(3)
        stepped = torch.stack([fused.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-3, atol=1e-4)


def test_triton_bfloat16_autocast_close_to_fp32(device):
    reference, fused = _pair(False, device)
    ids = torch.randint(0, 12, (2, 256), device=device, generator=torch.Generator(device).manual_seed(3))
    with torch.no_grad():
        expected = reference(ids)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            got = fused(ids)
    assert got.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa; logits here are O(1).
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_checkpointing_with_kept_scan_states_matches_plain(complex_, device):
    """Checkpointed blocks on the Triton scan run each scan forward once (the backward starts from
    the first pass's tile states and writes y itself): same loss and gradients as no checkpointing,
    with the sequence split into chunks (batch 1 x 128 channels)."""
    torch.manual_seed(0)
    base = MambaConfig(d_model=64, n_layer=2, vocab_size=12, complex=complex_, scan_impl="triton")
    plain = MambaLM(base).to(device)
    ckpt = MambaLM(MambaConfig.from_dict({**base.to_dict(), "checkpointing": True})).to(device)
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 12, (1, 5001), device=device, generator=torch.Generator(device).manual_seed(4))
    losses = []
    for model in (plain, ckpt):
        model.train()
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    ckpt_params = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(ckpt_params[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
