"""MambaUNet: presets, pooling shapes, causality, and step-by-step decoding equal to forward."""

from __future__ import annotations

import math

import pytest
import torch

from seqmodels.models import DownPool, Mamba, MambaUNet, MambaUNetConfig, UpPool
from tests.audio_model.unets import random_unet

PAPER_SIZES = {"sc09-6.1m": 6.1e6, "sc09-24.3m": 24.3e6, "youtubemix-3.5m": 3.5e6}


def _block_params(d: int, complex_: bool, n: int = 16, expand: int = 2, w: int = 4) -> int:
    # The models README's per-block formula; a complex SSM doubles B, C and A.
    e, r = expand * d, math.ceil(d / 16)
    bc = 2 * n if complex_ else n
    a = 2 * e * n if complex_ else e * n
    return 2 * e * d + e * (w + 1) + e * (r + 2 * bc) + (r + 1) * e + a + e + e * d + d


def _unet_params(config: MambaUNetConfig) -> int:
    w, c, p = config.widths, config.complex, config.pool
    total = 2 * 256 * config.d_model + config.d_model  # embedding, head, final norm
    for i, pool in enumerate(p):
        total += (config.n_down_layers + config.n_layers) * _block_params(w[i], c)
        total += (w[i] * pool * w[i + 1] + w[i + 1]) + (w[i + 1] * w[i] * pool + w[i] * pool)  # Down/UpPool
    return total + config.n_layers * _block_params(w[-1], c)


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_preset_sizes_match_the_paper(name):
    config = MambaUNetConfig.from_name(name)
    model = MambaUNet(config)
    count = sum(p.numel() for p in model.parameters())
    print(f"{name}: {count:,} parameters")
    assert count == _unet_params(config)
    assert abs(count / PAPER_SIZES[name] - 1) < 0.03
    blocks = sum(1 for m in model.modules() if isinstance(m, Mamba))
    expected = {"sc09-6.1m": 40, "sc09-24.3m": 75, "youtubemix-3.5m": 20}[name]
    assert blocks == expected
    assert config.complex == name.startswith("youtubemix")


def test_config_round_trip_and_errors():
    config = MambaUNetConfig.from_name("sc09-6.1m", scan_impl="torch")
    again = MambaUNetConfig.from_dict(config.to_dict())
    assert again == config and again.widths == (64, 128, 256) and again.total_pool == 16
    with pytest.raises(ValueError, match="pool"):
        MambaUNetConfig(pool=(4, 1))
    with pytest.raises(ValueError, match="n_down_layers"):
        MambaUNetConfig(n_down_layers=-1)
    with pytest.raises(ValueError, match="unknown field"):
        MambaUNetConfig.from_dict({"d_model": 8, "blocks": 3})
    with pytest.raises(ValueError, match="sc09-6.1m"):
        MambaUNetConfig.from_name("sc09-7m")


def test_pooling_shapes_and_shift():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 8)
    down, up = DownPool(8, 4, 2), UpPool(16, 4, 2)
    coarse = down(x)
    assert coarse.shape == (2, 8, 16)
    # Coarse step k is exactly the linear map of fine steps 4k .. 4k+3.
    torch.testing.assert_close(coarse[:, 1], down.linear(x[:, 4:8].reshape(2, 32)))
    fine = up(coarse)
    assert fine.shape == (2, 32, 8)
    assert torch.all(fine[:, :4] == 0)  # the one-coarse-step shift
    torch.testing.assert_close(fine[:, 4:8], up.linear(coarse[:, 0]).reshape(2, 4, 8))


def test_length_must_divide_by_total_pool():
    model = random_unet(False)
    with pytest.raises(ValueError, match="divide by the total pooling factor 16"):
        model(torch.zeros(1, 40, dtype=torch.long))


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("n_down_layers", [1, 0], ids=["unet", "sashimi-placement"])
def test_step_equals_forward(complex_, n_down_layers):
    model = random_unet(complex_, n_down_layers=n_down_layers)
    ids = torch.randint(0, 256, (3, 80))
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_inference_cache(3)
        stepped = torch.stack([model.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    assert cache.t == 80
    err = (full - stepped).abs().max().item()
    print(f"max |forward - step| = {err:.2e} (logits up to {full.abs().max().item():.2f})")
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("t", [0, 5, 16, 37, 63])
def test_causal(complex_, t):
    model = random_unet(complex_)
    ids = torch.randint(0, 256, (2, 64))
    changed = ids.clone()
    changed[:, t] = (changed[:, t] + 97) % 256
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :t], b[:, :t]), "an output before t saw the input at t"
    # And the change does reach position t and later (the model is not blind to its input).
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-3


def test_every_stage_reaches_the_output():
    """A change early on reaches outputs 16+ samples later only through the pooled stages when
    the fine stage's own memory is cut (dt tiny): checks the coarse paths are wired."""
    model = random_unet(False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Mamba):
                module.dt_proj.bias.fill_(-20.0)  # softplus -> ~0: the SSM forgets nothing, adds nothing
    ids = torch.randint(0, 256, (1, 64))
    changed = ids.clone()
    changed[:, 2] += 1
    with torch.no_grad():
        diff = (model(ids) - model(changed)).abs().amax(-1)[0]
    # Fine-rate conv reach is 4 per block; beyond that only DownPool -> ... -> UpPool carries it.
    assert diff[20:32].max() > 1e-4
