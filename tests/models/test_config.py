"""MambaConfig: presets, derived fields, validation, round trip through plain data."""

from __future__ import annotations

import json
import math

import pytest

from seqmodels.models import MambaConfig, MambaLM


def _num_params(model) -> int:
    # parameters() yields a tied weight once, which is how the paper counts.
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, n_layer, d_model, expected",
    [
        pytest.param("1.4m", 12, 128, 1_401_472, id="1.4m"),
        pytest.param("7m", 16, 256, 7_012_608, id="7m"),
        # Not quoted exactly in the paper ("40.7M"); the per-block formula in models/README.md.
        pytest.param("40.7m", 24, 512, 40_694_272, id="40.7m"),
    ],
)
def test_preset_parameter_count_matches_paper(name, n_layer, d_model, expected):
    config = MambaConfig.from_name(name)
    assert (config.n_layer, config.d_model, config.vocab_size, config.padded_vocab_size) == (n_layer, d_model, 12, 16)
    assert _num_params(MambaLM(config)) == expected


def test_preset_derived_fields():
    config = MambaConfig.from_name("40.7m")
    assert (config.dt_rank, config.d_inner, config.d_state, config.d_conv) == (32, 1024, 16, 4)


def test_from_name_overrides_and_errors():
    config = MambaConfig.from_name("1.4M", scan_impl="ref", complex=True)
    assert config.scan_impl == "ref" and config.complex and config.name == "1.4m"
    with pytest.raises(ValueError, match="name"):
        MambaConfig.from_name("3m")
    with pytest.raises(ValueError, match="d_modle"):
        MambaConfig.from_name("7m", d_modle=64)
    with pytest.raises(ValueError, match="d_model"):
        MambaConfig.from_name("7m", d_model=0)


@pytest.mark.parametrize("d_model", [16, 17, 100, 128])
def test_derived_fields(d_model):
    config = MambaConfig(d_model=d_model, n_layer=1, vocab_size=12, expand=3)
    assert config.dt_rank == math.ceil(d_model / 16)
    assert config.d_inner == 3 * d_model
    assert MambaConfig(d_model=d_model, n_layer=1, vocab_size=12, dt_rank=5).dt_rank == 5


@pytest.mark.parametrize(
    "vocab_size, multiple, padded",
    [(12, 16, 16), (16, 16, 16), (17, 16, 32), (12, 1, 12), (5, 8, 8)],
)
def test_padded_vocab(vocab_size, multiple, padded):
    config = MambaConfig(d_model=8, n_layer=1, vocab_size=vocab_size, pad_vocab_size_multiple=multiple)
    assert config.padded_vocab_size == padded


@pytest.mark.parametrize(
    "field, value",
    [
        pytest.param("d_model", 0, id="d_model-zero"),
        pytest.param("d_model", 12.0, id="d_model-float"),
        pytest.param("n_layer", -1, id="n_layer"),
        pytest.param("vocab_size", 0, id="vocab_size"),
        pytest.param("d_state", 0, id="d_state"),
        pytest.param("d_conv", 0, id="d_conv"),
        pytest.param("expand", True, id="expand-bool"),
        pytest.param("dt_rank", "big", id="dt_rank-str"),
        pytest.param("dt_rank", 0, id="dt_rank-zero"),
        pytest.param("dt_min", 0.0, id="dt_min"),
        pytest.param("dt_max", 1e-4, id="dt_max-below-min"),
        pytest.param("dt_init_floor", -1.0, id="dt_init_floor"),
        pytest.param("complex", "yes", id="complex"),
        pytest.param("scan_impl", "cuda", id="scan_impl"),
        pytest.param("checkpointing", 1, id="checkpointing"),
        pytest.param("checkpoint_dtype", "float16", id="checkpoint_dtype"),
        pytest.param("checkpoint_scan_states", "yes", id="checkpoint_scan_states"),
        pytest.param("rms_norm_eps", 0.0, id="rms_norm_eps"),
        pytest.param("pad_vocab_size_multiple", 0, id="pad_vocab_size_multiple"),
    ],
)
def test_validation_names_the_field(field, value):
    kwargs = {"d_model": 16, "n_layer": 2, "vocab_size": 12, field: value}
    with pytest.raises(ValueError, match=rf"MambaConfig\.{field}\b"):
        MambaConfig(**kwargs)


def test_dict_round_trip():
    config = MambaConfig(d_model=48, n_layer=3, vocab_size=12, complex=True, scan_impl="ref", dt_max=0.05)
    data = config.to_dict()
    assert "d_inner" not in data and "padded_vocab_size" not in data
    # Checkpoints store it as JSON-like data.
    rebuilt = MambaConfig.from_dict(json.loads(json.dumps(data)))
    assert rebuilt == config
    assert rebuilt.dt_rank == 3


def test_from_dict_rejects_unknown_and_inconsistent_keys():
    data = MambaConfig(d_model=16, n_layer=1, vocab_size=12).to_dict()
    with pytest.raises(ValueError, match="n_layers"):
        MambaConfig.from_dict({**data, "n_layers": 2})
    # Derived fields may be present but must agree with the others.
    assert MambaConfig.from_dict({**data, "padded_vocab_size": 16}).padded_vocab_size == 16
    with pytest.raises(ValueError, match="padded_vocab_size"):
        MambaConfig.from_dict({**data, "padded_vocab_size": 32})
