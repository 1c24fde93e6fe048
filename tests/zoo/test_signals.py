"""A stopped command says so: SIGTERM and Ctrl-C (SIGINT) end `zoo fit` with 143 and 130 and one
line, never with 0 (a scheduler or a script would take the run as finished), and keep the
checkpoints already written. The signal is sent after a file event (the first checkpoint), not
after a sleep."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("sent", "code", "said"), [(signal.SIGTERM, 143, "SIGTERM"),
                                                      (signal.SIGINT, 130, "SIGINT")])  # fmt: skip
def test_a_stopped_fit_exits_non_zero_with_one_line(
    sent: signal.Signals,
    code: int,
    said: str,
    tmp_path: Path,
    six_task_dataset: Path,
    tiny_fit_args: Callable[..., list[str]],
) -> None:
    args = tiny_fit_args(six_task_dataset, tmp_path / "run", max_steps=100_000, every=2)
    fit = subprocess.Popen(
        [sys.executable, "-m", "cli", "fit", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 180
    while not list((tmp_path / "run").rglob("*.ckpt")):
        assert fit.poll() is None, fit.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    kept = sorted((tmp_path / "run").rglob("*.ckpt"))
    fit.send_signal(sent)
    _, err = fit.communicate(timeout=120)
    assert fit.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("zoo fit: stopped by") and said in last
    # nothing already written is lost: each checkpoint there at the signal is still there, or the
    # best-by-validation one was rotated out by a better one written after it (its top-1 rule)
    after = sorted((tmp_path / "run").rglob("*.ckpt"))
    for path in kept:
        assert path.is_file() or any(
            _best_step(p) >= _best_step(path) > -1 and p.parent == path.parent for p in after
        ), (path, after)
    for path in after:  # and each one there is whole
        assert torch.load(path, map_location="cpu", weights_only=False)["global_step"] >= 0


def _best_step(path: Path) -> int:
    """N of a `best-stepN-...` checkpoint, -1 for any other."""
    match = re.match(r"best-step(\d+)-", path.name)
    return int(match.group(1)) if match else -1


def parser():  # a command of this module's own, for the test below
    from cli import Parser

    command = Parser(prog="zoo interrupted-write")
    command.add_argument("how", nargs="?", default="int")
    return command


def run(config, argv):
    """A Ctrl-C or a SIGTERM in the middle of torch.save: its zip writer raises its own error
    while the interrupt is being handled."""
    from zoo.errors import Terminated

    try:
        raise Terminated("signal 15") if argv == ["term"] else KeyboardInterrupt
    except (KeyboardInterrupt, Terminated):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None


@pytest.mark.parametrize(("how", "code", "said"), [([], 130, "SIGINT"), (["term"], 143, "SIGTERM")])
def test_a_write_cut_by_a_signal_is_the_signal(how, code, said, monkeypatch, capsys) -> None:
    """The race behind a rare failure of the test above: the signal lands inside a checkpoint
    write and surfaces as the writer's error; it is still a stop (130 or 143, one line)."""
    import cli
    from cli import Command, main

    monkeypatch.setitem(cli.COMMANDS, "interrupted-write", Command(__name__, "a test command"))
    assert main(["interrupted-write", *how]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("zoo interrupted-write: stopped by") and said in err[0]
    )
