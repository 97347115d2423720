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
    "kwargs, field", [({"num_classes": 1}, "num_classes"), ({"num_classes": 3, "pooling": "max"}, "pooling")]
)
def test_validation(kwargs, field):
    with pytest.raises(ValueError, match=rf"MambaClassifier\.{field}"):
        MambaClassifier(_config(), **kwargs)
