"""The species classifier task: init_from, CLI fit/test/predict, checkpoints, configs, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import seqmodels
from seqmodels.cli import SeqModelsCLI, main
from seqmodels.data.species import GreatApesDataModule
from seqmodels.tasks import FineTuneSeqLenWarmup, SpeciesClassifier
from seqmodels.tasks.callbacks import read_metrics_csv
from seqmodels.tasks.species import CHECKPOINT_KIND, accuracy_table

from tests.species_task.conftest import (
    GREAT_APES,
    SAMPLES,
    SPECIES_TINY,
    STRAINS,
    TINY_BACKBONE,
    flow,
    run_dir,
    tiny_args,
    write_fasta,
)


def _cli_error(capsys, args: list[str], *errors: type[BaseException]) -> str:
    """Run the CLI expecting a failure; the text of the error and of stderr."""
    with pytest.raises((SystemExit, *errors)) as err:
        main(args)
    return str(err.value) + capsys.readouterr().err


# -- init_from ---------------------------------------------------------------------------------


def test_init_from_copies_the_pretrained_backbone(pretrained):
    path, lm = pretrained
    task = SpeciesClassifier(init_from=str(path), class_names=["a", "b", "c"],
                             backbone={"checkpointing": True})
    assert task.config.d_model == TINY_BACKBONE["d_model"] and task.config.checkpointing
    mine, theirs = task.model.backbone.state_dict(), lm.model.backbone.state_dict()
    assert mine.keys() == theirs.keys()
    for key in theirs:
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0, msg=key)
    assert task.model.head.out_features == 3
    ids = torch.randint(7, 11, (2, 40))
    with torch.no_grad():  # the pooled feature is the LM's last hidden state
        torch.testing.assert_close(task.model.pool(task.model.backbone(ids)), lm.model.hidden_states(ids)[:, -1])


def test_init_from_rejects_what_is_not_a_pretraining_checkpoint(pretrained, trained, tmp_path):
    junk = tmp_path / "random.ckpt"
    junk.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(ValueError, match="random.ckpt"):
        SpeciesClassifier(init_from=str(junk), class_names=["a", "b"])
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        SpeciesClassifier(init_from=str(tmp_path / "nope.ckpt"), class_names=["a", "b"])
    classifier = run_dir(trained) / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"last\.ckpt is a 'species_classifier' checkpoint.*--ckpt_path"):
        SpeciesClassifier(init_from=str(classifier))
    path, _ = pretrained
    with pytest.raises(ValueError, match=r"\['d_model'\].*init_from"):
        SpeciesClassifier(init_from=str(path), backbone={"d_model": 64})
    with pytest.raises(ValueError, match="drop the preset"):
        SpeciesClassifier(init_from=str(path), preset="1.4m")
    with pytest.raises(ValueError, match="give init_from"):
        SpeciesClassifier(backbone={"checkpointing": True})


def test_cli_init_from_a_classifier_checkpoint_fails_before_training(trained, tmp_path, capsys):
    classifier = run_dir(trained) / "checkpoints" / "last.ckpt"
    text = _cli_error(capsys, ["fit", *tiny_args(tmp_path), "--model.init_from", str(classifier),
                               "--model.backbone", "null"], ValueError)
    assert "species_classifier" in text and "last.ckpt" in text
    assert not list(tmp_path.rglob("*.ckpt"))


# -- fit / test / predict through the CLI ------------------------------------------------------


def test_fit_on_the_strain_samples_learns_and_warms_up(trained):
    run = run_dir(trained)
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    series = read_metrics_csv(run / "metrics.csv")
    for key in ("train/loss_step", "train/acc_step", "train/acc", "val/loss", "val/acc", "val/acc_COL", "lr-AdamW/pg1"):
        assert key in series, key
    # FineTuneSeqLenWarmup(start=128) with seq_len 256: epoch 0 at 128, then 256.
    assert [v for _, v in series["train/seq_len"]] == [128.0, 256.0, 256.0]
    train = [v for _, v in series["train/loss"]]
    val = [v for _, v in series["val/loss"]]
    print(f"train loss per epoch {np.round(train, 3)}; val loss {np.round(val, 3)}")
    assert train[-1] < train[0] and val[-1] < val[0], "loss did not fall"
    per_class = np.array([series[f"val/acc_{s}"][-1][1] for s in STRAINS])
    # Balanced validation set: overall accuracy is the mean of the per-class accuracies.
    assert series["val/acc"][-1][1] == pytest.approx(per_class.mean(), abs=1e-6)


def test_checkpoint_carries_the_classifier_section_and_loads_without_lightning(trained):
    ckpt_path = run_dir(trained) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    meta = ckpt["seqmodels"]
    assert meta["kind"] == CHECKPOINT_KIND and meta["class_names"] == STRAINS and meta["pooling"] == "last"
    assert meta["pool_norm"] == "none"
    assert meta["config"]["d_model"] == TINY_BACKBONE["d_model"]
    assert ckpt["hyper_parameters"]["class_names"] == STRAINS and ckpt["hyper_parameters"]["init_from"] is None
    model, config = seqmodels.load_checkpoint(ckpt_path)
    assert isinstance(model, seqmodels.models.MambaClassifier) and not model.training
    assert model.class_names == STRAINS and config.n_layer == TINY_BACKBONE["n_layer"]
    task = SpeciesClassifier.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    ids = torch.randint(7, 11, (3, 64))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), task(ids))


def test_test_prints_per_class_accuracy_and_writes_the_confusion_matrix(trained, tmp_path, capsys):
    ckpt = run_dir(trained) / "checkpoints" / "best.ckpt"
    main(["test", *tiny_args(tmp_path), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    run = run_dir(tmp_path)
    with open(run / "confusion_test.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true\\predicted", *STRAINS]
    assert [r[0] for r in rows[1:]] == STRAINS
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert cm.sum() == 50 and (cm.sum(1) == 10).all()  # 50 test windows, exactly 10 per strain
    assert (run / "confusion_test.png").stat().st_size > 5000
    series = read_metrics_csv(run / "metrics.csv")
    assert series["test/acc"][-1][1] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
    assert accuracy_table(torch.from_numpy(cm), STRAINS) in out
    for strain in STRAINS:
        assert strain in out
    assert "overall" in out


def test_predict_writes_class_probabilities_per_window(trained, tmp_path):
    ckpt = run_dir(trained) / "checkpoints" / "last.ckpt"
    bed = tmp_path / "regions.bed"
    bed.write_text("NC_002951.2\t1000\t1600\tfirst\nNC_002951.2\t5000\t5256\tsecond\n")
    out = tmp_path / "pred"
    main(["predict", *tiny_args(tmp_path), "--ckpt_path", str(ckpt),
          "--data.predict_fasta", SAMPLES["COL"], "--data.predict_bed", str(bed),
          "--trainer.callbacks+=seqmodels.tasks.SpeciesPredictionWriter", f"--trainer.callbacks.output_dir={out}"])
    with open(out / "species_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["chrom", "start", "end", "name", *(f"p_{s}" for s in STRAINS), "predicted"]
    # 600 bases hold two 256-base windows (remainder dropped), the second interval one.
    assert [(r["start"], r["end"], r["name"]) for r in rows] == [
        ("1000", "1256", "first"), ("1256", "1512", "first"), ("5000", "5256", "second")]
    for r in rows:
        probs = np.array([float(r[f"p_{s}"]) for s in STRAINS])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4) and (probs >= 0).all()
        assert r["predicted"] == STRAINS[int(probs.argmax())]


def test_classifier_separates_species_that_differ(tmp_path):
    """A learnable case: two genomes of different base composition are told apart (accuracy well
    above chance after 30 steps), through the same CLI and config."""
    rng = np.random.default_rng(1)
    def genome(name: str, p: list[float]) -> str:
        return write_fasta(tmp_path / name, {"chr1": "".join(rng.choice(list("ACGT"), 20000, p=p))})

    genomes = {"gc_rich": genome("gc.fa", [0.2, 0.3, 0.3, 0.2]), "at_rich": genome("at.fa", [0.3, 0.2, 0.2, 0.3])}
    args = tiny_args(tmp_path, "--data.genomes", flow(genomes), "--data.seq_len", "128", "--model.pooling", "mean",
                     "--model.lr", "1e-2")
    main(["fit", *args])
    series = read_metrics_csv(run_dir(tmp_path) / "metrics.csv")
    assert series["val/acc"][-1][1] >= 0.9, series["val/acc"]


# -- configs and bad input ---------------------------------------------------------------------


def test_species_tiny_yaml_instantiates_as_shipped(tmp_path):
    cli = SeqModelsCLI(args=["--config", SPECIES_TINY, "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    assert isinstance(cli.model, SpeciesClassifier) and cli.model.hparams.pooling == "last"
    assert isinstance(cli.datamodule, GreatApesDataModule) and cli.datamodule.class_names == STRAINS


def test_great_apes_yaml_instantiates_and_its_held_out_chromosomes_fit_ape_naming(pretrained, ape_genomes, tmp_path):
    path, _ = pretrained
    cli = SeqModelsCLI(
        args=[
            "--config", GREAT_APES, "--model.init_from", str(path), "--data.genomes", flow(ape_genomes),
            "--data.seq_len", "512", "--data.num_workers", "0", "--data.train_samples_per_epoch", "50",
            "--data.val_samples", "10", "--data.test_samples", "10",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
        ],
        run=False,
    )
    assert cli.model.hparams.lr == 1e-4 and cli.model.config.checkpointing
    assert any(isinstance(c, FineTuneSeqLenWarmup) for c in cli.trainer.callbacks)
    dm = cli.datamodule
    assert dm.class_names == ["human", "chimpanzee", "gorilla", "orangutan", "bonobo"]
    dm.setup("fit")
    assert [r.chrom for r in dm.regions["human"]["test"]] == ["chr2"]
    assert [r.chrom for r in dm.regions["bonobo"]["test"]] == ["chr2A", "chr2B"]
    assert all([r.chrom for r in dm.regions[s]["val"]] == ["chr20"] for s in dm.class_names)
    # The paper's effective batch: 8 windows x 8 accumulated batches x 1 device.
    assert dm.batch_size * cli.trainer.accumulate_grad_batches * cli.trainer.world_size == 64


def test_missing_species_fasta_is_reported_before_training(tmp_path, capsys):
    genomes = {**SAMPLES, "N315": str(tmp_path / "nope.fa")}
    text = _cli_error(capsys, ["fit", *tiny_args(tmp_path), "--data.genomes", flow(genomes)], FileNotFoundError)
    assert "nope.fa" in text
    assert not list(tmp_path.rglob("*.ckpt"))


def test_held_out_chromosome_absent_from_a_genome_is_reported(pretrained, ape_genomes, tmp_path, capsys):
    path, _ = pretrained
    args = ["fit", "--config", GREAT_APES, "--model.init_from", str(path), "--data.genomes", flow(ape_genomes),
            "--data.seq_len", "256", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.precision", "32-true", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--data.test_chroms", "{human: [chr2], chimpanzee: [chr2], gorilla: [chr2A, chr2B], "
            "orangutan: [chr2A, chr2B], bonobo: [chr2A, chr2B]}"]
    text = _cli_error(capsys, args, ValueError)
    assert "chimpanzee" in text and "'chr2'" in text and "not in its FASTA" in text
    assert not list(tmp_path.rglob("*.ckpt"))


def test_seq_len_longer_than_a_split_is_reported(tmp_path, capsys):
    # The samples' validation regions are 6,000 bases long.
    text = _cli_error(capsys, ["fit", *tiny_args(tmp_path), "--data.seq_len", "8192"], ValueError)
    assert "seq_len 8192" in text and "'val'" in text
    assert not list(tmp_path.rglob("*.ckpt"))


def test_finetune_warmup_starts_at_full_length_below_start():
    class DM:
        seq_len, batch_size = 4096, 8

        def set_seq_len(self, n):
            self.seq_len = n

        def set_batch_size(self, b):
            self.batch_size = b

    short, long = DM(), DM()
    long.seq_len = 2**16
    FineTuneSeqLenWarmup(start=16384).apply(short, 0)
    assert short.seq_len == 4096
    warm = FineTuneSeqLenWarmup(start=16384)
    lengths = []
    for epoch in range(4):
        warm.apply(long, epoch)
        lengths.append(long.seq_len)
    assert lengths == [16384, 32768, 65536, 65536]
