"""What the checks `zoo fit` runs on a dataset cost: sha256 of every file (first open, then
remembered), the content check of every value, against the size-only open.

    python bench/dataset_checks.py                 # data/darkroom (zoo collect --config configs/collect/darkroom.yaml)
    python bench/dataset_checks.py --data PATH
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from datamodules.reader import check_content, open_dataset
from datamodules.storage import VERIFIED


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/darkroom"))
    args = parser.parse_args()
    (args.data / VERIFIED).unlink(missing_ok=True)  # start from a dataset never verified
    for label in ("first open, every file hashed", "second open, checksums remembered"):
        start = time.perf_counter()
        dataset = open_dataset(args.data, verify="checksum")
        hashed = time.perf_counter() - start
        start = time.perf_counter()
        check_content(dataset)
        content = time.perf_counter() - start
        print(
            f"{label}: checksums {hashed:.2f} s, content check {content:.2f} s "
            f"({dataset.size_bytes() / 2**20:.1f} MiB, {dataset.num_steps:,} steps)"
        )
    start = time.perf_counter()
    open_dataset(args.data)
    print(f"size-only open: {time.perf_counter() - start:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
