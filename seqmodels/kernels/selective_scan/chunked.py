"""Chunked pure-PyTorch selective scan: the fast path on CPU (``impl="torch"``).

The sequence is cut into nc chunks of T positions (README.md, "The chunked PyTorch path"):

1. within every chunk, the local state (started from zero) is scanned position by position,
   each step acting on all chunks, channels and states at once: T steps on (batch, dim, nc, N)
   slices instead of L steps on (batch, dim, N);
2. the states entering each chunk are carried from chunk to chunk: nc small steps;
3. the carried state reaches position t of its chunk through exp(S_t - S_start), with S the
   cumulative log-decay (cumsum of delta * A) inside the chunk: a segment-relative exponent whose
   real part is a sum of the same terms the recurrence multiplies, so no exp(+large) ever forms.

About 2 sqrt(L) Python steps in all, each on a large slice; autograd through these torch ops
gives the gradients. Layout: positions of a chunk lead, (T, batch, dim, nc, N), so that one
step of the loop reads and writes contiguous memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .checks import ScanShapes
from .ref import bc_operand, compute_dtypes, prepare_delta


def default_chunk_len(length: int) -> int:
    """T ~ sqrt(L) balances the two Python loops (T steps + L / T chunk carries); a power of two
    in [16, 256], or L itself when shorter."""
    if length <= 16:
        return length
    return int(min(256, max(16, 2 ** round(math.log2(math.sqrt(length))))))


def _bc_chunks(X: Tensor, dim: int, d0: int, d1: int, T: int, nc: int, L: int) -> Tensor:
    """Channels [d0, d1) of B or C in the chunk layout, broadcastable against
    (T, batch, d1 - d0, nc, N): constant (dim, N) -> (1, 1, d1 - d0, 1, N);
    (batch, G, N, L) -> (T, batch, 1 or d1 - d0, nc, N)."""
    if X.dim() == 2:
        return X[None, None, d0:d1, None, :]
    if X.shape[1] != 1:
        # Grouped: channel d reads group d // (dim // G); G == 1 stays a broadcast.
        groups = torch.arange(d0, d1, device=X.device) // (dim // X.shape[1])
        X = X.index_select(1, groups)
    pad = nc * T - L
    if pad:
        X = F.pad(X, (0, pad))  # padded positions have delta = 0: they never reach y or the state
    return rearrange(X, "b g n (c t) -> t b g c n", t=T)


def _scan_block(
    dt_c: Tensor, du_c: Tensor, A: Tensor, Bc: Tensor, Cc: Tensor, h0: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Scan one block of channels. dt_c, du_c: [T, batch, ch, nc, 1]; A: [ch, N]; Bc, Cc:
    broadcastable to [T, batch, ch, nc, N]; h0: [batch, ch, N] or None.
    Returns y before the real part / D / z: [T, batch, ch, nc], and the last state [batch, ch, N]."""
    log_decay = dt_c * A[None, None, :, None, :]  # [T, batch, ch, nc, N]
    decay = torch.exp(log_decay)
    inputs = du_c * Bc  # [T, batch, ch, nc, N]

    # 1. local scan inside every chunk, all chunks at once.
    # unbind, not indexing: the backward of one unbind is a single stack, while indexing would
    # scatter into a fresh full-size zero tensor at every step.
    inputs_t, decay_t = inputs.unbind(0), decay.unbind(0)
    h = inputs_t[0]
    local = [h]
    for t in range(1, len(inputs_t)):
        h = torch.addcmul(inputs_t[t], decay_t[t], h)
        local.append(h)
    h_local = torch.stack(local)  # [T, batch, ch, nc, N]

    # exp(S_t - S_start): decay from the start of the chunk through position t. A is constant in
    # time, so S_t - S_start = A * (cumsum of delta): the cumsum runs on the N-times smaller delta.
    within = torch.exp(torch.cumsum(dt_c, dim=0) * A[None, None, :, None, :])  # [T, batch, ch, nc, N]

    # 2. carry the state across chunks: h_in[c] is the state entering chunk c.
    carry = torch.zeros_like(local[-1][:, :, 0]) if h0 is None else h0
    h_in = []
    for end_c, decay_c in zip(local[-1].unbind(2), within[-1].unbind(2)):
        h_in.append(carry)
        carry = torch.addcmul(end_c, decay_c, carry)
    # Padding passes the state through unchanged, so carry is the state after position L - 1.

    # 3. add the carried state, decayed by exp(S_t - S_start) (segment-relative, see module doc).
    h_all = torch.addcmul(h_local, within, torch.stack(h_in, dim=2))
    return (h_all * Cc).sum(-1), carry


def selective_scan_chunked(
    s: ScanShapes,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
    initial_state: Tensor | None,
    chunk_len: int | None = None,
    block_elems: int = 2**20,
) -> Tensor | tuple[Tensor, Tensor]:
    """``selective_scan`` semantics on arguments already validated (``s`` from ``check_scan_args``).

    ``chunk_len``: positions per chunk T (default ~sqrt(L)); ``block_elems``: target size of the
    per-block intermediates (channels are processed in blocks of about this many elements)."""
    L = s.length
    T = chunk_len or default_chunk_len(L)
    if T < 1:
        raise ValueError(f"chunk_len: must be at least 1, got {T}")
    nc = -(-L // T)
    rdt, cdt = compute_dtypes(u)
    sdt = cdt if s.is_complex else rdt
    uc = u.to(rdt)
    dt = prepare_delta(delta, delta_bias, delta_softplus, rdt)  # (batch, dim, L)
    du = dt * uc
    pad = nc * T - L
    if pad:
        # delta = 0 on padding: decay exp(0) = 1 and no input, so the state passes through unchanged.
        dt, du = F.pad(dt, (0, pad)), F.pad(du, (0, pad))
    dt_c = rearrange(dt, "b d (c t) -> t b d c 1", t=T).contiguous()
    du_c = rearrange(du, "b d (c t) -> t b d c 1", t=T).contiguous()
    Bv = bc_operand(B, s.b_layout, s.is_complex, rdt, cdt)
    Cv = bc_operand(C, s.c_layout, s.is_complex, rdt, cdt)
    A = A.to(sdt)
    # Blocks of channels keep each [T, batch, channels, nc, N] intermediate near block_elems
    # elements: cache-resident, and small enough that the allocator reuses memory instead of
    # mapping fresh pages for every full-size tensor.
    per_channel = T * s.batch * nc * s.d_state
    step = max(1, min(s.dim, block_elems // per_channel))
    # split, not slicing: the backward of a split is one concatenation.
    h0s = [None] * len(range(0, s.dim, step)) if initial_state is None else initial_state.to(sdt).split(step, dim=1)
    blocks = zip(range(0, s.dim, step), dt_c.split(step, dim=2), du_c.split(step, dim=2), A.split(step), h0s)
    ys, lasts = [], []
    for d0, dt_b, du_b, A_b, h0_b in blocks:
        d1 = min(s.dim, d0 + step)
        Bc = _bc_chunks(Bv, s.dim, d0, d1, T, nc, L)
        Cc = _bc_chunks(Cv, s.dim, d0, d1, T, nc, L)
        y_blk, last_blk = _scan_block(dt_b, du_b, A_b, Bc, Cc, h0_b)
        ys.append(y_blk)
        lasts.append(last_blk)
    y = torch.cat(ys, dim=2) if len(ys) > 1 else ys[0]  # [T, batch, dim, nc]
    last_state = torch.cat(lasts, dim=1) if len(lasts) > 1 else lasts[0]
    if s.is_complex:
        y = 2 * y.real
    y = rearrange(y, "t b d c -> b d (c t)")[..., :L]
    if D is not None:
        y = y + D.to(rdt)[:, None] * uc
    if z is not None:
        y = y * F.silu(z.to(rdt))
    y = y.to(u.dtype)
    return (y, last_state) if return_last_state else y
