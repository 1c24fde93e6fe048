"""Causal attention on CPU, forward + backward, by SDPA backend, at the reference transformer's
training shapes (batch 32 x 160 steps; 4 heads of 16, and 2 of 32 at the same width).

    OMP_NUM_THREADS=2 python bench/sdpa_cpu.py

Prints the median of 30 steps after 5 of warm-up for each backend and shape.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def step_ms(
    backend: SDPBackend, batch: int, heads: int, steps: int, dim: int, n: int = 30
) -> float:
    q, k, v = (torch.randn(batch, heads, steps, dim, requires_grad=True) for _ in range(3))
    times = []
    with sdpa_kernel(backend):
        for _ in range(n + 5):
            start = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
            times.append(time.perf_counter() - start)
    return sorted(times[5:])[n // 2] * 1e3


def main() -> None:
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| heads x dim | backend | ms (forward + backward) |\n|---|---|---:|")
    for heads, dim in ((4, 16), (2, 32)):
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
            ms = step_ms(backend, 32, heads, 160, dim)
            print(f"| {heads} x {dim} | {backend.name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
