"""WAV reading/writing and mu-law quantisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from seqmodels.data.audio import (
    SILENCE_CODE,
    START_CODE,
    audio_info,
    autoregressive_pair,
    fix_length,
    minmax_scale,
    mu_law_decode,
    mu_law_encode,
    read_wav,
    write_wav,
)

VARIANTS = [pytest.param("torchaudio", id="torchaudio"), pytest.param("sashimi", id="sashimi")]


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def test_write_then_read_is_16bit_pcm(tmp_path):
    wave = torch.from_numpy(_sine(440, 16_000, 0.25))
    path = write_wav(tmp_path / "sub" / "a.wav", wave)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    back = read_wav(path)
    assert back.dtype == torch.float32 and back.shape == wave.shape
    assert torch.allclose(back, wave, atol=1.0 / 32768 + 1e-6)
    # Atomic write: nothing but the final file is left behind.
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]


def test_write_rejects_bad_waveforms(tmp_path):
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "x.wav", torch.zeros(2, 10))
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "x.wav", torch.tensor([0.0, float("nan")]))
    assert not list(tmp_path.iterdir())


def test_stereo_is_averaged(tmp_path):
    left, right = _sine(300, 16_000, 0.1), _sine(500, 16_000, 0.1, amp=0.25)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    assert torch.allclose(read_wav(tmp_path / "st.wav"), torch.from_numpy((left + right) / 2), atol=1e-6)


def test_other_rates_are_resampled_to_16k(tmp_path):
    sf.write(tmp_path / "lo.wav", _sine(1000, 8_000, 0.5), 8_000, subtype="FLOAT")
    wave = read_wav(tmp_path / "lo.wav")
    assert wave.shape == (8_000,)
    # The tone keeps its frequency: the spectrum peaks at 1 kHz at the new rate.
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    assert abs(np.argmax(spectrum) * 16_000 / wave.numel() - 1000) < 5
    # A span in output samples maps to the right part of the file.
    span = read_wav(tmp_path / "lo.wav", start=4_000, num_samples=2_000)
    assert span.shape == (2_000,)
    assert torch.allclose(span[100:-100], wave[4_100:5_900], atol=2e-2)


def test_read_span_at_native_rate(tmp_path):
    wave = torch.from_numpy(_sine(440, 16_000, 0.5))
    write_wav(tmp_path / "a.wav", wave)
    full = read_wav(tmp_path / "a.wav")
    assert torch.equal(read_wav(tmp_path / "a.wav", start=1000, num_samples=500), full[1000:1500])
    assert read_wav(tmp_path / "a.wav", start=7_900, num_samples=500).shape == (100,)
    assert audio_info(tmp_path / "a.wav") == (8_000, 16_000)


def test_missing_and_non_audio_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_wav(tmp_path / "nope.wav")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(ValueError, match="text.wav"):
        read_wav(tmp_path / "text.wav")


def test_fix_length_pads_with_silence_and_cuts():
    x = torch.arange(1.0, 6.0)
    assert torch.equal(fix_length(x, 7), torch.tensor([1.0, 2, 3, 4, 5, 0, 0]))
    assert torch.equal(fix_length(x, 3), x[:3])


@pytest.mark.parametrize("variant", VARIANTS)
def test_code_to_wave_to_code_round_trip(variant):
    codes = torch.arange(256).repeat(3, 1)  # [3, 256]: every code, batched
    wave = mu_law_decode(codes, variant)
    assert wave.dtype == torch.float32 and wave.shape == codes.shape
    assert wave.abs().max() <= 1.0
    assert torch.all(wave[:, 1:] > wave[:, :-1])  # monotonic
    assert torch.equal(mu_law_encode(wave, variant, rescale=False), codes)


@pytest.mark.parametrize("variant", VARIANTS)
def test_silence_is_code_128_and_the_start_code(variant):
    x = torch.tensor([-0.5, 0.0, 0.5])
    assert mu_law_encode(x, variant, rescale=False)[1] == SILENCE_CODE == START_CODE == 128
    assert mu_law_decode(torch.tensor([SILENCE_CODE]), variant).abs().item() < 1e-3


def test_sashimi_rescaling_puts_exact_zero_just_below_128():
    # The 1e-6 in SaShiMi's min-max denominator maps 0 of a symmetric clip to -1e-6: code 127.
    assert mu_law_encode(torch.tensor([-0.5, 0.0, 0.5]), "sashimi").tolist() == [0, 127, 255]


def test_torchaudio_variant_matches_torchaudio():
    import torchaudio.functional as AF

    x = torch.rand(1000) * 2 - 1
    assert torch.equal(mu_law_encode(x, "torchaudio"), AF.mu_law_encoding(x, 256))


def test_sashimi_variant_follows_its_formula():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 3000, generator=gen) * 1.4 - 0.5).double()  # asymmetric, not in [-1, 1]
    # The SaShiMi quantiser written out in float64 from its definition.
    lo, hi = x.min(dim=-1, keepdim=True).values, x.max(dim=-1, keepdim=True).values
    y = 2 * (x - lo) / (hi - lo + 1e-6) - 1
    f = torch.sign(y) * torch.log1p(255 * (y + 1e-8).abs()) / math.log(256)
    expected = torch.floor((f + 1) / 2 * 255.99 + 0.005).long()
    got = mu_law_encode(x.float(), "sashimi")
    # float32 against float64: a value on a bin edge may fall either side.
    assert (got - expected).abs().max() <= 1 and (got == expected).float().mean() > 0.999
    assert got.min() == 0 and got.max() == 255  # rescaling always reaches both ends
    # Per-clip rescaling makes the codes independent of the clip's gain (up to the 1e-6 term).
    quiet = mu_law_encode(x.float() * 0.1, "sashimi")
    assert (quiet - got).abs().max() <= 1 and (quiet == got).float().mean() > 0.999
    assert torch.allclose(minmax_scale(x).amin(-1), torch.full((4,), -1.0, dtype=x.dtype))


def test_mu_law_argument_errors():
    with pytest.raises(ValueError, match="variant"):
        mu_law_encode(torch.zeros(3), "alaw")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mu_law_encode(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        mu_law_decode(torch.tensor([0, 256]))


def test_autoregressive_pair_shifts_by_one():
    codes = torch.tensor([[5, 6, 7], [8, 9, 10]])
    inputs, labels = autoregressive_pair(codes)
    assert torch.equal(labels, codes)
    assert torch.equal(inputs, torch.tensor([[128, 5, 6], [128, 8, 9]]))
