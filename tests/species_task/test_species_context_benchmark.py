"""benchmarks/species_context.py end to end at tiny scale (CPU), on the shipped strain samples."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import yaml

from benchmarks import species_context
from seqmodels import load_checkpoint
from seqmodels.tasks.callbacks import read_metrics_csv
from tests.species_task.conftest import REPO, STRAINS


@pytest.mark.slow
def test_species_context_benchmark_runs_fit_and_test_per_length(tmp_path, capsys):
    genome_dir = tmp_path / "aureus"
    genome_dir.mkdir()
    for strain in STRAINS:  # the full genomes' layout, with the 60 kb samples
        os.symlink(REPO / f"data/species/aureus_{strain}.fa", genome_dir / f"{strain}.fa")
    out = tmp_path / "bench"
    rows = species_context.main([
        "--lengths", "256", "512", "--test-lengths", "256", "1024", "--max-steps", "20", "--tokens-per-batch", "2560",
        "--pooling", "mean", "--pool-norm", "batch", "--ckpt", "best", "--val-length", "1024", "--val-every", "10",
        "--rc-aug",
        "--backbone", "{d_model: 16, n_layer: 1, vocab_size: 12, scan_impl: torch}",
        "--val-samples", "25", "--test-samples", "50", "--genome-dir", str(genome_dir), "--out", str(out),
    ])
    text = capsys.readouterr().out
    assert [r["L"] for r in rows] == [256, 512] and [r["batch"] for r in rows] == [10, 5]
    for r in rows:
        assert [t["L"] for t in r["tests"]] == [256, 1024] and r["checkpoint"] == "best"
        for t in r["tests"]:  # every trained model is tested at each test length
            assert 0.0 <= t["test_acc"] <= 1.0 and set(t["per_class_acc"]) == set(STRAINS)
            run = out / f"L{r['L']}" / "runs" / f"L{r['L']}_test{t['L']}" / "version_0"
            assert (run / "confusion_test.csv").is_file()
        fit, *tests = r["commands"]
        assert fit.startswith("seqmodels fit --config configs/dna/species_tiny.yaml") and "--model.pool_norm batch" in fit
        assert len(tests) == 2 and all(c in text for c in r["commands"])
        assert "--data.seq_len 1024" in tests[1] and tests[1].endswith("checkpoints/best.ckpt")
        assert "--data.eval_seq_len 1024 --data.rc_aug true --trainer.val_check_interval 10" in fit
        # validated twice during the 20 steps, on 1,024-base windows, with augmented training
        fit_run = out / f"L{r['L']}" / "runs" / f"L{r['L']}" / "version_0"
        assert len(read_metrics_csv(fit_run / "metrics.csv")["val/acc"]) == 2
        data = yaml.safe_load((fit_run / "config.yaml").read_text())["data"]["init_args"]
        assert data["eval_seq_len"] == 1024 and data["seq_len"] == r["L"] and data["rc_aug"] is True
        # the standardisation's moving averages travel with the checkpoint
        model, _ = load_checkpoint(out / f"L{r['L']}" / "runs" / f"L{r['L']}" / "version_0" / "checkpoints" / "best.ckpt")
        assert model.pool_norm == "batch" and model.norm.num_batches_tracked > 0
        # last.ckpt holds the final step whichever validation was best
        assert torch.load(fit_run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 20
    report = json.loads((out / "species_context.json").read_text())
    assert report["rows"] == rows and report["chance"] == pytest.approx(0.2)


def test_species_context_benchmark_rejects_a_missing_genome_dir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        species_context.parse_args(["--genome-dir", str(tmp_path)])
    assert "COL.fa" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "match"), [
    (["--val-length", "0"], "--val-length must be positive"),
    (["--val-every", "50", "--max-steps", "20"], "--val-every .50. is more than --max-steps .20."),
])
def test_species_context_benchmark_rejects_bad_validation_flags(argv, match, capsys):
    with pytest.raises(SystemExit):
        species_context.parse_args(argv)
    assert re.search(match, capsys.readouterr().err)
