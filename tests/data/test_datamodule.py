from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from seqmodels.data import HG38DataModule, SeqLenWarmup


def test_batches_have_documented_shapes(fasta_path, bed_path):
    dm = HG38DataModule(str(fasta_path), str(bed_path), seq_len=256, batch_size=3)
    train = dm.train_dataloader()
    assert len(train.dataset) == 16 and len(train) == 6  # 2 intervals x 2048 / 256
    batch = next(iter(train))
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == (3, 256) and batch["input_ids"].dtype == torch.int64
    assert batch["labels"].shape == (3, 256) and batch["labels"].dtype == torch.int64
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    assert len(dm.val_dataloader().dataset) == 8 and len(dm.test_dataloader().dataset) == 3
    pred = next(iter(dm.predict_dataloader()))
    assert pred["chrom"] == ["chr2"] * 3 and pred["start"] == [2048, 2304, 2560]


def test_eval_is_deterministic_and_train_shuffles(fasta_path, bed_path):
    dm = HG38DataModule(str(fasta_path), str(bed_path), seq_len=256, batch_size=4, seed=5)
    v1 = torch.cat([b["input_ids"] for b in dm.val_dataloader()])
    v2 = torch.cat([b["input_ids"] for b in dm.val_dataloader()])
    assert torch.equal(v1, v2)
    t1 = torch.cat([b["input_ids"] for b in dm.train_dataloader()])
    same = HG38DataModule(str(fasta_path), str(bed_path), seq_len=256, batch_size=4, seed=5)
    t2 = torch.cat([b["input_ids"] for b in same.train_dataloader()])
    assert torch.equal(t1, t2)  # same seed, same windows
    ordered = torch.stack([dm.dataset("train")[i]["input_ids"] for i in range(16)])
    assert not torch.equal(t1, ordered)  # shuffled
    assert sorted(map(tuple, t1.tolist())) == sorted(map(tuple, ordered.tolist()))


def test_workers_give_same_batches(fasta_path, bed_path):
    kwargs = dict(fasta=str(fasta_path), bed=str(bed_path), seq_len=256, batch_size=4, rc_aug=True)
    serial = [b["input_ids"] for b in HG38DataModule(**kwargs).train_dataloader()]
    parallel = [b["input_ids"] for b in HG38DataModule(**kwargs, num_workers=2).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_caps_and_seq_len_change(fasta_path, bed_path):
    dm = HG38DataModule(
        str(fasta_path), str(bed_path), seq_len=256, batch_size=2, max_train_windows=5, max_eval_windows=3
    )
    assert sum(len(b["input_ids"]) for b in dm.train_dataloader()) == 5
    assert sum(len(b["input_ids"]) for b in dm.val_dataloader()) == 3
    dm.set_seq_len(512)
    assert next(iter(dm.train_dataloader()))["input_ids"].shape == (2, 512)


def test_bad_arguments_fail_at_construction(tmp_path, fasta_path, bed_path):
    with pytest.raises(FileNotFoundError, match="missing.fa"):
        HG38DataModule(str(tmp_path / "missing.fa"), str(bed_path))
    with pytest.raises(FileNotFoundError, match="missing.bed"):
        HG38DataModule(str(fasta_path), str(tmp_path / "missing.bed"))
    with pytest.raises(ValueError, match="seq_len"):
        HG38DataModule(str(fasta_path), str(bed_path), seq_len=0)
    with pytest.raises(ValueError, match="unknown split"):
        HG38DataModule(str(fasta_path), str(bed_path), predict_split="holdout")
    no_bed = HG38DataModule(str(fasta_path), None, seq_len=1000)
    with pytest.raises(ValueError, match="--data.bed"):
        no_bed.train_dataloader()
    pred = no_bed.predict_dataloader()
    assert len(pred.dataset) == 5 + 3  # whole chromosomes tiled


def test_shipped_sample_datamodule(sample_files):
    fasta, bed = sample_files
    dm = HG38DataModule(str(fasta), str(bed), seq_len=1024, batch_size=8)
    assert dm.summary() == {"train": 20, "valid": 2, "test": 2}
    assert len(dm.train_dataloader().dataset) == 160


class _Counter(L.LightningModule):
    """Records the batch shapes it sees; a one-parameter model so that fit runs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.shapes: list[tuple[int, tuple[int, ...]]] = []

    def training_step(self, batch, batch_idx):
        self.shapes.append((self.current_epoch, tuple(batch["input_ids"].shape)))
        return (self.w - batch["input_ids"].float().mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(epochs: int, callbacks, **kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, callbacks=callbacks, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, **kw,
    )


def test_warmup_in_a_trainer_rebuilds_loaders(fasta_path, bed_path):
    dm = HG38DataModule(str(fasta_path), str(bed_path), seq_len=1024, batch_size=2)
    model = _Counter()
    warmup = SeqLenWarmup(start=256, epochs_per_stage=1, scale_batch_size=True)
    _trainer(4, [warmup], reload_dataloaders_every_n_epochs=1).fit(model, dm)
    seen = sorted({(epoch, shape) for epoch, shape in model.shapes})
    assert seen == [(0, (8, 256)), (1, (4, 512)), (2, (2, 1024)), (3, (2, 1024))]


def test_warmup_requires_reloading_loaders(fasta_path, bed_path):
    dm = HG38DataModule(str(fasta_path), str(bed_path), seq_len=1024, batch_size=2)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        _trainer(2, [SeqLenWarmup(start=256)]).fit(_Counter(), dm)


def test_refuses_lightning_distributed_sampler_wrapping(fasta_path, bed_path):
    from types import SimpleNamespace

    dm = HG38DataModule(str(fasta_path), str(bed_path), seq_len=256)
    dm.trainer = SimpleNamespace(world_size=2, _accelerator_connector=SimpleNamespace(use_distributed_sampler=True))
    with pytest.raises(ValueError, match="use_distributed_sampler: false"):
        dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=2, _accelerator_connector=SimpleNamespace(use_distributed_sampler=False))
    dm.setup("fit")  # accepted
