"""Bad input gets one clear line and exit code 2, never a traceback, and loses nothing written.

One test per class of damaged input a user can hand the zoo: dataset content that passes the size
check, checkpoints (missing, truncated, foreign, mismatched on resume), argument values, typos,
a diverging run; plus a fuzz test over a tiny dataset: every damage is refused with one line, or
the data that would train is exactly the original's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import main as zoo
from datamodules import reader, storage
from datamodules.history import HistoryDataModule
from datamodules.reader import open_dataset
from datamodules.storage import MANIFEST, SHARD_META, DatasetError, sha256_of
from zoo.errors import UsageError


def collect(path: Path, *extra: str) -> Path:
    args = ["--env", "darkroom", "--num_tasks", "6", "--episodes", "4", "--num_shards", "2"]
    assert zoo(["collect", *args, "--no_progress", "--output", str(path), *extra]) == 0
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collect(tmp_path_factory.mktemp("data") / "darkroom")


@pytest.fixture(scope="module")
def checkpoint(tiny_fit_args, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    assert zoo(["fit", *tiny_fit_args(dataset, root)]) == 0
    return root / "checkpoints" / "last.ckpt"


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `zoo argv`, assert exit code 2 with one error line (a `--help` hint at most) and no
    traceback; return the error line."""
    capsys.readouterr()
    assert zoo(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("zoo")]
    assert len(ours) == 1, err
    hints = [line for line in err.splitlines() if line.startswith("see `zoo")]
    assert len(err.strip().splitlines()) <= 1 + len(hints) + 1, err  # Lightning's "Seed set"
    return ours[0]


def rewrite(root: Path, shard: int, key: str, array: np.ndarray) -> None:
    """Replace one array of a shard *and* its checksums, as code other than `zoo collect` would:
    the damage only a content check can see."""
    name = storage.shard_name(shard)
    path = root / name / f"{key}.npy"
    np.save(path, array.astype(storage.DTYPES[key]), allow_pickle=False)
    meta = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["shards"][shard]["files"][path.name].update(meta)
    storage.write_json_atomic(root / MANIFEST, manifest)
    record = json.loads((root / name / SHARD_META).read_text())
    record["files"][path.name].update(meta)
    storage.write_json_atomic(root / name / SHARD_META, record)


def copy_of(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


# ------------------------------------------------------------------------- dataset content
def test_flipped_bytes_in_a_shard_are_refused_before_training(
    tiny_fit_args, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_of(dataset, tmp_path)
    path = data / "shard-00001" / "observations.npy"
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x01  # stays a valid observation: only the checksum can tell
    path.write_bytes(bytes(raw))
    line = refused(["fit", *tiny_fit_args(data, tmp_path / "runs")], capsys)
    assert f"{path}: sha256 checksum mismatch" in line
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("key", "damage", "fault"),
    [
        ("rewards", lambda a: np.where(np.arange(len(a)) == 5, np.nan, a), "rewards[5] is nan"),
        ("rewards", lambda a: np.where(np.arange(len(a)) == 3, np.inf, a), "rewards[3] is inf"),
        ("observations", lambda a: np.where(np.arange(len(a)) == 2, 81, a), "outside [0, 81)"),
        ("actions", lambda a: np.where(np.arange(len(a)) == 0, -1, a), "actions[0] = -1"),
        ("learning_curve", lambda a: a * np.nan, "not finite"),
        ("done", lambda a: np.zeros_like(a), "does not end with the end of an episode"),
        ("episode", lambda a: a[::-1], "go backwards"),
    ],
)
def test_values_the_env_cannot_produce_are_refused(
    tiny_fit_args, key: str, damage, fault: str, dataset: Path, tmp_path: Path, capsys
) -> None:
    data = copy_of(dataset, tmp_path)
    original = np.load(data / "shard-00000" / f"{key}.npy")
    rewrite(data, 0, key, damage(original))
    open_dataset(data, verify="checksum")  # the checksums agree: only the values are wrong
    line = refused(["fit", *tiny_fit_args(data, tmp_path / "runs")], capsys)
    assert f"shard-00000/{key}.npy" in line and fault in line
    assert not (tmp_path / "runs").exists()


def test_checksums_are_verified_once_and_remembered(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = copy_of(dataset, tmp_path)
    monkeypatch.setattr(reader.ChecksumMemo, "RACY_SECONDS", 0.0)
    hashed: list[Path] = []
    monkeypatch.setattr(reader, "sha256_of", lambda p: hashed.append(p) or sha256_of(p))
    open_dataset(data, verify="checksum")
    files = len(list(data.glob("shard-*/*.npy")))
    assert len(hashed) == files
    open_dataset(data, verify="checksum")
    assert len(hashed) == files  # remembered: nothing hashed again
    path = data / "shard-00000" / "rewards.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x40
    path.write_bytes(bytes(raw))  # same size, new content: its identity changed
    with pytest.raises(DatasetError, match="sha256 checksum mismatch"):
        open_dataset(data, verify="checksum")
    assert hashed[-1] == path


def test_a_just_written_file_is_not_remembered(dataset: Path, tmp_path: Path) -> None:
    data = copy_of(dataset, tmp_path)  # copied just now: inside the racy window
    open_dataset(data, verify="checksum")
    assert not (data / storage.VERIFIED).exists()


# ---------------------------------------------------------------------------- checkpoints
def bad_checkpoint(kind: str, tmp_path: Path, checkpoint: Path) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:4096])
    elif kind == "not_torch":
        path.write_text("model: gru\n")
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    return path  # "missing": never written


CHECKPOINT_FAULTS = {
    "missing": "no checkpoint file here",
    "truncated": "not a readable checkpoint",
    "not_torch": "not a readable checkpoint",
    "foreign": "not a checkpoint of `zoo fit`",
}


@pytest.mark.parametrize("kind", sorted(CHECKPOINT_FAULTS))
def test_a_bad_checkpoint_is_one_line_in_evaluate_and_resume(
    tiny_fit_args, kind: str, dataset: Path, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    path = bad_checkpoint(kind, tmp_path, checkpoint)
    line = refused(["evaluate", str(path), f"--out={tmp_path / 'eval'}"], capsys)
    assert str(path) in line and CHECKPOINT_FAULTS[kind] in line
    line = refused(
        ["fit", *tiny_fit_args(dataset, tmp_path / "runs"), f"--ckpt_path={path}"], capsys
    )
    assert str(path) in line and CHECKPOINT_FAULTS[kind] in line
    assert not (tmp_path / "eval").exists() and not (tmp_path / "runs").exists()


def test_resuming_on_the_data_of_another_env_is_refused(
    tiny_fit_args, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    args = ["--env", "key_to_door", "--num_tasks", "4", "--episodes", "2", "--no_progress"]
    assert zoo(["collect", *args, "--output", str(tmp_path / "k2d")]) == 0
    argv = ["fit", *tiny_fit_args(tmp_path / "k2d", tmp_path / "runs"), f"--ckpt_path={checkpoint}"]
    line = refused(argv, capsys)
    assert "trained on env 'darkroom', the data at" in line and "'key_to_door'" in line


def test_resuming_on_another_collection_of_the_same_env_is_refused(
    tiny_fit_args, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    other = collect(tmp_path / "other", "--seed", "7")
    argv = ["fit", *tiny_fit_args(other, tmp_path / "runs"), f"--ckpt_path={checkpoint}"]
    assert "trained on another collection of 'darkroom'" in refused(argv, capsys)


def test_a_checkpoint_of_an_older_backbone_config_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """A GRU checkpoint written before `num_layers` became `depth` names the rename."""
    state = torch.load(checkpoint, weights_only=True)
    init_args = state["hyper_parameters"]["backbone"]["init_args"]
    init_args["num_layers"] = init_args.pop("depth")
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    line = refused(["evaluate", str(old), f"--out={tmp_path / 'eval'}"], capsys)
    assert str(old) in line and "`num_layers` is `depth`" in line
    assert not (tmp_path / "eval").exists()


def test_a_checkpoint_is_loaded_without_running_pickled_code(checkpoint: Path) -> None:
    torch.load(checkpoint, weights_only=True)  # what `zoo evaluate` and resuming rely on


# ------------------------------------------------------------------- values, typos, divergence
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--data.batch_size=-3", "data.batch_size must be >= 1, got -3"),
        ("--data.val_fraction=1.5", "data.val_fraction must be in [0, 1)"),
        ("--model.lr=-1", "model.lr must be > 0"),
        ("--trainer.max_steps=-5", "max_steps"),
        ("--data.batch_size=many", 'Parser key "data.batch_size"'),
        ("--model.backbone.init_args.hiden_size=8", "Option 'hiden_size' is not accepted"),
        ("--trainer.callbacks+=zoo.evaluation.InContextEvaluation", None),
    ],
)
def test_a_bad_option_value_is_one_line(
    tiny_fit_args, option: str, message: str | None, dataset: Path, tmp_path: Path, capsys
) -> None:
    extra = [option] if message else [option, "--trainer.callbacks.episodes=0"]
    line = refused(["fit", *tiny_fit_args(dataset, tmp_path / "runs"), *extra], capsys)
    assert (message or "episodes must be >= 1, got 0") in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "x.ckpt", "--episode=3"],
        ["data", "inf", "somewhere"],
        ["report", "--out", "r", "--reps", "3", "--results", "."],
        ["backbones", "--size", "huge"],
        ["collect", "--num_taskss", "3"],
        ["sweep", "run", "--config"],
    ],
)
def test_every_command_reports_a_typo_in_one_line(argv: list[str], capsys) -> None:
    line = refused(argv, capsys)
    assert line.startswith(f"zoo {argv[0]}: error: ")


def test_the_debug_switch_shows_the_traceback(
    tiny_fit_args, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["fit", *tiny_fit_args(dataset, tmp_path / "runs"), "--data.batch_size=-3"]
    with pytest.raises(UsageError, match="batch_size"):
        zoo(["--debug", *argv])
    monkeypatch.setenv("ZOO_DEBUG", "1")
    with pytest.raises(UsageError, match="batch_size"):
        zoo(argv)


def test_a_diverging_run_stops_with_one_line(
    tiny_fit_args, dataset: Path, tmp_path: Path, capsys
) -> None:
    argv = ["fit", *tiny_fit_args(dataset, tmp_path / "runs"), "--model.lr=1e30"]
    assert "training diverged" in refused([*argv, "--model.warmup_steps=0"], capsys)


# -------------------------------------------------------------- nothing written is ever lost
def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content and modification time of every file, but the checksum memo (a cache that any
    reader may extend)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != storage.VERIFIED
    }


def test_refused_commands_leave_everything_as_it_was(
    tiny_fit_args, dataset: Path, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    work = tmp_path / "work"
    data = Path(shutil.copytree(dataset, work / "data"))
    run = Path(shutil.copytree(checkpoint.parent.parent, work / "run"))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert zoo(["evaluate", str(ckpt), "--episodes=1", "--tasks=2", f"--out={work / 'eval'}"]) == 0
    (work / "report").mkdir()
    (work / "report" / "index.html").write_text("<p>an earlier report</p>\n")
    damaged = Path(shutil.copytree(dataset, tmp_path / "damaged"))
    rewards = np.load(damaged / "shard-00001" / "rewards.npy")
    rewrite(damaged, 1, "rewards", np.full_like(rewards, np.nan))
    before = snapshot(work)

    commands = [
        # another collection into an existing dataset (no --overwrite)
        ["collect", "--env", "darkroom", "--num_tasks", "5", "--output", str(data)],
        ["fit", *tiny_fit_args(damaged, run), f"--ckpt_path={ckpt}"],
        ["fit", *tiny_fit_args(data, run), "--model.lr=0"],
        ["fit", *tiny_fit_args(data, run), f"--ckpt_path={work / 'eval' / 'returns.json'}"],
        ["evaluate", str(ckpt), "--env=key_to_door", f"--out={work / 'eval'}"],
        ["evaluate", str(work / "eval" / "returns.json"), f"--out={work / 'eval'}"],
        ["report", "--results", str(work / "nowhere"), "--out", str(work / "report")],
        [
            "sweep",
            "run",
            "--config",
            str(work / "missing.yaml"),
            "--storage",
            f"sqlite:///{work}/s.db",
        ],
    ]
    for argv in commands:
        refused(argv, capsys)
    assert snapshot(work) == before


# ----------------------------------------------------------------------------------- fuzzing
def damage_at_random(root: Path, rng: np.random.Generator) -> str:
    """One random damage to a dataset directory; returns what was done."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != storage.VERIFIED)
    kind = rng.choice(["flip", "flip", "truncate", "inject", "inject_consistent", "swap"])
    if kind in ("flip", "truncate"):
        path = files[rng.integers(len(files))]
        raw = bytearray(path.read_bytes())
        if kind == "truncate":
            path.write_bytes(bytes(raw[: rng.integers(len(raw))]))
            return f"truncate {path.name}"
        for at in rng.integers(len(raw), size=rng.integers(1, 4)):
            raw[at] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(raw))
        return f"flip {path.relative_to(root)}"
    if kind.startswith("inject"):
        shard = int(rng.integers(2))
        key = str(rng.choice(["rewards", "learning_curve"]))
        path = root / storage.shard_name(shard) / f"{key}.npy"
        array = np.load(path).copy()
        array.flat[rng.integers(array.size)] = rng.choice([np.nan, np.inf, -np.inf])
        if kind == "inject_consistent":
            rewrite(root, shard, key, array)
        else:
            np.save(path, array, allow_pickle=False)
        return f"{kind} {key}"
    shard = root / storage.shard_name(int(rng.integers(2)))
    first, second = rng.choice(sorted(p.name for p in shard.glob("*.npy")), 2, replace=False)
    (shard / first).rename(shard / "tmp")
    (shard / second).rename(shard / first)
    (shard / "tmp").rename(shard / second)
    return f"swap {first} {second}"


def first_batch(path: Path) -> dict[str, torch.Tensor]:
    data = HistoryDataModule(path=str(path), context_len=20, batch_size=16)
    return next(iter(data.train_dataloader()))


def test_fuzz_damaged_datasets_fail_in_one_line_or_train_on_the_original(
    dataset: Path, tmp_path: Path
) -> None:
    expected = first_batch(dataset)
    original = open_dataset(dataset).to_histories()
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "identical": 0}
    for case in range(40):
        root = Path(shutil.copytree(dataset, tmp_path / f"case-{case}"))
        what = damage_at_random(root, rng)
        try:
            batch = first_batch(root)
        except (DatasetError, ValueError) as error:  # the CLI prints these as one line
            assert "\n" not in str(error).strip(), what
            outcomes["refused"] += 1
            continue
        loaded = open_dataset(root).to_histories()
        for key in ("observations", "actions", "rewards", "done", "episode", "offsets"):
            np.testing.assert_array_equal(getattr(loaded, key), getattr(original, key), what)
        for key, value in expected.items():
            torch.testing.assert_close(batch[key], value, msg=what)
        outcomes["identical"] += 1
    assert outcomes["refused"] >= 30, outcomes  # most damage is to data, which is refused


def test_an_output_folder_that_cannot_be_written_is_refused_before_evaluating(
    checkpoint: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any work (a path under a file stands in for a read-only folder: the tests
    run as root, whom permissions do not stop); a disk that fills up while the outputs are
    written keeps the evaluation in a file it names."""
    from zoo import evaluation

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    played = []
    real = evaluation.evaluate_checkpoint
    monkeypatch.setattr(evaluation, "evaluate_checkpoint", lambda *a, **k: played.append(1))
    line = refused(["evaluate", str(checkpoint), f"--out={blocker / 'eval'}"], capsys)
    assert "cannot write to --out" in line and "nothing was evaluated" in line and not played
    monkeypatch.setattr(evaluation, "evaluate_checkpoint", real)

    def full(result: dict, out: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluation, "write_outputs", full)
    argv = ["evaluate", str(checkpoint), "--episodes=1", "--tasks=2", f"--out={tmp_path / 'e'}"]
    line = refused(argv, capsys)
    kept = Path(line.split("the evaluation is kept in ")[1].split(" ")[0])
    assert "No space left on device" in line and json.loads(kept.read_text())["returns"]
    kept.unlink()
