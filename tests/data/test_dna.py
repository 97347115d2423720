from __future__ import annotations

import pytest
import torch

from seqmodels.data.bed import Interval, read_bed, select_split
from seqmodels.data.dna import (
    NextBaseDataset,
    ShardedSampler,
    Window,
    collate_windows,
    make_windows,
)
from seqmodels.data.fasta import FastaFile
from seqmodels.data.tokenizer import IGNORE_INDEX, PAD_ID, DNATokenizer, reverse_complement


def iv(chrom: str, start: int, end: int) -> Interval:
    return Interval(chrom, start, end, "train", 1)


def test_tiling_whole_windows():
    windows = make_windows([iv("c", 100, 100 + 4 * 256 + 17), iv("d", 0, 256)], 256)
    assert windows[:4] == [Window("c", 100 + k * 256, 100 + (k + 1) * 256) for k in range(4)]
    assert windows[4] == Window("d", 0, 256)
    assert len(windows) == 5  # the 17-base remainder is not a window


def test_short_interval_extends_symmetrically_about_centre():
    (w,) = make_windows([iv("c", 1000, 1100)], 256)
    assert w.end - w.start == 256
    assert (w.start, w.end) == (1000 - 78, 1100 + 78)
    (odd,) = make_windows([iv("c", 1000, 1101)], 256)
    assert (odd.start, odd.end) == (1000 - 77, 1101 + 78)
    assert abs((odd.start + odd.end) / 2 - (1000 + 1101) / 2) <= 0.5


def test_items_shift_labels_by_one(fasta_path, genome):
    fa = FastaFile(fasta_path)
    ds = NextBaseDataset(fa, make_windows([iv("chr1", 300, 300 + 3 * 64)], 64))
    tok = DNATokenizer()
    item = ds[1]
    chrom = genome["chr1"].upper()
    assert item["input_ids"].dtype == torch.int64 and item["input_ids"].shape == (64,)
    assert item["input_ids"].tolist() == tok.encode(chrom[364:428]).tolist()
    assert item["labels"].tolist() == tok.encode(chrom[365:429]).tolist()
    # The last tile's extra label base is read from inside the chromosome.
    assert ds[2]["labels"][-1].item() == tok.encode(chrom[492]).item()


def test_pad_at_chromosome_ends_is_ignored_in_labels(fasta_path, genome):
    fa = FastaFile(fasta_path)
    chrom = genome["chr2"]
    # Interval at the very start and very end of chr2 (3000 bp), shorter than the window.
    left, right = make_windows([iv("chr2", 0, 20), iv("chr2", 2990, 3000)], 64)
    ds = NextBaseDataset(fa, [left, right])
    a, b = ds[0], ds[1]
    n_left = -left.start  # 22 PAD positions before base 0
    assert n_left == 22
    assert (a["input_ids"][:n_left] == PAD_ID).all() and (a["input_ids"][n_left:] != PAD_ID).all()
    assert (a["labels"][: n_left - 1] == IGNORE_INDEX).all()
    assert a["labels"][n_left - 1].item() == DNATokenizer().encode(chrom[0]).item()
    assert not (a["labels"] == PAD_ID).any()
    n_real = 3000 - right.start
    assert (b["input_ids"][n_real:] == PAD_ID).all()
    assert (b["labels"][n_real - 1 :] == IGNORE_INDEX).all()
    assert (b["labels"][: n_real - 1] >= 7).all()


def test_rc_augmentation_is_deterministic_and_correct(fasta_path, genome):
    fa = FastaFile(fasta_path)
    windows = make_windows([iv("chr1", 0, 4096)], 64)
    ds = NextBaseDataset(fa, windows, rc_aug=True, seed=3)
    again = NextBaseDataset(fa, windows, rc_aug=True, seed=3)
    flips = [ds.flips(i) for i in range(len(ds))]
    assert flips == [again.flips(i) for i in range(len(ds))]
    assert 0.2 < sum(flips) / len(flips) < 0.8
    ds.set_epoch(1)
    assert [ds.flips(i) for i in range(len(ds))] != flips  # a new draw each epoch
    tok = DNATokenizer()
    i = next(i for i in range(len(ds)) if ds.flips(i))
    w = windows[i]
    rc = reverse_complement(genome["chr1"][w.start : w.end + 1].upper())
    item = ds[i]
    assert item["input_ids"].tolist() == tok.encode(rc[:-1]).tolist()
    assert item["labels"].tolist() == tok.encode(rc[1:]).tolist()
    plain = NextBaseDataset(fa, windows)
    assert not any(plain.flips(i) for i in range(len(plain)))


def test_collate_keeps_coordinates(fasta_path):
    fa = FastaFile(fasta_path)
    ds = NextBaseDataset(fa, make_windows([iv("chr1", 0, 256)], 64), return_coords=True)
    batch = collate_windows([ds[0], ds[3]])
    assert batch["input_ids"].shape == (2, 64) and batch["labels"].dtype == torch.int64
    assert batch["chrom"] == ["chr1", "chr1"] and batch["start"] == [0, 192] and batch["end"] == [64, 256]


def test_splits_are_disjoint(fasta_path, bed_path):
    rows = read_bed(bed_path)
    covered = {}
    for split in ("train", "valid", "test"):
        for w in make_windows(select_split(rows, split), 256):
            covered.setdefault(split, set()).update((w.chrom, p) for p in range(w.start, w.end))
    assert not covered["train"] & covered["valid"]
    assert not covered["train"] & covered["test"]
    assert not covered["valid"] & covered["test"]


def test_sampler_same_seed_same_order_new_epoch_new_order():
    a = ShardedSampler(100, shuffle=True, seed=7, num_replicas=1, rank=0)
    b = ShardedSampler(100, shuffle=True, seed=7, num_replicas=1, rank=0)
    assert list(a) == list(b) and sorted(a) == list(range(100))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(100))
    assert list(ShardedSampler(100, shuffle=True, seed=8, num_replicas=1, rank=0)) != first
    assert list(ShardedSampler(10, shuffle=False, num_replicas=1, rank=0)) == list(range(10))


@pytest.mark.parametrize("n,world", [(96, 4), (97, 4), (5, 3)], ids=["even", "uneven", "tiny"])
def test_sharding_covers_epoch_with_disjoint_ranks(n, world):
    shards = []
    for rank in range(world):
        s = ShardedSampler(n, shuffle=True, seed=1, num_replicas=world, rank=rank)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    assert len({len(s) for s in shards}) == 1  # equal step counts, as DDP needs
    union = [i for s in shards for i in s]
    assert set(union) == set(range(n))
    # Only the padding needed for equal shard sizes repeats windows.
    assert len(union) - n == (-n) % world
    if n % world == 0:
        assert len(set(union)) == len(union)


def test_sampler_caps():
    capped = ShardedSampler(100, shuffle=False, num_replicas=1, rank=0, max_samples=5)
    assert list(capped) == [0, 25, 50, 74, 99]
    train = ShardedSampler(100, shuffle=True, seed=0, num_replicas=1, rank=0, max_samples=10)
    first = list(train)
    train.set_epoch(1)
    assert len(first) == 10 and len(set(first)) == 10 and list(train) != first
    with pytest.raises(ValueError, match="rank 2"):
        ShardedSampler(10, shuffle=False, num_replicas=2, rank=2)
