"""Sequence-length warmup: train on short windows first and lengthen them in stages.

The Mamba paper (after HyenaDNA) starts DNA pretraining at 2^10 bases and doubles the length
at each stage up to the target. The schedule maps the epoch to a length:

* ``start``, ``target``, ``epochs_per_stage``: ``start, 2 start, 4 start, ...`` each for
  ``epochs_per_stage`` epochs, then ``target`` (also when the target is not a power-of-two
  multiple of ``start``);
* or ``stages``: explicit ``[[epoch, seq_len], ...]`` pairs; the length of the last pair whose
  epoch is reached applies (the first pair must be epoch 0).

With ``scale_batch_size`` the batch size is ``base_batch_size * target // seq_len`` (the
datamodule's configured batch size is the one for the target length), keeping tokens per batch
constant.
"""

from __future__ import annotations

from typing import Any, Protocol

import lightning as L


class _Resizable(Protocol):
    batch_size: int
    seq_len: int

    def set_seq_len(self, seq_len: int) -> None: ...

    def set_batch_size(self, batch_size: int) -> None: ...


class SeqLenWarmup(L.Callback):
    """Lengthen training windows in stages (see the module docstring).

    Needs ``reload_dataloaders_every_n_epochs: 1`` in the trainer so that each epoch's loader
    is built at the new length, and a datamodule with ``set_seq_len`` / ``set_batch_size``
    (``HG38DataModule`` calls :meth:`apply` itself whenever it builds a train or validation loader).

    Args:
        start: first length (the paper: 1024).
        target: final length; defaults to the datamodule's ``seq_len`` at fit start.
        epochs_per_stage: epochs spent at each length.
        stages: explicit ``[[epoch, seq_len], ...]``; replaces ``start``/``epochs_per_stage``.
        scale_batch_size: keep ``batch_size * seq_len`` constant.
    """

    def __init__(
        self,
        start: int = 1024,
        target: int | None = None,
        epochs_per_stage: int = 1,
        stages: list[tuple[int, int]] | None = None,
        scale_batch_size: bool = False,
    ) -> None:
        super().__init__()
        if start < 1:
            raise ValueError(f"start must be positive, got {start}")
        if target is not None and target < start:
            raise ValueError(f"target ({target}) must be at least start ({start})")
        if epochs_per_stage < 1:
            raise ValueError(f"epochs_per_stage must be positive, got {epochs_per_stage}")
        if stages is not None:
            stages = [(int(e), int(n)) for e, n in stages]
            if not stages or stages[0][0] != 0:
                raise ValueError(f"stages must start at epoch 0, got {stages}")
            epochs = [e for e, _ in stages]
            if epochs != sorted(set(epochs)):
                raise ValueError(f"stage epochs must be strictly increasing, got {epochs}")
            if any(n < 1 for _, n in stages):
                raise ValueError(f"stage lengths must be positive, got {stages}")
        self.start = start
        self.target = target
        self.epochs_per_stage = epochs_per_stage
        self.stages = stages
        self.scale_batch_size = scale_batch_size
        self._base: tuple[int, int] | None = None  # (target seq_len, batch size at target)

    def seq_len_at(self, epoch: int, target: int | None = None) -> int:
        """Window length for ``epoch`` (0-based)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if self.stages is not None:
            return [n for e, n in self.stages if e <= epoch][-1]
        target = self.target if target is None else target
        if target is None:
            raise ValueError("SeqLenWarmup needs a target length (set target or call apply first)")
        return min(self.start * 2 ** (epoch // self.epochs_per_stage), target)

    def batch_size_at(self, epoch: int, target: int, base_batch_size: int) -> int:
        """Batch size for ``epoch``: the base one, or scaled to constant tokens per batch."""
        if not self.scale_batch_size:
            return base_batch_size
        return max(1, base_batch_size * target // self.seq_len_at(epoch, target))

    def apply(self, datamodule: _Resizable, epoch: int) -> None:
        """Set the datamodule's length (and batch size) for ``epoch``. The first call records the
        datamodule's configured ``seq_len`` (default target) and ``batch_size``."""
        if self._base is None:
            target = self.target if self.target is not None else datamodule.seq_len
            if self.stages is None and target < self.start:
                raise ValueError(f"SeqLenWarmup start ({self.start}) exceeds the target length ({target})")
            self._base = (target, datamodule.batch_size)
        target, batch = self._base
        datamodule.set_seq_len(self.seq_len_at(epoch, target))
        datamodule.set_batch_size(self.batch_size_at(epoch, target, batch))

    # -- Lightning hooks -----------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "set_seq_len"):
            raise ValueError("SeqLenWarmup needs a datamodule with set_seq_len (e.g. HG38DataModule)")
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "SeqLenWarmup needs the trainer option reload_dataloaders_every_n_epochs: 1, "
                f"got {trainer.reload_dataloaders_every_n_epochs}"
            )
        self.apply(datamodule, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # For datamodules that do not pull the schedule themselves: set next epoch's length.
        if trainer.datamodule is not None:
            self.apply(trainer.datamodule, trainer.current_epoch + 1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Loaders are built before this hook; catch a loader built at a stale length.
        if self._base is None or trainer.datamodule is None:
            return
        expected = self.seq_len_at(trainer.current_epoch, self._base[0])
        if trainer.datamodule.seq_len != expected:
            raise RuntimeError(
                f"epoch {trainer.current_epoch} should train at seq_len {expected} but the "
                f"datamodule has {trainer.datamodule.seq_len}; is reload_dataloaders_every_n_epochs 1?"
            )
        pl_module.log("train/seq_len", float(expected), on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self._base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        base = state_dict.get("base")
        self._base = tuple(base) if base is not None else None
