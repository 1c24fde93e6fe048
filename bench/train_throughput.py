"""Training throughput as `zoo fit` runs it, for every backbone, against a bare loop and the
machine's fp32 matmul ceiling.

For each backbone x size preset, on the reference experiment (configs/experiments/darkroom.yaml:
batch 32 x 160 steps of Dark Room histories):
- `zoo fit`: the LightningModule, DataModule and Trainer exactly as the CLI builds them from the
  experiment (with `--model.backbone <preset>`); the time of a step is the time between two
  consecutive training batches (data, forward, backward, optimizer, logging, callbacks), median
  over the timed steps after a warm-up;
- bare: the same model on the same batches in a plain PyTorch loop (forward, backward, AdamW);
- the ceiling: an fp32 [n, n] x [n, n] matmul at the same thread count.
Prints tokens/s, GFLOP/s by the 6N rule (N = parameters; attention's own matmuls added for the
transformer), the fraction of the ceiling, Lightning's overhead (fit / bare) and each member's
step time relative to the transformer's, and the bare step's page faults and kernel time (memory the
allocator gave back and took again). Numbers mean something only on a quiet machine: the
script prints the load it started under.

    python bench/train_throughput.py                          # all backbones, 100k and 400k
    python bench/train_throughput.py --backbones transformer gru --sizes 100k
    python bench/train_throughput.py --quick                  # tiny sizes: proves it runs
    python bench/train_throughput.py --profile transformer    # torch.profiler table, one preset
    python bench/train_throughput.py --backbones experiment --set model.embedding_dropout=0.1
    python bench/train_throughput.py --sizes 100k --accelerator gpu   # on a GPU (bench/gpu_check.sh)

`--accelerator` is `trainer.accelerator` (auto: a GPU where there is one); the bare loop runs on the
device `zoo fit` trained on, synchronised after every step on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml

from backbones import BACKBONES, count_parameters
from backbones.presets import preset_path
from zoo.training import build

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "configs" / "experiments" / "darkroom.yaml"
AS_IS = "experiment"
"""`--backbones experiment`: the experiment's own backbone, settings and all (the reference run)."""


@dataclasses.dataclass
class Result:
    backbone: str
    size: str
    parameters: int
    tokens_per_step: int
    flop_per_step: float
    fit_ms: float
    bare_ms: float
    bare_faults: float = 0.0
    """Minor page faults a bare step (memory the allocator handed back and took again)."""
    bare_sys_ms: float = 0.0
    """Kernel CPU time a bare step (where page faults are paid)."""


class StepTimer(pl.Callback):
    """Wall time between the starts of consecutive training batches."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.starts.append(time.perf_counter())

    def step_seconds(self, warmup: int) -> list[float]:
        times = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]
        return times[warmup:]


def matmul_ceiling(n: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of an fp32 square matmul (best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flop_per_step(model: torch.nn.Module, batch: int, length: int) -> float:
    """6 N per token (forward + backward), plus the transformer's attention matmuls: per layer and
    token 2 x 2 x d x (keys attended, T/2 on average when causal), three times for the backward."""
    tokens = batch * length
    flop = 6.0 * count_parameters(model) * tokens
    backbone = model.backbone
    if hasattr(backbone, "context_len") and hasattr(backbone, "heads"):
        attended = min(length, backbone.context_len) / 2
        flop += 3 * 4 * backbone.d_model * attended * backbone.depth * tokens
    return flop


def fit_configs(
    backbone: str, size: str, args: argparse.Namespace, *, steps: int, root: str
) -> list[Any]:
    """The reference experiment, the backbone's preset and the timing run's settings, as configs
    for `zoo.training.build` (what `zoo fit --config ...` would train)."""
    model: dict[str, Any] = {}
    if backbone != AS_IS:
        model["backbone"] = str(
            preset_path(backbone, size)
        )  # the preset file, as experiments name it
        if args.compile != "experiment":
            model["compile"] = args.compile == "true"
    run = {
        "model": model,
        "trainer": {
            "accelerator": args.accelerator,
            "devices": 1,
            "max_steps": steps,
            "val_check_interval": steps + 1,  # no validation inside the timed steps
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": root,
        },
        "data": {"path": args.data} if args.data else {},
    }
    return [EXPERIMENT, run, *(setting_of(s) for s in args.set)]


def setting_of(text: str) -> dict[str, Any]:
    """`model.lr=0.1` as the mapping `{"model": {"lr": 0.1}}` (the value read as YAML)."""
    key, _, value = text.partition("=")
    setting: Any = yaml.safe_load(value)
    for part in reversed(key.split(".")):
        setting = {part: setting}
    return setting


def measure(backbone: str, size: str, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory() as root:
        total = args.warmup + args.steps + 1
        cli = build(fit_configs(backbone, size, args, steps=total, root=root))
        timer = StepTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
        fit = timer.step_seconds(args.warmup)
        model, data = cli.model, cli.datamodule
        device = cli.trainer.strategy.root_device  # Lightning hands the model back on the CPU
        model.to(device)
        batches = [
            {k: v.to(device) for k, v in b.items()}
            for _, b in zip(range(8), data.train_dataloader(), strict=False)
        ]
        optimizer = model.configure_optimizers()["optimizer"]  # the model's own, as fit used
        bare_loop(model, batches, optimizer, warmup=args.warmup, steps=0)
        before = resource.getrusage(resource.RUSAGE_SELF)
        bare = bare_loop(model, batches, optimizer, warmup=0, steps=args.steps)
        after = resource.getrusage(resource.RUSAGE_SELF)
    shape = batches[0]["actions"].shape
    return Result(
        backbone=backbone,
        size=size,
        parameters=count_parameters(model),
        tokens_per_step=shape.numel(),
        flop_per_step=flop_per_step(model, *shape),
        fit_ms=1000 * statistics.median(fit),
        bare_ms=1000 * statistics.median(bare),
        bare_faults=(after.ru_minflt - before.ru_minflt) / args.steps,
        bare_sys_ms=1000 * (after.ru_stime - before.ru_stime) / args.steps,
    )


def measure_in_child(backbone: str, size: str, args: argparse.Namespace) -> Result:
    """`measure` in a fresh process, as `zoo fit` runs: nothing one member leaves behind (compiled
    kernels, worker pools, allocator state) slows the next."""
    command = [sys.executable, __file__, "--one", backbone, size, "--data", args.data]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads), "--compile", args.compile]
    command += ["--accelerator", args.accelerator]
    command += [f"--set={setting}" for setting in args.set]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{backbone} {size} failed:\n{done.stderr[-3000:]}")
    return Result(**json.loads(lines[-1]))


def bare_loop(model, batches, optimizer, *, warmup: int, steps: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Forward, backward and an optimizer step, nothing else."""
    model.train()
    times = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        loss, _ = model._loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if loss.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[warmup:]


def profile(backbone: str, size: str, args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with tempfile.TemporaryDirectory() as root:
        cli = build(fit_configs(backbone, size, args, steps=1, root=root))
        model, data = cli.model, cli.datamodule
        batches = [next(iter(data.train_dataloader()))]
        optimizer = torch.optim.AdamW(model.parameters(), lr=model.hparams.lr)  # no Trainer here
        bare_loop(model, batches, optimizer, warmup=3, steps=1)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            bare_loop(model, batches, optimizer, warmup=0, steps=3)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=[AS_IS, *sorted(BACKBONES)],
        help=f"registered names, and `{AS_IS}` for the experiment's own backbone",
    )
    parser.add_argument("--sizes", nargs="+", default=["100k", "400k"])
    parser.add_argument("--data", help="dataset (default: the experiment's, data/darkroom)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--compile",
        choices=("false", "true", "experiment"),
        default="false",
        help="torch.compile for the presets (the `experiment` row keeps its own setting)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `zoo fit` option for every row, without its dashes (repeatable), e.g. "
        "model.embedding_dropout=0.1",
    )
    parser.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="trainer.accelerator of the timed runs (auto: a GPU where there is one)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny presets, few steps")
    parser.add_argument("--profile", metavar="BACKBONE", help="profile one bare step instead")
    parser.add_argument("--one", nargs=2, metavar=("BACKBONE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps, args.warmup = ["tiny"], 3, 1
    torch.set_num_threads(args.threads)
    data = Path(args.data or ROOT / "data" / "darkroom")
    if not data.is_dir():
        print(f"no dataset at {data}: zoo collect --config configs/collect/darkroom.yaml first")
        return 2
    args.data = str(data)
    if args.profile:
        profile(args.profile, args.sizes[0], args)
        return 0
    if args.one:
        print(json.dumps(dataclasses.asdict(measure(*args.one, args))))
        return 0

    ceiling = matmul_ceiling()
    load = os.getloadavg()
    print(f"# train_throughput: torch {torch.__version__}, {args.threads} threads, load at start")
    print(f"# {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; fp32 matmul ceiling {ceiling:.0f} GFLOP/s")
    print(f"# experiment {EXPERIMENT.relative_to(ROOT)}, data {data}; median of {args.steps} steps")
    print(f"# presets with --model.compile={args.compile}")
    results = [
        measure_in_child(b, s, args)
        for s in args.sizes
        for b in args.backbones
        if b != AS_IS or s == args.sizes[0]
    ]
    print()
    print(
        "| backbone | size | params | fit ms/step | bare ms/step | fit / bare | fit tokens/s "
        "| fit GFLOP/s | of ceiling | fit vs transformer | bare vs transformer "
        "| bare page faults/step | bare kernel ms/step |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        reference = next(
            (x for x in results if x.size == r.size and x.backbone == "transformer"), None
        )
        gflops = r.flop_per_step / (r.fit_ms / 1000) / 1e9
        vs = (
            (f"{r.fit_ms / reference.fit_ms:.2f}x", f"{r.bare_ms / reference.bare_ms:.2f}x")
            if reference
            else ("-", "-")
        )
        print(
            f"| {r.backbone} | {'-' if r.backbone == AS_IS else r.size} | {r.parameters:,} | {r.fit_ms:.1f} | {r.bare_ms:.1f} "
            f"| {r.fit_ms / r.bare_ms:.2f} | {r.tokens_per_step / (r.fit_ms / 1000):,.0f} "
            f"| {gflops:.1f} | {gflops / ceiling:.1%} | {vs[0]} | {vs[1]} "
            f"| {r.bare_faults:,.0f} | {r.bare_sys_ms:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
