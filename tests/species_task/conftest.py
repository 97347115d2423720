"""Shared fixtures of the species-classifier task tests: a tiny pretraining checkpoint, small
ape-like genomes, and one short CPU fit of configs/dna/species_tiny.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from seqmodels.cli import main
from seqmodels.tasks import NextBaseLM

# Thread oversubscription slows torch badly on small shared CPUs (also in subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[2]
SPECIES_TINY = str(REPO / "configs/dna/species_tiny.yaml")
GREAT_APES = str(REPO / "configs/dna/great_apes.yaml")
STRAINS = ["COL", "JKD6008", "N315", "RF122", "USA300_FPR3757"]
SAMPLES = {s: str(REPO / f"data/species/aureus_{s}.fa") for s in STRAINS}
TINY_BACKBONE = {"d_model": 16, "n_layer": 2, "vocab_size": 12, "scan_impl": "torch"}


def flow(mapping: dict) -> str:
    """A dict as a flow-style YAML mapping for the command line."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def write_fasta(path: Path, records: dict[str, str]) -> str:
    with open(path, "w") as fh:
        for name, seq in records.items():
            fh.write(f">{name}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return str(path)


def tiny_args(tmp: Path, *extra: str, epochs: int = 3) -> list[str]:
    """species_tiny.yaml on the shipped strain samples, shrunk to a few seconds of CPU."""
    return [
        "--config", SPECIES_TINY,
        "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", str(epochs),
        "--trainer.log_every_n_steps", "1",
        "--data.genomes", flow(SAMPLES),
        "--data.seq_len", "256",
        "--data.batch_size", "10",
        "--data.train_samples_per_epoch", "100",
        "--data.val_samples", "50",
        "--data.test_samples", "50",
        "--model.backbone", flow(TINY_BACKBONE),
        "--model.lr", "5e-3",
        "--model.warmup_steps", "3",
        *extra,
    ]


def run_dir(tmp: Path, version: int = 0, name: str = "species_tiny") -> Path:
    return tmp / "runs" / name / f"version_{version}"


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> tuple[Path, NextBaseLM]:
    """A pretraining checkpoint as NextBaseLM writes it (random weights; the format is the point)."""
    torch.manual_seed(0)
    lm = NextBaseLM(backbone=dict(TINY_BACKBONE))
    ckpt: dict = {"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams)}
    lm.on_save_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("pretrained") / "dna_lm.ckpt"
    torch.save(ckpt, path)
    return path, lm


@pytest.fixture(scope="session")
def ape_genomes(tmp_path_factory) -> dict[str, str]:
    """Five small genomes named like the UCSC ape assemblies (human chr2; apes chr2A/chr2B)."""
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("apes")
    genomes = {}
    for species in ("human", "chimpanzee", "gorilla", "orangutan", "bonobo"):
        chroms = ["chr1", "chr2"] if species == "human" else ["chr1", "chr2A", "chr2B"]
        chroms += ["chr20", "chrX", "chrM"]
        records = {c: "".join(rng.choice(list("ACGT"), size=2000)) for c in chroms}
        genomes[species] = write_fasta(tmp / f"{species}.fa", records)
    return genomes


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """One short CPU fit of species_tiny.yaml (3 epochs of 10 steps, training windows 128 then
    256 bases through FineTuneSeqLenWarmup), shared by the tests that need a trained classifier."""
    tmp = tmp_path_factory.mktemp("fit")
    main([
        "fit", *tiny_args(tmp),
        "--trainer.callbacks+=seqmodels.tasks.FineTuneSeqLenWarmup", "--trainer.callbacks.start=128",
    ])
    return tmp
