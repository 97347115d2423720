"""Activation checkpointing of Mamba blocks in which each fused scan runs forward once per step.

``torch.utils.checkpoint`` (non-reentrant) runs a block's forward twice: for the loss, then
again in the backward to rebuild the tensors the backward saves. The mixer asks
:func:`checkpoint_pass` which of the two it is in and, on the Triton path, hands its scan and
output projection to ``selective_scan_linear``, which keeps the scan's tile states from the
first pass and skips the scan in the second (see that function).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from torch import Tensor
from torch.utils.checkpoint import checkpoint

_local = threading.local()


def checkpoint_pass() -> str | None:
    """The pass of the checkpointed block being run: "first" or "recompute" inside
    :func:`checkpoint_block` with kept scan states, else None."""
    return getattr(_local, "pass_", None)


@contextlib.contextmanager
def _in_pass(name: str) -> Iterator[None]:
    # The recomputation runs in the autograd engine's thread; the context is entered there too.
    previous = checkpoint_pass()
    _local.pass_ = name
    try:
        yield
    finally:
        _local.pass_ = previous


def _pass_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return _in_pass("first"), _in_pass("recompute")


def checkpoint_block(block: Callable[[Tensor], Tensor], x: Tensor, keep_scan_states: bool) -> Tensor:
    """``checkpoint(block, x, use_reentrant=False)``; with ``keep_scan_states`` the block's mixers
    learn which pass they run in. ``block`` must be a residual block whose mixer output goes only
    into the residual add (the recomputation's mixer output is not computed)."""
    if not keep_scan_states:
        return checkpoint(block, x, use_reentrant=False)
    return checkpoint(block, x, use_reentrant=False, context_fn=_pass_contexts)
