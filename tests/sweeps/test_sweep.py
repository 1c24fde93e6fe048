"""`zoo sweep` end to end at tiny sizes: a grid runs every point exactly once, with one or two
workers, on SQLite and PostgreSQL; a worker killed mid-trial leaves a study the next sweep finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from cli import main as zoo
from envs import make_family
from sweeps.study import grid_progress, open_storage

ROOT = Path(__file__).resolve().parents[2]
GRID = {"backbone": ["gru", "transformer"], "context_episodes": [1.0, 2.0], "seed": [0]}


def study_config(tmp_path: Path, experiment: Path, **extra: object) -> Path:
    config = {
        "study": "ablation",
        "name": "tiny",
        "experiment": str(experiment),
        "size": "tiny",
        "backbones": GRID["backbone"],
        "context_episodes": GRID["context_episodes"],
        "seeds": GRID["seed"],
        "evaluation": {"episodes": 2, "final_episodes": 1, "seeds": [0, 1]},
        "runs_dir": str(tmp_path / "runs"),
        **extra,
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sweep(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "sweep", "run", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished(process: subprocess.Popen[str], timeout: float = 400) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def assert_grid_done_once(storage: str) -> optuna.Study:
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
    trained = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    complete = [t for t in trained if t.state == optuna.trial.TrialState.COMPLETE]
    points = [
        (t.params["backbone"], t.params["context_episodes"], t.params["seed"]) for t in complete
    ]
    assert sorted(points) == sorted(
        (b, c, s) for b in GRID["backbone"] for c in GRID["context_episodes"] for s in GRID["seed"]
    )  # every grid point complete exactly once
    for t in complete:
        assert t.user_attrs["parameters"] > 0 and t.user_attrs["train_tokens_per_s"] > 0
        assert t.user_attrs["fit_command"].startswith("zoo fit --config")
        assert len(t.user_attrs["curve"]) == 2 and Path(t.user_attrs["eval_dir"]).is_dir()
        assert t.value == pytest.approx(t.user_attrs["return_final"])
        assert_test_played_once_per_seed(t)
    assert grid_progress(study, GRID)["done"] == 4
    return study


def assert_test_played_once_per_seed(trial: optuna.trial.FrozenTrial) -> None:
    """The selected checkpoint played every test goal exactly once under each evaluation seed,
    and that checkpoint is the one chosen on the validation return."""
    pool = make_family("darkroom").sample_tasks("test", 16, seed=0)
    assert trial.user_attrs["eval_seeds"] == [0, 1] and trial.user_attrs["test_tasks"] == len(pool)
    step = trial.user_attrs["selected_step"]
    for seed in (0, 1):
        played = Path(trial.user_attrs["run_dir"]) / f"test-step{step}-seed{seed}/returns.json"
        result = json.loads(played.read_text())
        assert sorted(map(tuple, result["tasks"])) == sorted(map(tuple, pool.tolist()))
        assert result["checkpoint"] == str(Path(trial.user_attrs["checkpoint"]).resolve())
    assert Path(trial.user_attrs["checkpoint"]).parent.name == "selected"
    assert trial.user_attrs["selected_step"] <= trial.user_attrs["steps_trained"]
    assert trial.user_attrs["budget_capped"] is True  # 3 steps of 3, no early stopping


def test_two_workers_split_the_grid_without_duplicates(tmp_path: Path, experiment: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = study_config(tmp_path, experiment)
    out = finished(sweep("--config", str(config), "--storage", storage, "--workers", "2"))
    study = assert_grid_done_once(storage)
    assert len(study.trials) == 4  # no duplicate was even started
    assert "trials: 4 complete" in out
    command = ["sweep", "status", "--config", str(config), "--storage", storage]
    status = subprocess.run(
        [sys.executable, "-m", "cli", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert "'done': 4" in status.stdout and "transformer" in status.stdout


def test_killed_worker_leaves_a_study_the_next_sweep_finishes(
    tmp_path: Path, experiment: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = study_config(tmp_path, experiment)
    fast = ["--heartbeat", "1", "--grace", "4"]
    worker = sweep("--config", str(config), "--storage", storage, *fast)
    study_url = open_storage(storage)
    deadline = time.monotonic() + 120
    # wait until the worker is inside a trial: its objective has started (and so its heartbeat)
    while not list((tmp_path / "runs").glob("tiny/trial-*/spec.json")):
        if time.monotonic() > deadline:
            pytest.fail("the worker never started a trial")
        time.sleep(0.2)
    study = optuna.load_study(study_name="tiny", storage=study_url)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its trial's child process
    worker.wait()
    running = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert running, "the killed trial is left RUNNING"
    finished(sweep("--config", str(config), "--storage", storage, *fast))
    study = assert_grid_done_once(storage)
    killed = study.trials[running[0].number]
    assert killed.state == optuna.trial.TrialState.FAIL  # failed by its heartbeat, then retried


def test_postgresql_storage(tmp_path: Path, experiment: Path, postgres_url: str) -> None:
    config = study_config(tmp_path, experiment)
    finished(sweep("--config", str(config), "--storage", postgres_url, "--workers", "2"))
    assert_grid_done_once(postgres_url)


def test_config_typo_is_one_clear_error(
    tmp_path: Path, experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = study_config(tmp_path, experiment, bakbones=["gru"])
    assert zoo(["sweep", "run", "--config", str(config), "--storage", "sqlite:///:memory:"]) == 2
    assert "bakbones" in capsys.readouterr().err
    config = study_config(tmp_path, experiment, backbones=["nope"])
    assert zoo(["sweep", "run", "--config", str(config), "--storage", "sqlite:///:memory:"]) == 2
    assert "nope" in capsys.readouterr().err


def test_grid_options_replace_the_configs_axes(
    tmp_path: Path, experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    config = str(study_config(tmp_path, experiment))
    axes = ["--backbones", "transformer", "--context_episodes", "1", "--seeds", "3"]
    finished(sweep("--config", config, "--storage", storage, "--name", "one", *axes))
    (trial,) = optuna.load_study(study_name="one", storage=open_storage(storage)).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.params == {"backbone": "transformer", "context_episodes": 1.0, "seed": 3}
    # status counts the grid the study ran, not the config file's
    assert zoo(["sweep", "status", "--config", config, "--storage", storage, "--name", "one"]) == 0
    assert (
        "'done': 1, 'running': 0, 'waiting': 0, 'failed': 0, 'todo': 0" in capsys.readouterr().out
    )
    # a bad value is the config's own one-line error, before any trial starts
    run = ["sweep", "run", "--config", config, "--storage", storage, "--name", "two"]
    assert zoo([*run, "--backbones", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert zoo([*run, "--context_episodes", "0"]) == 2
    assert "context_episodes must be > 0" in capsys.readouterr().err
    tune = str(ROOT / "configs/sweeps/darkroom_tune.yaml")
    assert zoo(["sweep", "run", "--config", tune, "--storage", storage, "--seeds", "1"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert "two" not in optuna.get_all_study_names(storage=open_storage(storage))


@pytest.mark.parametrize(
    "config", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_study_configs_load(config: Path) -> None:
    from sweeps.study import load_spec

    spec = load_spec(str(config), kind=None, name=None, storage=None)
    assert spec.name in (config.stem, f"{config.stem}_{getattr(spec.config, 'backbone', '')}")
    if spec.kind == "ablation":  # every trial selects on validation goals, then plays test once
        from sweeps.study import STUDY_KINDS

        # a grid point is never pruned by comparison with the others
        assert isinstance(STUDY_KINDS["ablation"].pruner(spec.config), optuna.pruners.NopPruner)
        if not spec.config.evaluation.test:  # a check: validation goals only, by a scale
            assert spec.config.scales and not spec.config.evaluation.lockbox
            return
        assert len(spec.config.evaluation.seeds) >= 1
        # every held-out task exactly once, where the family has a finite split (the experiment
        # configs are named after their family; bandit arm means are continuous: a sample)
        from envs import make_family

        evaluation = spec.config.evaluation
        family = make_family(Path(spec.config.experiment).stem)
        try:  # a family with an out-of-distribution split is scored on it (the bandit)
            family.sample_tasks("ood", 1, seed=0)
            assert evaluation.split == "ood"
        except ValueError:
            assert evaluation.split == "test"
        if family.split_size(evaluation.split) is None:
            assert evaluation.tasks is not None and evaluation.tasks >= 100
        else:
            assert evaluation.tasks is None


def test_a_pruned_trial_stops_its_child(tmp_path: Path, experiment: Path) -> None:
    """The worker reports the child's validation returns to the study and stops the child when
    the pruner says so; the child itself never opens the study."""
    from backbones.presets import preset_path
    from sweeps.trial import EvaluationSettings, run_trial

    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    study = optuna.create_study(
        study_name="pruned",
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(lower=1e9),  # every reported value is too low
    )

    def objective(trial: optuna.Trial) -> float:
        return run_trial(
            trial,
            experiment=str(experiment),
            backbone_preset=str(preset_path("gru", "tiny")),
            context_episodes=1,
            seed=0,
            overrides=[{"trainer": {"max_steps": 400, "val_check_interval": 1}}],
            evaluation=EvaluationSettings(episodes=1, final_episodes=1, seeds=[0]),
            runs_dir=str(tmp_path / "runs"),
        )

    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert 1 in trial.intermediate_values  # the first validation, at step 1, was reported
    run_dir = Path(trial.user_attrs["run_dir"])
    assert not (run_dir / "result.json").exists()  # stopped long before its 400 steps
    # a pruned trial's record says what code it ran too (the child wrote it as it started)
    assert json.loads((run_dir / "record.json").read_text())["code"]["packages"]["torch"]


def _open_after(barrier: Any, url: str, results: Any) -> None:
    from sweeps.study import open_storage

    barrier.wait()  # both processes create the fresh database at the same moment
    try:
        open_storage(url)
        results.put("ok")
    except Exception as error:  # the race lost: what the main job's first run hit
        results.put(str(error))


def test_two_workers_creating_a_fresh_database_at_once_both_open_it(tmp_path: Path) -> None:
    """`make run` starts two workers on a new SQLite file: one may lose the race to create a
    table ("table studies already exists"); `open_storage` retries until the schema is there."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    outcomes = []
    for attempt in range(20):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_open_after, args=(barrier, url, results)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        outcomes += [results.get(timeout=10), results.get(timeout=10)]
    assert outcomes == ["ok"] * 40, [o for o in outcomes if o != "ok"]


def test_a_validation_only_grid_scales_each_backbones_tuned_setting(
    tmp_path: Path, experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scales: {model.lr: [...]}`: each point trains at the factor times the backbone's tuned
    rate; a protocol without test plays only validation goals; the report marks the best factor."""
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "gru.yaml").write_text(yaml.safe_dump({"model": {"lr": 0.004}}))
    config = study_config(
        tmp_path,
        experiment,
        backbones=["gru"],
        context_episodes=[1.0],
        tuned=str(tuned),
        scales={"model.lr": [0.5, 1.0]},
        evaluation={"episodes": 2, "final_episodes": 1, "test": False},
        records=str(tmp_path / "records"),
    )
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    finished(sweep("--config", str(config), "--storage", storage))
    records = sorted((tmp_path / "records" / "tiny").glob("trial-*.json"))
    trained = {}
    for path in records:
        record = json.loads(path.read_text())
        assert record["kind"] == "ablation" and record["state"] == "COMPLETE"
        assert "test" not in record and "lockbox" not in record  # validation goals only
        trained[record["axes"]["model.lr:scale"]] = record["settings"]["model"]["lr"]
    assert trained == {0.5: pytest.approx(0.002), 1.0: pytest.approx(0.004)}
    out = tmp_path / "report"
    assert zoo(["report", "--records", str(tmp_path / "records"), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "## Validation only: runs that played no held-out split" in markdown
    assert "| model.lr:scale |" in markdown
    assert markdown.count("| best |") == 2  # the header, and the one factor with the best mean
    assert "| best | factor 1: within 10% of the best? |" in markdown  # the header
    assert "| holds |" in markdown or "| does not hold |" in markdown  # factor 1's row, read
    # a setting with no number to scale is the config's one-line error, before any trial
    bad = study_config(tmp_path, experiment, scales={"model.weight_decay": [2.0]})
    assert zoo(["sweep", "run", "--config", str(bad), "--storage", storage, "--name", "x"]) == 2
    assert "has no number to scale for gru" in capsys.readouterr().err


def test_a_scale_keeps_whole_numbers_whole_and_refuses_what_the_trial_sets(
    experiment: Path,
) -> None:
    from sweeps.ablation import AblationConfig

    config = AblationConfig(
        experiment=str(experiment),
        backbones=["gru"],
        context_episodes=[1.0],
        scales={"data.batch_size": [0.5, 3.0]},
    )
    assert config.scaled("data.batch_size", "gru", 0.5) == 2  # 4 x 0.5, an int
    assert isinstance(config.scaled("data.batch_size", "gru", 3.0), int)
    for path in ("data.context_episodes", "data.seed", "trainer.max_steps", "model.backbone.x"):
        with pytest.raises(ValueError, match="is not a setting a factor can scale"):
            AblationConfig(
                experiment=str(experiment),
                backbones=["gru"],
                context_episodes=[1.0],
                scales={path: [2.0]},
            )
