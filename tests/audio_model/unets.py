"""Tiny random U-Nets shared by the waveform-model tests."""

from __future__ import annotations

import torch

from seqmodels.models import Mamba, MambaUNet, MambaUNetConfig


def random_unet(complex_: bool, d_model: int = 8, n_layers: int = 1, **overrides) -> MambaUNet:
    """A tiny U-Net with every weight random (biases too), so no path is trivially zero."""
    torch.manual_seed(0)
    config = MambaUNetConfig(d_model=d_model, n_layers=n_layers, d_state=4, complex=complex_, scan_impl="torch",
                             **overrides)
    model = MambaUNet(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.3)
                if module.bias is not None:
                    torch.nn.init.normal_(module.bias, std=0.3)
            if isinstance(module, Mamba):
                # Larger dt so information travels across the few positions of a test.
                module.dt_proj.bias.add_(2.0)
    return model
