"""Training callbacks that leave human-readable artefacts next to the metrics CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Columns of a Lightning ``metrics.csv`` as ``{name: [(step, value), ...]}``, empty cells dropped."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_loss_curves(metrics_csv: str | Path, out_png: str | Path, keys: tuple[str, ...] | None = None) -> Path:
    """Plot training and validation loss against optimizer step into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics_csv(metrics_csv)
    keys = keys or tuple(k for k in ("train/loss_step", "train/loss", "val/loss") if k in series)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key in keys:
        steps, values = zip(*series[key])
        style = "-" if key == "train/loss_step" else "o-"
        ax.plot(steps, values, style, label=key, alpha=0.6 if key == "train/loss_step" else 1.0)
    if "val/loss" in series:
        # nats -> bits per base on a secondary axis, the unit genomics papers report
        sec = ax.secondary_yaxis("right", functions=(lambda x: x / math.log(2), lambda b: b * math.log(2)))
        sec.set_ylabel("bits per base")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


class LossCurvePlot(Callback):
    """Writes ``loss_curve.png`` beside the logger's ``metrics.csv`` after each validation and at the end."""

    def __init__(self, filename: str = "loss_curve.png") -> None:
        self.filename = filename

    @rank_zero_only
    def _plot(self, trainer: L.Trainer) -> None:
        logger = trainer.logger
        if logger is None or not hasattr(logger, "log_dir"):
            return
        logger.save()  # flush buffered rows to metrics.csv
        metrics_csv = Path(logger.log_dir) / "metrics.csv"
        if metrics_csv.is_file() and metrics_csv.stat().st_size > 0:
            plot_loss_curves(metrics_csv, Path(logger.log_dir) / self.filename)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._plot(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plot(trainer)
