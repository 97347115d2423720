"""Loading trained models without Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a seqmodels checkpoint file (a Lightning checkpoint with a ``seqmodels`` section).

    Raises FileNotFoundError if the file is missing and ValueError naming the file if it is not a
    checkpoint written by a seqmodels task.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or "seqmodels" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a seqmodels checkpoint (no 'seqmodels' section)")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """Return ``(model, config)``: the plain nn.Module of a seqmodels checkpoint, in eval mode.

    For users with their own training loop; Lightning is not imported. A ``species_classifier``
    checkpoint gives a :class:`~seqmodels.models.MambaClassifier` whose ``class_names``
    attribute lists the classes in logit order.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt["seqmodels"]
    kind = meta.get("kind")
    if kind == "dna_lm":
        from seqmodels.models import MambaConfig, MambaLM

        config = MambaConfig.from_dict(meta["config"])
        model = MambaLM(config)
    elif kind == "sc09_classifier":
        from seqmodels.models import DigitClassifier, DigitClassifierConfig

        config = DigitClassifierConfig.from_dict(meta["config"])
        model = DigitClassifier(config)
    elif kind == "species_classifier":
        from seqmodels.models import MambaClassifier, MambaConfig

        config = MambaConfig.from_dict(meta["config"])
        model = MambaClassifier(config, len(meta["class_names"]), meta["pooling"], meta.get("pool_norm", "none"))
        # The class order of the logits, for users of the plain module.
        model.class_names = list(meta["class_names"])
    elif kind == "waveform_lm":
        from seqmodels.models import MambaUNet, MambaUNetConfig

        config = MambaUNetConfig.from_dict(meta["config"])
        model = MambaUNet(config)
    else:
        raise ValueError(f"{path}: checkpoint kind {kind!r} cannot be loaded by this version of seqmodels")
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.to(map_location).eval(), config
