"""The study protocol at tiny sizes: training seeds that vary the data's seed and play under
evaluation seeds of their own, the best-validation checkpoint within each training budget played
on the test split, any config path as a grid axis, one record per trial, and the report's budget
rankings, Kendall's tau and validation peaks, the same from the records as from the study."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from cli import main as zoo
from sweeps.trial import EvaluationSettings

ROOT = Path(__file__).resolve().parents[2]


def sweep(*args: str) -> str:
    """`zoo sweep run ARGS` as a worker process; its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", "sweep", "run", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_evaluation_seeds_differ_between_training_seeds_unless_paired() -> None:
    settings = EvaluationSettings(seeds=[0, 1, 2])
    assert settings.eval_seeds(0) == [0, 1, 2]
    assert settings.eval_seeds(1) == [1000, 1001, 1002]
    assert not set(settings.eval_seeds(1)) & set(settings.eval_seeds(2))
    paired = EvaluationSettings(seeds=[0, 1, 2], paired=True)
    assert paired.eval_seeds(0) == paired.eval_seeds(4) == [0, 1, 2]
    with pytest.raises(ValueError, match="budgets must be >= 1"):
        EvaluationSettings(budgets=[0])


def test_each_sweep_worker_takes_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cli.sweep import _one_gpu_per_worker

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _one_gpu_per_worker(5)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")  # the user's choice stands
    _one_gpu_per_worker(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,2"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, experiment: Path) -> Path:
    root = tmp_path_factory.mktemp("protocol")
    # the study's data: a lockbox carved out of the training goals before collection
    tiny = ["--env", "darkroom", "--env_params", '{"lockbox_fraction": 0.1, "lockbox_seed": 1}']
    tiny += ["--num_tasks", "4", "--histories_per_task", "2", "--episodes", "6"]
    assert zoo(["collect", *tiny, "--no_progress", "--output", str(root / "data")]) == 0
    config = {
        "study": "ablation",
        "name": "tiny_budgets",
        "storage": f"journal://{root / 'study.journal'}",
        "records": str(root / "records"),
        "experiment": str(experiment),
        "size": "tiny",
        "backbones": ["gru", "transformer"],
        "context_episodes": [1.0],
        "seeds": [0, 1],
        "axes": {"data.train_tasks": [2]},
        # the study's schedule: warm-up, stable, decay, each budget below the cap a branch that
        # decays from its own point (budget 3 from step 1, ending between validations; 4 from 2)
        "fit": {
            "trainer": {"max_steps": 6, "val_check_interval": 2},
            "model": {"schedule": "wsd", "cooldown": 0.5, "min_lr_ratio": 0.0},
            "data": {"path": str(root / "data")},
        },
        "evaluation": {
            "episodes": 2,
            "final_episodes": 1,
            "seeds": [0, 1],
            "budgets": [3, 4],
            "lockbox": True,
        },
        "runs_dir": str(root / "runs"),
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    sweep("--config", str(path))
    return root


def records(root: Path) -> list[dict]:
    files = sorted((root / "records" / "tiny_budgets").glob("trial-*.json"))
    return [json.loads(f.read_text()) for f in files]


def test_every_trial_leaves_one_record_with_its_axes_budgets_and_test_plays(
    tiny_study: Path,
) -> None:
    found = records(tiny_study)
    assert len(found) == 4 and {r["state"] for r in found} == {"COMPLETE"}
    # seed-major: both seed-0 points before any seed-1 point
    assert [r["axes"]["seed_everything"] for r in sorted(found, key=lambda r: r["trial"])] == [
        0, 0, 1, 1,
    ]  # fmt: skip
    for record in found:
        seed = record["axes"]["seed_everything"]
        assert record["axes"]["data.train_tasks"] == 2  # a config path as an axis...
        assert record["settings"]["data"]["train_tasks"] == 2  # ...reached `zoo fit`
        assert record["settings"]["data"]["seed"] == seed == record["settings"]["seed_everything"]
        assert record["settings"]["trainer"]["devices"] == 1  # never DDP over a node's GPUs
        assert record["protocol"]["eval_seeds"] == ([0, 1] if seed == 0 else [1000, 1001])
        assert record["steps_trained"] == 6 and record["budget_capped"] is True
        assert [s for s, _ in record["validation"]["curve"]] == [2, 4, 6]
        budgets = record["budgets"]
        assert sorted(budgets, key=int) == ["3", "4", "6"]
        # each budget below the cap: its own decay, validated where it ends (3: between the
        # validations every 2 steps, so validated once more at its end)
        assert [[s for s, _ in record["branches"][b]] for b in ("3", "4")] == [[2, 3], [4]]
        assert record["branch_steps"] == 2 + 2
        for budget, chosen in budgets.items():
            assert chosen["step"] <= int(budget)
            if "branch_from" in chosen:  # the branch's validation beat the run's before it
                assert chosen["branch_from"] < chosen["step"] and budget != "6"
            assert chosen["test"]["step"] == chosen["step"]
            assert sorted(chosen["test"]["by_seed"]) == [
                str(s) for s in record["protocol"]["eval_seeds"]
            ]
        assert "branch_from" in budgets["3"]  # no validation before its branch point
        assert record["test"] == budgets["6"]["test"]
        # the cap's checkpoint on the lockbox too: its 8 goals, none a test goal (nor a training
        # goal: tests/envs/test_envs.py)
        lockbox, test = record["lockbox"], record["test"]
        assert lockbox["split"] == "lockbox" and lockbox["step"] == test["step"]
        assert sorted(lockbox["by_seed"]) == sorted(test["by_seed"])
        first = str(record["protocol"]["eval_seeds"][0])
        goals = {tuple(g) for g in lockbox["by_seed"][first]["tasks"]}
        assert len(goals) == 8 and not goals & {tuple(g) for g in test["by_seed"][first]["tasks"]}
        selected = Path(record["commands"]["fit"].split()[-1]).parent / "selected"
        kept = {p.name for p in selected.glob("step*.ckpt")}
        own = {f"step{c['step']}.ckpt" for c in budgets.values() if "branch_from" not in c}
        assert kept == own  # no orphan checkpoint
        # the code that made it: this checkout's commit and the packages' versions
        from sweeps.provenance import code_version

        here = code_version()
        assert record["code"]["commit"] == here["commit"]
        assert record["code"]["packages"]["torch"] == here["packages"]["torch"]
        assert {p.name for p in selected.glob("branch-step*.ckpt")} == {
            "branch-step1.ckpt",
            "branch-step2.ckpt",
        }


def test_the_report_from_records_matches_the_report_from_the_study(tiny_study: Path) -> None:
    storage = f"journal://{tiny_study / 'study.journal'}"
    from_records, from_study = tiny_study / "report_records", tiny_study / "report_study"
    assert zoo(["report", "--records", str(tiny_study / "records"), "--out", str(from_records),
                "--reps", "200"]) == 0  # fmt: skip
    assert zoo(["report", "--storage", storage, "--study", "tiny_budgets", "--out",
                str(from_study), "--reps", "200"]) == 0  # fmt: skip
    for table in ("summary", "budget_ranking", "budget_kendall_tau", "validation_peaks"):
        a = pd.read_csv(from_records / "tables" / f"{table}.csv")
        b = pd.read_csv(from_study / "tables" / f"{table}.csv")
        shared = [c for c in b.columns if c in a.columns and c not in ("peak_rss_mb",)]
        pd.testing.assert_frame_equal(a[shared], b[shared], check_dtype=False)
    ranking = pd.read_csv(from_records / "tables" / "budget_ranking.csv")
    assert sorted(ranking["budget"].unique()) == [3, 4, 6]
    tau = pd.read_csv(from_records / "tables" / "budget_kendall_tau.csv")
    assert sorted(tau["budget"]) == [3, 4] and set(tau["against"]) == {6}
    peaks = pd.read_csv(from_records / "tables" / "validation_peaks.csv")
    assert len(peaks) == 4 and (peaks["peak_val"] >= peaks["final_val"]).all()
    summary = pd.read_csv(from_records / "tables" / "summary.csv")
    assert summary["iqm_lockbox_fraction"].notna().all()  # the lockbox beside the test split
    assert (summary["data.train_tasks"] == 2).all()  # the study's further axis, its own column
    page = (from_records / "report.md").read_text()
    assert "Ranking at each training budget" in page and "Validation peak against final" in page
    assert "lockbox: of optimal" in page
    # the same study's records again, against themselves: every cell the same, to the digit
    assert zoo(["report", "--records", str(tiny_study / "records"), "--against",
                str(tiny_study / "records"), "--out", str(tiny_study / "again"),
                "--reps", "200"]) == 0  # fmt: skip
    against = pd.read_csv(tiny_study / "again" / "tables" / "against.csv")
    assert len(against) == 2 and (against["difference"] == 0).all()
    assert against["within_reference_range"].all()
    assert "Against " in (tiny_study / "again" / "report.md").read_text()
    assert "mean [range over 2]" in page or "range over 2" in page  # 2 seeds: no IQM


def test_a_study_resumed_on_other_data_or_settings_is_refused(
    tmp_path: Path, experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study records its config and its data's fingerprint; a resume that differs in either is
    refused with one line, nothing trained."""
    import signal

    data = tmp_path / "data"
    tiny = ["--env", "darkroom", "--num_tasks", "4", "--histories_per_task", "2", "--episodes", "6"]
    tiny += ["--num_shards", "1", "--no_progress"]
    for seed in (0, 1):
        assert (
            zoo(["collect", *tiny, "--seed", str(seed), "--output", str(tmp_path / f"d{seed}")])
            == 0
        )
    data.symlink_to(tmp_path / "d0")
    fit = yaml.safe_load(experiment.read_text())
    fit["data"]["path"] = str(data)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(fit))
    config = {
        "study": "ablation",
        "name": "resumed",
        "storage": f"journal://{tmp_path / 'study.journal'}",
        "experiment": str(tmp_path / "experiment.yaml"),
        "size": "tiny",
        "backbones": ["gru"],
        "context_episodes": [1.0],
        "evaluation": {"episodes": 2},
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "study.yaml"

    def start(**changes: object) -> int:
        path.write_text(yaml.safe_dump({**config, **changes}))
        handler = signal.getsignal(signal.SIGTERM)
        try:
            return zoo(["sweep", "run", "--config", str(path), "--n_trials", "0"])
        finally:
            signal.signal(signal.SIGTERM, handler)

    assert start() == 0 and start(runs_dir=str(tmp_path / "elsewhere")) == 0  # same study
    # a study recorded before a setting existed (at any depth) ran at its default: the same study
    from sweeps.study import open_storage

    study = optuna.load_study(study_name="resumed", storage=open_storage(config["storage"]))
    identity = study.user_attrs["identity"]
    del identity["config"]["evaluation"]["lockbox"]  # what a study of yesterday recorded
    study.set_user_attr("identity", identity)
    assert start() == 0
    capsys.readouterr()
    assert start(evaluation={"episodes": 3}) == 2  # another protocol
    assert "was run with other settings (evaluation differ)" in capsys.readouterr().err
    data.unlink()
    data.symlink_to(tmp_path / "d1")  # the data re-collected differently, in place
    assert start() == 2
    err = capsys.readouterr().err
    assert "another collection of its data" in err and len(err.strip().splitlines()) == 1
    data.unlink()
    data.symlink_to(tmp_path / "d0")
    fit["model"]["lr"] = 0.01  # the experiment file edited under the same name
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(fit))
    assert start() == 2
    err = capsys.readouterr().err
    assert "other contents of its files (experiment)" in err


def test_a_worker_stopped_by_sigterm_fails_its_trial(tmp_path: Path, experiment: Path) -> None:
    """A journal has no heartbeat: a worker stopped by SIGTERM must fail its running trial itself
    (and exit 143), or the study would wait for it forever."""
    import signal
    import time

    import optuna

    from sweeps.study import open_storage

    storage = f"journal://{tmp_path / 'study.journal'}"
    config = {
        "study": "ablation",
        "name": "stopped",
        "storage": storage,
        "experiment": str(experiment),
        "size": "tiny",
        "backbones": ["gru"],
        "context_episodes": [1.0],
        "fit": {"trainer": {"max_steps": 100_000, "val_check_interval": 2}},
        "evaluation": {"episodes": 2},
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli", "sweep", "run", "--config", str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    # the trial is training (its first validation reported), not writing the journal
    while not list((tmp_path / "runs").glob("stopped/trial-*/intermediate.txt")):
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the trial never validated"
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("zoo sweep: stopped by SIGTERM")
    study = optuna.load_study(study_name="stopped", storage=open_storage(storage))
    assert [t.state for t in study.trials][:1] == [optuna.trial.TrialState.FAIL]


def test_a_ddp_trial_selects_plays_and_records_once(tmp_path: Path, experiment: Path) -> None:
    """A study whose `fit:` asks for DDP (here 2 CPU processes) trains on every rank, but only
    rank 0 reports validations, plays the test split and writes the record."""
    config = {
        "study": "ablation",
        "name": "ddp",
        "storage": f"journal://{tmp_path / 'study.journal'}",
        "records": str(tmp_path / "records"),
        "experiment": str(experiment),
        "size": "tiny",
        "backbones": ["gru"],
        "context_episodes": [1.0],
        "fit": {
            "trainer": {
                "max_steps": 4,
                "val_check_interval": 2,
                "devices": 2,
                "strategy": "ddp",
                "accelerator": "cpu",
            }
        },
        "evaluation": {"episodes": 2, "final_episodes": 1, "seeds": [0]},
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    sweep("--config", str(path))
    (record,) = records_in(tmp_path / "records" / "ddp")
    assert record["state"] == "COMPLETE" and record["settings"]["trainer"]["devices"] == 2
    run_dir = tmp_path / "runs" / "ddp" / "trial-0000"
    lines = (run_dir / "intermediate.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["2", "4"]  # each validation reported once
    assert sorted(p.name for p in run_dir.glob("test-step*")) == [
        f"test-step{record['test']['step']}-seed0"
    ]


def records_in(folder: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(folder.glob("trial-*.json"))]


def test_a_point_recorded_twice_counts_once(tiny_study: Path, tmp_path: Path) -> None:
    """A trial whose worker stopped after its record was written is run again: the report counts
    the point's first complete record, and marks the other as its duplicate."""
    from reporting.data import load_records

    records = Path(shutil.copytree(tiny_study / "records", tmp_path / "records"))
    folder = records / "tiny_budgets"
    again = json.loads((folder / "trial-0000.json").read_text())
    again["trial"] = 9
    (folder / "trial-0009.json").write_text(json.dumps(again))
    runs = load_records(records)
    assert len(runs) == 5
    assert runs.set_index("trial").loc[9, "state"] == "DUPLICATE of 0"
    assert (runs["state"] == "COMPLETE").sum() == 4


def test_behind_a_switch_each_training_seed_trains_on_its_own_collection(
    tmp_path: Path, experiment: Path
) -> None:
    collect = {"env": "darkroom", "num_tasks": 4, "histories_per_task": 2, "episodes": 6}
    collect["output"] = str(tmp_path / "data" / "darkroom")
    (tmp_path / "collect.yaml").write_text(yaml.safe_dump(collect))
    config = {
        "study": "ablation",
        "name": "per_seed_data",
        "storage": f"journal://{tmp_path / 'study.journal'}",
        "records": str(tmp_path / "records"),
        "experiment": str(experiment),
        "backbones": ["gru"],
        "context_episodes": [1.0],
        "seeds": [0, 1],
        "collection": str(tmp_path / "collect.yaml"),
        "evaluation": {"episodes": 2, "final_episodes": 1, "seeds": [0], "test": False},
        "runs_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    sweep("--config", str(tmp_path / "study.yaml"))
    found = sorted((tmp_path / "records" / "per_seed_data").glob("trial-*.json"))
    paths = {}
    for record in (json.loads(f.read_text()) for f in found):
        assert record["state"] == "COMPLETE"
        paths[record["seed"]] = Path(record["settings"]["data"]["path"])
    assert paths == {s: tmp_path / "data" / f"darkroom-seed{s}" for s in (0, 1)}
    manifests = [json.loads((p / "manifest.json").read_text()) for p in paths.values()]
    assert [m["config"]["seed"] for m in manifests] == [0, 1]
    assert manifests[0]["fingerprint"] != manifests[1]["fingerprint"]


def test_the_progress_line_costs_what_is_left_from_the_committed_records(
    tiny_study: Path, tmp_path: Path
) -> None:
    from sweeps.progress import measured, planned_steps, progress_line
    from sweeps.study import load_spec

    spec = load_spec(str(tiny_study / "study.yaml"), kind=None, name=None, storage=None)
    shutil.copytree(tiny_study / "records", tmp_path / "study")  # as committed: <pace>/study
    trials = measured(tmp_path)
    assert len(trials) == 4 and all(t.seconds > 0 for t in trials)
    # what a grid trial trains: the cap, 6, and the decay branches of budgets 3 and 4 (2 each)
    assert planned_steps(spec, "gru") == 10 == trials[0].steps
    line = progress_line([spec], workers=2, trials=trials)
    assert "grid 4/4 trials; about 0.0 h left on 2 worker(s) at the pace of 4 committed" in line
    # a study no worker has created yet: each point at its backbone's step time at its context
    # (the tiny trials' seconds taken as hours, so the sum shows in the line's one decimal)
    fresh = dataclasses.replace(spec, name="not_started")
    hours = [dataclasses.replace(t, seconds=t.seconds * 3600) for t in trials]
    line = progress_line([fresh], workers=2, trials=hours)
    expected = sum(t.seconds for t in trials) / 2  # two trials of each backbone, two workers
    said = re.search(r"grid 0/4 trials; about ([0-9.]+) h left", line)
    # to its one decimal (a sum in another order may round 54.95 either way)
    assert expected > 1 and said and abs(float(said[1]) - expected) <= 0.05 + 1e-9, line
    assert "grid: 4 by its backbone's step time at its context" in line
    # nothing committed to go by: no number that looks like an estimate
    line = progress_line([fresh], workers=2, trials=[])
    assert "an unknown time left (4 trials, nothing committed to cost them by)" in line


def test_the_study_script_says_where_the_study_stands_and_starts_nothing(tmp_path: Path) -> None:
    """`scripts/study.sh status`: the progress line of every stage, from storages under STORE
    (none created yet: nothing finished) at the committed records' pace; no data collected, no
    worker started."""
    venv = Path(sys.executable).parent
    env = {**os.environ, "STORE": str(tmp_path / "store"), "PY": sys.executable}
    env["ZOO"] = str(venv / "zoo")
    run = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 600}
    done = subprocess.run(["bash", "scripts/study.sh", "status"], **run)
    assert done.returncode == 0, done.stderr
    assert "tuning 0/96, check 0/48, grid 0/120, ED 0/40 trials" in done.stdout
    assert "workers of" not in done.stdout and not (tmp_path / "store").exists()
    wrong = subprocess.run(["bash", "scripts/study.sh", "stauts"], **run)
    assert wrong.returncode == 2 and "unknown stage 'stauts'" in wrong.stderr


def test_a_trial_is_costed_by_the_nearest_committed_trials() -> None:
    from sweeps.progress import Measured, Todo, estimate

    def trial(study: str, backbone: str, context: float, steps: int, seconds: float) -> Measured:
        return Measured(study, study.startswith("tune"), backbone, context, steps, seconds)

    trials = [
        trial("tune_gru", "gru", 8.0, 3000, 300.0),
        trial("tune_gru", "gru", 8.0, 6000, 900.0),
        trial("tune_lstm", "lstm", 8.0, 6000, 1500.0),
        trial("grid", "gru", 8.0, 6900, 1380.0),
    ]
    # tuning: its backbone's mean trial, else every tuning trial's
    tuning = "its backbone's tuning trials"
    assert estimate(Todo("tune_gru", "gru", None), trials) == (600.0, 600.0, tuning)
    every = "every tuning trial"
    assert estimate(Todo("tune_mamba", "mamba", None), trials) == (900.0, 900.0, every)
    # a grid cell with trials of its own: their mean
    own = "its cell's own trials"
    assert estimate(Todo("grid", "gru", 8.0, 6900), trials) == (1380.0, 1380.0, own)
    # ED's cell: the backbone's step time at its context (2580 s over 15900 steps) x its steps
    low, high, rule = estimate(Todo("ed", "gru", 8.0, 6900), trials)
    assert low == high == pytest.approx(2580 / 15900 * 6900)
    assert rule == "its backbone's step time at its context"
    # a shorter context with nothing committed: a range, the longer context's step time at most
    # and its tokens at least
    low, high, rule = estimate(Todo("grid", "gru", 2.0, 6900), trials)
    assert high == pytest.approx(2580 / 15900 * 6900) and low == pytest.approx(high / 4)
    assert rule == "its backbone's step time at a longer context"
    # a backbone with nothing committed: every backbone's step time at its context
    low, high, rule = estimate(Todo("grid", "mamba", 8.0, 6900), trials)
    assert low == high == pytest.approx(4080 / 21900 * 6900)
    assert rule == "every backbone's step time at its context"
    # its own step time at a longer context comes before every backbone's at its own
    at_2 = [*trials, trial("check", "lstm", 2.0, 6000, 240.0)]
    rule = estimate(Todo("grid", "gru", 2.0, 6900), at_2)[2]
    assert rule == "its backbone's step time at a longer context"
    # nothing at its context or a longer one of its own: a range from every backbone's
    low, high, rule = estimate(Todo("grid", "mamba", 0.5, 6900), trials)
    assert high == pytest.approx(4080 / 21900 * 6900) and low == pytest.approx(high / 16)
    assert rule == "every backbone's step time at a longer context"
    assert estimate(Todo("grid", "gru", 8.0, 6900), []) is None
    assert estimate(Todo("grid", "mamba", 8.0, 0), trials) is None  # no cap to price steps by


def test_every_shipped_study_is_counted_in_its_own_stage() -> None:
    from sweeps.progress import stage_of
    from sweeps.study import load_spec

    stages = {
        "darkroom_tune.yaml": "tuning",
        "darkroom_context_check.yaml": "check",
        "darkroom_study.yaml": "grid",
        "darkroom_study_ed.yaml": "ED",
    }
    for name, stage in stages.items():
        config = str(ROOT / "configs" / "sweeps" / name)
        backbone = "gru" if "tune" in name else None
        spec = load_spec(config, kind=None, name=None, storage=None, backbone=backbone)
        assert stage_of(spec) == stage, name


def test_the_study_reports_no_run_on_the_seed_its_settings_were_tuned_on() -> None:
    """At 8 episodes the tuning's training seed on the tuned settings is the tuning's own chosen
    run, the best of 12 on its validation goals: the study's results come from other seeds, and
    the check of the settings at other contexts from other validation goals."""
    from sweeps.study import load_spec

    for name in ["darkroom_study.yaml", "darkroom_study_ed.yaml", "darkroom_context_check.yaml"]:
        study = load_spec(str(ROOT / "configs" / "sweeps" / name), kind=None, name=None,
                          storage=None).config  # fmt: skip
        assert len(study.seeds) == (1 if "check" in name else 5)
        assert study.seeds_tuned_on() == {}  # what the tuned files record...
        for backbone in study.backbones:  # ...and the seed each tuning trains on
            tuning = load_spec(str(ROOT / "configs/sweeps/darkroom_tune.yaml"), kind=None,
                               name=None, storage=None, backbone=backbone).config  # fmt: skip
            assert tuning.seed not in study.seeds, (name, backbone)


def test_a_committed_trial_reruns_from_its_record_to_the_digit(
    tiny_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command the report prints for a record (the recurrent member's and the
    transformer's): the same validation curve, budget choices, decay branches, test and lockbox
    returns, from the record alone."""
    from reporting.data import load_records

    runs = load_records(tiny_study / "records")
    seed_0 = runs[runs["seed"] == 0]
    assert sorted(seed_0["backbone"]) == ["gru", "transformer"]
    for command in seed_0["rerun_command"]:
        assert command.startswith("zoo sweep rerun ")
        record, out = command.split()[3], tmp_path / Path(command.split()[3]).stem
        assert zoo(["sweep", "rerun", record, "--out", str(out)]) == 0
        assert "repeated to the digit" in capsys.readouterr().out
    # a changed result is said, key by key
    changed = json.loads(Path(record).read_text())
    changed["budgets"]["6"]["val"] += 1
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert (
        zoo(["sweep", "rerun", str(tmp_path / "changed.json"), "--out", str(tmp_path / "b")]) == 1
    )
    assert "differs in budgets.6.val" in capsys.readouterr().out


def test_ed_plays_the_lockbox_without_a_source_learner(tmp_path: Path, experiment: Path) -> None:
    """ED's expert data comes from no learner: its lockbox play has no source curve to show, and
    the trial completes (the study's ED runs beside the grid with `lockbox: true`)."""
    lockbox = '{"lockbox_fraction": 0.1, "lockbox_seed": 1}'
    tiny = ["--env", "darkroom", "--env_params", lockbox, "--num_tasks", "4", "--expert", "true"]
    tiny += ["--histories_per_task", "2", "--episodes", "6", "--no_progress"]
    assert zoo(["collect", *tiny, "--output", str(tmp_path / "expert")]) == 0
    config = {
        "study": "ablation",
        "name": "ed_lockbox",
        "storage": f"journal://{tmp_path / 'study.journal'}",
        "records": str(tmp_path / "records"),
        "experiment": str(experiment),
        "backbones": ["gru"],
        "context_episodes": [1.0],
        "fit": {"data": {"mode": "ed", "path": str(tmp_path / "expert")}},
        "evaluation": {"episodes": 2, "final_episodes": 1, "seeds": [0], "lockbox": True},
        "runs_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    sweep("--config", str(tmp_path / "study.yaml"))
    (found,) = (tmp_path / "records" / "ed_lockbox").glob("trial-*.json")
    record = json.loads(found.read_text())
    assert record["state"] == "COMPLETE" and record["lockbox"]["source"] is None
