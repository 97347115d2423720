"""Where the Triton kernels can run, shared by every kernel package.

Triton 3.6 picks interpreter or compiler when ``@triton.jit`` decorates a function, i.e. when a
kernel module is imported, from the environment variable ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when Triton kernels run on the CPU through the interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_triton_device(device: torch.device, name: str = "impl") -> None:
    """Raise a ValueError naming ``name`` unless tensors on ``device`` can go to a Triton kernel:
    CUDA tensors, or CPU tensors under the interpreter."""
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{name}: 'triton' needs CUDA tensors, got tensors on {device}; set the environment variable "
            "TRITON_INTERPRET=1 before importing triton kernels to run them on CPU through the interpreter"
        )
