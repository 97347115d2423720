"""WAV input/output and 8-bit mu-law quantisation for the waveform models.

Everything the audio models see is 16 kHz mono: :func:`read_wav` averages channels and
resamples; :func:`write_wav` writes 16-bit PCM. Waveforms are float32 in ``[-1, 1]``.

Two mu-law quantisers (``mu = 255``, 256 codes) are offered, selected by ``variant``:

``"torchaudio"``
    ``torchaudio.functional.mu_law_encoding`` / ``mu_law_decoding``: the waveform is used as it
    is (values outside ``[-1, 1]`` are clipped), companded ``F(x) = sign(x) ln(1 + mu|x|) /
    ln(1 + mu)`` and rounded to the nearest of 256 levels; silence is code 128.

``"sashimi"``
    The quantiser of the SaShiMi code (state-spaces/s4, ``src/dataloaders/audio.py``), which the
    SC09 and YouTubeMix figures of SaShiMi and Mamba were measured with: each clip (or training
    window) is first min-max rescaled to ``[-1, 1]`` (``x' = 2 (x - min) / (max - min + 1e-6) - 1``
    over the whole clip, so the loudest peak always reaches full scale), companded with the same
    ``F`` (of ``|x' + 1e-8|``), shifted to ``e = (F + 1) / 2`` in ``[0, 1]`` and quantised by
    truncation: ``code = floor(e (256 - 0.01) + 0.005)``. Silence (``x' = 0``) is code 128;
    note that the ``1e-6`` of the rescaling maps the 0.0 of a symmetric clip to ``-1e-6``, code 127.

Negative log-likelihoods are comparable to the published SaShiMi / Mamba SC09 numbers (bits per
sample) only with the ``"sashimi"`` variant: the per-clip rescaling changes the distribution
of codes. The decoders invert the companding only; the min-max rescaling cannot be undone.

The ``"sashimi"`` decoder here maps a code to the middle of its quantisation bin, so that
``encode(decode(codes), rescale=False) == codes`` for every code. SaShiMi's own decoder maps code
``c`` to ``e = c / 256``, which for ``c > 128`` lies just below the bin of ``c`` (a shift of
at most 0.4% of a bin width in the companded domain, inaudible); generated audio therefore
differs from SaShiMi's by that amount, while the encoding (all that enters the NLL) is identical.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

SAMPLE_RATE = 16_000
MU_LAW_BITS = 8
NUM_CODES = 1 << MU_LAW_BITS
MU = NUM_CODES - 1
# Code of silence (0.0) under both variants; SaShiMi (``q_zero``) uses it as the start code of
# autoregressive inputs and as the padding of short clips.
SILENCE_CODE = NUM_CODES // 2
START_CODE = SILENCE_CODE

MuLawVariant = Literal["torchaudio", "sashimi"]
_VARIANTS = ("torchaudio", "sashimi")
# Constants of the SaShiMi quantiser (see the module docstring).
_SASHIMI_EPS = 0.01
_MINMAX_EPS = 1e-6
_ABS_EPS = 1e-8


# ---------------------------------------------------------------------------------------------
# WAV files
# ---------------------------------------------------------------------------------------------


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(num_frames, sample_rate)`` of an audio file without reading its samples.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not audio that libsndfile can read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise ValueError(f"{path} is not a readable audio file: {err}") from err
    return int(info.frames), int(info.samplerate)


def read_wav(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    start: int = 0,
    num_samples: int | None = None,
) -> Tensor:
    """Read an audio file as float32 mono at ``sample_rate``.

    Channels are averaged (a plain mean, as SaShiMi's loader does) and the result is resampled
    with ``torchaudio.functional.resample`` when the file's rate differs. ``start`` and
    ``num_samples`` are in samples *at* ``sample_rate``; only that span (plus rounding) is read
    from disk, so long files can be windowed cheaply. A span that runs past the end is
    returned shorter, not padded.

    Args:
        path: WAV (or any libsndfile format) file.
        sample_rate: output rate in Hz.
        start: first output sample.
        num_samples: number of output samples, or None for the rest of the file.

    Returns:
        FloatTensor ``[T]`` with values in ``[-1, 1]`` (16-bit PCM is scaled by 1/32768).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable or non-audio file, or a negative ``start`` / ``num_samples``.
    """
    if start < 0 or (num_samples is not None and num_samples < 0):
        raise ValueError(f"start and num_samples must be non-negative, got {start}, {num_samples} for {path}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    frames, file_rate = audio_info(path)
    # Map the requested span to the file's own rate; resampling then produces the span.
    src_start = start * file_rate // sample_rate
    src_stop = frames if num_samples is None else min(frames, math.ceil((start + num_samples) * file_rate / sample_rate))
    try:
        data, _ = sf.read(str(path), start=min(src_start, frames), stop=max(src_stop, src_start), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise ValueError(f"cannot read audio from {path}: {err}") from err
    wave = torch.from_numpy(data.mean(axis=1, dtype=np.float32))  # [T] mono
    if file_rate != sample_rate and wave.numel() > 0:
        wave = AF.resample(wave, file_rate, sample_rate)
    if num_samples is not None:
        wave = wave[:num_samples]
    return wave.contiguous()


def write_wav(path: str | os.PathLike, wave: Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a mono waveform as 16-bit PCM WAV, atomically (temporary file, then rename).

    Args:
        path: destination; its folder is created if needed.
        wave: float ``[T]`` in ``[-1, 1]`` (values outside are clipped).
        sample_rate: rate in Hz.

    Returns:
        The path written.
    """
    path = Path(path)
    arr = wave.detach().cpu().float().numpy() if isinstance(wave, Tensor) else np.asarray(wave, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"write_wav expects a mono waveform [T], got shape {tuple(arr.shape)} for {path}")
    if not np.isfinite(arr).all():
        raise ValueError(f"waveform for {path} contains NaN or infinite values")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporary file in the same folder so the rename is atomic: readers never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(arr, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def fix_length(wave: Tensor, length: int) -> Tensor:
    """Cut ``wave [.., T]`` to ``length`` samples or pad it with silence (zeros) at the end."""
    t = wave.shape[-1]
    if t >= length:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, length - t))


# ---------------------------------------------------------------------------------------------
# mu-law
# ---------------------------------------------------------------------------------------------


def _check_variant(variant: str) -> None:
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")


def minmax_scale(wave: Tensor) -> Tensor:
    """Rescale each clip ``wave [.., T]`` linearly to ``[-1, 1]`` over its last axis (SaShiMi).

    ``x' = 2 (x - min) / (max - min + 1e-6) - 1``; a constant clip maps to ``-1``.
    """
    lo = wave.amin(dim=-1, keepdim=True)
    hi = wave.amax(dim=-1, keepdim=True)
    return 2.0 * (wave - lo) / (hi - lo + _MINMAX_EPS) - 1.0


def mu_law_encode(wave: Tensor, variant: MuLawVariant = "torchaudio", rescale: bool | None = None) -> Tensor:
    """Quantise waveforms to 8-bit mu-law codes.

    Args:
        wave: float ``[.., T]``, nominally in ``[-1, 1]``; each row along the last axis is one clip.
        variant: ``"torchaudio"`` or ``"sashimi"`` (module docstring).
        rescale: min-max rescale each clip to ``[-1, 1]`` first. None uses the variant's own
            convention (``"sashimi"``: yes, ``"torchaudio"``: no); ``rescale=False`` with
            ``"sashimi"`` applies only its companding and quantisation.

    Returns:
        LongTensor ``[.., T]`` of codes in ``[0, 255]``.
    """
    _check_variant(variant)
    if not wave.is_floating_point():
        raise TypeError(f"mu_law_encode expects a floating-point waveform, got {wave.dtype}")
    if rescale is None:
        rescale = variant == "sashimi"
    x = wave.float()
    if rescale:
        x = minmax_scale(x)
    if variant == "torchaudio":
        return AF.mu_law_encoding(x.clamp(-1.0, 1.0), NUM_CODES).long()
    companded = torch.sign(x) * torch.log1p(MU * (x + _ABS_EPS).abs()) / math.log1p(MU)
    shifted = (companded + 1.0) / 2.0
    # Truncation, not rounding, as in SaShiMi; the clamp only guards inputs outside [-1, 1].
    return (shifted * (NUM_CODES - _SASHIMI_EPS) + _SASHIMI_EPS / 2).long().clamp(0, NUM_CODES - 1)


def mu_law_decode(codes: Tensor, variant: MuLawVariant = "torchaudio") -> Tensor:
    """Map 8-bit mu-law codes back to float32 waveforms in ``[-1, 1]``.

    Args:
        codes: integer ``[.., T]`` in ``[0, 255]``.
        variant: the variant the codes were made with.

    Returns:
        FloatTensor ``[.., T]``.
    """
    _check_variant(variant)
    if codes.is_floating_point() or codes.is_complex():
        raise TypeError(f"mu_law_decode expects integer codes, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= NUM_CODES):
        raise ValueError(f"mu-law codes must lie in [0, {NUM_CODES - 1}], got [{int(codes.min())}, {int(codes.max())}]")
    if variant == "torchaudio":
        return AF.mu_law_decoding(codes.long(), NUM_CODES).float()
    # Middle of the bin [c - eps/2, c + 1 - eps/2) / (256 - eps) of the truncating quantiser.
    shifted = (codes.double() + 0.5 - _SASHIMI_EPS / 2) / (NUM_CODES - _SASHIMI_EPS)
    companded = 2.0 * shifted - 1.0
    wave = torch.sign(companded) * torch.expm1(companded.abs() * math.log1p(MU)) / MU
    return wave.float()


def autoregressive_pair(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs and targets for next-sample prediction from codes ``[.., T]``.

    Returns:
        ``(input_ids, labels)``, both LongTensor ``[.., T]``: ``labels = codes`` and
        ``input_ids = [START_CODE, codes[..., :-1]]`` (the start code is silence, 128, as in
        SaShiMi).
    """
    start = torch.full_like(codes[..., :1], START_CODE)
    return torch.cat([start, codes[..., :-1]], dim=-1).long(), codes.long()
