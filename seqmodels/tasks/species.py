"""Species classification of DNA windows, fine-tuned from a pretrained next-base model.

The great-apes task of Mamba (Gu & Dao 2023, sec. 4.3.3, app. E.3.4): a window of ``L`` bases
goes through the pretrained backbone; the hidden state of the last position (the only one of a
causal model that has seen the whole window) or the mean over positions feeds a linear layer
over the species.

Shapes: ``B`` batch, ``L`` window length, ``K`` classes.

Besides the LightningModule this file holds the callbacks specific to the task:
:class:`ConfusionMatrixWriter` (``seqmodels test``), :class:`SpeciesPredictionWriter`
(``seqmodels predict``) and :class:`FineTuneSeqLenWarmup` (the paper's length warmup).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from seqmodels.checkpoint import read_checkpoint
from seqmodels.data.callbacks import SeqLenWarmup
from seqmodels.models import MambaClassifier, MambaConfig
from seqmodels.models.classifier import POOL_NORMS, POOLINGS, PoolNorm, Pooling
from seqmodels.tasks.lm import CHECKPOINT_KIND as LM_CHECKPOINT_KIND
from seqmodels.tasks.lm import build_config
from seqmodels.tasks.next_token import TokenWeightedMean
from seqmodels.tasks.optim import ClipsFusedAdamW, adamw_warmup_cosine
from seqmodels.tasks.writers import flat_predictions, run_dir

CHECKPOINT_KIND = "species_classifier"
# Backbone fields that change how the pretrained network runs, never its weights' shapes or
# values; the only ones that may be set together with ``init_from``.
RUNTIME_FIELDS: tuple[str, ...] = ("scan_impl", "checkpointing", "checkpoint_dtype", "checkpoint_scan_states",
                                   "cuda_graph")
SPLITS = ("train", "val", "test")


def pretrained_backbone(
    path: str | os.PathLike, overrides: dict[str, Any] | None = None
) -> tuple[MambaConfig, dict[str, Tensor]]:
    """Config and ``backbone.*`` weights of a pretraining (``dna_lm``) checkpoint.

    Args:
        path: a checkpoint written by :class:`~seqmodels.tasks.NextBaseLM`.
        overrides: runtime fields (:data:`RUNTIME_FIELDS`) to set on the read config.

    Returns:
        ``(config, state)`` with ``state`` keyed like :class:`MambaClassifier`'s ``backbone.*``.

    Raises:
        FileNotFoundError / ValueError naming ``path``: missing, unreadable, not a seqmodels
        checkpoint, or a checkpoint of another kind (a species classifier included).
    """
    ckpt = read_checkpoint(path)
    meta = ckpt["seqmodels"]
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind != LM_CHECKPOINT_KIND:
        hint = (
            "; to continue training or evaluate a classifier pass it as --ckpt_path instead"
            if kind == CHECKPOINT_KIND
            else ""
        )
        raise ValueError(
            f"model.init_from: {path} is a {kind!r} checkpoint; init_from takes a pretraining "
            f"checkpoint of kind {LM_CHECKPOINT_KIND!r} (written by `seqmodels fit` with NextBaseLM){hint}"
        )
    bad = sorted(set(overrides or {}) - set(RUNTIME_FIELDS))
    if bad:
        raise ValueError(
            f"model.backbone sets {bad} together with model.init_from ({path}): the pretrained "
            f"checkpoint fixes the architecture; only {list(RUNTIME_FIELDS)} may be given"
        )
    # cuda_graph is not inherited: pretraining at short contexts may use it, fine-tuning at long
    # ones checkpoints blocks, and the two exclude each other.
    config = MambaConfig.from_dict({**meta["config"], "cuda_graph": False, **(overrides or {})})
    prefix = "model.backbone."
    state = {"backbone." + k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"model.init_from: {path} holds no backbone weights ('{prefix}*')")
    return config, state


class SpeciesClassifier(ClipsFusedAdamW, L.LightningModule):
    """Cross-entropy over species for a window; accuracy, per-class accuracy and confusion matrix.

    The backbone comes from ``init_from`` (a pretraining checkpoint: its config and weights; the
    paper's recipe), else from ``preset`` / ``backbone`` fields (training from scratch). The
    class names come from ``class_names`` or, when that is None, from the datamodule's
    ``class_names`` at setup (so ``--data.genomes`` alone decides the classes); a mismatch
    between the two is an error. The head is built once the classes are known.

    Logs ``split/loss`` and ``split/acc`` for train, val and test; for val and test also
    ``split/acc_<class>``; in training ``train/loss_step`` and ``train/acc_step``. Accuracy and
    per-class accuracy are read off one confusion-matrix metric per split (synced over ranks);
    the last computed matrix of each split is kept in :attr:`confusion` for
    :class:`ConfusionMatrixWriter`.

    Checkpoints carry ``checkpoint["seqmodels"] = {"kind": "species_classifier", "config": ...,
    "class_names": [...], "pooling": ...}``, and their hyper-parameters are rewritten to the
    resolved backbone (``init_from`` dropped), so ``--ckpt_path`` and ``load_from_checkpoint``
    never need the pretraining file.

    Args:
        init_from: path of a ``dna_lm`` checkpoint whose backbone to fine-tune.
        preset: a named backbone size ("1.4m", "7m", "40.7m") when training from scratch.
        backbone: MambaConfig fields: the whole shape when training from scratch (overriding the
            preset), or only runtime fields (``scan_impl``, ``checkpointing``, ``checkpoint_dtype``,
            ``checkpoint_scan_states``, ``cuda_graph``) with ``init_from``.
        class_names: species names in class order; None takes them from the datamodule.
        pooling: ``"last"`` position (causal model, as in the paper) or ``"mean"``.
        pool_norm: ``"batch"`` standardises the pooled features before the head (batch
            statistics; training batches of at least 2 windows), ``"none"`` feeds them raw.
        lr: peak learning rate of AdamW (the paper's fine-tuning: 1e-4).
        weight_decay: AdamW weight decay (not on norms, biases, A_log, D, dt bias).
        betas: AdamW betas.
        warmup_steps: linear learning-rate warmup steps before cosine decay.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
    """

    def __init__(
        self,
        init_from: str | None = None,
        preset: str | None = None,
        backbone: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        pooling: Pooling = "last",
        pool_norm: PoolNorm = "none",
        lr: float = 1e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if pool_norm not in POOL_NORMS:
            raise ValueError(f"model.pool_norm must be one of {POOL_NORMS}, got {pool_norm!r}")
        if class_names is not None and (len(class_names) < 2 or len(set(class_names)) != len(class_names)):
            raise ValueError(f"model.class_names must hold at least 2 distinct names, got {class_names!r}")
        self.save_hyperparameters()
        self._pretrained: dict[str, Tensor] | None = None
        if init_from is not None:
            if preset is not None:
                raise ValueError(
                    f"model.preset ({preset!r}) and model.init_from ({init_from}) both given: the "
                    f"checkpoint defines the backbone; drop the preset"
                )
            # Read now, so a wrong file fails when the command starts, not after data setup.
            self.config, self._pretrained = pretrained_backbone(init_from, backbone)
        else:
            shape = {k: v for k, v in (backbone or {}).items() if k not in RUNTIME_FIELDS}
            if preset is None and not shape:
                raise ValueError(
                    "model: give init_from (a pretraining checkpoint, the paper's recipe), a preset "
                    "(e.g. '1.4m') or backbone shape fields (d_model, n_layer, vocab_size)"
                )
            self.config = build_config(preset, backbone)
        self.class_names: list[str] | None = None
        self.model: MambaClassifier | None = None
        self.confusion: dict[str, Tensor] = {}
        if class_names is not None:
            self._build(list(class_names))

    def _build(self, class_names: list[str]) -> None:
        """Create the classifier (loading the pretrained backbone) and the metrics for ``K`` classes."""
        k = len(class_names)
        self.class_names = class_names
        self.hparams["class_names"] = class_names  # saved with checkpoints
        self.model = MambaClassifier(self.config, k, self.hparams.pooling, self.hparams.pool_norm)
        if self._pretrained is not None:
            self.model.load_backbone(self._pretrained)
            self._pretrained = None  # the weights now live in the model
        self.mean_loss = torch.nn.ModuleDict({f"{s}_loss": TokenWeightedMean() for s in SPLITS})
        # ModuleDict keys must not shadow nn.Module.train, hence the suffix.
        self.confmat = torch.nn.ModuleDict({f"{s}_cm": MulticlassConfusionMatrix(k) for s in SPLITS})

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        names = list(getattr(datamodule, "class_names", None) or [])
        if self.class_names is None:
            if not names:
                raise ValueError("model.class_names is not set and the datamodule has no class_names")
            self._build(names)
        elif names and names != self.class_names:
            raise ValueError(
                f"the model's classes {self.class_names} differ from the datamodule's species {names} "
                f"(data.genomes); they must be the same names in the same order"
            )
        batch_size = getattr(datamodule, "batch_size", None)
        if stage == "fit" and self.hparams.pool_norm == "batch" and isinstance(batch_size, int) and batch_size < 2:
            raise ValueError(
                f"model.pool_norm 'batch' trains on batch statistics, which need data.batch_size >= 2 "
                f"(got {batch_size}); use pool_norm 'none' at batch size 1"
            )
        if self.model is not None and self.device.type != "cpu":
            self.model.to(self.device)  # built after Lightning moved the module

    def _require_model(self) -> MambaClassifier:
        if self.model is None:
            raise RuntimeError(
                "SpeciesClassifier has no classes yet: set model.class_names or use it with a datamodule"
            )
        return self.model

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, L] -> logits [B, K]."""
        return self._require_model()(input_ids)

    def _shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        logits = self(batch["input_ids"]).float()  # [B, K]; softmax in fp32 under bf16 autocast
        labels = batch["labels"]  # [B]
        loss = F.cross_entropy(logits, labels)
        preds = logits.argmax(-1)
        self.mean_loss[f"{split}_loss"].update(loss.detach(), weight=labels.numel())
        self.confmat[f"{split}_cm"].update(preds, labels)
        self.log(f"{split}/loss", self.mean_loss[f"{split}_loss"], on_step=False, on_epoch=True, prog_bar=True)
        if split == "train":
            self.log("train/loss_step", loss.detach(), on_step=True)
            # not on the progress bar: reading it there would wait for the GPU after every batch
            self.log("train/acc_step", (preds == labels).float().mean(), on_step=True)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_confusion(self, split: str, per_class: bool) -> None:
        metric = self.confmat[f"{split}_cm"]
        cm = metric.compute().cpu()  # [K, K], rows true class, columns predicted; summed over ranks
        metric.reset()
        self.confusion[split] = cm
        total = cm.sum().clamp(min=1)
        self.log(f"{split}/acc", cm.trace().float() / total, prog_bar=True)
        if per_class:
            recall = cm.diag().float() / cm.sum(1).clamp(min=1)
            self.log_dict({f"{split}/acc_{name}": recall[i] for i, name in enumerate(self.class_names or [])})

    def on_train_epoch_end(self) -> None:
        self._log_confusion("train", per_class=False)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_confusion("val", per_class=True)
        else:
            self.confmat["val_cm"].reset()

    def on_test_epoch_end(self) -> None:
        self._log_confusion("test", per_class=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Class probabilities ``probs`` [B, K] (fp32, CPU) with the windows' coordinates."""
        probs = torch.softmax(self(batch["input_ids"]).float(), dim=-1).cpu()
        out: dict[str, Any] = {"probs": probs}
        for key in ("chrom", "start", "end", "name"):
            if key in batch:
                value = batch[key]
                out[key] = value.tolist() if torch.is_tensor(value) else list(value)
        return out

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self._require_model())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Enough to rebuild the plain nn.Module without Lightning (seqmodels.load_checkpoint).
        checkpoint["seqmodels"] = {
            "kind": CHECKPOINT_KIND,
            "config": self.config.to_dict(),
            "class_names": list(self.class_names or []),
            "pooling": self.hparams.pooling,
            "pool_norm": self.hparams.pool_norm,
        }
        # Self-contained hyper-parameters: --ckpt_path (which LightningCLI also reads them from)
        # and load_from_checkpoint rebuild the same network without the pretraining file.
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            hparams.update(init_from=None, preset=None, backbone=self.config.to_dict(),
                           class_names=list(self.class_names or []))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("seqmodels", {})
        if meta.get("kind") != CHECKPOINT_KIND:
            raise ValueError(
                f"this checkpoint is of kind {meta.get('kind')!r}, not {CHECKPOINT_KIND!r}; to start "
                f"from a pretraining checkpoint use --model.init_from"
            )
        if self.class_names is None:
            self._build(list(meta["class_names"]))


# -- callbacks ---------------------------------------------------------------------------------


def write_confusion_csv(path: Path, cm: Tensor, class_names: list[str]) -> None:
    """Counts [K, K] as CSV: header ``true\\predicted,<names>``, one row per true class."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, cm.tolist()):
            writer.writerow([name, *(int(v) for v in row)])
    os.replace(tmp, path)


def plot_confusion(path: Path, cm: Tensor, class_names: list[str], title: str) -> None:
    """Row-normalised confusion matrix (per-class accuracy on the diagonal) with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = cm.float()
    frac = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2), dpi=120)
    image = ax.imshow(frac.numpy(), vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{frac[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def accuracy_table(cm: Tensor, class_names: list[str]) -> str:
    """Per-class and overall accuracy of a confusion matrix [K, K], as aligned text."""
    width = max(len("overall"), *(len(n) for n in class_names))
    rows = [f"{'class':<{width}}  {'windows':>8}  {'accuracy':>8}"]
    for i, name in enumerate(class_names):
        n = int(cm[i].sum())
        rows.append(f"{name:<{width}}  {n:>8}  {cm[i, i].item() / max(n, 1):>8.2%}")
    total = int(cm.sum())
    rows.append(f"{'overall':<{width}}  {total:>8}  {cm.trace().item() / max(total, 1):>8.2%}")
    return "\n".join(rows)


class ConfusionMatrixWriter(Callback):
    """After ``seqmodels test``: prints per-class and overall accuracy and writes
    ``confusion_test.csv`` and ``confusion_test.png`` into ``output_dir`` (default: the logger's
    run folder, else ``predictions/``). Needs a module with ``confusion`` and ``class_names``
    (:class:`SpeciesClassifier`); rank 0 writes (the matrix is already summed over ranks)."""

    def __init__(self, output_dir: str | None = None) -> None:
        self.output_dir = output_dir

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cm = getattr(pl_module, "confusion", {}).get("test")
        names = getattr(pl_module, "class_names", None)
        if cm is None or not names:
            return
        out = run_dir(trainer, self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path, png_path = out / "confusion_test.csv", out / "confusion_test.png"
        write_confusion_csv(csv_path, cm, names)
        plot_confusion(png_path, cm, names, title=f"test accuracy {cm.trace().item() / max(int(cm.sum()), 1):.1%}")
        print(f"[seqmodels test] accuracy per class\n{accuracy_table(cm, names)}")
        print(f"[seqmodels test] wrote {csv_path} and {png_path}")


class SpeciesPredictionWriter(BasePredictionWriter):
    """Writes ``species_predictions.csv`` after ``seqmodels predict``: one row per window,
    ``chrom, start, end, name, p_<class>..., predicted`` (0-based half-open coordinates,
    probabilities summing to 1, ``predicted`` the most probable class name). In ``output_dir``
    (default: the logger's run folder, else ``predictions/``); under data parallelism each rank
    writes its own file with a ``.rankR`` suffix."""

    def __init__(self, output_dir: str | None = None, filename: str = "species_predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        outputs = flat_predictions(predictions)
        names = getattr(pl_module, "class_names", None)
        if not outputs or not names or "probs" not in outputs[0]:
            return
        out = run_dir(trainer, self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = self.filename
        if trainer.world_size > 1:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}.rank{trainer.global_rank}.{ext}" if dot else f"{name}.rank{trainer.global_rank}"
        path = out / name
        tmp = path.with_name(path.name + ".tmp")
        n = 0
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["chrom", "start", "end", "name", *(f"p_{c}" for c in names), "predicted"])
            for o in outputs:
                probs = o["probs"]  # [B, K]
                b = probs.shape[0]
                meta = [o.get(key, [""] * b) for key in ("chrom", "start", "end", "name")]
                for row, chrom, start, end, label in zip(probs.tolist(), *meta):
                    best = max(range(len(row)), key=row.__getitem__)
                    writer.writerow([chrom, start, end, label, *(f"{p:.6f}" for p in row), names[best]])
                    n += 1
        os.replace(tmp, path)
        print(f"[seqmodels predict] wrote {n} windows to {path}")


class FineTuneSeqLenWarmup(SeqLenWarmup):
    """:class:`~seqmodels.data.SeqLenWarmup` that trains at once at the full length when the
    target is not longer than ``start``.

    Appendix E.3.4 warms up only the models whose context exceeds 2^14 (one epoch each at 2^14,
    2^15, ... up to the target); with this callback one config serves every ``--data.seq_len``.
    """

    def __init__(
        self,
        start: int = 16384,
        target: int | None = None,
        epochs_per_stage: int = 1,
        scale_batch_size: bool = False,
    ) -> None:
        super().__init__(start=start, target=target, epochs_per_stage=epochs_per_stage,
                         scale_batch_size=scale_batch_size)

    def apply(self, datamodule: Any, epoch: int) -> None:
        if self._base is None:
            target = self.target if self.target is not None else datamodule.seq_len
            if target < self.start:
                # seq_len_at is min(start * 2^k, target): always the target from here on.
                self._base = (target, datamodule.batch_size)
        super().apply(datamodule, epoch)
