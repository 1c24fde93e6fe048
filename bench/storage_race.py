"""Two processes open one fresh SQLite study database at the same moment, as `make run`'s two
workers do: how many of the opens fail. Prints `failures: k of n opens`.

    .venv/bin/python bench/storage_race.py [CODE_ROOT] [--rounds 20]

CODE_ROOT (default: this checkout) is the tree whose `sweeps.study.open_storage` is used, e.g. a
worktree of an older commit: `git worktree add /tmp/old ca49a93 && ... bench/storage_race.py /tmp/old`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any


def _open(root: str, url: str, barrier: Any, results: Any) -> None:
    sys.path.insert(0, root)
    from sweeps.study import open_storage

    barrier.wait()
    try:
        open_storage(url)
        results.put("ok")
    except Exception as error:
        results.put(str(error).splitlines()[0][:120])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    failures = 0
    for _ in range(args.rounds):
        url = f"sqlite:///{tempfile.mkdtemp()}/fresh.db"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_open, args=(args.root, url, barrier, results)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for outcome in (results.get(), results.get()):
            if outcome != "ok":
                failures += 1
                print(outcome)
    print(f"failures: {failures} of {2 * args.rounds} opens ({args.root})")


if __name__ == "__main__":
    main()
