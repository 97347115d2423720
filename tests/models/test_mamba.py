"""The Mamba mixer, its block and RMSNorm, used on their own (no embedding)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqmodels.models import Mamba, MambaBlock, RMSNorm


def _mixer_by_hand(mixer: Mamba, x: torch.Tensor) -> torch.Tensor:
    """The mixer's forward written out with an explicit loop over positions and complex
    numbers built from x_proj's features by hand: [B, L, D] -> [B, L, D].

    Independent of the scan's argument layout, so it pins down how B and C are packed.
    """
    batch, seqlen, _ = x.shape
    e, n, r = mixer.d_inner, mixer.d_state, mixer.dt_rank
    u, z = mixer.in_proj(x).chunk(2, dim=-1)  # [B, L, E]
    w = mixer.conv1d.weight[:, 0, :]  # [E, W]
    padded = F.pad(u, (0, 0, mixer.d_conv - 1, 0))  # zeros before position 0
    conv = (
        torch.stack([(padded[:, t : t + mixer.d_conv, :] * w.t()).sum(1) for t in range(seqlen)], dim=1)
        + mixer.conv1d.bias
    )
    u = F.silu(conv)  # [B, L, E]
    feats = mixer.x_proj(u)
    dt = F.softplus(feats[..., :r] @ mixer.dt_proj.weight.t() + mixer.dt_proj.bias)  # [B, L, E]
    if mixer.complex:
        b_feats, c_feats = feats[..., r : r + 2 * n], feats[..., r + 2 * n :]
        # State n's value is the adjacent pair (re, im) = (feature 2n, feature 2n + 1).
        B = torch.complex(b_feats[..., 0::2], b_feats[..., 1::2])
        C = torch.complex(c_feats[..., 0::2], c_feats[..., 1::2])
        A = torch.complex(-torch.exp(mixer.A_log_real), mixer.A_imag)
    else:
        B, C = feats[..., r : r + n], feats[..., r + n :]
        A = -torch.exp(mixer.A_log)
    h = torch.zeros(batch, e, n, dtype=A.dtype)
    ys = []
    for t in range(seqlen):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y = (h * C[:, t, None, :]).sum(-1)
        # A complex SSM's output is 2 Re(.): the conjugate pair's contribution.
        ys.append(2 * y.real if mixer.complex else y)
    y = torch.stack(ys, dim=1) + u * mixer.D
    return mixer.out_proj(y * F.silu(z))


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("impl", ["ref", "torch"])
def test_mixer_matches_written_out_recurrence(complex_, impl):
    torch.manual_seed(0)
    # d_model 24 -> dt_rank 2, d_inner 48; d_state 5 is not a power of two.
    mixer = Mamba(24, d_state=5, d_conv=3, complex=complex_, scan_impl=impl)
    with torch.no_grad():
        # Larger dt and moving imaginary parts so the state mixes across positions.
        mixer.dt_proj.bias.add_(2.0)
    x = torch.randn(2, 11, 24)
    with torch.no_grad():
        expected = _mixer_by_hand(mixer, x)
        got = mixer(x)
    assert got.shape == (2, 11, 24)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_mixer_gradients_match_written_out_recurrence(complex_):
    """Every gradient (input and parameters) of the mixer, whose projections run channels first
    through their own backward, equals autograd through the written-out mixer (float64)."""
    torch.manual_seed(1)
    mixer = Mamba(24, d_state=5, d_conv=3, complex=complex_, scan_impl="ref").double()
    with torch.no_grad():
        mixer.dt_proj.bias.add_(2.0)
    x = torch.randn(3, 9, 24, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 9, 24, dtype=torch.float64)
    grads = {}
    for name, fn in (("mixer", mixer), ("by hand", lambda t: _mixer_by_hand(mixer, t))):
        mixer.zero_grad(set_to_none=True)
        x.grad = None
        (fn(x) * weight).sum().backward()
        grads[name] = {"x": x.grad.clone(), **{k: p.grad.clone() for k, p in mixer.named_parameters()}}
    assert grads["mixer"].keys() == grads["by hand"].keys()
    for key, expected in grads["by hand"].items():
        # A, D and the dt bias enter the scan in float32 (as in training), hence the tolerance.
        torch.testing.assert_close(grads["mixer"][key], expected, rtol=1e-5, atol=1e-6, msg=f"gradient of {key}")


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_mixer_init(complex_):
    torch.manual_seed(0)
    d_model, n = 40, 8
    mixer = Mamba(d_model, d_state=n, complex=complex_, dt_min=2e-3, dt_max=5e-2)
    e, r = 2 * d_model, math.ceil(d_model / 16)
    assert mixer.in_proj.weight.shape == (2 * e, d_model) and mixer.in_proj.bias is None
    assert mixer.conv1d.weight.shape == (e, 1, 4) and mixer.conv1d.bias is not None
    assert mixer.x_proj.weight.shape == (r + (4 if complex_ else 2) * n, e) and mixer.x_proj.bias is None
    assert mixer.dt_proj.weight.shape == (e, r)
    assert mixer.out_proj.bias is None
    # dt_proj.weight ~ U(+-r^-0.5); softplus(bias) is the initial dt, inside [dt_min, dt_max].
    assert mixer.dt_proj.weight.abs().max() <= r**-0.5
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 2e-3 * (1 - 1e-4) and dt.max() <= 5e-2 * (1 + 1e-4)
    torch.testing.assert_close(mixer.D.detach(), torch.ones(e))
    A = mixer.A()
    states = torch.arange(n, dtype=torch.float32).expand(e, n)
    if complex_:
        assert A.dtype == torch.complex64
        # S4D-Lin: A = -1/2 + i pi n.
        torch.testing.assert_close(A, torch.complex(torch.full((e, n), -0.5), math.pi * states))
        flagged = {"A_log_real", "A_imag", "D", "dt_proj.bias"}
    else:
        # S4D-Real: A = -(n + 1).
        torch.testing.assert_close(A, -(states + 1))
        flagged = {"A_log", "D", "dt_proj.bias"}
    assert {name for name, p in mixer.named_parameters() if getattr(p, "_no_weight_decay", False)} == flagged


def test_dt_init_floor_applies():
    torch.manual_seed(0)
    mixer = Mamba(16, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-3)
    torch.testing.assert_close(F.softplus(mixer.dt_proj.bias), torch.full((32,), 1e-3), rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"d_state": 0}, "d_state"),
        ({"expand": -2}, "expand"),
        ({"dt_rank": 1.5}, "dt_rank"),
        ({"scan_impl": "cuda"}, "scan_impl"),
        ({"complex": None}, "complex"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_mixer_validation_names_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=rf"Mamba\.{field}\b"):
        Mamba(16, **kwargs)
    with pytest.raises(ValueError, match=rf"\.{field}\b"):
        MambaBlock(16, **kwargs)


def test_mixer_rejects_wrong_input_shape():
    mixer = Mamba(16, scan_impl="ref")
    with pytest.raises(ValueError, match="x must be"):
        mixer(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="x must be"):
        mixer.step(torch.randn(2, 5, 16), mixer.allocate_inference_cache(2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the Triton scan is available here")
def test_explicit_unavailable_scan_impl_raises(monkeypatch):
    # Without CUDA and without the Triton interpreter, "triton" cannot run: it must raise,
    # not fall back to another implementation.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 4, 16)
    mixer = Mamba(16, scan_impl="triton")
    with pytest.raises(ValueError, match="triton"):
        mixer(x)
    with pytest.raises(ValueError, match="triton"):
        mixer.step(x[:, 0], mixer.allocate_inference_cache(1))


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_block_is_prenorm_residual_and_steps(complex_):
    torch.manual_seed(0)
    block = MambaBlock(20, d_state=4, complex=complex_, scan_impl="ref")
    x = torch.randn(3, 7, 20)
    with torch.no_grad():
        y = block(x)
        torch.testing.assert_close(y, x + block.mixer(block.norm(x)))
        state = block.allocate_inference_cache(3)
        assert state.conv.shape == (3, 40, 4)
        assert state.ssm.shape == (3, 40, 4)
        assert state.ssm.dtype == (torch.complex64 if complex_ else torch.float32)
        stepped = torch.stack([block.step(x[:, t], state) for t in range(7)], dim=1)
    torch.testing.assert_close(stepped, y, rtol=1e-4, atol=1e-5)


def test_block_keeps_residual_in_fp32():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    block = MambaBlock(16, scan_impl="ref").to(torch.bfloat16)
    with torch.no_grad():
        assert block(x).dtype == torch.float32
        assert block.norm(x).dtype == torch.bfloat16
    block_low = MambaBlock(16, scan_impl="ref", residual_in_fp32=False).to(torch.bfloat16)
    with torch.no_grad():
        assert block_low(x).dtype == torch.bfloat16


@pytest.mark.parametrize("residual_in_fp32", [True, False], ids=["fp32-stream", "own-dtype"])
def test_block_pair_form_equals_forward(residual_in_fp32):
    """forward_pair moves the residual add in front of the next norm: summed, it is forward, with
    the same gradients; a chain of pairs is a chain of blocks."""
    torch.manual_seed(0)
    blocks = [MambaBlock(16, d_state=4, scan_impl="ref", residual_in_fp32=residual_in_fp32) for _ in range(2)]
    x = torch.randn(2, 5, 16, requires_grad=True)
    chained = x
    for block in blocks:
        chained = block(chained)
    grads_chained = torch.autograd.grad(chained.square().sum(), [x, *blocks[1].parameters()])
    hidden, residual = x, None
    for block in blocks:
        hidden, residual = block.forward_pair(hidden, residual)
        assert residual.dtype == torch.float32
    paired = residual + hidden
    grads_paired = torch.autograd.grad(paired.square().sum(), [x, *blocks[1].parameters()])
    torch.testing.assert_close(paired, chained, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_paired, grads_chained, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rmsnorm():
    torch.manual_seed(0)
    norm = RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 6))
    x = torch.randn(4, 6) * 3
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert not any("bias" in name for name, _ in norm.named_parameters())
    with pytest.raises(ValueError, match="d_model"):
        RMSNorm(0)
