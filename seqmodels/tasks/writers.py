"""Writing ``seqmodels predict`` outputs to files genomics tools read."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)

def write_bedgraph(path: Path, chroms: list[str], starts: np.ndarray, loglik: np.ndarray, track: str) -> None:
    """One line per scored base: ``chrom pos pos+1 log-likelihood`` (natural log).

    Window ``k`` covers input bases ``[start, start + L)``; its label at position ``i`` is the base
    at ``start + 1 + i``, so that is the coordinate each value is written at. Bases outside the
    chromosome (PAD, NaN) are left out.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(f'track type=bedGraph name="{track}" description="per-base log-likelihood (nats)"\n')
        for chrom, start, row in zip(chroms, starts, loglik):
            for i, value in enumerate(row):
                if math.isnan(value):
                    continue
                pos = int(start) + 1 + i
                f.write(f"{chrom}\t{pos}\t{pos + 1}\t{value:.5f}\n")
    os.replace(tmp, path)

def run_dir(trainer: L.Trainer, output_dir: str | None, fallback: str = "predictions") -> Path:
    """Where a writer puts its files: ``output_dir``, else the logger's run folder, else ``fallback``."""
    if output_dir is not None:
        return Path(output_dir)
    if trainer.logger is not None and getattr(trainer.logger, "log_dir", None):
        return Path(trainer.logger.log_dir)
    return Path(fallback)


def flat_predictions(predictions: Any) -> list[dict[str, Any]]:
    """``predict_step`` outputs as one list (Lightning nests them per dataloader when there are several)."""
    if predictions and isinstance(predictions[0], list):
        return [o for group in predictions for o in group]
    return list(predictions or [])


class PredictionWriter(BasePredictionWriter):
    """Collects ``predict_step`` outputs and writes them once prediction ends.

    Files, in ``output_dir`` (default: the logger's run folder, else ``predictions/``):
    ``predictions.npz`` with ``chrom``, ``start``, ``end`` [n], ``loglik`` [n, L] (natural log of
    the observed next base, NaN at PAD) and ``embedding`` [n, d_model] (mean-pooled final hidden
    states); with ``bedgraph=True`` also ``loglik.bedGraph``. Under data parallelism each rank
    writes its own files with a ``.rankR`` suffix.
    """

    def __init__(self, output_dir: str | None = None, bedgraph: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.bedgraph = bedgraph

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        outputs = flat_predictions(predictions)
        if not outputs:
            return
        out_dir = run_dir(trainer, self.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        arrays: dict[str, np.ndarray] = {
            "loglik": torch.cat([o["loglik"] for o in outputs]).numpy().astype(np.float32),
            "embedding": torch.cat([o["embedding"] for o in outputs]).numpy().astype(np.float32),
        }
        for key in ("chrom", "start", "end"):
            if key in outputs[0]:
                values = [v for o in outputs for v in (o[key].tolist() if torch.is_tensor(o[key]) else o[key])]
                arrays[key] = np.asarray(values)
        path = out_dir / f"predictions{suffix}.npz"
        _atomic_savez(path, **arrays)
        written = [path]
        if self.bedgraph and "chrom" in arrays:
            bg = out_dir / f"loglik{suffix}.bedGraph"
            write_bedgraph(bg, list(arrays["chrom"]), arrays["start"], arrays["loglik"], track="seqmodels")
            written.append(bg)
        n = arrays["loglik"].shape[0]
        for p in written:
            print(f"[seqmodels predict] wrote {n} windows to {p}")
