"""Mamba (v1) on CPU: the exact selective scan against mamba-ssm's `selective_scan_ref`.

Times forward + backward of one Mamba layer (mamba-ssm's `Mamba` mixer run by `MambaBackbone`,
depth 1) at batch B, length T, d_model D (d_inner = 2D, d_state 16), once with this project's scan
and once with `selective_scan_ref` (a Python loop over time) in its place; the scan alone too.
Also checks that both scans give the same gradients. Numbers are only meaningful on a quiet
machine; the target is a speed-up of at least 20x at B=16, T=512, D=128.
`--sweep` times the scan alone over steps per block and lanes (how `BLOCK_ELEMENTS` and
`LANE_WIDTH` in `backbones/_selective_scan.py` were chosen); `--profile` prints where one layer's
forward + backward spends its time.

    python bench/mamba_scan.py                                     # B=16, T=512, D=128: minutes
    python bench/mamba_scan.py --batch 2 --length 64 --d-model 32  # small, proves the script runs
    python bench/mamba_scan.py --batch 32 --length 128 --d-model 96 --sweep --profile --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

import backbones.mamba
from backbones._mamba_ops import selective_scan_cpu, selective_scan_ref
from backbones._selective_scan import BLOCK_ELEMENTS, _default_chunk
from backbones.mamba import MambaBackbone

TARGET_SPEEDUP = 20.0
D_STATE = 16


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


def scan_inputs(batch: int, length: int, d_model: int) -> list[torch.Tensor]:
    """The scan's inputs as a Mamba layer sees them (softplus(delta + bias) is taken inside)."""
    b, d, n = batch, 2 * d_model, D_STATE
    inputs = [
        torch.randn(b, d, length),
        torch.randn(b, d, length) - 3.0,
        -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        torch.randn(b, n, length),
        torch.randn(b, n, length),
        torch.ones(d),
        torch.randn(b, d, length),
    ]
    return [t.requires_grad_(True) for t in inputs]


def scan_step(scan: Callable, inputs: list[torch.Tensor], **kw: object) -> Callable[[], None]:
    """Forward + backward of `scan` on `inputs` (their gradients are left in `.grad`)."""

    def run() -> None:
        for t in inputs:
            t.grad = None
        out = scan(*inputs, delta_softplus=True, **kw)
        out = out[0] if isinstance(out, tuple) else out
        out.square().mean().backward()

    return run


def layer_step(args: argparse.Namespace) -> Callable[[], None]:
    """Forward + backward of one Mamba layer (whichever scan `backbones.mamba` uses when run)."""
    layer = MambaBackbone(d_model=args.d_model, depth=1, d_state=D_STATE)
    x = torch.randn(args.batch, args.length, args.d_model)

    def run() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x)[0].square().mean().backward()

    return run


def compare_with_reference(args: argparse.Namespace) -> None:
    """One layer and the scan alone, ours against `selective_scan_ref`, and their gradients."""
    step = layer_step(args)
    inputs = scan_inputs(args.batch, args.length, args.d_model)
    ours_layer = seconds(step, args.repeats)
    ours_scan = seconds(scan_step(selective_scan_cpu, inputs), args.repeats)
    ours_grads = [t.grad.clone() for t in inputs]
    print(f"ours: layer {ours_layer:.3f} s, scan {ours_scan:.3f} s", flush=True)
    with mock.patch.object(backbones.mamba, "selective_scan", reference_scan):
        ref_layer = seconds(step, args.reference_repeats, warm_up=False)
    ref_scan = seconds(scan_step(selective_scan_ref, inputs), args.reference_repeats, warm_up=False)
    ref_grads = [t.grad.clone() for t in inputs]
    error = max(
        ((a - r).abs().max() / r.abs().max()).item()
        for a, r in zip(ours_grads, ref_grads, strict=True)
    )

    print("| what | our scan (s) | selective_scan_ref (s) | speed-up |")
    print("|---|---|---|---|")
    print(f"| one layer | {ours_layer:.3f} | {ref_layer:.3f} | {ref_layer / ours_layer:.1f}x |")
    print(f"| scan only | {ours_scan:.3f} | {ref_scan:.3f} | {ref_scan / ours_scan:.1f}x |")
    print(f"largest relative difference of the scan's input gradients: {error:.2e}")
    speedup = ref_layer / ours_layer
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "MISSES"
    print(f"layer speed-up {speedup:.1f}x {verdict} the target of {TARGET_SPEEDUP:.0f}x")


def sweep(args: argparse.Namespace) -> None:
    """The scan alone (forward + backward, and forward without gradients) over steps per block
    (one lane) and over lanes (blocks from `BLOCK_ELEMENTS`); the default marked `*`."""
    inputs = scan_inputs(args.batch, args.length, args.d_model)
    width = args.batch * 2 * args.d_model * D_STATE
    default_lanes = -(-args.length // _default_chunk(args.length, width))
    default_block = max(1, BLOCK_ELEMENTS // (width * default_lanes))

    def row(label: str, **kw: int) -> None:
        def forward() -> None:
            with torch.no_grad():
                selective_scan_cpu(*inputs, delta_softplus=True, **kw)

        train = seconds(scan_step(selective_scan_cpu, inputs, **kw), args.repeats)
        infer = seconds(forward, args.repeats)
        print(f"| {label} | {1e3 * train:.1f} | {1e3 * infer:.1f} |", flush=True)

    print(f"\nThe scan alone, {width:,} state elements a step (b d n)\n")
    print("| lanes x steps per block | forward + backward ms | forward, no grad, ms |")
    print("|---|---:|---:|")
    for k in sorted({1, 2, 4, 8, 16, 32, args.length, min(default_block, args.length)}):
        if k <= args.length:
            mark = "*" if default_lanes == 1 and k == min(default_block, args.length) else ""
            row(f"1 x {k}{mark}", chunk_size=args.length, block_size=k)
    for lanes in (2, 4, 8, 16, 32):
        if lanes <= math.isqrt(args.length - 1) + 1:
            q = -(-args.length // lanes)
            k = min(q, max(1, BLOCK_ELEMENTS // (width * lanes)))
            row(f"{lanes} x {k}{'*' if lanes == default_lanes else ''}", chunk_size=q)


def profile_layer(args: argparse.Namespace) -> None:
    """The operators one layer's forward + backward spends its time in (our scan)."""
    step = layer_step(args)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.repeats):
            step()
    print(f"\nOne layer forward + backward, {args.repeats} runs\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--sweep", action="store_true", help="steps per block and lanes, no ref")
    parser.add_argument("--profile", action="store_true", help="one layer's operators, no ref")
    args = parser.parse_args()
    if min(args.batch, args.length, args.d_model, args.repeats) < 1:
        parser.error("--batch, --length, --d-model and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    print(
        f"Mamba layer on CPU, batch {args.batch}, T {args.length}, d_model {args.d_model} "
        f"(d_inner {2 * args.d_model}, d_state {D_STATE}), {torch.get_num_threads()} threads"
    )
    if args.sweep:
        sweep(args)
    if args.profile:
        profile_layer(args)
    if not (args.sweep or args.profile):
        compare_with_reference(args)


if __name__ == "__main__":
    main()
