"""SC09 scoring end to end on the shipped espeak-ng sample (CPU): train the digit classifier
through the CLI, check the statistics its checkpoint stores, score clips with evaluate-sc09."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import seqmodels
from seqmodels.cli import SeqModelsCLI, main
from seqmodels.data.audio_datasets import SC09Dataset, sc09_files
from seqmodels.evaluate_sc09 import classify_files, evaluate_sc09_main
from seqmodels.models import DigitClassifier, DigitClassifierConfig
from seqmodels.tasks.callbacks import read_metrics_csv
from seqmodels.tasks.sc09_classifier import SC09Classifier, finalize, training_statistics
from seqmodels.tasks.sc09_metrics import feature_statistics, fid

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/audio/sc09_classifier.yaml")
SAMPLE = str(REPO / "data/audio/sc09_sample")
FEATURE_DIM = 32


def fit_args(tmp_path: Path, epochs: int = 15) -> list[str]:
    return [
        "--config", CONFIG,
        "--data.root", SAMPLE,
        "--data.batch_size", "5",
        "--data.num_workers", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", str(epochs),
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--model.network", f"{{channels: [8, 16, 32], blocks_per_stage: 1, feature_dim: {FEATURE_DIM}, dropout: 0.0}}",
        "--model.lr", "1e-2",
        "--model.warmup_steps", "2",
        "--model.label_smoothing", "0.0",
    ]


def run_dir(tmp_path: Path) -> Path:
    (version,) = sorted((tmp_path / "runs" / "sc09_classifier").glob("version_*"))
    return version


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short CPU fit on the 20 training clips of the sample, shared by the tests below."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("fit")
    main(["fit", *fit_args(tmp)])
    return run_dir(tmp) / "checkpoints"


@pytest.fixture(scope="module")
def train_clip_dir(tmp_path_factory) -> Path:
    """The real training clips of the sample, flattened into one folder as generated clips would be."""
    out = tmp_path_factory.mktemp("train_clips")
    for path, _ in sc09_files(SAMPLE, "train"):
        shutil.copy(path, out / f"{path.parent.name}_{path.name}")
    return out


def test_fit_loss_falls_and_accuracy_is_logged(trained):
    assert (trained / "last.ckpt").is_file() and (trained / "best.ckpt").is_file()
    series = read_metrics_csv(trained.parent / "metrics.csv")
    for key in ("train/loss_step", "train/acc", "val/loss", "val/acc"):
        assert key in series, key
    steps = [v for _, v in series["train/loss_step"]]
    first, last = np.mean(steps[:4]), np.mean(steps[-4:])
    print(f"train loss {first:.3f} -> {last:.3f}")
    assert first > 2.0  # ten balanced classes start near ln(10) = 2.30
    assert last < first - 0.15, "training loss did not fall"
    assert all(0.0 <= v <= 1.0 for _, v in series["val/acc"])


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_checkpoint_stores_training_statistics(trained, name):
    meta = torch.load(trained / name, map_location="cpu", weights_only=True)["seqmodels"]
    assert meta["kind"] == "sc09_classifier"
    assert DigitClassifierConfig.from_dict(meta["config"]).feature_dim == FEATURE_DIM
    mean, cov = meta["train_feature_mean"], meta["train_feature_cov"]
    assert mean.shape == (FEATURE_DIM,) and cov.shape == (FEATURE_DIM, FEATURE_DIM)
    assert mean.dtype == cov.dtype == torch.float64
    torch.testing.assert_close(cov, cov.T, rtol=0, atol=0)
    eig = torch.linalg.eigvalsh(cov)
    assert eig.min() >= -1e-9 * max(eig.max().item(), 1.0), "covariance is not PSD"
    assert eig.max() > 0  # the features vary over the training clips
    train = sc09_files(SAMPLE, "train")
    assert meta["train_clips"] == len(train) == 20
    labels = np.bincount([d for _, d in train], minlength=10) / len(train)
    np.testing.assert_allclose(meta["train_label_prior"].numpy(), labels)
    assert meta["train_label_prior"].sum().item() == pytest.approx(1.0)
    assert meta["train_prob_prior"].sum().item() == pytest.approx(1.0)
    assert Path(meta["data_root"]) == Path(SAMPLE)


def test_stored_statistics_match_a_direct_pass(trained):
    """The statistics in last.ckpt are those of its own weights on the training split."""
    meta = torch.load(trained / "last.ckpt", map_location="cpu", weights_only=True)["seqmodels"]
    model, config = seqmodels.load_checkpoint(trained / "last.ckpt")
    assert isinstance(model, DigitClassifier) and not model.training
    ds = SC09Dataset(SAMPLE, "train", view="classification")
    wave = torch.stack([ds[i]["waveform"] for i in range(len(ds))])
    with torch.no_grad():
        feats = model.features(wave)
    mu, sigma = feature_statistics(feats)
    np.testing.assert_allclose(meta["train_feature_mean"].numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(meta["train_feature_cov"].numpy(), sigma, rtol=1e-4, atol=1e-6)


def test_load_checkpoint_matches_task(trained):
    model, _ = seqmodels.load_checkpoint(trained / "last.ckpt")
    task = SC09Classifier.load_from_checkpoint(trained / "last.ckpt", map_location="cpu").eval()
    wave = torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(model(wave), task(wave))


def test_evaluate_on_real_training_clips_is_consistent(trained, train_clip_dir, tmp_path, capsys):
    ckpt = trained / "last.ckpt"
    out = tmp_path / "scores.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate-sc09", "--classifier", str(ckpt), "--samples", str(train_clip_dir),
              "--device", "cpu", "--batch-size", "7", "--output", str(out)])
    assert exit_info.value.code == 0
    table = capsys.readouterr().out
    assert "FID" in table and "mIS" in table
    result = json.loads(out.read_text())
    assert result["num_clips"] == 20
    # Same clips, same model: FID against the stored statistics equals FID computed directly.
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["seqmodels"]
    model, _ = seqmodels.load_checkpoint(ckpt)
    feats, probs = classify_files(model, sorted(train_clip_dir.glob("*.wav")))
    direct = fid(feats, meta["train_feature_mean"], meta["train_feature_cov"])
    print(f"FID cli {result['fid']:.6g}, direct {direct:.6g}, trace {meta['train_feature_cov'].trace():.4g}")
    assert result["fid"] == pytest.approx(direct, rel=1e-6, abs=1e-9)
    # ... and, being the training set itself, it is near zero on the scale of the features.
    assert result["fid"] < 1e-2 * meta["train_feature_cov"].trace().item()
    assert 1.0 <= result["is"] <= 10.0 and result["mis"] >= 1.0 and result["am"] >= 0.0
    # The default real test split is the training root stored in the checkpoint.
    assert result["test_clips"] == len(sc09_files(SAMPLE, "test")) and 0.0 <= result["test_accuracy"] <= 1.0
    assert sum(result["predicted_digit_counts"]) == 20


def test_evaluate_resamples_and_fixes_length(trained, tmp_path):
    """Clips at another rate, in stereo, shorter or longer than one second are all scored."""
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long_22k_stereo.wav", rng.uniform(-0.3, 0.3, (44100, 2)).astype(np.float32), 22050)
    sf.write(tmp_path / "short_16k.wav", rng.uniform(-0.3, 0.3, 8000).astype(np.float32), 16000)
    sf.write(tmp_path / "exact.WAV", rng.uniform(-0.3, 0.3, 16000).astype(np.float32), 16000)
    out = tmp_path / "r.json"
    rc = evaluate_sc09_main(["--classifier", str(trained / "last.ckpt"), "--samples", str(tmp_path),
                             "--no-real-test", "--device", "cpu", "--output", str(tmp_path.parent / "r.json")])
    assert rc == 0
    result = json.loads((tmp_path.parent / "r.json").read_text())
    assert result["num_clips"] == 3 and result["test_accuracy"] is None
    assert np.isfinite(result["fid"]) and 1.0 <= result["is"] <= 10.0
    assert not out.exists()


def _fake_checkpoint(path: Path, kind: str) -> Path:
    torch.save({"seqmodels": {"kind": kind, "config": {}}, "state_dict": {}}, path)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        pytest.param("wrong_kind", "not an sc09_classifier", id="wrong-kind"),
        pytest.param("missing_ckpt", "checkpoint not found", id="missing-checkpoint"),
        pytest.param("empty_dir", "no .wav files", id="empty-dir"),
        pytest.param("non_wav", "notes.txt", id="non-wav-file"),
        pytest.param("bad_wav", "not a readable WAV", id="corrupt-wav"),
        pytest.param("one_clip", "at least 2 clips", id="one-clip"),
        pytest.param("no_stats", "finalize", id="statistics-missing"),
    ],
)
def test_bad_inputs_give_clear_errors(trained, tmp_path, capsys, case, expected):
    ckpt = trained / "last.ckpt"
    samples = tmp_path / "samples"
    samples.mkdir()
    real = sc09_files(SAMPLE, "train")[0][0]
    if case != "empty_dir":
        shutil.copy(real, samples / "a.wav")
        if case != "one_clip":
            shutil.copy(real, samples / "b.wav")
    if case == "wrong_kind":
        ckpt = _fake_checkpoint(tmp_path / "lm.ckpt", "dna_lm")
    elif case == "missing_ckpt":
        ckpt = tmp_path / "nope.ckpt"
    elif case == "non_wav":
        (samples / "notes.txt").write_text("not audio")
    elif case == "bad_wav":
        (samples / "c.wav").write_text("this is text, not RIFF")
    elif case == "no_stats":
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        del state["seqmodels"]["train_feature_cov"]
        ckpt = tmp_path / "no_stats.ckpt"
        torch.save(state, ckpt)
    rc = evaluate_sc09_main(["--classifier", str(ckpt), "--samples", str(samples), "--device", "cpu", "--no-real-test"])
    err = capsys.readouterr().err
    assert rc == 1
    assert expected in err, err
    assert "evaluate-sc09: error" in err


def test_non_wav_files_can_be_skipped(trained, tmp_path):
    for path, _ in sc09_files(SAMPLE, "train")[:3]:
        shutil.copy(path, tmp_path / f"{path.parent.name}_{path.name}")
    (tmp_path / "manifest.json").write_text("{}")
    out = tmp_path.parent / "skip.json"
    rc = evaluate_sc09_main(["--classifier", str(trained / "last.ckpt"), "--samples", str(tmp_path),
                             "--skip-non-wav", "--no-real-test", "--device", "cpu", "--output", str(out)])
    assert rc == 0 and json.loads(out.read_text())["num_clips"] == 3


def test_finalize_restores_statistics(trained, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    shutil.copy(trained / "last.ckpt", ckpt)
    original = torch.load(ckpt, map_location="cpu", weights_only=True)["seqmodels"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key in ("train_feature_mean", "train_feature_cov", "train_label_prior", "train_prob_prior"):
        del state["seqmodels"][key]
    torch.save(state, ckpt)
    meta = finalize(ckpt, SAMPLE)
    reread = torch.load(ckpt, map_location="cpu", weights_only=True)["seqmodels"]
    for key in ("train_feature_mean", "train_feature_cov", "train_label_prior", "train_prob_prior"):
        torch.testing.assert_close(reread[key], original[key], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(meta[key], reread[key])
    with pytest.raises(ValueError, match="not an sc09_classifier"):
        finalize(_fake_checkpoint(tmp_path / "lm.ckpt", "dna_lm"), SAMPLE)


def test_console_script_runs_evaluate(trained, train_clip_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "seqmodels", "evaluate-sc09", "--classifier", str(trained / "last.ckpt"),
           "--samples", str(train_clip_dir), "--device", "cpu", "--no-real-test"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clips" in proc.stdout and "20" in proc.stdout


def test_yaml_instantiates(tmp_path):
    with open(CONFIG) as f:
        raw = yaml.safe_load(f)
    assert raw["data"]["init_args"]["root"] == "data/sc09"
    cli = SeqModelsCLI(
        args=["--config", CONFIG, "--data.root", SAMPLE, "--trainer.logger.init_args.save_dir", str(tmp_path),
              "--trainer.accelerator", "cpu"],
        run=False,
    )
    assert isinstance(cli.model, SC09Classifier)
    assert cli.datamodule.view == "classification"
    assert cli.model.config.feature_dim == raw["model"]["init_args"]["network"]["feature_dim"]
    assert sum(p.numel() for p in cli.model.parameters()) > 0


def test_training_statistics_needs_two_clips():
    model = DigitClassifier(DigitClassifierConfig(channels=(4,), blocks_per_stage=1, feature_dim=8))
    batch = {"waveform": torch.zeros(1, 16000), "labels": torch.zeros(1, dtype=torch.long)}
    with pytest.raises(ValueError, match="at least 2"):
        training_statistics(model, [batch])
    assert model.training  # restored


def test_digit_classifier_shapes_and_config_errors():
    config = DigitClassifierConfig(channels=(4, 8), blocks_per_stage=1, feature_dim=12)
    model = DigitClassifier(config).eval()
    wave = torch.randn(2, 16000) * 0.1
    assert model.features(wave).shape == (2, 12) and model(wave).shape == (2, 10)
    assert DigitClassifierConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="feature_dim"):
        DigitClassifierConfig(feature_dim=0)
    with pytest.raises(ValueError, match="unknown field"):
        DigitClassifierConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.randn(16000))
