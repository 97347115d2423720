"""Every shipped config keeps last.ckpt at the last validation, and best.ckpt at the best one.

Lightning 2.6 writes ``save_last`` only when a top-k checkpoint is saved at the same step, so a
run whose final validation is not its best would leave a stale last.ckpt (and a resume would go
back in time). The configs therefore carry a second ModelCheckpoint, without a monitor, named
``last``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "ModelCheckpoint" in p.read_text())


def checkpoint_callbacks(config: Path) -> list:
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    out = []
    for cb in callbacks:
        if cb["class_path"].endswith("ModelCheckpoint"):
            module, name = cb["class_path"].rsplit(".", 1)
            out.append(getattr(importlib.import_module(module), name)(**cb.get("init_args", {})))
    return out


class _Worsening(L.LightningModule):
    """Logs a monitored metric that is best at the first validation and worse after."""

    def __init__(self, key: str, mode: str) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.key, self.sign, self.vals = key, (-1.0 if mode == "max" else 1.0), 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log(self.key, self.sign * (-1.0 + self.vals))

    def on_validation_epoch_end(self) -> None:
        self.vals += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_checkpoint_configs_are_found():
    assert len(CONFIGS) >= 9


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_writes_last_checkpoint_at_the_final_step_even_when_it_is_not_the_best(config, tmp_path):
    callbacks = checkpoint_callbacks(config)
    best, last = callbacks  # the first one is Trainer.checkpoint_callback (ckpt_path="best")
    assert best.filename == "best" and best.monitor is not None
    assert last.filename == "last" and last.monitor is None and not last.save_last
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=3, callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )
    trainer.fit(_Worsening(best.monitor, best.mode), data, data)
    ckpt_dir = Path(best.dirpath)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.ckpt", "last.ckpt"]
    steps = {name: torch.load(ckpt_dir / name, weights_only=False)["global_step"] for name in ("best.ckpt", "last.ckpt")}
    assert steps == {"best.ckpt": 4, "last.ckpt": 12}
