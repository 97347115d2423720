"""MambaClassifier: pooling, shapes, loading a pretrained LM backbone."""

from __future__ import annotations

import pytest
import torch

from seqmodels.models import MambaClassifier, MambaConfig, MambaLM


def _config(**overrides) -> MambaConfig:
    return MambaConfig(d_model=16, n_layer=2, vocab_size=12, d_state=4, scan_impl="torch", **overrides)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_and_shapes(pooling):
    torch.manual_seed(0)
    model = MambaClassifier(_config(), num_classes=5, pooling=pooling).eval()
    ids = torch.randint(0, 12, (3, 10))
    with torch.no_grad():
        logits = model(ids)
        hidden = model.backbone(ids)
    assert logits.shape == (3, 5)
    pooled = hidden.mean(1) if pooling == "mean" else hidden[:, -1]
    torch.testing.assert_close(logits, model.head(pooled))


def test_head_is_float32_under_autocast(monkeypatch):
    """Pooled features that differ by less than a bfloat16 ulp still give different logits under
    bfloat16 autocast: the head is outside autocast."""
    torch.manual_seed(0)
    model = MambaClassifier(_config(), num_classes=5, pooling="mean").eval()
    hidden = torch.full((2, 10, 16), 0.75)
    hidden[1] += 1e-4  # bfloat16 resolves 0.75 to steps of 2^-8 ~ 0.004
    monkeypatch.setattr(model.backbone, "forward", lambda ids: hidden)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.zeros(2, 10, dtype=torch.long))
        cast = torch.nn.functional.linear(hidden.mean(1), model.head.weight, model.head.bias)
    assert logits.dtype == torch.float32
    assert cast.dtype == torch.bfloat16 and torch.equal(cast[0], cast[1])  # what autocast would give
    torch.testing.assert_close(logits, model.head(hidden.mean(1)))
    assert not torch.equal(logits[0], logits[1])


def test_load_backbone_from_lm():
    torch.manual_seed(0)
    lm = MambaLM(_config())
    classifier = MambaClassifier(_config(), num_classes=3)
    ids = torch.randint(0, 12, (2, 7))
    with torch.no_grad():
        assert not torch.allclose(classifier.backbone(ids), lm.hidden_states(ids))
        classifier.load_backbone(lm.state_dict())
        torch.testing.assert_close(classifier.backbone(ids), lm.hidden_states(ids))
    with pytest.raises(ValueError, match="does not fit"):
        MambaClassifier(MambaConfig(d_model=8, n_layer=2, vocab_size=12), num_classes=3).load_backbone(lm)
    with pytest.raises(ValueError, match="backbone"):
        classifier.load_backbone({"weight": torch.zeros(1)})


@pytest.mark.parametrize(
    "kwargs, field",
    [({"num_classes": 1}, "num_classes"), ({"num_classes": 3, "pooling": "max"}, "pooling"),
     ({"num_classes": 3, "pool_norm": "layer"}, "pool_norm")],
)
def test_validation(kwargs, field):
    with pytest.raises(ValueError, match=rf"MambaClassifier\.{field}"):
        MambaClassifier(_config(), **kwargs)


def test_batch_pool_norm_standardises_pooled_features():
    """Training: the head sees each pooled feature standardised over the batch; evaluation: by the
    moving averages, which the training batches moved towards their statistics."""
    torch.manual_seed(0)
    model = MambaClassifier(_config(), num_classes=3, pooling="mean", pool_norm="batch")
    ids = torch.randint(0, 12, (6, 20))
    seen = []
    model.head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    model.train()(ids)
    z = seen[-1]
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(16), atol=1e-2)
    pooled = model.pool(model.backbone(ids)).detach()
    assert torch.allclose(model.norm.running_mean, 0.05 * pooled.mean(0), atol=1e-6)
    model.eval()(ids)
    expected = (pooled - model.norm.running_mean) / torch.sqrt(model.norm.running_var + model.norm.eps)
    assert torch.allclose(seen[-1], expected, atol=1e-5)
    assert not any(p.requires_grad for p in model.norm.parameters())  # no affine parameters


def test_batch_pool_norm_rejects_a_training_batch_of_one():
    model = MambaClassifier(_config(), num_classes=3, pooling="mean", pool_norm="batch")
    with pytest.raises(ValueError, match="at least 2 windows"):
        model.train()(torch.randint(0, 12, (1, 20)))
    assert model.eval()(torch.randint(0, 12, (1, 20))).shape == (1, 3)  # evaluation reads any batch
