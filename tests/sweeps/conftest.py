"""A throw-away PostgreSQL server for the sweep tests, from Debian's package (`make test` installs it).

The server runs as the `postgres` system user when the tests run as root (PostgreSQL refuses root),
listens only on a Unix socket inside the test's temporary directory, and is stopped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cli import main as zoo

ROOT = Path(__file__).resolve().parents[2]


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    bin_dir = _server_binaries()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server not installed (Debian package `postgresql`; make test installs it)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip('psycopg not installed (pip install "psycopg[binary]")')
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="zoo-postgres-"))
    data, socket_dir = root / "data", root / "socket"
    socket_dir.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        prefix = ["runuser", "-u", "postgres", "--"]
        for path in (root, socket_dir):
            shutil.chown(path, "postgres")
    run = lambda *cmd: subprocess.run(  # noqa: E731
        [*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120
    )
    port = 55432 + os.getpid() % 1000
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "zoo", "--no-sync")
        run(
            str(bin_dir / "pg_ctl"),
            "-D", str(data),
            "-l", str(root / "server.log"),
            "-o", f"-k {socket_dir} -p {port} -c listen_addresses='' -c fsync=off",
            "-w", "start",
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {error.stderr.strip().splitlines()[-1:]}")
    try:
        yield f"postgresql://zoo@/postgres?host={socket_dir}&port={port}"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Dark Room dataset and a `zoo fit` config that trains on it for a few steps."""
    root = tmp_path_factory.mktemp("sweep")
    data = root / "data"
    tiny = ["--env", "darkroom", "--num_tasks", "4", "--histories_per_task", "2"]
    tiny += ["--episodes", "6", "--num_shards", "1", "--no_progress", "--output", str(data)]
    assert zoo(["collect", *tiny]) == 0
    config = {
        "trainer": {
            "max_steps": 3,
            "val_check_interval": 3,
            "limit_val_batches": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {"backbone": str(ROOT / "configs/backbone/gru-tiny.yaml"), "warmup_steps": 1},
        "data": {"path": str(data), "context_episodes": 1, "batch_size": 4, "num_workers": 0},
    }
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
