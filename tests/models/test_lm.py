"""MambaLM / MambaBackbone: shapes, init, step-by-step decoding, causality, checkpointing."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from seqmodels.models import Mamba, MambaBackbone, MambaConfig, MambaLM

IMPLS = ["ref", "torch"]


def _tiny(complex_: bool = False, impl: str = "ref", **overrides) -> MambaLM:
    torch.manual_seed(0)
    config = MambaConfig(d_model=32, n_layer=2, vocab_size=12, d_state=6, complex=complex_, scan_impl=impl, **overrides)
    model = MambaLM(config)
    with torch.no_grad():
        # Widen dt so information travels across positions within a short test sequence.
        for module in model.modules():
            if isinstance(module, Mamba):
                module.dt_proj.bias.add_(2.0)
    return model


def test_shapes():
    model = _tiny().eval()
    ids = torch.randint(0, 12, (3, 9))
    with torch.no_grad():
        assert model(ids).shape == (3, 9, 16)
        assert model.hidden_states(ids).shape == (3, 9, 32)
        assert isinstance(model.backbone, MambaBackbone)
        assert model.backbone(ids).shape == (3, 9, 32)
        cache = model.allocate_inference_cache(3)
        assert len(cache) == 2
        assert cache[0].conv.shape == (3, 64, 4) and cache[0].ssm.shape == (3, 64, 6)
        assert model.step(ids[:, 0], cache).shape == (3, 16)


def test_bad_input_ids():
    model = _tiny()
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="input_ids"):
        model.step(torch.zeros(2, 5, dtype=torch.long), model.allocate_inference_cache(2))
    with pytest.raises(ValueError, match="cache"):
        model.step(torch.zeros(2, dtype=torch.long), model.allocate_inference_cache(2)[:1])


def test_init():
    torch.manual_seed(0)
    config = MambaConfig(d_model=64, n_layer=9, vocab_size=12)
    model = MambaLM(config)
    # Tied head over the padded vocabulary.
    assert model.lm_head.weight is model.backbone.embedding.weight
    assert model.lm_head.weight.shape == (16, 64)
    assert abs(model.backbone.embedding.weight.std().item() - 0.02) < 0.005
    # out_proj: default Linear bound 1/sqrt(fan_in), divided by sqrt(n_layer).
    bound = 1 / math.sqrt(128) / math.sqrt(9)
    for layer in model.backbone.layers:
        w = layer.mixer.out_proj.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        # The dt bias keeps its own initialisation (softplus^-1 of dt in [dt_min, dt_max]).
        assert layer.mixer.dt_proj.bias.min() < -2
    untied = MambaLM(MambaConfig(d_model=64, n_layer=9, vocab_size=12, tie_embeddings=False))
    assert untied.lm_head.weight is not untied.backbone.embedding.weight
    assert sum(p.numel() for p in untied.parameters()) == sum(p.numel() for p in model.parameters()) + 16 * 64


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("impl", IMPLS)
def test_step_equals_forward(complex_, impl):
    model = _tiny(complex_, impl).eval()
    ids = torch.randint(0, 12, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_inference_cache(2)
        stepped = torch.stack([model.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    assert full.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("impl", IMPLS)
def test_causal(complex_, impl):
    model = _tiny(complex_, impl).eval()
    ids = torch.randint(0, 12, (2, 12), generator=torch.Generator().manual_seed(2))
    t = 6
    changed = ids.clone()
    changed[:, t] = (ids[:, t] + 1) % 12
    with torch.no_grad():
        before, after = model(ids), model(changed)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=0)
    # The change does reach position t and beyond.
    assert (after[:, t:] - before[:, t:]).abs().amax(dim=-1).min() > 1e-6


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_checkpointing_gives_same_gradients(complex_):
    ids = torch.randint(0, 12, (2, 10), generator=torch.Generator().manual_seed(3))
    grads = []
    for checkpointing in (False, True):
        model = _tiny(complex_, "ref", checkpointing=checkpointing).train()
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    plain, ckpt = grads
    assert plain.keys() == ckpt.keys()
    assert all(g.abs().max() > 0 for name, g in plain.items() if "A_" in name)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_backbone_fuses_each_add_into_the_next_norm():
    """The backbone's unchecked path (add fused into the next norm) is the chain of blocks."""
    model = _tiny().train()
    ids = torch.randint(0, 12, (2, 9), generator=torch.Generator().manual_seed(5))
    bb = model.backbone

    def chained(input_ids):
        x = bb.embedding(input_ids).float()
        for layer in bb.layers:
            x = layer(x)
        return model.lm_head(bb.norm_f(x))

    grads = []
    for fn in (model, chained):
        model.zero_grad(set_to_none=True)
        logits = fn(ids)
        logits.square().mean().backward()
        grads.append((logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-6)
    for name, g in grads[1][1].items():
        torch.testing.assert_close(grads[0][1][name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_bfloat16_checkpoints_keep_a_bfloat16_stream():
    """checkpoint_dtype="bfloat16": the checkpoints hold each block's input in bfloat16, and the
    gradients are exactly those of the model whose stream is rounded to bfloat16 between blocks."""
    import seqmodels.models.checkpointing as ckpt_module

    ids = torch.randint(0, 12, (2, 10), generator=torch.Generator().manual_seed(4))
    ckpt = _tiny(checkpointing=True, checkpoint_dtype="bfloat16").train()
    plain = _tiny().train()
    plain.load_state_dict(ckpt.state_dict())
    seen = []
    real = ckpt_module.checkpoint

    def recording(fn, x, **kwargs):
        seen.append(x.dtype)
        return real(fn, x, **kwargs)

    def by_hand(model, input_ids):
        """The same rounding by hand, no checkpoints: each block's input rounded to bfloat16."""
        x = model.backbone.embedding(input_ids).float()
        for layer in model.backbone.layers:
            x = layer(x.to(torch.bfloat16))
        return model.lm_head(model.backbone.norm_f(x))

    grads = []
    for model in (ckpt, plain):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ckpt_module, "checkpoint", recording)
            logits = model(ids[:, :-1]) if model is ckpt else by_hand(model, ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert seen == [torch.bfloat16] * 2
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_recomputes_blocks_in_training_only(monkeypatch):
    import seqmodels.models.checkpointing as ckpt_module

    calls = []
    real = ckpt_module.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(ckpt_module, "checkpoint", counting)
    model = _tiny(checkpointing=True)
    ids = torch.randint(0, 12, (1, 5))
    model.train()(ids)
    assert calls == [False, False]
    model.eval()(ids)
    assert len(calls) == 2


@pytest.mark.parametrize("keep", [True, False], ids=["kept-scan-states", "plain"])
def test_checkpointing_on_the_triton_scan(keep, monkeypatch):
    """With checkpointing on the Triton scan (interpreter here), each mixer's scan runs forward in
    the first pass only (``selective_scan_linear``: "first", then "recompute" in the backward),
    unless ``checkpoint_scan_states`` is off; the gradients are those without checkpointing."""
    import seqmodels.models.mamba as mamba

    passes = []
    real = mamba.selective_scan_linear
    monkeypatch.setattr(mamba, "selective_scan_linear",
                        lambda *a, **k: passes.append(k["checkpoint_pass"]) or real(*a, **k))
    ids = torch.randint(0, 8, (1, 40), generator=torch.Generator().manual_seed(5))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        config = MambaConfig(d_model=8, n_layer=2, vocab_size=8, d_state=4, scan_impl="triton",
                             checkpointing=checkpointing, checkpoint_scan_states=keep)
        model = MambaLM(config).train()
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert passes == (["first", "first", "recompute", "recompute"] if keep else [])
    plain, ckpt = grads
    assert all(g.abs().max() > 0 for g in plain.values())
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bfloat16_model_runs_with_fp32_residual():
    model = _tiny().to(torch.bfloat16).eval()
    ids = torch.randint(0, 12, (2, 8))
    with torch.no_grad():
        logits = model(ids)
        cache = model.allocate_inference_cache(2)
        step_logits = model.step(ids[:, 0], cache)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert cache[0].ssm.dtype == torch.float32 and cache[0].conv.dtype == torch.bfloat16
    torch.testing.assert_close(step_logits.float(), logits[:, 0].float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("impl", IMPLS)
def test_autocast_bfloat16(impl):
    # Mixed-precision training (Lightning's "bf16-mixed") runs the model under autocast.
    model = _tiny(impl=impl)
    ids = torch.randint(0, 12, (2, 8), generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.allocate_inference_cache(2)
        first = model.step(ids[:, 0], cache)
    torch.testing.assert_close(first.float(), logits[:, 0].detach().float(), rtol=0.05, atol=0.05)


def test_importing_models_and_kernels_does_not_import_lightning():
    code = (
        "import sys, seqmodels.models, seqmodels.kernels; "
        "bad = [m for m in ('lightning', 'pytorch_lightning') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
