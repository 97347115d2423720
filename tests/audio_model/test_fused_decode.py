"""Fast sampling: the fused U-Net step (one stage kernel per stage) equals ``MambaUNet.step``;
the Gumbel-max sampler draws from the right distribution; ``generate_codes`` keeps the prefix, is
seeded, and (on a GPU) gives the same codes with and without the CUDA graph.

On a CPU the stage kernel runs through the Triton interpreter (tests/conftest.py), so the
models are tiny.
"""

from __future__ import annotations

import math

import pytest
import torch

from seqmodels.generate import filter_logits, generate_codes, gumbel_max, gumbel_noise, sample_logits
from seqmodels.models import MambaUNet, MambaUNetConfig
from tests.audio_model.unets import random_unet


def _stepped_logits(model: MambaUNet, ids: torch.Tensor, stages=None) -> torch.Tensor:
    cache = model.allocate_inference_cache(ids.shape[0], device=ids.device)
    with torch.inference_mode():
        return torch.stack([model.step(ids[:, t], cache, stages) for t in range(ids.shape[1])], dim=1)


# -- the fused U-Net step -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "complex_, overrides, split_from_width",
    [(False, {"n_down_layers": 2}, None), (True, {"n_down_layers": 0}, None), (False, {}, 10**6)],
    ids=["real-unet", "complex-sashimi-placement", "real-one-program-per-row"],
)
def test_fused_step_equals_unfused(complex_: bool, overrides: dict, split_from_width: int | None, monkeypatch):
    """40 steps (2.5 periods of 16) through the Triton stage kernels; stages with 2, 1 and (in the
    SaShiMi placement) 0 blocks; split mode (the default), and one program per row in the last row."""
    if split_from_width is not None:
        from seqmodels.kernels.mamba_stage import triton_stage

        monkeypatch.setattr(triton_stage, "SPLIT_FROM_WIDTH", split_from_width)
    model = random_unet(complex_, **overrides)
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(3))
    plain = _stepped_logits(model, ids)
    fused = _stepped_logits(model, ids, model.pack_stages(impl="triton"))
    err = (fused - plain).abs().max().item()
    print(f"max |fused - unfused| = {err:.2e} (logits up to {plain.abs().max().item():.2f})")
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)


def test_cache_stacks_back_the_block_states_and_reset():
    model = random_unet(False, n_down_layers=2)
    cache = model.allocate_inference_cache(2)
    assert cache.down_stacks[0].conv.shape == (2, 2, 16, 4) and cache.centre_stack.ssm.shape == (1, 2, 64, 4)
    assert cache.down[0][1].conv.data_ptr() == cache.down_stacks[0].conv[1].data_ptr()
    _stepped_logits(model, torch.randint(0, 256, (2, 20)))  # its own cache
    with torch.inference_mode():
        for t in range(20):
            model.step(torch.full((2,), t), cache)
    assert cache.t == 20 and cache.down[0][1].ssm.abs().sum() > 0 and cache.up_buffers[1].abs().sum() > 0
    cache.zero_()
    assert cache.t == 0 and cache.down[0][1].ssm.abs().sum() == 0 and cache.up_buffers[1].abs().sum() == 0


def test_pack_stages_needs_float32():
    model = random_unet(False).to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        model.pack_stages()


# -- the sampler ----------------------------------------------------------------------------------


def test_gumbel_max_matches_the_distribution():
    """Chi-square goodness of fit over 20,000 draws (5 degrees of freedom: the 0.1% critical value
    is 20.5), with temperature 2 (which flattens the distribution to p^(1/2), renormalised)."""
    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    n = 20_000
    logits = torch.log(probs).repeat(n, 1)
    gen = torch.Generator().manual_seed(0)
    for temperature, expected in [(1.0, probs), (2.0, probs.sqrt() / probs.sqrt().sum())]:
        counts = torch.bincount(sample_logits(logits, temperature=temperature, generator=gen), minlength=6).double()
        chi2 = ((counts - n * expected) ** 2 / (n * expected)).sum().item()
        print(f"temperature {temperature}: chi-square {chi2:.2f}")
        assert chi2 < 20.5


def test_top_k_and_top_p_keep_only_allowed_codes():
    probs = torch.tensor([0.05, 0.5, 0.3, 0.15])  # ranks: 1, 2, 3, 0
    logits = torch.log(probs).repeat(4000, 1)
    gumbel = gumbel_noise(torch.rand(4000, 4, generator=torch.Generator().manual_seed(1)))
    assert set(gumbel_max(logits, gumbel, top_k=2).tolist()) == {1, 2}
    assert set(gumbel_max(logits, gumbel, top_p=0.7).tolist()) == {1, 2}  # 0.5 < 0.7 <= 0.8
    assert set(gumbel_max(logits, gumbel, top_p=0.5).tolist()) == {1}
    assert set(gumbel_max(logits, gumbel, top_k=3, top_p=0.9).tolist()) == {1, 2, 3}
    assert set(gumbel_max(logits, gumbel).tolist()) == {0, 1, 2, 3}
    masked = filter_logits(logits[:1], top_k=3)
    assert torch.isinf(masked[0, 0]) and torch.isfinite(masked[0, 1:]).all()
    # u = 0 (possible from torch.rand) still gives finite noise.
    assert torch.isfinite(gumbel_noise(torch.tensor([0.0, 0.5, 1 - 2**-24]))).all()


# -- generate_codes -------------------------------------------------------------------------------


def _codes(model: MambaUNet, seed: int, num_new: int, **kw) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return generate_codes(model, 2, num_new, generator=gen, progress=False, **kw)


def test_generate_is_seeded_and_whole_periods_are_cut():
    model = random_unet(False)
    a, b, c = _codes(model, 0, 21), _codes(model, 0, 21), _codes(model, 1, 21)
    assert a.shape == (2, 21) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the clips of a batch differ
    # 21 samples run two periods of 16; the first 5 of a 5-sample run are the same draws.
    torch.testing.assert_close(_codes(model, 0, 5), a[:, :5], rtol=0, atol=0)


def test_generate_keeps_the_prefix():
    model = random_unet(True)
    prefix = torch.randint(0, 256, (19,), generator=torch.Generator().manual_seed(4))
    out = _codes(model, 0, 9, prefix=prefix)
    assert out.shape == (2, 28)
    assert torch.equal(out[:, :19], prefix.expand(2, -1))
    # What follows the prefix depends on it.
    assert not torch.equal(out[:, 19:], _codes(model, 0, 9, prefix=(prefix + 1) % 256)[:, 19:])


def test_generate_fused_reference_path_equals_plain_loop():
    """On a CPU ``fused=True`` runs the stage step's PyTorch reference: same draws, same codes."""
    model = random_unet(False, n_down_layers=2)
    torch.testing.assert_close(_codes(model, 5, 40, fused=True), _codes(model, 5, 40, fused=False), rtol=0, atol=0)


def test_cuda_graph_needs_cuda():
    model = random_unet(False)
    if torch.cuda.is_available():
        pytest.skip("the model is on the CPU here, the check is for CPU-only machines")
    with pytest.raises(ValueError, match="cuda_graph"):
        generate_codes(model, 1, 4, cuda_graph=True, progress=False)


# -- GPU ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["sc09-6.1m", "youtubemix-3.5m"])
def test_gpu_fused_step_equals_unfused_at_preset_size(name: str):
    torch.manual_seed(0)
    model = MambaUNet(MambaUNetConfig.from_name(name)).cuda().eval()
    ids = torch.randint(0, 256, (4, 48), device="cuda")
    plain = _stepped_logits(model, ids)
    fused = _stepped_logits(model, ids, model.pack_stages())
    print(f"{name}: max |fused - unfused| = {(fused - plain).abs().max().item():.2e}")
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_gpu_cuda_graph_equals_eager(fused: bool):
    torch.manual_seed(0)
    model = MambaUNet(MambaUNetConfig.from_name("sc09-6.1m")).cuda().eval()
    prefix = torch.randint(0, 256, (23,))

    def run(graph: bool) -> torch.Tensor:
        gen = torch.Generator(device="cuda").manual_seed(7)
        return generate_codes(model, 3, 41, prefix=prefix, generator=gen, progress=False, fused=fused,
                              cuda_graph=graph, top_k=100, top_p=0.95, temperature=0.9)

    eager, graphed = run(False), run(True)
    assert eager.shape == (3, 64) and torch.equal(eager[:, :23].cpu(), prefix.expand(3, -1))
    assert torch.equal(graphed, eager)
    assert math.prod(graphed.shape) == 192
