"""Species-classification data: splits, sampling, hygiene, sharding, errors and prediction windows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from seqmodels.data.callbacks import SeqLenWarmup
from seqmodels.data.fasta import FastaFile
from seqmodels.data.species import (
    EpochSampler,
    GreatApesDataModule,
    SpeciesWindowDataset,
    WindowTileDataset,
    collate_windows,
    species_regions,
)
from seqmodels.data.tokenizer import A_ID, N_ID, T_ID, reverse_complement_ids

REPO = Path(__file__).resolve().parents[2]
STRAINS = ["COL", "JKD6008", "N315", "RF122", "USA300_FPR3757"]


def write_fasta(path: Path, records: dict[str, str]) -> str:
    with open(path, "w") as fh:
        for name, seq in records.items():
            fh.write(f">{name}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return str(path)


def random_dna(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("ACGT"), size=n))


@pytest.fixture
def apes(tmp_path: Path) -> dict[str, str]:
    """Three small "genomes" with ape-like naming, junk contigs and per-species chromosome names."""
    rng = np.random.default_rng(0)
    names = {
        "human": ["chr1", "chr2", "chr3", "chr4"],
        "chimp": ["chr1", "chr2A", "chr2B", "chr3"],
        "gorilla": ["chr1", "chr2A", "chr2B", "chr4"],
    }
    genomes = {}
    for species, chroms in names.items():
        records = {c: random_dna(rng, int(rng.integers(3000, 6000))) for c in chroms}
        # Junk that the default exclude patterns must drop.
        for junk in ("chrY", "chrM", "chrUn_KI270302v1", "chr1_KI270706v1_random", "chr4_GL000008v2_alt"):
            records[junk] = random_dna(rng, 4000)
        genomes[species] = write_fasta(tmp_path / f"{species}.fa", records)
    return genomes


APE_SPLITS = {
    "val_chroms": {"human": ["chr2"], "chimp": ["chr2A"], "gorilla": ["chr2B"]},
    "test_chroms": {"human": ["chr3"], "chimp": ["chr3"], "gorilla": ["chr4"]},
}


def make_dm(genomes, **kw) -> GreatApesDataModule:
    args = dict(seq_len=256, batch_size=6, train_samples_per_epoch=60, val_samples=30, test_samples=30, **APE_SPLITS)
    args.update(kw)
    dm = GreatApesDataModule(genomes, **args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def all_windows(ds: SpeciesWindowDataset, epoch: int = 0):
    return [ds.window((epoch, i)) for i in range(len(ds))]


def test_chromosome_split_regions_are_disjoint_and_exclude_junk():
    lengths = {"chr1": 100, "chr2A": 50, "chr2B": 60, "chrY": 10, "chrM": 5, "chrUn_x": 7, "chr3_alt": 9}
    regions = species_regions("chimp", lengths, ["chr2A"], ["chr2B"])
    assert regions == {
        "train": [("chr1", 0, 100)],
        "val": [("chr2A", 0, 50)],
        "test": [("chr2B", 0, 60)],
    }
    # Exclusion is configurable: no patterns keeps everything not held out.
    kept = species_regions("chimp", lengths, ["chr2A"], ["chr2B"], exclude=[])
    assert {r.chrom for r in kept["train"]} == {"chr1", "chrY", "chrM", "chrUn_x", "chr3_alt"}


def test_fraction_split_cuts_each_record_into_three_contiguous_regions():
    regions = species_regions("strain", {"a": 1000, "b": 10}, split_fractions=(0.8, 0.1, 0.1))
    assert regions["train"] == [("a", 0, 800), ("b", 0, 8)]
    assert regions["val"] == [("a", 800, 900), ("b", 8, 9)]
    assert regions["test"] == [("a", 900, 1000), ("b", 9, 10)]


def test_windows_stay_inside_their_split_and_never_overlap_other_splits(apes):
    dm = make_dm(apes, val_chroms={"human": ["chr2"], "chimp": ["chr2A"], "gorilla": ["chr2B"]})
    for split, ds in dm.datasets.items():
        for w in all_windows(ds, epoch=3):
            assert w.end - w.start == 256
            inside = [r for r in dm.regions[w.species][split] if r.chrom == w.chrom and r.start <= w.start and w.end <= r.end]
            assert inside, f"{split} window {w} outside its regions"
            for other in {"train", "val", "test"} - {split}:
                for r in dm.regions[w.species][other]:
                    assert r.chrom != w.chrom or w.end <= r.start or r.end <= w.start, f"{split} window {w} overlaps {other} {r}"


def test_fraction_split_windows_on_real_strains_respect_boundaries():
    genomes = {s: str(REPO / "data" / "species" / f"aureus_{s}.fa") for s in STRAINS}
    dm = GreatApesDataModule(genomes, seq_len=1024, split_fractions=(0.8, 0.1, 0.1), train_samples_per_epoch=50,
                             val_samples=25, test_samples=25, batch_size=5)
    dm.setup("fit")
    bounds = {"train": (0, 48_000), "val": (48_000, 54_000), "test": (54_000, 60_000)}
    for split, (lo, hi) in bounds.items():
        for w in all_windows(dm.datasets[split]):
            assert lo <= w.start and w.end <= hi, (split, w)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (5, 1024) and batch["input_ids"].dtype == torch.int64
    assert batch["labels"].shape == (5,) and batch["labels"].dtype == torch.int64


def test_validation_windows_are_fixed_by_seed_and_training_windows_change_per_epoch(apes):
    a, b, c = make_dm(apes), make_dm(apes), make_dm(apes, seed=1)
    assert all_windows(a.datasets["val"]) == all_windows(b.datasets["val"])
    assert all_windows(a.datasets["val"]) == all_windows(a.datasets["val"], epoch=7)
    assert all_windows(a.datasets["val"]) != all_windows(c.datasets["val"])
    assert all_windows(a.datasets["test"]) != all_windows(a.datasets["val"])
    train = a.datasets["train"]
    assert all_windows(train, 0) == all_windows(b.datasets["train"], 0)
    assert all_windows(train, 0) != all_windows(train, 1)
    item0, item0_again = a.datasets["val"][3], b.datasets["val"][3]
    assert torch.equal(item0["input_ids"], item0_again["input_ids"]) and item0["labels"] == item0_again["labels"]


def test_epoch_sampler_carries_the_epoch_into_the_training_windows(apes):
    dm = make_dm(apes)
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, EpochSampler)
    first = torch.cat([b["input_ids"] for b in loader])
    sampler.set_epoch(1)
    second = torch.cat([b["input_ids"] for b in loader])
    sampler.set_epoch(0)
    again = torch.cat([b["input_ids"] for b in loader])
    assert first.shape == (60, 256)
    assert not torch.equal(first, second)
    # Same epoch, same multiset of windows (order comes from the sampler's permutation).
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, again.tolist()))
    # Worker processes reopen the FASTA files and draw the same windows.
    dm.num_workers = 2
    with_workers = torch.cat([b["input_ids"] for b in dm.train_dataloader()])
    assert torch.equal(with_workers, first)


def test_class_balance_is_exact_per_epoch_and_classes_follow_the_given_order(apes):
    dm = make_dm(apes)
    assert dm.class_names == ["human", "chimp", "gorilla"]
    for split, n in (("train", 60), ("val", 30), ("test", 30)):
        labels = torch.cat([b["labels"] for b in getattr(dm, f"{split}_dataloader")()])
        assert Counter(labels.tolist()) == {0: n // 3, 1: n // 3, 2: n // 3}
        species = [w.species for w in all_windows(dm.datasets[split])]
        assert all(dm.class_names[w.label] == w.species for w in all_windows(dm.datasets[split]))
        assert Counter(species) == {s: n // 3 for s in dm.class_names}


def test_n_heavy_windows_are_redrawn(tmp_path):
    rng = np.random.default_rng(1)
    # Half of every chromosome is N: without redraws about half the windows would be N-heavy.
    def half_n(n):
        return random_dna(rng, n // 2) + "N" * (n // 2)

    genomes = {
        s: write_fasta(tmp_path / f"{s}.fa", {"chr1": half_n(8000), "chr2": half_n(4000), "chr3": half_n(4000)})
        for s in ("a", "b")
    }
    dm = make_dm(genomes, val_chroms={"a": ["chr2"], "b": ["chr2"]}, test_chroms={"a": ["chr3"], "b": ["chr3"]},
                 train_samples_per_epoch=100, max_n_frac=0.1)
    for split in ("train", "val"):
        for i in range(len(dm.datasets[split])):
            ids = dm.datasets[split][i]["input_ids"]
            assert (ids == N_ID).float().mean() <= 0.1


def test_all_n_species_fails_at_setup_naming_it(tmp_path):
    rng = np.random.default_rng(2)
    good = {c: random_dna(rng, 3000) for c in ("chr1", "chr2", "chr3")}
    bad = {c: "N" * 3000 for c in ("chr1", "chr2", "chr3")}
    genomes = {"good": write_fasta(tmp_path / "good.fa", good), "bad": write_fasta(tmp_path / "bad.fa", bad)}
    chroms = dict(val_chroms={"good": ["chr2"], "bad": ["chr2"]}, test_chroms={"good": ["chr3"], "bad": ["chr3"]})
    with pytest.raises(RuntimeError, match="species 'bad'.*N"):
        make_dm(genomes, train_samples_per_epoch=10, val_samples=10, test_samples=10, **chroms)


def test_soft_masked_bases_are_upper_cased(tmp_path):
    rng = np.random.default_rng(3)
    records = {c: random_dna(rng, 3000).lower() for c in ("chr1", "chr2", "chr3")}
    genomes = {s: write_fasta(tmp_path / f"{s}.fa", records) for s in ("x", "y")}
    dm = make_dm(genomes, split_fractions=(0.6, 0.2, 0.2), val_chroms=None, test_chroms=None,
                 train_samples_per_epoch=20, val_samples=10, test_samples=10)
    ids = torch.cat([b["input_ids"] for b in dm.train_dataloader()])
    assert ids.min() >= A_ID and ids.max() <= T_ID  # lower case would have been [UNK] otherwise


def test_excluded_contigs_are_never_sampled(apes):
    dm = make_dm(apes, train_samples_per_epoch=300)
    seen = {w.chrom for ds in dm.datasets.values() for w in all_windows(ds)}
    assert seen <= {"chr1", "chr2", "chr3", "chr4", "chr2A", "chr2B"}
    assert {"chr1", "chr4"} <= seen  # sampling did cover the kept training chromosomes


def test_ranks_get_different_windows_whose_union_is_the_single_process_epoch(apes):
    dm = make_dm(apes)
    fastas = dm.fastas
    regions = {s: dm.regions[s]["train"] for s in dm.class_names}
    def shard(rank, world):
        return SpeciesWindowDataset(fastas, regions, 256, 60, split="train", rank=rank, world_size=world)

    r0, r1, single = shard(0, 2), shard(1, 2), shard(0, 1)
    assert len(r0) == len(r1) == 30 and len(single) == 60
    w0, w1 = all_windows(r0), all_windows(r1)
    assert not set(w0) & set(w1)
    assert w0 + w1 == all_windows(single)
    # Each shard is still class-balanced (30 windows, 3 classes).
    assert Counter(w.label for w in w0) == Counter(w.label for w in w1) == {0: 10, 1: 10, 2: 10}


def test_set_seq_len_rebuilds_training_windows_and_checks_length(apes):
    dm = make_dm(apes)
    dm.set_seq_len(64)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (6, 64)
    assert next(iter(dm.val_dataloader()))["input_ids"].shape == (6, 256)  # evaluation keeps seq_len
    with pytest.raises(ValueError, match="seq_len 100000 is longer than every region"):
        dm.set_seq_len(100_000)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        pytest.param({"genomes": "missing"}, FileNotFoundError, "species 'chimp'.*not found", id="missing-fasta"),
        pytest.param({"genomes": "one"}, ValueError, "at least 2 species", id="one-species"),
        pytest.param({"val_chroms": {"human": ["chr2"], "chimp": ["chr2"], "gorilla": ["chr2B"]}}, ValueError,
                     "species 'chimp'.*'chr2', which is not in its FASTA", id="held-out-chrom-absent"),
        pytest.param({"val_chroms": {"human": ["chr2"], "chimp": ["chr2A"], "gorilla": ["chr2B"], "orangutan": ["chr2"]}},
                     ValueError, "orangutan.*not in genomes", id="unknown-species-key"),
        pytest.param({"test_chroms": {"human": ["chr3"], "chimp": ["chr3"]}}, ValueError,
                     "'gorilla' appears in only one", id="missing-test-list"),
        pytest.param({"seq_len": 7000}, ValueError, "species 'human', split 'val'.*7000", id="seq-len-too-long"),
        pytest.param({"train_samples_per_epoch": 61}, ValueError, "multiple of the number of species", id="unbalanced"),
        pytest.param({"val_chroms": {"human": ["chrY"], "chimp": ["chr2A"], "gorilla": ["chr2B"]}}, ValueError,
                     "'chrY', which the exclude patterns drop", id="held-out-excluded"),
        pytest.param({"test_chroms": {"human": ["chr2"], "chimp": ["chr3"], "gorilla": ["chr4"]}}, ValueError,
                     "'chr2' is held out for both val and test", id="held-out-twice"),
        pytest.param({"val_chroms": None, "test_chroms": None}, ValueError, "has no split", id="no-split"),
        pytest.param({"eval_seq_len": 7000}, ValueError, "species 'human', split 'val'.*7000", id="eval-len-too-long"),
        pytest.param({"eval_seq_len": 0}, ValueError, "eval_seq_len must be positive", id="eval-len-zero"),
        pytest.param({"val_chroms": None, "test_chroms": None, "split_fractions": (0.5, 0.5, 0.5)}, ValueError,
                     "summing to 1", id="bad-fractions"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_message(apes, change, error, match):
    change = dict(change)
    genomes = dict(apes)
    if change.get("genomes") == "missing":
        genomes["chimp"] = str(Path(apes["chimp"]).with_name("nowhere.fa"))
    elif change.get("genomes") == "one":
        genomes = {"human": apes["human"]}
    change.pop("genomes", None)
    with pytest.raises(error, match=match):
        make_dm(genomes, **change)


def test_predict_dataset_tiles_a_fasta_and_keeps_coordinates(tmp_path):
    rng = np.random.default_rng(4)
    records = {"chr1": random_dna(rng, 1000), "chr2": random_dna(rng, 250), "chrM": random_dna(rng, 500)}
    path = write_fasta(tmp_path / "g.fa", records)
    ds = WindowTileDataset(path, seq_len=300)
    # chr1: 3 full windows, remainder 100 dropped; chr2 too short; chrM excluded.
    assert ds.windows == [("chr1", 0, 300, ""), ("chr1", 300, 600, ""), ("chr1", 600, 900, "")]
    batch = collate_windows([ds[i] for i in range(len(ds))])
    assert batch["input_ids"].shape == (3, 300) and batch["input_ids"].dtype == torch.int64
    assert batch["chrom"] == ["chr1"] * 3
    assert batch["start"].tolist() == [0, 300, 600] and batch["end"].tolist() == [300, 600, 900]
    fasta = FastaFile(path)
    assert ds.tokenizer.decode(batch["input_ids"][1]) == fasta.fetch("chr1", 300, 600)


def test_predict_dataset_reads_bed_windows_with_names(tmp_path):
    rng = np.random.default_rng(5)
    path = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(rng, 1000), "chr2": random_dna(rng, 500)})
    bed = tmp_path / "w.bed"
    bed.write_text("# header\nchr2\t100\t300\tpromoter\nchr1\t0\t200\nchr1\t500\t900\tlong\n")
    ds = WindowTileDataset(path, seq_len=200, bed=bed, stride=100)
    assert ds.windows == [
        ("chr2", 100, 300, "promoter"),
        ("chr1", 0, 200, ""),
        ("chr1", 500, 700, "long"), ("chr1", 600, 800, "long"), ("chr1", 700, 900, "long"),
    ]
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_windows)
    batch = next(iter(loader))
    assert batch["name"][0] == "promoter" and batch["start"].tolist() == [100, 0, 500, 600, 700]
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t0\t200\nchr9\t0\t200\n")
    with pytest.raises(ValueError, match=r"bad.bed, line 2: sequence 'chr9'"):
        WindowTileDataset(path, seq_len=200, bed=bad)
    short = tmp_path / "short.bed"
    short.write_text("chr1\t0\t100\n")
    with pytest.raises(ValueError, match="shorter than seq_len 200"):
        WindowTileDataset(path, seq_len=200, bed=short)


def test_datamodule_predict_dataloader(apes):
    dm = make_dm(apes, predict_fasta=apes["human"], seq_len=1000)
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"input_ids", "chrom", "start", "end", "name"}
    assert batch["input_ids"].shape[1] == 1000 and all(c.startswith("chr") for c in batch["chrom"])
    assert not any(c in ("chrY", "chrM") or "_" in c for c in batch["chrom"])


class _Recorder(L.LightningModule):
    """Records the training batches of each epoch; the loss only exists to drive the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch["input_ids"].clone())
        return self.w * batch["input_ids"].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(dm, epochs, **trainer_kw) -> _Recorder:
    module = _Recorder()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, use_distributed_sampler=False, **trainer_kw,
    )
    trainer.fit(module, datamodule=dm)
    return module


def test_lightning_passes_the_epoch_to_the_training_windows(apes):
    dm = GreatApesDataModule(apes, seq_len=128, batch_size=12, train_samples_per_epoch=12, val_samples=3,
                             test_samples=3, **APE_SPLITS)
    seen = _fit(dm, 2).seen  # loader built once: only Lightning's set_epoch changes the windows
    assert seen[0][0].shape == seen[1][0].shape == (12, 128)
    # Compared as sets of windows, so that a mere reshuffle of the same windows would fail.
    first, second = ({tuple(row) for row in seen[e][0].tolist()} for e in (0, 1))
    assert not first & second


def test_sequence_length_warmup_callback_lengthens_training_windows(apes):
    dm = GreatApesDataModule(apes, seq_len=256, batch_size=6, train_samples_per_epoch=6, val_samples=3,
                             test_samples=3, **APE_SPLITS)
    warmup = SeqLenWarmup(start=64)
    seen = _fit(dm, 3, callbacks=[warmup], reload_dataloaders_every_n_epochs=1).seen
    assert [seen[e][0].shape[1] for e in range(3)] == [64, 128, 256]
    assert dm.eval_seq_len == 256 and dm.datasets["val"].seq_len == 256


def test_rc_aug_flips_about_half_the_training_windows_and_never_moves_them(apes):
    plain, aug = make_dm(apes, train_samples_per_epoch=300), make_dm(apes, train_samples_per_epoch=300, rc_aug=True)
    a, b = plain.datasets["train"], aug.datasets["train"]
    assert all_windows(a) == all_windows(b)  # the coin has its own generator
    flipped = 0
    for i in range(len(b)):
        x, y = a[(0, i)], b[(0, i)]
        assert x["labels"] == y["labels"]
        if b.flips((0, i)):
            flipped += 1
            assert torch.equal(y["input_ids"], reverse_complement_ids(x["input_ids"]))
        else:
            assert torch.equal(y["input_ids"], x["input_ids"])
    assert 100 < flipped < 200  # Binomial(300, 1/2)
    # the coins change with the epoch, and are fixed by (seed, epoch, index)
    assert [b.flips((0, i)) for i in range(60)] != [b.flips((1, i)) for i in range(60)]
    assert [b.flips((0, i)) for i in range(60)] == [make_dm(apes, rc_aug=True).datasets["train"].flips((0, i)) for i in range(60)]
    # validation and test windows are never flipped
    for split in ("val", "test"):
        assert not aug.datasets[split].rc_aug
        assert torch.equal(aug.datasets[split][0]["input_ids"], plain.datasets[split][0]["input_ids"])
    with pytest.raises(ValueError, match="rc_aug is for the training split only"):
        SpeciesWindowDataset(aug.fastas, {s: aug.regions[s]["val"] for s in aug.class_names}, 64, 3, split="val",
                             rc_aug=True, rank=0, world_size=1)


def test_eval_seq_len_sets_validation_test_and_predict_windows(apes):
    dm = make_dm(apes, seq_len=128, eval_seq_len=512, predict_fasta=apes["human"])
    assert dm.datasets["train"].seq_len == 128 and dm.datasets["train"][0]["input_ids"].shape == (128,)
    for split in ("val", "test"):
        assert dm.datasets[split].seq_len == 512 and dm.datasets[split][0]["input_ids"].shape == (512,)
    assert next(iter(dm.predict_dataloader()))["input_ids"].shape[1] == 512
    # training-length changes (warmup) leave the evaluation length alone
    dm.set_seq_len(256)
    assert dm.datasets["train"].seq_len == 256 and dm.eval_seq_len == 512
