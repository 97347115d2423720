"""End-to-end: the ``seqmodels`` CLI on the shipped DNA sample (CPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import seqmodels
from seqmodels.cli import SeqModelsCLI, main
from seqmodels.tasks.callbacks import read_metrics_csv

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs/dna/tiny.yaml")
SAMPLE_FA = str(REPO / "data/dna/sample.fa")
SAMPLE_BED = str(REPO / "data/dna/sample.bed")


def tiny_args(tmp_path: Path, *extra: str, steps: int = 40) -> list[str]:
    return [
        "--config", TINY,
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", "20",
        "--trainer.enable_progress_bar", "false",
        "--data.fasta", SAMPLE_FA,
        "--data.bed", SAMPLE_BED,
        "--data.seq_len", "256",
        "--data.batch_size", "4",
        "--data.max_eval_windows", "8",
        "--model.backbone", "{d_model: 32, n_layer: 2, vocab_size: 12, scan_impl: torch}",
        "--model.warmup_steps", "5",
        *extra,
    ]


def run_dir(tmp_path: Path) -> Path:
    (version,) = sorted((tmp_path / "runs" / "dna_tiny").glob("version_*"))
    return version


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short CPU fit of the tiny config, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("fit")
    main(["fit", *tiny_args(tmp)])
    return tmp


def test_fit_leaves_checkpoint_metrics_and_plot(trained):
    run = run_dir(trained)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "loss_curve.png").stat().st_size > 1000
    assert (run / "config.yaml").is_file()
    series = read_metrics_csv(run / "metrics.csv")
    for key in ("train/loss_step", "val/loss", "val/ppl", "val/bits_per_base", "train/tokens_per_s"):
        assert key in series, key
    steps = series["train/loss_step"]
    first = np.mean([v for _, v in steps[:2]])
    last = np.mean([v for _, v in steps[-2:]])
    print(f"train loss {first:.3f} -> {last:.3f}")
    assert last < first - 0.05, "training loss did not fall"
    assert first > 1.0  # an untrained model is near ln(4) on DNA, far from 0
    val = [v for _, v in series["val/loss"]]
    bpb = [v for _, v in series["val/bits_per_base"]]
    assert np.allclose(np.array(bpb), np.array(val) / np.log(2), rtol=1e-4)


def test_load_checkpoint_matches_task(trained):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    model, config = seqmodels.load_checkpoint(ckpt)
    assert config.d_model == 32 and config.n_layer == 2
    assert not model.training
    from seqmodels.tasks import NextBaseLM

    task = NextBaseLM.load_from_checkpoint(ckpt, map_location="cpu").eval()
    ids = torch.randint(7, 11, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), task(ids))


def test_resume_continues_from_checkpoint(trained, tmp_path):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 40
    cli = SeqModelsCLI(args=["fit", *tiny_args(tmp_path, "--ckpt_path", str(ckpt), steps=50)])
    assert cli.trainer.global_step == 50
    series = read_metrics_csv(run_dir(tmp_path) / "metrics.csv")
    assert min(s for s, _ in series["train/loss_step"]) >= 40  # no step before the checkpoint was redone


def test_predict_writes_loglik_and_embeddings(trained, tmp_path):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    out = tmp_path / "pred"
    main([
        "predict", *tiny_args(tmp_path), "--ckpt_path", str(ckpt),
        "--trainer.callbacks+=seqmodels.tasks.PredictionWriter",
        f"--trainer.callbacks.output_dir={out}", "--trainer.callbacks.bedgraph=true",
    ])
    pred = np.load(out / "predictions.npz")
    n = pred["loglik"].shape[0]
    assert n > 0 and pred["loglik"].shape == (n, 256)
    assert pred["embedding"].shape == (n, 32)
    assert pred["chrom"].shape == pred["start"].shape == (n,)
    assert np.all(pred["end"] - pred["start"] == 256)
    finite = pred["loglik"][np.isfinite(pred["loglik"])]
    assert finite.size > 0 and np.all(finite <= 0)
    lines = (out / "loglik.bedGraph").read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    chrom, start, end, value = lines[1].split("\t")
    assert int(end) - int(start) == 1 and float(value) <= 0


def test_missing_fasta_is_reported_before_training(tmp_path, capsys):
    args = tiny_args(tmp_path)
    args[args.index("--data.fasta") + 1] = str(tmp_path / "nope.fa")
    with pytest.raises((FileNotFoundError, SystemExit)) as err:
        main(["fit", *args])
    text = str(err.value) + capsys.readouterr().err
    assert "nope.fa" in text
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))


NEXT_BASE_CONFIGS = ["tiny.yaml", *sorted(p.name for p in (REPO / "configs/dna").glob("hg38_*.yaml"))]


@pytest.mark.parametrize("config", NEXT_BASE_CONFIGS)
def test_every_dna_config_instantiates(config, tmp_path):
    cli = SeqModelsCLI(
        args=[
            "--config", str(REPO / "configs/dna" / config),
            "--data.fasta", SAMPLE_FA, "--data.bed", SAMPLE_BED,
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
        ],
        run=False,
    )
    assert isinstance(cli.model, torch.nn.Module)
    assert sum(p.numel() for p in cli.model.parameters()) > 0


def test_ddp_two_cpu_processes(tmp_path):
    """Lightning's DDP with the gloo backend: two processes train a few steps and agree."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "seqmodels", "fit", *tiny_args(tmp_path, steps=6),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.val_check_interval", "3",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    ckpt = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    with open(run_dir(tmp_path) / "metrics.csv") as f:
        assert any(row.get("val/loss") for row in csv.DictReader(f))


def test_main_destroys_the_gloo_process_group_it_leaves(tmp_path, monkeypatch):
    """Lightning destroys a process group at exit only for NCCL; `main` destroys a gloo group
    itself once the command finishes, so no rank aborts in the interpreter's finalisation."""
    import torch.distributed as dist

    seen = {}

    def command(args):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        t = torch.ones(3)
        dist.all_reduce(t)
        seen["initialized"], seen["sum"] = dist.is_initialized(), t.tolist()

    monkeypatch.setattr("seqmodels.cli.SeqModelsCLI", command)
    main(["fit"])
    assert seen == {"initialized": True, "sum": [1.0, 1.0, 1.0]}
    assert not dist.is_initialized()
    main(["fit"])  # a second command in the same process can build its group again
    assert not dist.is_initialized()


@pytest.mark.gpu
def test_gpu_fit_bf16_clips_with_the_fused_adamw(tmp_path):
    """On a GPU under bf16-mixed the tasks use the fused AdamW and clip gradients themselves
    (Lightning refuses to clip for a fused optimizer under mixed precision)."""
    cli = SeqModelsCLI(args=["fit", *tiny_args(tmp_path, "--trainer.accelerator", "gpu",
                                               "--trainer.precision", "bf16-mixed",
                                               "--model.backbone", "{d_model: 32, n_layer: 2, vocab_size: 12}",
                                               steps=60)])
    assert cli.trainer.optimizers[0].defaults["fused"]
    steps = [v for _, v in read_metrics_csv(run_dir(tmp_path) / "metrics.csv")["train/loss_step"]]
    assert np.mean(steps[-2:]) < np.mean(steps[:2]) - 0.05, "training loss did not fall"


@pytest.mark.gpu
def test_gpu_fit_with_cuda_graph(tmp_path):
    """`seqmodels fit` with the blocks replayed from CUDA graphs: the loss falls, the checkpoint
    reloads, and validation (no graph) runs between the graphed training steps."""
    cli = SeqModelsCLI(args=["fit", *tiny_args(tmp_path, "--trainer.accelerator", "gpu",
                                               "--trainer.precision", "bf16-mixed",
                                               "--model.backbone",
                                               "{d_model: 32, n_layer: 2, vocab_size: 12, cuda_graph: true}",
                                               steps=60)])
    assert cli.model.model.backbone._graphed.capture is not None
    steps = [v for _, v in read_metrics_csv(run_dir(tmp_path) / "metrics.csv")["train/loss_step"]]
    assert np.mean(steps[-2:]) < np.mean(steps[:2]) - 0.05, "training loss did not fall"
    model, config = seqmodels.load_checkpoint(run_dir(tmp_path) / "checkpoints" / "last.ckpt")
    assert config.cuda_graph
