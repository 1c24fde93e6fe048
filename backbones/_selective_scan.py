"""An exact, fast selective scan (Mamba v1) in pure PyTorch, for CPUs.

mamba-ssm's `selective_scan_ref` is a Python loop over time whose autograd graph makes one training
step minutes long; this scan computes the same result, with a carried initial state, with one
in-place update per step on reused buffers and a hand-written backward (see `_SelectiveScan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

LANE_WIDTH = 2**14
"""State elements (b * d * n) below which the sequence is cut into lanes scanned side by side."""
BLOCK_ELEMENTS = 2**20
"""State elements per block: the steps whose decays, inputs and gradients are one vectorised op."""
_LOG2_E = 1.4426950408889634  # exp(x) = exp2(x log2 e); exp2 is ~2.5x faster than exp on CPU


@dataclass
class _Steps:
    """The scan's inputs, time-major in `lanes` of `q` steps: `[q, lanes * b, k]`, step `i` of lane
    `c` being time `c q + i`. States are `[lanes * b, n, d]` (`d` innermost: fastest contractions).
    """

    u: Tensor
    delta: Tensor
    B: Tensor
    C: Tensor
    A: Tensor
    """`A` transposed: `[n, d]`."""

    def __post_init__(self) -> None:
        self.du = self.delta * self.u
        self.A2 = self.A * _LOG2_E

    def decays(self, steps: slice, *, out: Tensor) -> Tensor:
        """`exp(delta A)` of `steps` into `out: [m, lanes * b, n, d]`."""
        return torch.mul(self.delta[steps, :, None, :], self.A2, out=out).exp2_()

    def lane_decays(self) -> Tensor:
        """Every lane's decay over all its steps, `exp(sum_t delta_t A)`: `[lanes * b, n, d]`."""
        return torch.mul(self.delta.sum(0)[:, None, :], self.A2).exp2_()

    def states(self, steps: slice, start: Tensor, decays: Tensor, *, out: Tensor) -> None:
        """`out[0] = start`, `out[i + 1] = decays[i] out[i] + delta u B` over `steps` (in place)."""
        m = decays.shape[0]
        out[0] = start
        torch.mul(self.B[steps, :, :, None], self.du[steps, :, None, :], out=out[1 : m + 1])
        for i in range(m):
            out[i + 1].addcmul_(decays[i], out[i])

    def blocks(self, k: int) -> list[slice]:
        q = self.u.shape[0]
        return [slice(s, min(s + k, q)) for s in range(0, q, k)]

    def buffer(self, steps: int) -> Tensor:
        _, width, d = self.u.shape
        return self.u.new_empty(steps, width, self.A.shape[0], d)


def _forward(steps: _Steps, start: Tensor, k: int, *, y: Tensor | None = None) -> Tensor:
    """Runs the recurrence from `start` in blocks of `k` steps; writes `y_t = C_t . h_t` into
    `y: [q, lanes * b, 1, d]` if given. Returns every block's start state and the last state."""
    blocks = steps.blocks(k)
    starts = start.new_empty(len(blocks) + 1, *start.shape)
    starts[0] = start
    a, h = steps.buffer(k), steps.buffer(k + 1)
    for j, block in enumerate(blocks):
        m = block.stop - block.start
        steps.states(block, starts[j], steps.decays(block, out=a[:m]), out=h)
        if y is not None:
            torch.matmul(steps.C[block, :, None, :], h[1 : m + 1], out=y[block])
        starts[j + 1] = h[m]
    return starts


@dataclass
class _Grads:
    """Gradients of the time-major inputs (`dB`, `dC` as `[q, lanes * b, 1, n]`) and of `A^T`."""

    du: Tensor
    ddelta: Tensor
    dB: Tensor
    dC: Tensor
    dA: Tensor


def _backward(
    steps: _Steps,
    dy: Tensor,
    end: Tensor,
    k: int,
    *,
    starts: Tensor | None = None,
    grads: _Grads | None = None,
) -> Tensor:
    """The adjoint `g_t = C_t dy_t + a_{t+1} g_{t+1}` from `end` (the last state's), in blocks of
    `k` steps backwards; with the blocks' `starts` (from `_forward`) it also accumulates `grads`.
    Returns the adjoint of the start state, `a_0 g_0`."""
    a, g = steps.buffer(k), steps.buffer(k)
    h = steps.buffer(k + 1) if grads is not None else None
    carry = end
    for j, block in reversed(list(enumerate(steps.blocks(k)))):
        m = block.stop - block.start
        a_, g_ = steps.decays(block, out=a[:m]), g[:m]
        torch.mul(steps.C[block, :, :, None], dy[block, :, None, :], out=g_)
        g_[-1] += carry
        for i in reversed(range(m - 1)):
            g_[i].addcmul_(a_[i + 1], g_[i + 1])
        carry = a_[0] * g_[0]
        if grads is None:
            continue
        assert starts is not None and h is not None  # given with `grads` / made for them
        steps.states(block, starts[j], a_, out=h)
        torch.matmul(dy[block, :, None, :], h[1 : m + 1].mT, out=grads.dC[block])
        torch.matmul(steps.du[block, :, None, :], g_.mT, out=grads.dB[block])
        gB = torch.matmul(steps.B[block, :, None, :], g_)[:, :, 0]
        torch.mul(gB, steps.delta[block], out=grads.du[block])
        dlog = a_.mul_(g_).mul_(h[:m])  # d loss / d (delta A)
        torch.sum(torch.mul(dlog, steps.A, out=g_), -2, out=grads.ddelta[block])
        grads.ddelta[block].addcmul_(gB, steps.u[block])
        grads.dA += torch.mul(dlog, steps.delta[block, :, None, :], out=g_).sum((0, 1))
    return carry


class _SelectiveScan(torch.autograd.Function):
    """`h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t`, `y_t = C_t . h_t`, with a hand-written backward.

    Steps run one at a time (one in-place update each), in blocks whose decays, inputs, outputs and
    gradients are each one vectorised op on reused buffers. Short of work per step (small batches),
    the sequence is cut into lanes scanned side by side: a first pass gives each lane's end state
    from zero, a recurrence over lanes their true start states, then the real pass runs (and
    likewise backwards for the adjoints). Every factor is a decay in [0, 1] (no `exp(-cumsum)`), so
    the result is exact and stable for any `A` and `delta`. Only the blocks' start states are kept
    for backward, which recomputes the states block by block, as the CUDA kernel does.
    Padded steps have `delta = 0` (decay 1, no input), so they leave the state unchanged.
    """

    @staticmethod
    def forward(
        ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor, q: int, k: int
    ) -> tuple[Tensor, Tensor]:
        batch, length = u.shape[:2]
        u_, delta_, B_, C_ = (_time_major(t, q) for t in (u, delta, B, C))
        steps = _Steps(u_, delta_, B_, C_, A=A.T.contiguous())
        y = steps.u.new_empty(*steps.u.shape[:2], 1, steps.u.shape[2])
        starts = _forward(steps, _lane_starts(steps, h0.transpose(1, 2), k), k, y=y)
        ctx.save_for_backward(steps.u, steps.delta, steps.B, steps.C, steps.A, starts)
        ctx.sizes = length, k
        last = starts[-1].unflatten(0, (-1, batch))[-1]
        return _batch_major(y[:, :, 0], batch, length), last.transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor, dlast: Tensor | None) -> tuple[Tensor | None, ...]:
        u, delta, B, C, A, starts = ctx.saved_tensors
        length, k = ctx.sizes
        steps = _Steps(u, delta, B, C, A)
        batch, q, width = dy.shape[0], u.shape[0], u.shape[1]
        dy = _time_major(dy, q)
        end = starts.new_zeros(batch, *A.shape) if dlast is None else dlast.transpose(1, 2)
        n = A.shape[0]
        grads = _Grads(
            du=torch.empty_like(u),
            ddelta=torch.empty_like(delta),
            dB=u.new_empty(q, width, 1, n),
            dC=u.new_empty(q, width, 1, n),
            dA=torch.zeros_like(A),
        )
        dstart = _backward(steps, dy, _lane_ends(steps, dy, end, k), k, starts=starts, grads=grads)
        return (
            _batch_major(grads.du, batch, length),
            _batch_major(grads.ddelta, batch, length),
            grads.dA.T,
            _batch_major(grads.dB[:, :, 0], batch, length),
            _batch_major(grads.dC[:, :, 0], batch, length),
            dstart[:batch].transpose(1, 2),
            None,
            None,
        )


def _lane_starts(steps: _Steps, h0: Tensor, k: int) -> Tensor:
    """Every lane's start state `[lanes * b, n, d]`, from the first lane's `h0: [b, n, d]`."""
    batch, width = h0.shape[0], steps.u.shape[1]
    if width == batch:
        return h0
    ends = _forward(steps, h0.new_zeros(width, *h0.shape[1:]), k)[-1].unflatten(0, (-1, batch))
    decay = steps.lane_decays().unflatten(0, (-1, batch))
    starts = [h0]
    for c in range(ends.shape[0] - 1):
        starts.append(torch.addcmul(ends[c], decay[c], starts[-1]))
    return torch.cat(starts)


def _lane_ends(steps: _Steps, dy: Tensor, end: Tensor, k: int) -> Tensor:
    """Every lane's end-state adjoint `[lanes * b, n, d]`, from the last lane's `end: [b, n, d]`."""
    batch, width = end.shape[0], steps.u.shape[1]
    if width == batch:
        return end
    starts = _backward(steps, dy, end.new_zeros(width, *end.shape[1:]), k)
    starts, decay = (t.unflatten(0, (-1, batch)) for t in (starts, steps.lane_decays()))
    ends = [end]
    for c in reversed(range(1, starts.shape[0])):
        ends.append(torch.addcmul(starts[c], decay[c], ends[-1]))
    return torch.cat(ends[::-1])


def _time_major(t: Tensor, q: int) -> Tensor:
    """`[b, l, k]` -> `[q, lanes * b, k]` (step `i` of lane `c` is time `c q + i`), zero-padded."""
    t = F.pad(t, (0, 0, 0, -t.shape[1] % q))
    return rearrange(t, "b (c q) k -> q (c b) k", q=q).contiguous()


def _batch_major(t: Tensor, batch: int, length: int) -> Tensor:
    """`[q, lanes * b, k]` -> `[b, l, k]`."""
    return rearrange(t, "q (c b) k -> b (c q) k", b=batch)[:, :length].contiguous()


@torch.autocast("cpu", enabled=False)  # full precision as in mamba-ssm's kernels
def selective_scan_cpu(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    chunk_size: int | None = None,
    block_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """`selective_scan_ref` (real `A`, input-dependent `B`, `C`) on CPU, plus states.

    Shapes as mamba-ssm: `u, delta, z: [b, d, l]`, `A: [d, n]`, `B, C: [b, n, l]`, `D: [d]`,
    `initial_state: [b, d, n]`. Returns `(out [b, d, l], last_state [b, d, n])`; gradients flow
    into `initial_state` and from `last_state`. `chunk_size` (steps per lane) and `block_size`
    (steps per vectorised block) change speed, not the result.
    """
    dtype_in = u.dtype
    b, d, length = u.shape
    # token-major `[b, l, k]` memory: free for views of projections, and one layout for all ops
    u, delta, B, C = (t.float().mT.contiguous() for t in (u, delta, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    if delta_softplus:
        delta = F.softplus(delta)
    if initial_state is None:
        initial_state = u.new_zeros(b, d, A.shape[1])
    width = b * d * A.shape[1]
    q = chunk_size or _default_chunk(length, width)
    k = block_size or max(1, BLOCK_ELEMENTS // (width * -(-length // q)))
    y, last_state = _SelectiveScan.apply(
        u, delta, A.float(), B, C, initial_state.float(), q, min(k, q)
    )
    out = y if D is None else y + u * D.float()
    if z is not None:
        out = out * F.silu(z.float().mT.contiguous())
    return out.mT.to(dtype_in), last_state


def _default_chunk(length: int, width: int) -> int:
    """Steps per lane for `length` steps of `width` state elements (b * d * n) each.

    One lane (a plain scan) when a step has `LANE_WIDTH` elements or more; otherwise about that
    many elements a step, in at most about sqrt(length) lanes: the fewest Python-level steps.
    """
    lanes = max(1, min(math.isqrt(max(length, 1) - 1) + 1, LANE_WIDTH // width))
    return -(-length // lanes)
