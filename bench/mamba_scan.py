"""Mamba (v1) on CPU: the exact chunk-parallel selective scan against mamba-ssm's `selective_scan_ref`.

Times forward + backward of one Mamba layer (mamba-ssm's `Mamba` mixer run by `MambaBackbone`,
depth 1) at batch B, length T, d_model D (d_inner = 2D, d_state 16), once with this project's scan
and once with `selective_scan_ref` (a Python loop over time) in its place; the scan alone too.
Also checks that both scans give the same gradients. Numbers are only meaningful on a quiet
machine; the target is a speed-up of at least 20x at B=16, T=512, D=128.

    python bench/mamba_scan.py                                     # B=16, T=512, D=128: minutes
    python bench/mamba_scan.py --batch 2 --length 64 --d-model 32  # small, proves the script runs
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch

import backbones.mamba
from backbones._mamba_ops import selective_scan_cpu, selective_scan_ref
from backbones.mamba import MambaBackbone

TARGET_SPEEDUP = 20.0


def reference_scan(
    *args: torch.Tensor | None, initial_state: torch.Tensor | None = None, **kw: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """`selective_scan_ref` with the signature of `backbones._mamba_ops.selective_scan`."""
    if initial_state is not None and initial_state.abs().max() > 0:
        raise ValueError("selective_scan_ref cannot start from a non-zero state")
    return selective_scan_ref(*args, **kw, return_last_state=True)


def seconds(fn: Callable[[], None], repeats: int, *, warm_up: bool = True) -> float:
    """Median wall time of `fn` over `repeats` runs, after one warm-up run if `warm_up`."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    layer = MambaBackbone(d_model=args.d_model, depth=1, d_state=16)
    x = torch.randn(args.batch, args.length, args.d_model)

    def layer_step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x)[0].square().mean().backward()

    # the scan alone, on the inputs the layer's scan sees (softplus(delta + bias) as in Mamba)
    b, d, n, length = args.batch, 2 * args.d_model, 16, args.length
    scan_inputs = [
        torch.randn(b, d, length),
        torch.randn(b, d, length) - 3.0,
        -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        torch.randn(b, n, length),
        torch.randn(b, n, length),
        torch.ones(d),
        torch.randn(b, d, length),
    ]
    for t in scan_inputs:
        t.requires_grad_(True)

    def scan_step(scan: Callable) -> Callable[[], None]:
        def run() -> None:
            for t in scan_inputs:
                t.grad = None
            out = scan(*scan_inputs, delta_softplus=True)
            out = out[0] if isinstance(out, tuple) else out
            out.square().mean().backward()

        return run

    ours_layer = seconds(layer_step, args.repeats)
    ours_scan = seconds(scan_step(selective_scan_cpu), args.repeats)
    ours_grads = [t.grad.clone() for t in scan_inputs]
    print(f"chunk-parallel: layer {ours_layer:.3f} s, scan {ours_scan:.3f} s", flush=True)
    with mock.patch.object(backbones.mamba, "selective_scan", reference_scan):
        ref_layer = seconds(layer_step, args.reference_repeats, warm_up=False)
    ref_scan = seconds(scan_step(selective_scan_ref), args.reference_repeats, warm_up=False)
    ref_grads = [t.grad.clone() for t in scan_inputs]
    error = max(((a - r).abs().max() / r.abs().max()).item() for a, r in zip(ours_grads, ref_grads))

    print(
        f"Mamba layer fwd+bwd on CPU, batch {b}, T {length}, d_model {args.d_model} "
        f"(d_inner {d}, d_state {n}), {torch.get_num_threads()} threads"
    )
    print("| what | chunk-parallel scan (s) | selective_scan_ref (s) | speed-up |")
    print("|---|---|---|---|")
    print(f"| one layer | {ours_layer:.3f} | {ref_layer:.3f} | {ref_layer / ours_layer:.1f}x |")
    print(f"| scan only | {ours_scan:.3f} | {ref_scan:.3f} | {ref_scan / ours_scan:.1f}x |")
    print(f"largest relative difference of the scan's input gradients: {error:.2e}")
    speedup = ref_layer / ours_layer
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "MISSES"
    print(f"layer speed-up {speedup:.1f}x {verdict} the target of {TARGET_SPEEDUP:.0f}x")


if __name__ == "__main__":
    main()
