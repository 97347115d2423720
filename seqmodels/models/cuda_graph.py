"""A training forward and backward replayed from two CUDA graphs.

At short contexts a training step of the small DNA models launches about 900 kernels, each
costing the host tens of microseconds of Python and driver time; at L = 1024 x 64 with the 7M
preset the host needs about as long to launch a step as the GPU needs to run it, so the GPU
waits. :class:`GraphedFunction` captures ``fn`` (the backbone's blocks and final norm) once per
input shape as a forward graph and a backward graph, and replays them: two launches per step.

What a graph fixes, and how this class keeps the results those of ``fn``:

- Shapes, dtypes and the autocast setting are fixed at capture. A call whose key (shape,
  dtype, device, autocast dtype, which tensors need gradients, where the parameters live)
  differs from the captured one runs ``fn`` eagerly; a key seen on two calls in a row is
  captured (so a short last batch of an epoch runs eagerly and keeps the graph of the full
  batches; a sequence-length warmup stage captures its own graph).
- Inputs and outputs live in static buffers. The input is copied in; the output is copied out,
  so the caller may keep it. The parameters' gradients are copied out of the graph's buffer in
  one kernel, so that accumulating them over micro-batches adds, never aliases.
- Activations saved for the backward live in the graph's memory: a second forward before the
  first one's backward overwrites them, and that stale backward raises instead of returning
  wrong gradients.
- ``fn`` must not synchronise with the host, draw random numbers, or depend on tensor values
  for control flow; the backbone does none of these.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from seqmodels.models.mamba import _autocast_dtype


def _autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The caller's autocast setting, without the cast cache (a graph must recast every replay)."""
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


@contextlib.contextmanager
def _parameters_replaced(module: nn.Module, replacements: dict[str, Tensor]) -> Iterator[None]:
    """Within the block, ``module``'s parameters named in ``replacements`` are those tensors."""
    saved = []
    for name, tensor in replacements.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        saved.append((owner, leaf, owner._parameters[leaf]))
        owner._parameters[leaf] = tensor
    try:
        yield
    finally:
        for owner, leaf, param in saved:
            owner._parameters[leaf] = param


class _Capture:
    """The two graphs of one key and their static buffers.

    ``fn`` is captured with each parameter replaced by a detached alias of it: a new leaf tensor
    on the same memory, so the graphs read the parameters as the optimizer updates them in place,
    while autograd's gradient accumulators of the real parameters (which may be alive from
    earlier steps, bound to the default stream) take no part in the capture."""

    def __init__(self, fn: Callable[[Tensor], Tensor], module: nn.Module, params: dict[str, Tensor], x: Tensor,
                 autocast: torch.dtype | None, warmup: int) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise RuntimeError("cuda_graph: graphs are captured for one device; under data parallelism "
                               f"(world size {torch.distributed.get_world_size()}) set cuda_graph to false")
        aliases = {name: p.detach().requires_grad_(p.requires_grad) for name, p in params.items()}
        self.trained = [p for p in params.values() if p.requires_grad]
        self.static_x = x.detach().clone().requires_grad_(x.requires_grad)
        inputs = ([self.static_x] if x.requires_grad else []) + [a for a in aliases.values() if a.requires_grad]
        self.generation = 0

        with _parameters_replaced(module, aliases):
            # Warm up on a side stream (kernel compilation, library workspaces), as capture requires.
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side), _autocast_context(x.device, autocast):
                for _ in range(warmup):
                    out = fn(self.static_x)
                    torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)
                    del out
            torch.cuda.current_stream(x.device).wait_stream(side)

            pool = torch.cuda.graph_pool_handle()
            self.forward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.forward_graph, pool=pool), _autocast_context(x.device, autocast):
                static_out = fn(self.static_x)
        self.static_grad_out = torch.empty_like(static_out)
        self.backward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.backward_graph, pool=pool):
            grads = torch.autograd.grad(static_out, inputs, self.static_grad_out, allow_unused=True)
            self.static_grad_x = grads[0] if x.requires_grad else None
            param_grads = grads[1:] if x.requires_grad else grads
            # One flat buffer of every parameter's gradient (None where a parameter is unused).
            self.used = [g is not None for g in param_grads]
            flat = [g.reshape(-1) for g in param_grads if g is not None]
            self.static_grads = torch.cat(flat) if flat else None
        self.static_out = static_out.detach()  # the capture's autograd graph is spent
        self.sizes = [p.numel() for p, u in zip(self.trained, self.used, strict=True) if u]
        self.shapes = [p.shape for p, u in zip(self.trained, self.used, strict=True) if u]


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, capture: _Capture, x: Tensor, *trained: Tensor) -> Tensor:
        # ``trained``: the captured parameters that need gradients, in capture order (inputs of
        # the node only so that autograd hands their gradients back).
        capture.static_x.copy_(x)
        capture.forward_graph.replay()
        capture.generation += 1
        ctx.capture, ctx.generation = capture, capture.generation
        return capture.static_out.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        capture = ctx.capture
        if ctx.generation != capture.generation:
            raise RuntimeError(
                "cuda_graph: the graphed blocks ran forward again before this backward, which overwrote "
                "the activations it needs; run backward after each training forward (or set cuda_graph false)"
            )
        capture.static_grad_out.copy_(grad_out)
        capture.backward_graph.replay()
        capture.generation += 1  # the saved activations are spent
        grads: list[Tensor | None] = [None] * len(capture.used)
        if capture.static_grads is not None:
            flat = capture.static_grads.clone()  # outlives the next replay
            pieces = iter(p.view(s) for p, s in zip(flat.split(capture.sizes), capture.shapes, strict=True))
            grads = [next(pieces) if u else None for u in capture.used]
        # The input's gradient goes on to the embedding's backward at once, before any replay.
        return (None, capture.static_grad_x, *grads)


class GraphedFunction:
    """``getattr(module, method)(x) -> y``, a function of one tensor and of ``module``'s
    parameters (those whose names do not start with one of ``exclude``), run from CUDA graphs
    in training.

    The parameters are looked up at every call, so a module moved to another device or dtype
    is captured again. Call it only where gradients flow (training); other calls should go to
    the method directly. The module is held by a weak reference (it owns this object). An owner
    that is pickled or deep-copied should leave it out (the graphs belong to one device and one
    set of parameters).
    """

    def __init__(self, module: nn.Module, method: str, exclude: tuple[str, ...] = (), warmup: int = 2) -> None:
        self._module = weakref.ref(module)
        self.method = method
        self.exclude = exclude
        self.warmup = warmup
        self.capture: _Capture | None = None
        self.key: tuple | None = None
        self.pending: tuple | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if not x.is_cuda:
            raise ValueError(f"cuda_graph: the input must be on a CUDA device, got {x.device}")
        module = self._module()
        fn = getattr(module, self.method)
        params = {n: p for n, p in module.named_parameters() if not n.startswith(self.exclude)}
        autocast = _autocast_dtype(x)
        key = (tuple(x.shape), x.dtype, x.device, x.requires_grad, autocast,
               tuple((p.data_ptr(), p.dtype, p.requires_grad) for p in params.values()))
        if key != self.key:
            if key != self.pending:
                self.pending = key
                return fn(x)
            self.capture, self.key = None, None  # free the old graph's memory before capturing
            self.capture = _Capture(fn, module, params, x, autocast, self.warmup)
            self.key, self.pending = key, None
        return _Replay.apply(self.capture, x, *self.capture.trained)
