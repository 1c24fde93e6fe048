"""`zoo collect` and `zoo data info` end to end at tiny sizes: resume, shard-parallel determinism,
interruption, and one-line errors (exit 2) that leave an existing dataset untouched."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli import collect as collect_cli
from cli import main as zoo
from datamodules.reader import open_dataset
from datamodules.storage import MANIFEST, DatasetError
from envs.collection import kept_episodes
from envs.learners import LEARNERS
from zoo import collection as collect_cmd

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "collect").glob("*.yaml"))
TINY = ["--env", "darkroom", "--num_tasks", "3", "--histories_per_task", "2", "--episodes", "6"]
TINY += ["--keep_every", "2", "--num_shards", "3", "--no_progress"]


def run(*argv: str) -> int:
    return zoo(["collect", *TINY, *argv])


def digests(root: Path) -> dict[str, str]:
    """sha256 of every data file, by path relative to the dataset."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.npy"))
    }


def test_collect_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert run("--output", str(out)) == 0
    dataset = open_dataset(out, verify="checksum")
    assert dataset.num_histories == 6 and dataset.num_tasks == 3
    assert dataset.learning_curves.shape == (6, 6)
    np.testing.assert_array_equal(np.bincount(dataset.task_index), [2, 2, 2])
    for history in dataset:
        np.testing.assert_array_equal(np.unique(history.episode), kept_episodes(6, 2))
        assert history.done[-1]
        np.testing.assert_array_equal(history.task, dataset.tasks[history.task_index])
    assert dataset.manifest.mode == "ad" and "--num_tasks 3" in dataset.manifest.command
    shards = dataset.manifest.shards
    assert [r["first_history"] for r in shards] == [0, 2, 4]
    assert len({(r["env_seed"], r["learner_seed"]) for r in shards}) == 3
    defaults = dataclasses.asdict(LEARNERS["q_learning"].Params())
    assert dataset.manifest.learner_params == defaults  # the learner's defaults, spelled out
    capsys.readouterr()
    assert zoo(["data", "info", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "histories   6" in text and "of optimal" in text and "checksums" in text


def test_resume_recollects_only_missing_or_damaged_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    assert run("--output", str(out)) == 0
    before = digests(out)
    shutil.rmtree(out / "shard-00001")
    (out / "shard-00002" / "rewards.npy").write_bytes(b"damaged")
    with pytest.raises(DatasetError):
        open_dataset(out)
    capsys.readouterr()
    assert run("--output", str(out)) == 0
    assert "collected 2 shard(s), reused 1" in capsys.readouterr().out
    assert digests(out) == before  # shard s depends on config, seed and s only
    assert run("--output", str(out)) == 0
    assert "collected 0 shard(s), reused 3" in capsys.readouterr().out


def test_shards_written_separately_equal_one_run(tmp_path: Path) -> None:
    assert run("--output", str(tmp_path / "one")) == 0
    assert run("--output", str(tmp_path / "split"), "--only_shards", "[2]") == 0
    assert not (tmp_path / "split" / MANIFEST).exists()
    assert run("--output", str(tmp_path / "split"), "--only_shards", "[0, 1]") == 0
    assert digests(tmp_path / "split") == digests(tmp_path / "one")
    assert open_dataset(tmp_path / "split").num_histories == 6


def test_interrupted_collection_is_unfinished_then_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    real_write = collect_cmd.write_shard
    calls = []

    def write_then_die(root: Path, *, index: int, **kwargs: object) -> dict:
        calls.append(index)
        if len(calls) == 2:
            (root / f".shard-{index:05d}.tmp-dead").mkdir()  # what a killed writer leaves
            raise KeyboardInterrupt
        return real_write(root, index=index, **kwargs)

    monkeypatch.setattr(collect_cmd, "write_shard", write_then_die)
    assert run("--output", str(out)) == 130  # Ctrl-C: one line, a non-zero exit
    with pytest.raises(DatasetError, match="unfinished"):
        open_dataset(out)
    monkeypatch.setattr(collect_cmd, "write_shard", real_write)
    assert run("--output", str(out)) == 0
    assert open_dataset(out, verify="checksum").num_histories == 6
    assert not list(out.glob(".*"))


def test_a_full_disk_is_one_line_keeps_whole_shards_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import datamodules.storage as storage

    out = tmp_path / "ds"
    real_save, saved = np.save, []

    def fills_up(file: object, array: np.ndarray, **kwargs: object) -> None:
        saved.append(1)
        if len(saved) > len(storage.DTYPES):  # the second shard's first file: the disk is full
            raise OSError(28, "No space left on device", str(out / "shard-00001"))
        real_save(file, array, **kwargs)

    monkeypatch.setattr(storage.np, "save", fills_up)
    assert run("--output", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device (free space" in err
    assert [p.name for p in out.iterdir() if p.name.startswith(".shard")] == []  # no half shard
    monkeypatch.undo()
    assert run("--output", str(out)) == 0  # the space freed: the rest is collected
    assert "reused 1 already complete" in capsys.readouterr().out
    assert open_dataset(out, verify="checksum").num_histories == 6


def test_expert_mode_is_recorded(tmp_path: Path) -> None:
    assert run("--output", str(tmp_path / "ed"), "--expert", "true") == 0
    assert open_dataset(tmp_path / "ed").manifest.mode == "expert"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "nowhere"], "unknown env 'nowhere'"),
        (["--learner_params", "{no_such_param: 1}"], "no_such_param"),
        (["--num_taks", "3"], "num_taks"),
        (["--num_tasks", "three"], "num_tasks"),
        (["--seed", "1"], "different collection (differs in seed)"),
        (["--num_shards", "100"], "exceeds"),
        (["--config", "typo.yaml"], "histories_per_tsk"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_keeps_the_dataset(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("typo.yaml").write_text("histories_per_tsk: 2\n")
    out = tmp_path / "ds"
    assert run("--output", str(out)) == 0
    before = {**digests(out), MANIFEST: (out / MANIFEST).read_text()}
    capsys.readouterr()
    assert run("--output", str(out), *argv) == 2
    error, *hint = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("zoo collect: error:") and message in error
    assert hint in ([], ["see `zoo collect --help` for the options"])
    assert {**digests(out), MANIFEST: (out / MANIFEST).read_text()} == before


def test_overwrite_replaces_a_different_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert run("--output", str(out)) == 0
    assert run("--output", str(out), "--seed", "1", "--overwrite") == 0
    assert open_dataset(out).manifest.seed == 1


def test_a_dataset_from_before_a_new_learner_parameter_is_the_same_collection(
    tmp_path: Path,
) -> None:
    """A parameter added later with a default that keeps the old behaviour (say replay_sweeps: 0)
    leaves older datasets valid: nothing is refused or collected again."""
    out = tmp_path / "ds"
    assert run("--output", str(out)) == 0
    record = json.loads((out / collect_cmd.COLLECTION).read_text())
    new = record["fingerprint"]
    del record["identity"]["learner_params"]["replay_sweeps"]  # as written before it existed
    old = collect_cmd.fingerprint_of(record["identity"])
    for path in out.rglob("*.json"):  # the collection record, every shard's record, the manifest
        path.write_text(path.read_text().replace(new, old))
    (out / collect_cmd.COLLECTION).write_text(json.dumps({**record, "fingerprint": old}))
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert run("--output", str(out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == written  # nothing recollected
    assert open_dataset(out, verify="checksum").num_histories == 6
    assert run("--output", str(out), "--learner_params", "{replay_sweeps: 3}") == 2


def test_output_that_is_not_a_dataset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert run("--output", str(tmp_path), "--overwrite") == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_configs_are_valid(config: Path) -> None:
    parsed = collect_cli.config_of(collect_cli.parser().parse_args(["--config", str(config)]))
    collect_cmd.check_config(parsed)
    assert parsed.output.startswith("data/")


def test_data_info_on_a_missing_dataset_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert zoo(["data", "info", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo data: error:") and "\n" not in err
