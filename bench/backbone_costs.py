"""Backbone cost at matched parameter counts: training throughput, per-step inference, memory.

For every selected backbone at one size preset (default 400k):
- training: tokens/s of forward + backward at batch 32 over T in (128, 512, 2048), and the memory
  that costs (CPU: bytes autograd saves for backward; CUDA: peak allocated);
- inference at context c in (128, 512, 2048): the cost of one `step` with the state carried
  (`stream`: the transformer's KV cache holds c - 1 tokens) against recomputing a forward over the
  last c tokens from scratch (`window`), and the size of the carried state.
The transformer's attention window (`context_len`) is set to T (training) or c (inference).
Prints Markdown tables and a check of the targets; numbers are only meaningful on a quiet machine.

    python bench/backbone_costs.py                     # full run, a few minutes on 2 CPU cores
    python bench/backbone_costs.py --quick             # small sizes, proves the script runs
    python bench/backbone_costs.py --backbones gru transformer --size 100k
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import yaml

from backbones import BACKBONES, Backbone, State, count_parameters
from backbones.presets import SIZES, preset_path

RECURRENT_FLATNESS = 1.3  # per-step stream cost at the largest context / at the smallest
CACHE_SPEEDUP = 10.0  # transformer: recompute-the-window / cached step, at the largest context
TRAIN_SLOWDOWN = 5.0  # no member trains slower than this multiple of the transformer


@dataclass
class TrainResult:
    name: str
    length: int
    seconds: float
    tokens_per_s: float
    memory_mib: float


@dataclass
class StepResult:
    name: str
    context: int
    stream_ms: float
    window_ms: float
    state_kib: float


def build(name: str, size: str, *, context_len: int, device: torch.device) -> Backbone:
    """The preset's backbone, with its attention window (if any) set to `context_len`."""
    init_args = yaml.safe_load(preset_path(name, size).read_text()).get("init_args", {})
    if "context_len" in init_args:
        init_args["context_len"] = context_len
    torch.manual_seed(0)
    return BACKBONES[name](**init_args).to(device)


def timed(fn: Callable[[], object], *, repeats: int, device: torch.device) -> float:
    """Fastest of `repeats` runs after one warm-up run, in seconds (other load only adds time)."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return min(times)


def training_memory_mib(backbone: Backbone, x: torch.Tensor) -> float:
    """CUDA: peak allocated during forward + backward. CPU: bytes saved for backward (deduplicated)."""
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        backbone(x)[0].square().mean().backward()
        return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = backbone(x)[0].square().mean()
    loss.backward()
    return sum(storages.values()) / 2**20


def bench_training(
    name: str, size: str, *, length: int, batch: int, repeats: int, device: torch.device
) -> TrainResult:
    backbone = build(name, size, context_len=length, device=device).train()
    x = torch.randn(batch, length, backbone.d_model, device=device)

    def train_step() -> None:
        backbone.zero_grad(set_to_none=True)
        backbone(x)[0].square().mean().backward()

    seconds = timed(train_step, repeats=repeats, device=device)
    memory = training_memory_mib(backbone, x)
    return TrainResult(name, length, seconds, batch * length / seconds, memory)


def state_bytes(state: State) -> int:
    total = 0

    def add(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    state.map_tensors(add)
    return total


@torch.inference_mode()
def bench_step(
    name: str, size: str, *, context: int, batch: int, steps: int, device: torch.device
) -> StepResult:
    backbone = build(name, size, context_len=context, device=device).eval()
    history = torch.randn(batch, context + steps, backbone.d_model, device=device)
    _, prefilled = backbone(history[:, : context - 1])

    def stream() -> None:
        state = prefilled
        for t in range(context - 1, context - 1 + steps):
            _, state = backbone.step(history[:, t], state=state)

    def window() -> None:
        backbone(history[:, steps : steps + context])

    stream_s = timed(stream, repeats=5, device=device) / steps
    window_s = timed(window, repeats=5, device=device)
    _, full_state = backbone.step(history[:, context - 1], state=prefilled)
    return StepResult(name, context, 1e3 * stream_s, 1e3 * window_s, state_bytes(full_state) / 1024)


def check_targets(train: list[TrainResult], steps: list[StepResult]) -> list[str]:
    """One line per target of the backbone issue: PASS/FAIL with the measured number."""
    lines = []
    contexts = sorted({r.context for r in steps})
    by_key = {(r.name, r.context): r for r in steps}
    for name in sorted({r.name for r in steps}):
        low, high = by_key[name, contexts[0]], by_key[name, contexts[-1]]
        if name == "transformer":
            speedup = high.window_ms / high.stream_ms
            verdict = "PASS" if speedup >= CACHE_SPEEDUP else "FAIL"
            lines.append(
                f"{verdict} transformer cached step {speedup:.1f}x faster than recompute at "
                f"context {contexts[-1]} (target >= {CACHE_SPEEDUP:g}x)"
            )
        else:
            growth = high.stream_ms / low.stream_ms
            verdict = "PASS" if growth <= RECURRENT_FLATNESS else "FAIL"
            lines.append(
                f"{verdict} {name} step cost x{growth:.2f} from context {contexts[0]} to "
                f"{contexts[-1]} (target <= {RECURRENT_FLATNESS:g}x)"
            )
    reference = {r.length: r.seconds for r in train if r.name == "transformer"}
    for r in train:
        if r.name != "transformer" and r.length in reference:
            slowdown = r.seconds / reference[r.length]
            verdict = "PASS" if slowdown <= TRAIN_SLOWDOWN else "FAIL"
            lines.append(
                f"{verdict} {r.name} trains {slowdown:.2f}x the transformer's time at T={r.length} "
                f"(target <= {TRAIN_SLOWDOWN:g}x)"
            )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), default=None)
    parser.add_argument("--size", choices=SIZES, default="400k")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--eval-batch", type=int, default=16, help="streams stepped together")
    parser.add_argument("--steps", type=int, default=32, help="steps timed per context")
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps (fastest)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--quick", action="store_true", help="batch 4, T and contexts 64/128, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.lengths, args.contexts = 4, [64, 128], [64, 128]
        args.repeats, args.steps, args.eval_batch = 1, 16, 4
    if any(c < 2 for c in args.contexts):
        parser.error("--contexts must be >= 2 (one prefilled token, then a step)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.backbones or sorted(BACKBONES)
    print(
        f"# Backbones at the {args.size} preset on {device} "
        f"({torch.get_num_threads()} threads, torch {torch.__version__})\n"
    )

    train: list[TrainResult] = []
    print(f"## Training: forward + backward, batch {args.batch}\n")
    memory_label = "peak MiB" if device.type == "cuda" else "saved for backward MiB"
    print(f"| backbone | params | T | ms / step | tokens/s | {memory_label} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        params = count_parameters(build(name, args.size, context_len=2, device=device))
        for length in args.lengths:
            r = bench_training(
                name,
                args.size,
                length=length,
                batch=args.batch,
                repeats=args.repeats,
                device=device,
            )
            train.append(r)
            print(
                f"| {name} | {params:,} | {length} | {1e3 * r.seconds:.1f} | "
                f"{r.tokens_per_s:,.0f} | {r.memory_mib:.1f} |",
                flush=True,
            )

    steps: list[StepResult] = []
    print(f"\n## Inference: one step, {args.eval_batch} streams\n")
    print("| backbone | context | stream step ms | recompute window ms | ratio | state KiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        for context in args.contexts:
            r = bench_step(
                name,
                args.size,
                context=context,
                batch=args.eval_batch,
                steps=args.steps,
                device=device,
            )
            steps.append(r)
            print(
                f"| {name} | {context} | {r.stream_ms:.3f} | {r.window_ms:.2f} | "
                f"{r.window_ms / r.stream_ms:.1f}x | {r.state_kib:,.1f} |",
                flush=True,
            )

    print("\n## Targets\n")
    if max(args.contexts) < 2048 or max(args.lengths) < 2048:
        print(
            "(the targets are set for T and contexts up to 2048: these lines check smaller ones)\n"
        )
    for line in check_targets(train, steps):
        print(f"- {line}")


if __name__ == "__main__":
    main()
