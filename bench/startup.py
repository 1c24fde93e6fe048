"""Benchmark: what a process of the zoo pays before it does anything, the imports.

    .venv/bin/python bench/startup.py                  # 5 fresh processes per row
    .venv/bin/python bench/startup.py --runs 9
    git worktree add /tmp/before COMMIT && .venv/bin/python bench/startup.py --checkout /tmp/before

Every sweep trial is a child process (`sweeps.child`), every `zoo` command and many tests are one:
their imports are paid again each time. Each row starts a fresh interpreter that imports one set
of modules and prints its own import seconds (the interpreter's start is not in them); the table
gives the median and range over the runs, and which heavy optional libraries the set pulled in.
Run it alone: on a loaded machine the seconds stretch. `--checkout DIR` imports another checkout's
code (an older commit's) with this environment, to compare two commits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "trial child (backbones, zoo.training, sweeps.child)": "backbones, zoo.training, sweeps.child",
    "torch + lightning alone": "torch, lightning.pytorch",
    "a transformer built from its preset": "backbones.presets",
}
BUILD = {"a transformer built from its preset": "transformer"}
HEAVY = ("fla", "mamba_ssm", "x_transformers", "lightning", "optuna", "triton")

PROBE = """
import json, sys, time
start = time.perf_counter()
import {modules}
{build}
seconds = time.perf_counter() - start
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps({{"seconds": seconds, "heavy": heavy}}))
"""


def probe(modules: str, build: str | None, checkout: Path) -> dict:
    code = PROBE.format(
        modules=modules,
        build=(
            "from backbones.presets import load_preset, preset_path\n"
            f"load_preset(preset_path({build!r}, 'tiny'))"
            if build
            else ""
        ),
        heavy=HEAVY,
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per row")
    parser.add_argument(
        "--checkout", type=Path, default=ROOT, help="whose code (default: this one)"
    )
    args = parser.parse_args()
    print(f"code: {args.checkout.resolve()}")
    print(f"{'imports':55s} {'median s':>9s} {'min':>6s} {'max':>6s}  heavy libraries imported")
    for name, modules in SETS.items():
        probe(modules, BUILD.get(name), args.checkout)  # warm the file cache
        runs = [probe(modules, BUILD.get(name), args.checkout) for _ in range(args.runs)]
        seconds = [r["seconds"] for r in runs]
        print(
            f"{name:55s} {statistics.median(seconds):9.2f} {min(seconds):6.2f} "
            f"{max(seconds):6.2f}  {', '.join(runs[-1]['heavy'])}"
        )


if __name__ == "__main__":
    main()
