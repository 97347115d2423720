"""``mamba_inner`` on the Triton kernels: one autograd node per mixer (see interface.py).

Forward: the convolution reads x in place from xz (its first half), the scan reads the gate z in
place (its second half), the projections are batched products against the weights broadcast
over the batch (every activation stays channels first, ``[B, channels, L]``). Saved for the
backward: xz, the convolution's output u, x_proj's output, delta, the scan's output y (for
out_proj's weight gradient) and the scan's tile states.

Backward: out_proj, then the scan's backward, which writes dz into the second half of one
``[B, 2E, L]`` gradient; the projections' gradients, with x_proj's input gradient added into the
scan's du by the same batched product (``baddbmm``); the convolution's backward writes dx into
the first half. Weight gradients are summed over the batch in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..causal_conv.triton_conv import _bwd as _conv_bwd
from ..causal_conv.triton_conv import _fwd as _conv_fwd
from ..causal_conv.triton_conv import _Plan as _ConvPlan
from ..selective_scan.triton_scan import _bwd as _scan_bwd
from ..selective_scan.triton_scan import _fwd as _scan_fwd
from ..selective_scan.triton_scan import _Plan as _ScanPlan
from ..selective_scan.triton_scan import _prep_bc


def _batched(w: Tensor, batch: int) -> Tensor:
    """``w [O, I]`` broadcast (stride 0) over ``batch`` for ``torch.bmm``."""
    return w.expand(batch, *w.shape)


def _weight_grad(a: Tensor, b: Tensor) -> Tensor:
    """``sum_b a[b] @ b[b]`` in float32: a weight's gradient summed over the batch."""
    return torch.bmm(a, b).sum(0, dtype=torch.float32)


class _MambaInnerTriton(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D,
                out_proj_weight, grad_enabled):
        batch, two_e, L = xz.shape
        e = two_e // 2
        dtype = xz.dtype
        if xz.stride(2) != 1 or xz.stride(1) != L:
            xz = xz.contiguous()
        x, z = xz[:, :e], xz[:, e:]
        width = conv_weight.shape[-1]
        cw = conv_weight.reshape(e, width).to(dtype).contiguous()
        cb = conv_bias.to(dtype).contiguous() if conv_bias is not None else None
        wx, wdt, wo = x_proj_weight.to(dtype), dt_proj_weight.to(dtype), out_proj_weight.to(dtype)
        rank = wdt.shape[1]
        n = A_log.shape[1]

        cplan = _ConvPlan(x, width, None, None)
        u = _conv_fwd(x, cw, cb, True, cplan)  # [B, E, L]
        x_dbl = torch.bmm(_batched(wx, batch), u)  # [B, R + 2N, L]
        delta = torch.bmm(_batched(wdt, batch), x_dbl[:, :rank])  # [B, E, L]
        A = -torch.exp(A_log.float())
        Bp = _prep_bc(x_dbl[:, rank:rank + n], False)
        Cp = _prep_bc(x_dbl[:, rank + n:], False)
        D32 = D.float().contiguous()
        bias32 = dt_proj_bias.float().contiguous()
        want = grad_enabled and any(ctx.needs_input_grad)
        plan = _ScanPlan(batch, e, L, want, False, None, xz.device)
        y, _, hsave = _scan_fwd(u, delta, A, Bp, Cp, D32, z, bias32, True, None, plan, False, want)
        out = torch.bmm(y.transpose(1, 2), _batched(wo.t(), batch))  # [B, L, D_model]
        if want:
            ctx.save_for_backward(xz, cw, cb, wx, wdt, wo, u, x_dbl, delta, A, Bp[0], Cp[0], D32, bias32, y,
                                  hsave)
            ctx.meta = (Bp[1:], Cp[1:], cplan, plan, conv_weight.shape,
                        [t.dtype if t is not None else None for t in
                         (conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D,
                          out_proj_weight)])
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @once_differentiable
    def backward(ctx, dout):
        xz, cw, cb, wx, wdt, wo, u, x_dbl, delta, A, Bt, Ct, D32, bias32, y, hsave = ctx.saved_tensors
        b_meta, c_meta, cplan, plan, cw_shape, dtypes = ctx.meta
        batch, two_e, L = xz.shape
        e = two_e // 2
        rank = wdt.shape[1]
        n = A.shape[1]
        dout = dout.to(wo.dtype)
        dy = torch.bmm(_batched(wo.t(), batch), dout.transpose(1, 2))  # [B, E, L]
        dwo = _weight_grad(dout.transpose(1, 2), y.transpose(1, 2))  # [D_model, E]
        dxz = torch.empty(batch, two_e, L, device=xz.device, dtype=xz.dtype)
        du, ddelta, dA, dB, dC, dD, _, dbias, _ = _scan_bwd(
            dy, None, u, delta, A, (Bt, *b_meta), (Ct, *c_meta), D32, xz[:, e:], bias32, True, hsave, plan,
            False, dz_out=dxz[:, e:],
        )
        dx_dbl = torch.empty_like(x_dbl)  # [B, R + 2N, L]: d dt, dB, dC
        torch.bmm(_batched(wdt.t(), batch), ddelta, out=dx_dbl[:, :rank])  # written in place (strided rows)
        dx_dbl[:, rank:rank + n] = dB.view(batch, n, L)
        dx_dbl[:, rank + n:] = dC.view(batch, n, L)
        dwdt = _weight_grad(ddelta, x_dbl[:, :rank].transpose(1, 2))  # [E, R]
        dwx = _weight_grad(dx_dbl, u.transpose(1, 2))  # [R + 2N, E]
        du.baddbmm_(_batched(wx.t(), batch), dx_dbl)  # + x_proj's input gradient
        _, dcw, dcb = _conv_bwd(du, xz[:, :e], cw, cb, True, cplan, dx_out=dxz[:, :e])
        weight_grads = (dcw.reshape(cw_shape), dcb, dwx, dwdt, dbias, dA * A, dD, dwo)
        # (dtype None: that argument was None, e.g. no conv bias)
        grads = (dxz, *(g.to(dt) if dt is not None else None for g, dt in zip(weight_grads, dtypes)))
        needs = ctx.needs_input_grad
        return (*(g if needs[i] else None for i, g in enumerate(grads)), None)


@torch.compiler.disable
def mamba_inner_triton(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, x_proj_weight: Tensor,
                       dt_proj_weight: Tensor, dt_proj_bias: Tensor, A_log: Tensor, D: Tensor,
                       out_proj_weight: Tensor) -> Tensor:
    """See ``seqmodels.kernels.mamba_inner``; arguments are validated by the caller. Every product
    runs in xz's dtype whether or not autocast is on (its casts would change nothing for the
    model's bfloat16 xz, and would mix dtypes for a float32 one), so autocast is off inside."""
    with torch.autocast(xz.device.type, enabled=False):
        return _MambaInnerTriton.apply(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                                       A_log, D, out_proj_weight, torch.is_grad_enabled())
