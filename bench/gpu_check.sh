#!/usr/bin/env bash
# The prepared device check (issue 37): what the CPU suite cannot show about a CUDA machine, one
# line per check (PASS, FAIL, or "skipped: <why>"), a summary line last; exit status 1 if any FAIL.
#
#   bench/gpu_check.sh                       everything (a few minutes on one GPU)
#   bench/gpu_check.sh --no-throughput       without the 100k throughput comparison
#   bench/gpu_check.sh --backbones gru mamba --steps 20
#
# Checks, in order (cheap and decisive first; each line printed as it finishes):
#   1. the device; the kernels import (mamba-ssm's selective_scan_cuda, causal-conv1d's
#      causal_conv1d_cuda, a Triton driver for fla and mamba-ssm's Triton ops)
#   2. the GPU-only tests of the suite (fla's kernels against the CPU reference, in fp32 and a bf16
#      backward at odd head widths; mamba-ssm's kernels against the CPU path)
#   3. a tiny `zoo fit` per registered backbone (20 steps and a validation), at 32-true and
#      bf16-mixed, with and without data.carry_state where the member has a fixed-size state
#   4. a resume from --ckpt_path (carry_state, token_mask 0.3) against the uninterrupted run
#   5. `zoo evaluate --device cuda` of each backbone's checkpoint; a two-trial sweep on two workers
#   6. training (`zoo fit` and bare tokens/s, bench/train_throughput.py) and in-context evaluation
#      (env steps/s, bench/evaluate.py) per backbone at its 100k preset, GPU against CPU (2 threads)
# Without a GPU, 3-5 run on the CPU (evaluate with --device cpu) and the rest print "skipped: no GPU".
# ZOO_REFUSE_CPU_FALLBACK=1 is set: a GPU run that would take mamba's CPU scan fails instead of
# crawling. Nothing is written outside a temporary folder, removed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export ZOO_REFUSE_CPU_FALLBACK=1 PYTHONUNBUFFERED=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$WORK" "$@" <<'PYTHON'
import argparse
import contextlib
import importlib.util
import io
import json
import logging
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
WORK = Path(sys.argv[1])
parser = argparse.ArgumentParser(prog="bench/gpu_check.sh")
parser.add_argument("--steps", type=int, default=20, help="steps of each tiny zoo fit")
parser.add_argument("--backbones", nargs="+", help="registered names (default: all)")
parser.add_argument("--no-throughput", action="store_true", help="skip the 100k throughput")
parser.add_argument("--throughput-steps", type=int, default=10, help="timed steps per member")
parser.add_argument("--cpu-threads", type=int, default=2, help="torch threads of the CPU numbers")
args = parser.parse_args(sys.argv[2:])

logging.disable(logging.WARNING)  # Lightning's banners; failures are reported below
warnings.filterwarnings("ignore")

from backbones import BACKBONES  # noqa: E402
from backbones.presets import load_preset, preset_path  # noqa: E402
from cli import main as zoo  # noqa: E402
from zoo.training import make_cli  # noqa: E402

GPU = torch.cuda.is_available()
ACCELERATOR, DEVICE = ("gpu", "cuda") if GPU else ("cpu", "cpu")
NAMES = args.backbones or sorted(BACKBONES)
counts = {"PASS": 0, "FAIL": 0, "skipped": 0}
started = time.perf_counter()
if not GPU:
    torch.set_num_threads(1)  # tiny models on a shared CPU


def report(status: str, name: str, detail: str = "") -> None:
    counts["skipped" if status.startswith("skipped") else status] += 1
    print(f"{status:<16} {name}{': ' + detail if detail else ''}", flush=True)


def failure(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) < 500 else f"{text[:150]} ... {text[-350:]}"


def quietly(fn, *a, **kw):
    """fn's value; its stdout and stderr are kept for a failure message."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            return fn(*a, **kw)
        except SystemExit as e:
            raise RuntimeError(f"exit {e.code}: {out.getvalue().strip()[-400:]}") from None


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


# 1. the device and the kernels ------------------------------------------------------------------
if GPU:
    props = torch.cuda.get_device_properties(0)
    report("PASS", "device", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch "
           f"{torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
else:
    report("skipped", "device", "no GPU (torch.cuda.is_available() is False); CPU parts only")
imports = {
    "selective_scan_cuda (mamba-ssm's CUDA kernels)": "import torch, selective_scan_cuda",
    "causal_conv1d_cuda (causal-conv1d's CUDA kernels)": "import torch, causal_conv1d_cuda",
    "Triton driver (fla, mamba-ssm's Triton ops)": (
        "import triton; from triton.runtime import driver; print(driver.active.get_current_target())"
    ),
}
for label, code in imports.items():
    if not GPU:
        report("skipped: no GPU", f"kernels import: {label}")
        continue
    done = run([sys.executable, "-c", code], timeout=120)
    detail = (done.stdout.strip() or "ok") if done.returncode == 0 else done.stderr.strip()[-300:]
    report("PASS" if done.returncode == 0 else "FAIL", f"kernels import: {label}", detail)

# 2. the suite's GPU-only tests ------------------------------------------------------------------
gpu_tests = {
    "fla kernels (tests/backbones/test_linear_attention.py -k cuda)": [
        "tests/backbones/test_linear_attention.py", "-k", "cuda"],
    "mamba-ssm kernels (tests/backbones/test_mamba.py -k gpu_kernels)": [
        "tests/backbones/test_mamba.py", "-k", "gpu_kernels"],
}
for label, test in gpu_tests.items():
    if not GPU:
        report("skipped: no GPU", f"GPU-only tests: {label}")
        continue
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *test])
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    bad = done.returncode != 0 or "skipped" in summary or "passed" not in summary
    report("FAIL" if bad else "PASS", f"GPU-only tests: {label}", summary)

# 3. tiny fits per backbone ----------------------------------------------------------------------
tiny = WORK / "tiny"
quietly(zoo, ["collect", "--env", "darkroom", "--num_tasks", "6", "--episodes", "4",
              "--no_progress", "--output", str(tiny)])


def fit_args(root: Path, name: str, *extra: str, steps: int) -> list[str]:
    return [
        f"--data.path={tiny}", "--data.context_episodes=1", "--data.batch_size=4",
        "--data.val_windows=8", f"--model.backbone={preset_path(name, 'tiny')}",
        "--model.warmup_steps=1", f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={max(steps // 2, 1)}", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.logger=false", f"--trainer.default_root_dir={root}",
        f"--trainer.accelerator={ACCELERATOR}", "--trainer.devices=1", *extra,
    ]


def cpu_has_bf16_lstm() -> bool:
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.randn(1, 2, 4))
    except RuntimeError:
        return False
    return True


CARRY = ["--data.carry_state=true", "--data.context_episodes=0.25"]
checkpoints: dict[str, Path] = {}
for name in NAMES:
    carries = type(load_preset(preset_path(name, "tiny")).init_state(1)).batch_dim is not None
    for precision in ("32-true", "bf16-mixed"):
        for carry in (False, True) if carries else (False,):
            label = f"fit {name} {precision}{' carry_state' if carry else ''} ({DEVICE})"
            if not GPU and name == "lstm" and precision == "bf16-mixed" and not cpu_has_bf16_lstm():
                report("skipped: CPU", label, "oneDNN has no bf16 LSTM on this CPU (no AVX-512)")
                continue
            root = WORK / "fits" / f"{name}-{precision}-{int(carry)}"
            extra = [f"--trainer.precision={precision}", *(CARRY if carry else [])]
            try:
                clock = time.perf_counter()
                cli = quietly(make_cli, fit_args(root, name, *extra, steps=args.steps), run=False)
                quietly(cli.trainer.fit, cli.model, cli.datamodule)
                seconds = time.perf_counter() - clock
                loss = float(cli.trainer.callback_metrics["train/loss"])
                on = cli.trainer.strategy.root_device.type
                assert cli.trainer.global_step == args.steps, f"stopped at {cli.trainer.global_step}"
                assert on == DEVICE, f"trained on {on}"
                assert all(torch.isfinite(p).all() for p in cli.model.parameters()), "weights"
                assert loss == loss and abs(loss) != float("inf"), f"loss {loss}"
                report("PASS", label, f"{args.steps} steps in {seconds:.1f} s, loss {loss:.3f}")
                if precision == "32-true" and not carry:
                    checkpoints[name] = root / "checkpoints" / "last.ckpt"
            except Exception as e:
                report("FAIL", label, failure(e))

# 4. a resume from --ckpt_path -------------------------------------------------------------------
import lightning.pytorch as pl  # noqa: E402


class Killed(Exception):
    pass


class Kill(pl.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise Killed


resume_name = "linear_attention" if "linear_attention" in NAMES else NAMES[0]
label = f"resume --ckpt_path {resume_name} carry_state token_mask 0.3 ({DEVICE})"
try:
    half = args.steps // 2
    extra = [*CARRY, "--model.token_mask=0.3"]
    if type(load_preset(preset_path(resume_name, "tiny")).init_state(1)).batch_dim is None:
        extra = ["--model.token_mask=0.3"]
    straight = quietly(make_cli, fit_args(WORK / "straight", resume_name, *extra,
                                          steps=args.steps), run=False)
    quietly(straight.trainer.fit, straight.model, straight.datamodule)
    killed = quietly(make_cli, fit_args(WORK / "killed", resume_name, *extra, steps=args.steps),
                     run=False)
    killed.trainer.callbacks.append(Kill(half + 1))
    with contextlib.suppress(Killed):
        quietly(killed.trainer.fit, killed.model, killed.datamodule)
    ckpt = WORK / "killed" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == half, f"checkpoint at step {saved['global_step']}"
    argv = ["fit", *fit_args(WORK / "resumed", resume_name, *extra, steps=args.steps),
            f"--ckpt_path={ckpt}"]
    assert quietly(zoo, argv) == 0, "zoo fit --ckpt_path failed"
    resumed = torch.load(WORK / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == args.steps, f"resumed to {resumed['global_step']}"
    reference = straight.model.state_dict()
    diff = max((resumed["state_dict"][k].float().cpu() - v.float().cpu()).abs().max().item()
               for k, v in reference.items())
    exact = diff == 0.0
    ok = exact or (GPU and diff < 1e-3)  # GPU kernels need not be bitwise deterministic
    report("PASS" if ok else "FAIL", label,
           f"step {half} -> {args.steps}; " + ("weights equal to the uninterrupted run's" if exact
           else f"max |weight difference| {diff:.2e} against the uninterrupted run"))
except Exception as e:
    report("FAIL", label, failure(e))

# 5. zoo evaluate ---------------------------------------------------------------------------------
for name in NAMES:
    label = f"zoo evaluate --device {DEVICE} {name}"
    if name not in checkpoints:
        report("skipped", label, "no 32-true checkpoint (its fit failed)")
        continue
    out = WORK / "eval" / name
    argv = ["evaluate", str(checkpoints[name]), f"--device={DEVICE}", "--episodes=3", "--tasks=4",
            "--source_episodes=0", f"--out={out}"]
    try:
        clock = time.perf_counter()
        assert quietly(zoo, argv) == 0, "zoo evaluate failed"
        summary = json.loads((out / "returns.json").read_text())["summary"]
        report("PASS", label, f"{time.perf_counter() - clock:.1f} s, return final "
               f"{summary['return_final']:.2f}")
    except Exception as e:
        report("FAIL", label, failure(e))
if not GPU:
    report("skipped: no GPU", "zoo evaluate --device cuda", "evaluated with --device cpu above")

# 5b. a two-trial sweep with two workers (one device each; on a GPU node, one GPU per worker) -----
label = f"zoo sweep: 2 trials, 2 workers ({ACCELERATOR})"
try:
    import yaml

    study = {
        "study": "ablation", "name": "gpu_check", "size": "tiny",
        "storage": f"journal://{WORK / 'sweep' / 'study.journal'}",
        "records": str(WORK / "sweep" / "records"),
        "experiment": str(WORK / "sweep" / "experiment.yaml"),
        "backbones": ["gru", "transformer"], "context_episodes": [1.0], "seeds": [0],
        "fit": {"trainer": {"max_steps": 10, "val_check_interval": 5,
                            "accelerator": ACCELERATOR}},
        "evaluation": {"episodes": 2, "final_episodes": 1, "seeds": [0]},
        "runs_dir": str(WORK / "sweep" / "runs"),
    }  # fmt: skip
    (WORK / "sweep").mkdir(parents=True, exist_ok=True)
    (WORK / "sweep" / "experiment.yaml").write_text(yaml.safe_dump({
        "model": {"backbone": str(preset_path("gru", "tiny")), "warmup_steps": 1},
        "data": {"path": str(tiny), "context_episodes": 1, "batch_size": 4, "val_windows": 8},
        "trainer": {"logger": False, "enable_progress_bar": False},
    }))  # fmt: skip
    (WORK / "sweep" / "study.yaml").write_text(yaml.safe_dump(study))
    clock = time.perf_counter()
    done = run([sys.executable, "-m", "cli", "sweep", "run", "--config",
                str(WORK / "sweep" / "study.yaml"), "--workers", "2"])  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-400:]
    records = [json.loads(f.read_text()) for f in (WORK / "sweep" / "records").rglob("*.json")]
    states = sorted(r["state"] for r in records)
    assert states == ["COMPLETE", "COMPLETE"], f"records: {states}"
    assert all(r["settings"]["trainer"]["devices"] == 1 for r in records)
    report("PASS", label, f"{time.perf_counter() - clock:.1f} s, one device per trial")
except Exception as e:
    report("FAIL", label, failure(e))

# 6. throughput at 100k, GPU against CPU ---------------------------------------------------------
if args.no_throughput:
    report("skipped", "throughput at 100k", "--no-throughput")
elif not GPU:
    report("skipped: no GPU", "training throughput at 100k (GPU against CPU)")
    report("skipped: no GPU", "evaluation throughput at 100k (GPU against CPU)")
else:
    data = WORK / "darkroom"
    quietly(zoo, ["collect", "--env", "darkroom", "--num_tasks", "10", "--histories_per_task", "2",
                  "--episodes", "40", "--no_progress", "--output", str(data)])
    spec = importlib.util.spec_from_file_location("train_throughput",
                                                  ROOT / "bench" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in NAMES:
        label = f"training throughput {name} 100k"
        measured = {}
        try:
            for accelerator, threads in (("gpu", 2), ("cpu", args.cpu_threads)):
                options = argparse.Namespace(
                    data=str(data), steps=args.throughput_steps, warmup=3, threads=threads,
                    compile="false", set=[], accelerator=accelerator)
                measured[accelerator] = bench.measure_in_child(name, "100k", options)
            gpu, cpu = measured["gpu"], measured["cpu"]
            rate = {k: r.tokens_per_step / (r.fit_ms / 1000) for k, r in measured.items()}
            report("PASS", label, f"gpu {rate['gpu']:,.0f} tokens/s ({gpu.fit_ms:.1f} ms fit, "
                   f"{gpu.bare_ms:.1f} ms bare), cpu {args.cpu_threads} threads "
                   f"{rate['cpu']:,.0f} tokens/s ({cpu.fit_ms:.1f} ms): "
                   f"{rate['gpu'] / rate['cpu']:.1f}x")
        except BaseException as e:  # measure_in_child raises SystemExit on a failed child
            report("FAIL", label, failure(e))
    line = re.compile(r"^(\S+)\s+(stream|window)\s+([\d,]+) steps/s")
    rates: dict[str, dict[tuple[str, str], float]] = {}
    for device in ("cuda", "cpu"):
        done = run([sys.executable, "bench/evaluate.py", "--size", "100k", "--device", device,
                    "--backbones", *NAMES])
        rates[device] = {
            (m[1], m[2]): float(m[3].replace(",", ""))
            for m in map(line.match, done.stdout.splitlines()) if m
        }
        if done.returncode != 0:
            report("FAIL", f"evaluation throughput ({device})", done.stderr.strip()[-300:])
    for name in NAMES:
        for mode in ("stream", "window"):
            gpu, cpu = rates["cuda"].get((name, mode)), rates["cpu"].get((name, mode))
            label = f"evaluation throughput {name} 100k {mode}"
            if gpu is None or cpu is None:
                report("FAIL", label, f"not measured (gpu {gpu}, cpu {cpu})")
            else:
                report("PASS", label, f"gpu {gpu:,.0f} env steps/s, cpu {cpu:,.0f}: "
                       f"{gpu / cpu:.1f}x (16 tasks x 3 episodes, context 80)")

print(f"gpu_check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['skipped']} skipped "
      f"in {time.perf_counter() - started:.0f} s ({'GPU' if GPU else 'no GPU'})", flush=True)
sys.exit(1 if counts["FAIL"] else 0)
PYTHON
