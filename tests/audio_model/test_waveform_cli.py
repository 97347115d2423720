"""End-to-end on CPU: fit configs/audio/tiny.yaml on the shipped espeak-ng digits, then
``seqmodels generate`` from its checkpoint; every audio YAML instantiates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import seqmodels
from seqmodels.cli import SeqModelsCLI, main
from seqmodels.data.audio import mu_law_decode, mu_law_encode, read_wav, write_wav
from seqmodels.generate import generate_main, sample_logits
from seqmodels.tasks.callbacks import read_metrics_csv

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs/audio/tiny.yaml")
SAMPLE_ROOT = str(REPO / "data/audio/sc09_sample")
STEPS = 8


def run_dir(tmp: Path) -> Path:
    (version,) = sorted((tmp / "runs" / "audio_tiny").glob("version_*"))
    return version


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short CPU fit of the tiny config (4 clips, batch 2, 8 steps), shared below."""
    tmp = tmp_path_factory.mktemp("fit")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main([
            "fit", "--config", TINY,
            "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
            "--trainer.max_steps", str(STEPS),
            "--trainer.check_val_every_n_epoch", "4",
            "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks.every_n_steps", str(STEPS),
            "--trainer.callbacks.seconds", "0.005",
            "--data.root", SAMPLE_ROOT,
            "--data.max_items", "4",
        ])
    finally:
        torch.set_num_threads(previous)
    return tmp


def test_fit_loss_falls_and_writes_artefacts(trained):
    run = run_dir(trained)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    series = read_metrics_csv(run / "metrics.csv")
    for key in ("train/loss_step", "val/loss", "val/bits_per_sample", "train/bits_per_sample", "train/tokens_per_s"):
        assert key in series, key
    steps = [v for _, v in series["train/loss_step"]]
    first, last = np.mean(steps[:2]), np.mean(steps[-2:])
    print(f"train loss {first:.3f} -> {last:.3f} nats")
    assert first > 5.0  # an untrained 256-way model starts near ln(256) = 5.55
    assert last < first - 0.3, "training loss did not fall"
    val = np.array([v for _, v in series["val/loss"]])
    bits = np.array([v for _, v in series["val/bits_per_sample"]])
    np.testing.assert_allclose(bits, val / np.log(2), rtol=1e-4)
    # AudioSampleLogger: clips of 0.005 s (80 samples) and their spectrograms.
    samples = run / "samples" / f"step_{STEPS:07d}"
    wavs = sorted(samples.glob("sample_*.wav"))
    assert len(wavs) == 2
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.frames, info.subtype) == (16000, 80, "PCM_16")
    assert (samples / "spectrograms.png").stat().st_size > 1000


def test_checkpoint_metadata_and_load(trained):
    ckpt_path = run_dir(trained) / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt_path, map_location="cpu", weights_only=True)["seqmodels"]
    assert meta["kind"] == "waveform_lm" and meta["mu_law"] == "sashimi"
    model, config = seqmodels.load_checkpoint(ckpt_path)
    assert config.d_model == 16 and config.pool == (4, 4)
    from seqmodels.tasks import WaveformLM

    task = WaveformLM.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    ids = torch.randint(0, 256, (1, 64))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), task(ids))


def _generate(ckpt: Path, out: Path, *extra: str) -> int:
    return generate_main([
        "--checkpoint", str(ckpt), "--output-dir", str(out), "--device", "cpu", "--no-progress", *extra,
    ])


def test_generate_writes_wavs_of_the_requested_length(trained, tmp_path):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    out = tmp_path / "gen"
    args = ["--num-samples", "3", "--batch-size", "2", "--seconds", "0.02",
            "--top-p", "0.9", "--top-k", "50", "--temperature", "0.9", "--seed", "1"]
    assert _generate(ckpt, out, *args) == 0
    wavs = sorted(out.glob("sample_*.wav"))
    assert [p.name for p in wavs] == ["sample_000.wav", "sample_001.wav", "sample_002.wav"]
    for path in wavs:
        data, rate = sf.read(str(path), dtype="int16")
        info = sf.info(str(path))
        assert rate == 16000 and info.subtype == "PCM_16" and data.shape == (320,)
    assert (out / "spectrograms.png").stat().st_size > 1000
    # The seed fixes the samples; clips of one batch differ from each other.
    again = tmp_path / "again"
    assert _generate(ckpt, again, *args) == 0
    for path in wavs:
        np.testing.assert_array_equal(sf.read(str(again / path.name))[0], sf.read(str(path))[0])
    assert not np.array_equal(sf.read(str(wavs[0]))[0], sf.read(str(wavs[1]))[0])


def test_generate_continues_a_prefix(trained, tmp_path):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    wave = read_wav(Path(SAMPLE_ROOT) / "five" / "espeak-en-us_nohash_0.wav")[4000:4100]
    prefix = write_wav(tmp_path / "prefix.wav", wave)
    out = tmp_path / "cont"
    assert _generate(ckpt, out, "--num-samples", "2", "--seconds", "0.01", "--prefix", str(prefix)) == 0
    expected = mu_law_decode(mu_law_encode(read_wav(prefix), "sashimi"), "sashimi")
    for path in sorted(out.glob("sample_*.wav")):
        data, _ = sf.read(str(path), dtype="float32")
        assert data.shape == (100 + 160,)
        # The clip starts with the prefix as the model saw it (mu-law round trip, 16-bit PCM).
        np.testing.assert_allclose(data[:100], expected.numpy(), atol=1 / 16000)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "-1"], "--seconds"),
        (["--num-samples", "0"], "--num-samples"),
        (["--top-p", "1.5"], "--top-p"),
        (["--prefix", "missing.wav"], "missing.wav"),
    ],
    ids=["zero-seconds", "negative-seconds", "zero-samples", "top-p", "missing-prefix"],
)
def test_generate_bad_arguments(trained, tmp_path, capsys, args, message):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    args = [a.replace("missing.wav", str(tmp_path / "missing.wav")) for a in args]
    out = tmp_path / "out"
    assert _generate(ckpt, out, *args) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_generate_rejects_other_checkpoint_kinds(tmp_path, capsys):
    ckpt = tmp_path / "dna.ckpt"
    torch.save({"state_dict": {}, "seqmodels": {"kind": "dna_lm", "config": {}}}, ckpt)
    assert _generate(ckpt, tmp_path / "out", "--seconds", "0.01") == 1
    err = capsys.readouterr().err
    assert "dna.ckpt" in err and "dna_lm" in err and "waveform_lm" in err
    assert _generate(tmp_path / "nope.ckpt", tmp_path / "out") == 1
    assert "nope.ckpt" in capsys.readouterr().err


def test_generate_through_the_cli_dispatch(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--checkpoint", str(tmp_path / "nope.ckpt"), "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "nope.ckpt" in capsys.readouterr().err


def test_sample_logits_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_logits(logits, top_k=2, generator=gen).tolist()) == {0, 1}
    assert set(sample_logits(logits, top_p=0.7, generator=gen).tolist()) == {0, 1}
    assert set(sample_logits(logits, top_p=0.4, generator=gen).tolist()) == {0}
    freq = np.bincount(sample_logits(logits, generator=gen).numpy(), minlength=4) / 2000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.04)


@pytest.fixture
def flat_wav_dir(tmp_path) -> Path:
    """A YouTubeMix-style folder (WAV files directly inside) made from the SC09 sample."""
    root = tmp_path / "ytm"
    root.mkdir()
    for i, path in enumerate(sorted(Path(SAMPLE_ROOT).glob("*/*.wav"))[:3]):
        shutil.copy(path, root / f"clip{i}.wav")
    return root


@pytest.mark.parametrize("config", ["tiny.yaml", "sc09.yaml", "youtubemix.yaml"])
def test_every_audio_config_instantiates(config, tmp_path, flat_wav_dir):
    root = str(flat_wav_dir) if config == "youtubemix.yaml" else SAMPLE_ROOT
    cli = SeqModelsCLI(
        args=[
            "--config", str(REPO / "configs/audio" / config), "--data.root", root,
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
        ],
        run=False,
    )
    count = sum(p.numel() for p in cli.model.parameters())
    expected = {"tiny.yaml": (1e4, 2e5), "sc09.yaml": (5.9e6, 6.3e6), "youtubemix.yaml": (3.4e6, 3.6e6)}[config]
    assert expected[0] < count < expected[1]
    assert cli.model.hparams.mu_law == cli.datamodule.mu_law


def test_nll_by_context_command(trained, flat_wav_dir, tmp_path):
    from benchmarks.nll_context import main as nll_main

    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    out = tmp_path / "nll"
    assert nll_main(["--checkpoint", str(ckpt), "--data.root", str(flat_wav_dir), "--lengths", "512", "2048",
                     "--max-windows", "2", "--device", "cpu", "--output", str(out)]) == 0
    import json

    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["length"] for r in rows] == [512, 2048]
    # Finite, positive NLL for every length (a model 8 steps old sits near chance, 8 bits).
    assert all(0 < r["bits_per_sample"] < 12 for r in rows) and all(r["windows"] >= 1 for r in rows)
    assert out.with_suffix(".png").stat().st_size > 1000
    assert nll_main(["--checkpoint", str(ckpt), "--data.root", str(flat_wav_dir), "--lengths", "500"]) == 1
