"""Mamba2's CPU SSD: the zoo's chunked quadratic form (`ssd_scan_cpu`) at several chunk lengths
against mamba-ssm's `ssd_minimal_discrete` (the path the zoo used before, at its chunk of 32).

Forward + backward of one layer's scan at the shapes of the 100k preset's training step
(batch 32 x 160 steps, 4 heads of 32 channels, state 64, one group), median of `--repeats`.
Prints the time of each and the largest difference from mamba-ssm's output.

    python bench/ssd_cpu.py                  # 2 threads
    python bench/ssd_cpu.py --threads 1 --length 1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from einops import repeat

from backbones._mamba_ops import CPU_SSD_CHUNK, ssd_scan_cpu


def mamba_ssm_minimal(x, dt, A, B, C, *, D, dt_bias, initial_state, chunk_size=32):  # type: ignore[no-untyped-def]
    """mamba-ssm's `ssd_minimal_discrete` with softplus dt, D and padding, as the zoo called it."""
    # imported here: mamba_ssm imports only after backbones._mamba_ops stands in for its CUDA scan
    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete

    length, heads = x.shape[1], x.shape[2]
    dt = F.softplus(dt + dt_bias)
    B, C = (repeat(t, "b l g n -> b l (g k) n", k=heads // t.shape[2]) for t in (B, C))
    pad = -length % chunk_size
    X, dA, B_, C_ = (
        F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x * dt[..., None], A * dt, B, C)
    )
    y, last = ssd_minimal_discrete(X, dA, B_, C_, chunk_size, initial_states=initial_state[:, None])
    return y[:, :length] + x * D[:, None], last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=160)
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 96, 160])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, length, heads, p, n = args.batch, args.length, 4, 32, 64
    leaves = [
        torch.randn(b, length, heads, p),
        torch.randn(b, length, heads) - 1.0,
        torch.randn(b, length, 1, n),
        torch.randn(b, length, 1, n),
    ]
    x, dt, B, C = (t.requires_grad_() for t in leaves)
    A, D, dt_bias = -torch.rand(heads) * 4, torch.randn(heads), torch.randn(heads) * 0.5
    h0 = torch.randn(b, heads, p, n)

    def timed(scan, **kwargs) -> tuple[float, torch.Tensor]:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            y, last = scan(x, dt, A, B, C, D=D, dt_bias=dt_bias, initial_state=h0, **kwargs)
            (y.square().sum() + last.sum()).backward()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times[2:]), y.detach()

    load = os.getloadavg()
    print(f"# ssd_cpu: torch {torch.__version__}, {args.threads} threads, load {load[0]:.2f}")
    print(f"# batch {b} x {length} steps, {heads} heads x {p}, state {n}; forward + backward")
    reference_ms, reference = timed(mamba_ssm_minimal)
    print(f"mamba-ssm ssd_minimal_discrete (chunk 32): {reference_ms:7.1f} ms")
    for chunk in args.chunks:
        ms, y = timed(ssd_scan_cpu, chunk_size=chunk)
        default = " (CPU_SSD_CHUNK)" if chunk == CPU_SSD_CHUNK else ""
        print(
            f"ssd_scan_cpu chunk {chunk:4d}{default:16s}: {ms:7.1f} ms  "
            f"{reference_ms / ms:4.2f}x  max |diff| {(y - reference).abs().max().item():.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
