"""The fused stage decode step (n Mamba blocks, one position, one launch) against its PyTorch
reference, and the reference against a loop over ``MambaBlock.step``.

On a CPU-only machine the kernel runs through the Triton interpreter (``TRITON_INTERPRET=1``, set
by tests/conftest.py before any kernel module is imported), so the shapes stay tiny; the ``gpu``
rows use the widths of the SC09 and YouTubeMix presets. Outputs and both states are compared with
``assert_close``: the error against a float64 run of the reference may be at most twice the
error of the float32 reference, plus a small floor.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest
import torch

if not torch.cuda.is_available():
    # Triton picks interpreter or compiler when a kernel is decorated, i.e. at import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from seqmodels.kernels import MambaStageWeights, mamba_stage_step, mamba_stage_step_ref  # noqa: E402
from seqmodels.kernels.mamba_stage.triton_stage import mamba_stage_step_triton  # noqa: E402
from seqmodels.models.mamba import MambaBlock, MixerState, pack_stage_weights  # noqa: E402
from tests.kernels.tolerance import assert_close  # noqa: E402


@dataclass(frozen=True)
class Case:
    d_model: int
    d_state: int
    n_layers: int = 2
    batch: int = 3
    complex: bool = False
    steps: int = 3
    block_e: int | None = None  # None: the launcher's choice
    split: bool = False  # several programs per row, two launches per layer
    channels_last: bool = True  # the states' memory layout (E contiguous, as the U-Net cache)


CASES = [
    pytest.param(Case(16, 4), id="real-D16-N4"),
    pytest.param(Case(16, 4, complex=True), id="complex-D16-N4"),
    # D, E and N not powers of two, dt_rank 2, E = 48 walked in three slices of 16 channels.
    pytest.param(Case(24, 6, block_e=16), id="real-D24-N6-3slices"),
    pytest.param(Case(24, 6, complex=True, batch=2, block_e=16), id="complex-D24-N6-3slices"),
    pytest.param(Case(24, 6, channels_last=False), id="real-D24-N6-contiguous-states"),
    # Split mode: E = 32 over 4 programs per row, E = 48 over 3 (a partial last share of 16).
    pytest.param(Case(16, 4, split=True, block_e=8), id="split-real-D16-4progs"),
    pytest.param(Case(24, 6, complex=True, batch=2, split=True, block_e=16), id="split-complex-D24-3progs"),
]


def _blocks(case: Case, device: torch.device) -> list[MambaBlock]:
    """Blocks with every weight perturbed at random (matrices by 0.5 / sqrt(fan-in), so that wide
    blocks stay well conditioned; dt bias raised so that the state moves visibly)."""
    torch.manual_seed(0)
    blocks = [MambaBlock(case.d_model, d_state=case.d_state, complex=case.complex, scan_impl="torch")
              for _ in range(case.n_layers)]
    with torch.no_grad():
        for block in blocks:
            for name, p in block.named_parameters():
                matrix = p.dim() >= 2 and not name.startswith("mixer.A_")
                p.add_(torch.randn_like(p) * (0.5 / math.sqrt(p.shape[-1]) if matrix else 0.2))
            block.mixer.dt_proj.bias.add_(1.0)
    return [b.to(device).eval() for b in blocks]


def _states(w: MambaStageWeights, batch: int, device: torch.device,
            channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random conv [n, B, E, W] and ssm [n, B, E, N] states; with ``channels_last`` stored with E
    contiguous, as ``MambaUNet.allocate_inference_cache`` stores them."""
    g = torch.Generator().manual_seed(1)
    conv = torch.randn(w.n_layers, batch, w.d_inner, w.d_conv, generator=g)
    ssm = torch.randn(w.n_layers, batch, w.d_inner, w.d_state, 2 if w.is_complex else 1, generator=g)
    ssm = torch.view_as_complex(ssm) if w.is_complex else ssm[..., 0].contiguous()
    conv, ssm = conv.to(device), ssm.to(device)
    if channels_last:
        conv = conv.transpose(-1, -2).contiguous().transpose(-1, -2)
        ssm = ssm.transpose(-1, -2).contiguous().transpose(-1, -2)
    return conv, ssm


def _run_case(case: Case, device: torch.device, fused) -> None:
    w = pack_stage_weights(_blocks(case, device))
    w64 = w.to(torch.float64)
    conv, ssm = _states(w, case.batch, device, channels_last=case.channels_last)
    states = {"fused": (conv, ssm), "ref": (conv.clone(), ssm.clone())}
    states["ref64"] = (conv.double(), ssm.to(torch.complex128 if case.complex else torch.float64))
    g = torch.Generator().manual_seed(2)
    for t in range(case.steps):
        x = torch.randn(case.batch, case.d_model, generator=g).to(device)
        out = fused(x, w, *states["fused"])
        ref = mamba_stage_step_ref(x, w, *states["ref"])
        ref64 = mamba_stage_step_ref(x.double(), w64, *states["ref64"])
        assert_close(f"out step {t}", out, ref, ref64)
        for i, name in enumerate(("conv", "ssm")):
            assert_close(f"{name} state step {t}", states["fused"][i], states["ref"][i], states["ref64"][i])


@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_reference(case: Case, device: torch.device, nan_empty):
    _run_case(case, device, lambda x, w, c, s: mamba_stage_step_triton(x, w, c, s, block_e=case.block_e,
                                                                         split=case.split))


@pytest.mark.parametrize("split", [False, True], ids=["one-program-per-row", "split"])
def test_kernel_input_and_output_options(split: bool, device: torch.device):
    """Codes looked up in an embedding table, a skip input, the final RMSNorm and a strided output
    (a U-Net pooling buffer's slot), as the fused U-Net step uses them."""
    case = Case(16, 4, batch=3)
    w = pack_stage_weights(_blocks(case, device))
    conv, ssm = _states(w, case.batch, device)
    g = torch.Generator().manual_seed(5)
    table = torch.randn(10, 16, generator=g).to(device)
    codes = torch.tensor([3, 0, 9], device=device)
    skip = torch.randn(3, 2, 16, generator=g).to(device)[:, 1]  # a strided view
    norm_w = torch.rand(16, generator=g).to(device) + 0.5
    buffer = torch.zeros(3, 4, 16, device=device)
    ref_states = (conv.clone(), ssm.clone())
    ref64_states = (conv.double(), ssm.double())
    out = mamba_stage_step_triton(codes, w, conv, ssm, embedding=table, skip=skip, final_norm=(norm_w, 1e-5),
                                  out=buffer[:, 2], split=split, block_e=8 if split else None)
    assert out.data_ptr() == buffer[:, 2].data_ptr()
    assert buffer[:, [0, 1, 3]].abs().sum() == 0
    ref = mamba_stage_step_ref(codes, w, *ref_states, embedding=table, skip=skip, final_norm=(norm_w, 1e-5))
    ref64 = mamba_stage_step_ref(codes, w.to(torch.float64), *ref64_states, embedding=table.double(),
                                 skip=skip.double(), final_norm=(norm_w.double(), 1e-5))
    assert_close("out", buffer[:, 2], ref, ref64)
    torch.testing.assert_close(ssm, ref_states[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_reference_equals_block_steps(complex_: bool):
    case = Case(16, 4, complex=complex_)
    blocks = _blocks(case, torch.device("cpu"))
    w = pack_stage_weights(blocks)
    conv, ssm = _states(w, case.batch, torch.device("cpu"))
    conv_ref, ssm_ref = conv.clone(), ssm.clone()  # .clone() keeps the strides
    for _ in range(case.steps):
        x = torch.randn(case.batch, case.d_model)
        with torch.no_grad():
            y = x
            for i, block in enumerate(blocks):
                y = block.step(y, MixerState(conv=conv[i], ssm=ssm[i]))
        out = mamba_stage_step_ref(x, w, conv_ref, ssm_ref)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv_ref, conv, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ssm_ref, ssm, rtol=1e-5, atol=1e-5)


def test_public_op_dispatch_and_errors():
    case = Case(16, 4, n_layers=1, batch=2)
    w = pack_stage_weights(_blocks(case, torch.device("cpu")))
    conv, ssm = _states(w, 2, torch.device("cpu"))
    x = torch.randn(2, 16)
    out = mamba_stage_step(x, w, conv.clone(), ssm.clone(), impl="auto")  # the reference on CPU
    torch.testing.assert_close(out, mamba_stage_step_ref(x, w, conv.clone(), ssm.clone()))
    with pytest.raises(ValueError, match="x: expected"):
        mamba_stage_step(torch.randn(2, 8), w, conv, ssm)
    with pytest.raises(ValueError, match="conv_state"):
        mamba_stage_step(x, w, conv[:, :1], ssm)
    with pytest.raises(ValueError, match="ssm_state"):
        mamba_stage_step(x, w, conv, ssm.to(torch.complex64))
    with pytest.raises(ValueError, match="impl"):
        mamba_stage_step(x, w, conv, ssm, impl="torch")
    with pytest.raises(ValueError, match="float64"):
        mamba_stage_step(x.double(), w.to(torch.float64), conv.double(), ssm.double(), impl="triton")
    with pytest.raises(ValueError, match="in_proj_t"):
        MambaStageWeights(**{**vars(w), "in_proj_t": w.in_proj_t[:, :, :-2]})


def test_pack_rejects_mismatched_or_low_precision_blocks():
    a = MambaBlock(16, d_state=4)
    with pytest.raises(ValueError, match="differs"):
        pack_stage_weights([a, MambaBlock(16, d_state=8)])
    with pytest.raises(ValueError, match="float32"):
        pack_stage_weights([MambaBlock(16, d_state=4).to(torch.bfloat16)])
    with pytest.raises(ValueError, match="residual_in_fp32"):
        pack_stage_weights([MambaBlock(16, d_state=4, residual_in_fp32=False)])
    with pytest.raises(ValueError, match="empty"):
        pack_stage_weights([])


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(64, 16, n_layers=8, batch=16), id="sc09-D64"),
        pytest.param(Case(128, 16, n_layers=8, batch=16), id="sc09-D128"),
        pytest.param(Case(256, 16, n_layers=8, batch=16), id="sc09-D256"),
        pytest.param(Case(96, 16, n_layers=15, batch=4), id="sc09-24m-D96"),
        pytest.param(Case(64, 16, n_layers=4, batch=16, complex=True), id="youtubemix-D64"),
        pytest.param(Case(256, 16, n_layers=4, batch=16, complex=True), id="youtubemix-D256"),
    ],
)
def test_gpu_kernel_at_preset_widths(case: Case):
    _run_case(case, torch.device("cuda"), lambda x, w, c, s: mamba_stage_step(x, w, c, s, impl="triton"))


def _launch_variants() -> list:
    from benchmarks.decode_step import SWEEP

    return [
        pytest.param(width, is_complex, cfg,
                     id=f"D{width}-{'complex' if is_complex else 'real'}-" + "-".join(str(int(v)) for v in cfg))
        for (width, is_complex), configs in SWEEP.items()
        for cfg in configs
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("width, complex_, cfg", _launch_variants())
def test_gpu_launch_parameters(width: int, complex_: bool, cfg: tuple[bool, int, int, int, int]):
    """Every launch configuration the benchmark sweeps (one slice, several, pipelined or not, split)."""
    from benchmarks.decode_step import launch_kwargs

    case = Case(width, 16, n_layers=3, batch=5, complex=complex_, steps=2)
    _run_case(case, torch.device("cuda"), lambda x, w, c, s: mamba_stage_step_triton(x, w, c, s, **launch_kwargs(cfg)))


def test_pdl_needs_a_compiled_kernel_on_sm90(device: torch.device):
    """Programmatic dependent launch is asked for explicitly only where it can run."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9:
        pytest.skip("this GPU supports PDL")
    case = Case(16, 4, batch=2)
    w = pack_stage_weights(_blocks(case, device))
    conv, ssm = _states(w, case.batch, device)
    with pytest.raises(ValueError, match="pdl=True"):
        mamba_stage_step_triton(torch.randn(2, 16, device=device), w, conv, ssm, split=True, pdl=True)


@pytest.mark.gpu
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_gpu_pdl_graph_is_bitwise_the_plain_launches(complex_: bool):
    """The split kernels with programmatic dependent launch (each launched while its predecessor
    still runs) replayed in a CUDA graph for many steps give bit for bit the states and outputs of
    plain launches: the arithmetic is the same, so any difference would be a race."""
    dev = torch.device("cuda")
    if torch.cuda.get_device_capability(dev)[0] < 9:
        pytest.skip("PDL needs sm_90 or newer")
    case = Case(64, 16, n_layers=8, batch=16, complex=complex_)
    w = pack_stage_weights(_blocks(case, dev))
    steps = 48
    xs = torch.randn(steps, case.batch, case.d_model, generator=torch.Generator().manual_seed(3)).to(dev)
    results = {}
    for pdl in (False, True):
        conv, ssm = _states(w, case.batch, dev)
        outs = torch.empty(steps, case.batch, case.d_model, device=dev)

        def run() -> None:
            for t in range(steps):
                mamba_stage_step_triton(xs[t], w, conv, ssm, split=True, pdl=pdl, out=outs[t])

        # Warm up (compilation) on copies, then capture and replay on zero states.
        saved = (conv.clone(), ssm.clone())
        run()
        conv.copy_(saved[0])
        ssm.copy_(saved[1])
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        conv.copy_(saved[0])
        ssm.copy_(saved[1])
        graph.replay()
        torch.cuda.synchronize()
        results[pdl] = (outs.clone(), conv.clone(), ssm.clone())
    for name, plain, overlapped in zip(("outputs", "conv state", "ssm state"), results[False], results[True]):
        assert torch.equal(plain, overlapped), f"{name} differ between plain and PDL launches"
