"""``seqmodels evaluate-sc09``: score a directory of generated SC09 clips (FID, IS, mIS, AM).

The protocol of DiffWave (Kong et al. 2021), SaShiMi (Goel et al. 2022) and Mamba (Gu & Dao
2023, section 4.4.2): a digit classifier trained on the real SC09 training split
(:class:`seqmodels.tasks.sc09_classifier.SC09Classifier`) embeds every generated clip; FID
compares those features with the training-set statistics stored in the classifier checkpoint,
and IS / mIS / AM use its class probabilities (definitions in :mod:`seqmodels.tasks.sc09_metrics`).
The classifier's accuracy on the real SC09 test split is reported alongside, as a check that
the scorer itself is sound.

Scores are comparable only between runs that use the same classifier checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from seqmodels.checkpoint import load_checkpoint, read_checkpoint
from seqmodels.data.audio import SAMPLE_RATE, audio_info, fix_length, read_wav
from seqmodels.models import DigitClassifier
from seqmodels.tasks.sc09_metrics import sc09_scores

_CLASSIFIER_KIND = "sc09_classifier"
_STATS = ("train_feature_mean", "train_feature_cov", "train_label_prior", "train_prob_prior")


def load_sc09_classifier(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[DigitClassifier, dict[str, Any]]:
    """The classifier of an ``sc09_classifier`` checkpoint (eval mode) and its ``seqmodels``
    section (config, training statistics as float64 tensors, ``data_root``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a seqmodels checkpoint, another kind, or statistics missing.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt["seqmodels"]
    kind = meta.get("kind")
    if kind != _CLASSIFIER_KIND:
        raise ValueError(
            f"--classifier {path}: a {kind!r} checkpoint, not an sc09_classifier one; train one with "
            "`seqmodels fit --config configs/audio/sc09_classifier.yaml`"
        )
    missing = [k for k in _STATS if k not in meta]
    if missing:
        raise ValueError(
            f"--classifier {path}: training statistics {missing} missing; add them with "
            "seqmodels.tasks.sc09_classifier.finalize(ckpt_path, sc09_root)"
        )
    model, _ = load_checkpoint(path, map_location=device)
    return model, meta


def list_sample_wavs(samples: str | os.PathLike, skip_non_wav: bool = False) -> list[Path]:
    """The ``.wav`` files directly in ``samples``, sorted, each checked readable as audio.

    Hidden files (``.name``) are ignored, and ``.png`` images (the spectrogram grid that
    ``seqmodels generate`` writes) are reported and left out. Any other file that is not a
    ``.wav`` is an error unless ``skip_non_wav``, so a stray file never silently changes the
    clip count.

    Raises:
        FileNotFoundError: ``samples`` is not a directory.
        ValueError: no WAV files, a non-WAV file, or a ``.wav`` that is not readable audio.
    """
    samples = Path(samples)
    if not samples.is_dir():
        raise FileNotFoundError(f"--samples {samples}: not a directory")
    files = sorted(p for p in samples.iterdir() if p.is_file() and not p.name.startswith("."))
    wavs = [p for p in files if p.suffix.lower() == ".wav"]
    # `seqmodels generate` writes its spectrogram grid beside the clips: images are reported and
    # left out; any other file is an error, so a stray file never silently changes the clip count.
    images = [p.name for p in files if p.suffix.lower() == ".png"]
    if images:
        print(f"seqmodels evaluate-sc09: not scoring {len(images)} image file(s): {', '.join(images[:3])}", file=sys.stderr)
    others = [p.name for p in files if p.suffix.lower() not in (".wav", ".png")]
    if others and not skip_non_wav:
        shown = ", ".join(others[:5]) + (f" (and {len(others) - 5} more)" if len(others) > 5 else "")
        raise ValueError(f"--samples {samples}: non-WAV files {shown}; remove them or pass --skip-non-wav")
    if not wavs:
        raise ValueError(f"--samples {samples}: no .wav files found")
    for path in wavs:
        try:
            frames, _ = audio_info(path)
        except ValueError as err:
            raise ValueError(f"--samples: {path} is not a readable WAV file ({err})") from err
        if frames == 0:
            raise ValueError(f"--samples: {path} has no audio samples")
    return wavs


def load_clip(path: str | os.PathLike) -> Tensor:
    """A file as the classifier sees it: mono, 16 kHz, cut or zero-padded to one second ``[16000]``
    (the same path as ``SC09Dataset(view="classification")``)."""
    return fix_length(read_wav(path)[:SAMPLE_RATE], SAMPLE_RATE)


@torch.no_grad()
def classify_files(
    model: DigitClassifier, paths: Sequence[Path], batch_size: int = 64, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[n, F]`` and class probabilities ``[n, K]`` (float64) of the clips in ``paths``."""
    feats, probs = [], []
    for start in range(0, len(paths), batch_size):
        wave = torch.stack([load_clip(p) for p in paths[start:start + batch_size]]).to(device)  # [B, 16000]
        f = model.features(wave)
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.logits_from_features(f).float(), dim=-1).double().cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


@torch.no_grad()
def real_test_accuracy(
    model: DigitClassifier, root: str | os.PathLike, batch_size: int = 64, device: str | torch.device = "cpu"
) -> tuple[float, int]:
    """Accuracy of the classifier on the real SC09 test split under ``root``, and the clip count."""
    from seqmodels.data.audio_datasets import sc09_files

    files = sc09_files(root, "test")
    if not files:
        raise ValueError(f"--real-test-root {root}: the SC09 test split is empty")
    correct = 0
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        wave = torch.stack([load_clip(p) for p, _ in chunk]).to(device)
        pred = model(wave).argmax(-1).cpu()
        correct += int((pred == torch.tensor([d for _, d in chunk])).sum())
    return correct / len(files), len(files)


def _resolve_test_root(arg: str | None, meta: dict[str, Any], no_test: bool) -> Path | None:
    from seqmodels.data.audio_datasets import check_sc09_root

    if no_test:
        return None
    if arg is not None:
        missing = check_sc09_root(arg)
        if missing:
            shown = ", ".join(missing[:5])
            raise FileNotFoundError(f"--real-test-root {arg} is not an SC09 directory; missing: {shown}")
        return Path(arg)
    # Default: the root the classifier was trained on, when it is still there.
    stored = meta.get("data_root")
    if stored and not check_sc09_root(stored):
        return Path(stored)
    return None


def evaluate_samples(
    classifier: str | os.PathLike,
    samples: str | os.PathLike,
    real_test_root: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    am_prior: Literal["labels", "probs"] = "labels",
    skip_non_wav: bool = False,
    no_test: bool = False,
) -> dict[str, Any]:
    """Score the WAV files of ``samples`` with the classifier checkpoint ``classifier``.

    Returns:
        ``{"fid", "is", "mis", "am", "num_clips", "test_accuracy", "test_clips", ...}``;
        ``test_accuracy`` is None when no real test split is available.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if am_prior not in ("labels", "probs"):
        raise ValueError(f"--am-prior must be 'labels' or 'probs', got {am_prior!r}")
    # Check every input before the (slow) forward passes.
    model, meta = load_sc09_classifier(classifier, device)
    wavs = list_sample_wavs(samples, skip_non_wav)
    if len(wavs) < 2:
        raise ValueError(f"--samples {samples}: FID needs at least 2 clips, found {len(wavs)}")
    test_root = _resolve_test_root(None if real_test_root is None else str(real_test_root), meta, no_test)

    features, probs = classify_files(model, wavs, batch_size, device)
    prior = meta["train_label_prior"] if am_prior == "labels" else meta["train_prob_prior"]
    scores = sc09_scores(features, probs, meta["train_feature_mean"], meta["train_feature_cov"], prior)
    result: dict[str, Any] = {
        **scores,
        "num_clips": len(wavs),
        "test_accuracy": None,
        "test_clips": 0,
        "test_root": None,
        "classifier": str(classifier),
        "samples": str(samples),
        "am_prior": am_prior,
        "feature_dim": int(features.shape[1]),
        "train_clips": int(meta.get("train_clips", 0)),
        "predicted_digit_counts": np.bincount(probs.argmax(1), minlength=probs.shape[1]).tolist(),
    }
    if test_root is not None:
        acc, n_test = real_test_accuracy(model, test_root, batch_size, device)
        result.update(test_accuracy=acc, test_clips=n_test, test_root=str(test_root))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The scores as an aligned two-column text table."""
    acc = result["test_accuracy"]
    rows = [
        ("clips", str(result["num_clips"])),
        ("FID (lower is better)", f"{result['fid']:.4f}"),
        ("IS (higher is better)", f"{result['is']:.4f}"),
        ("mIS (higher is better)", f"{result['mis']:.4f}"),
        ("AM (lower is better)", f"{result['am']:.4f}"),
        (
            "classifier test accuracy",
            "n/a (no real SC09 test split)" if acc is None else f"{acc:.4f} ({result['test_clips']} clips)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def evaluate_sc09_main(argv: Sequence[str]) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    parser = argparse.ArgumentParser(
        prog="seqmodels evaluate-sc09",
        description="Score generated SC09 clips (FID, IS, mIS, AM) with a trained digit classifier. "
        "Scores are comparable only between runs that use the same classifier checkpoint.",
    )
    parser.add_argument(
        "--classifier", required=True, help="checkpoint of `seqmodels fit --config configs/audio/sc09_classifier.yaml`"
    )
    parser.add_argument(
        "--samples", required=True,
        help="directory of generated .wav clips (any rate; resampled to 16 kHz, cut or padded to 1 s)",
    )
    parser.add_argument(
        "--real-test-root", default=None,
        help="SC09 root whose test split measures the classifier's accuracy "
        "(default: the training root stored in the checkpoint, if present)",
    )
    parser.add_argument("--no-real-test", action="store_true", help="skip the test-split accuracy")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda:0', ...")
    parser.add_argument(
        "--am-prior", choices=("labels", "probs"), default="labels",
        help="AM's training class distribution: label frequencies, or mean classifier probabilities (SaShiMi)",
    )
    parser.add_argument("--skip-non-wav", action="store_true", help="ignore files that are not .wav instead of failing")
    parser.add_argument("--output", default=None, help="write the results as JSON to this file")
    args = parser.parse_args(list(argv))
    try:
        device = _pick_device(args.device)
        if args.output is not None and not Path(args.output).parent.is_dir():
            raise FileNotFoundError(f"--output {args.output}: folder {Path(args.output).parent} does not exist")
        result = evaluate_samples(
            args.classifier, args.samples, args.real_test_root, args.batch_size, device,
            args.am_prior, args.skip_non_wav, args.no_real_test,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"seqmodels evaluate-sc09: error: {err}", file=sys.stderr)
        return 1
    print(format_table(result))
    if args.output is not None:
        # NaN is not JSON; a score that failed to compute is written as null.
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
        Path(args.output).write_text(json.dumps(clean, indent=2) + "\n")
    return 0
