"""`zoo report`: builds from Optuna studies (with failed, pruned and duplicate trials) and from a tree
of `zoo evaluate` outputs; every linked figure and table exists; the page loads in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from cli import main as zoo
from reporting.readme import BEGIN, END, ReadmeError, splice
from reporting.readme import main as main_readme
from zoo.evaluation import write_outputs

EPISODES = 6
BACKBONES = ("gru", "transformer")
CONTEXTS = (1.0, 4.0)


def _curve(rng: np.random.Generator, level: float) -> list[float]:
    return list(np.clip(np.linspace(0.2, level, EPISODES) + rng.normal(0, 0.3, EPISODES), 0, None))


def _attrs(rng: np.random.Generator, *, backbone: str, context: float, seed: int) -> dict:
    curve = _curve(rng, 2.0 + 3.0 * np.log2(context + 1) * (backbone == "transformer" or 0.7))
    final = float(np.mean(curve[-2:]))
    return {
        "return_final": final,
        "return_first": curve[0],
        "auc": float(np.mean(curve)),
        "fraction_optimal": final / 15.0,
        "nauc": float(np.mean(curve)) / 15.0,
        "episodes_to_80": EPISODES + 1,
        "optimal": 15.0,
        "selected_step": 50 + 25 * seed,
        "steps_trained": 100 if seed else 75,  # seed 0 stopped early, the others hit the budget
        "max_steps": 100,
        "budget_capped": bool(seed),
        "tuned_from": None,
        "test_tasks": 16,
        "eval_seeds": [0, 1, 2],
        "curve": curve,
        "source_learner": "q_learning",
        "source_curve": _curve(rng, 12.0),
        "source_return_final": 11.5,
        "parameters": 1000 if backbone == "gru" else 1200,
        "parameters_total": 1500,
        "train_tokens_per_s": 5e4 * (1 + seed),
        "eval_steps_per_s": 2e3,
        "peak_rss_mb": 500.0 + 10 * seed,
        "wall_seconds": 12.0,
        "global_step": 100,
        "checkpoint": f"runs/t/{backbone}/last.ckpt",
        "eval_dir": "runs/t/eval",
        "run_dir": "runs/t",
        "fit_command": f"zoo fit --config configs/experiments/darkroom.yaml --seed_everything={seed}",
        "evaluate_command": "zoo evaluate runs/t/last.ckpt --episodes 6",
    }


def _ablation(storage: str, name: str, experiment: str, backbones, seeds, fit=None) -> None:
    rng = np.random.default_rng(len(name))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("kind", "ablation")
    config = {"experiment": experiment, "backbones": list(backbones), "fit": fit or {}}
    study.set_user_attr("config", config)
    space = {
        "backbone": optuna.distributions.CategoricalDistribution(list(backbones)),
        "context_episodes": optuna.distributions.CategoricalDistribution(list(CONTEXTS)),
        "seed": optuna.distributions.CategoricalDistribution(list(seeds)),
    }
    for backbone in backbones:
        for context in CONTEXTS:
            for seed in seeds:
                params = {"backbone": backbone, "context_episodes": context, "seed": seed}
                attrs = _attrs(rng, backbone=backbone, context=context, seed=seed)
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=space,
                        value=attrs["return_final"],
                        user_attrs=attrs,
                    )
                )
    params = {"backbone": backbones[0], "context_episodes": CONTEXTS[0], "seed": seeds[0]}
    failed = {"fit_command": "zoo fit --config x.yaml", "peak_rss_mb": 321.0}
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=space,
            state=optuna.trial.TrialState.FAIL,
            user_attrs=failed,
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=space,
            state=optuna.trial.TrialState.PRUNED,
            user_attrs={"duplicate_of": 0},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=space,
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={10: 0.5},
        )
    )


def _tune(storage: str, name: str, complete: int) -> None:
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("kind", "tune")
    study.set_user_attr("config", {"backbone": "gru", "context_episodes": 4.0, "seed": 0})
    space = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True),
        "warmup_steps": optuna.distributions.CategoricalDistribution([0, 100, 500]),
        "depth": optuna.distributions.CategoricalDistribution([1, 2, 3, 4]),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.2),
    }
    rng = np.random.default_rng(1)
    for number in range(complete):
        params = {
            "lr": float(10 ** rng.uniform(-4, -2.6)),
            "warmup_steps": [0, 100, 500][number % 3],
            "depth": 1 + number % 4,
            "dropout": float(rng.uniform(0, 0.2)),
        }
        value = 5.0 + 1e3 * params["lr"] + rng.normal(0, 0.1)
        attrs = {"return_final": value, "selected_step": 200, "wall_seconds": 30.0}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=space,
                value=value,
                user_attrs=attrs,
                intermediate_values={100: value / 2, 200: value},  # its validations
            )
        )
    if complete > 1:  # and one the pruner stopped at its first validation
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=space,
                state=optuna.trial.TrialState.PRUNED,
                user_attrs={"wall_seconds": 10.0},
                intermediate_values={100: 0.3},
            )
        )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("studies")
    url = f"sqlite:///{root / 'sweeps.db'}"
    _ablation(url, "darkroom_ablation", "configs/experiments/darkroom.yaml", BACKBONES, (0, 1, 2))
    ed = {"data": {"mode": "ed", "path": "data/darkroom_expert"}}  # as configs/sweeps/darkroom_ed
    _ablation(url, "darkroom_ed", "configs/experiments/darkroom.yaml", ("gru",), (0, 1), ed)
    _tune(url, "tune_gru", complete=8)
    _tune(url, "tune_lstm", complete=1)
    return url


def _linked(page: str, pattern: str) -> list[str]:
    return re.findall(pattern, page)


def _check_links(out: Path) -> tuple[str, str]:
    index, markdown = (out / "index.html").read_text(), (out / "report.md").read_text()
    html_links = _linked(index, r"(?:src|href)='([^']+)'")
    md_links = _linked(markdown, r"\]\(([^)]+)\)")
    assert html_links and sorted(set(html_links)) == sorted(set(md_links))
    for link in html_links:
        assert (out / link).is_file() and (out / link).stat().st_size > 0, link
    assert {Path(p).name for p in (out / "figures").iterdir()} <= {Path(p).name for p in html_links}
    return index, markdown


def test_report_from_studies(storage: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    studies = ["--study", "darkroom_ablation", "--study", "darkroom_ed"]
    studies += ["--study", "tune_gru", "--study", "tune_lstm"]
    assert zoo(["report", "--storage", storage, *studies, "--out", str(out), "--reps", "200"]) == 0
    assert str((out / "index.html").resolve()) in capsys.readouterr().out
    index, markdown = _check_links(out)
    for figure in (
        "curves",
        "context",
        "cost",
        "history_tune_gru",
        "importances_tune_gru",
        "history_tune_lstm",
    ):
        assert (out / "figures" / f"{figure}.png").is_file()
    assert not (out / "figures" / "importances_tune_lstm.png").exists()
    assert "tune_lstm: parameter importances need at least 2 complete trials (1 so far)" in markdown

    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert len(summary) == 2 * 2 + 2  # AD: 2 backbones x 2 contexts; ED: gru x 2 contexts
    assert set(summary["seeds"]) == {3, 2}  # failed, pruned and duplicate trials do not count
    ed = summary[summary["data_mode"] == "ed"]
    assert list(ed["label"]) == ["gru (ED)", "gru (ED)"]
    assert (summary["ci_low"] <= summary["iqm_return_final"]).all()
    assert (summary["iqm_return_final"] <= summary["ci_high"]).all()
    assert "gru (ED)" in markdown or "| gru | ED |" in markdown
    # every column means what it says
    ad = summary[summary["data_mode"] == "ad"]
    assert (ad["budget_capped"] == "2/3").all() and (ed["budget_capped"] == "1/2").all()
    assert (ad["selected_step"] == 75).all() and (ad["max_steps"] == 100).all()
    assert set(summary["tuned"]) == {"untuned"}
    assert set(summary["evaluation"]) == {"16 tasks x 3 eval seeds"}
    assert ed["source_return_final"].isna().all()  # ED has no source learner
    assert (ad["source_return_final"] == 11.5).all()
    assert (summary["fraction_ci_low"] <= summary["iqm_fraction_optimal"]).all()
    assert "| gru | ED | 1 | 2 |" in markdown and " - |" in markdown

    trials = pd.read_csv(out / "tables" / "trials.csv")
    assert len(trials) == 12 + 3 + 4 + 3 + 9 + 1  # every trial of every study, listed
    states = trials.groupby("study")["state"].apply(set)
    assert {"FAIL", "PRUNED", "DUPLICATE of 0", "COMPLETE"} == states["darkroom_ablation"]
    assert trials["fit_command"].str.startswith("zoo fit").sum() == 12 + 4 + 2
    curves = pd.read_csv(out / "tables" / "curves.csv")
    assert "source: q_learning" in set(curves["label"])
    assert (out / "tables" / "importances_tune_gru.csv").is_file()
    assert markdown.index("## Summary") < markdown.index("## Every trial")
    assert "DUPLICATE of 0" in index and "FAIL" in index and "PRUNED" in index
    # each tuning study's trials, choice and cost, from the values it reported to the pruner
    tuning = pd.read_csv(out / "tables" / "tuning.csv").set_index("study")
    gru = tuning.loc["tune_gru"]
    assert (gru["finished"], gru["complete"], gru["pruned"], gru["pruned_at"]) == (9, 8, 1, "[100]")
    study = optuna.load_study(study_name="tune_gru", storage=storage)
    assert gru["best_trial"] == study.best_trial.number
    assert gru["best_value"] == pytest.approx(study.best_value)
    assert gru["best_position"] == study.best_trial.number + 1 and gru["best_step"] == 200
    assert gru["worker_seconds"] == 8 * 30.0 + 10.0
    assert (out / "figures" / "tuning_curves.png").is_file()
    assert "## Tuning: trials, choice and cost per backbone" in markdown


def _evaluation(run: Path, *, backbone: str, context_episodes: float, seed: int) -> Path:
    """A run directory as `zoo fit` leaves it (config.yaml beside checkpoints/) and its evaluation
    written by `zoo evaluate`'s own writer; no checkpoint file, as on a machine without the runs."""
    class_path = {"gru": "backbones.rnn.GRUBackbone", "lstm": "backbones.rnn.LSTMBackbone"}[
        backbone
    ]
    run.mkdir(parents=True)
    config = {
        "seed_everything": seed,
        "model": {"backbone": {"class_path": class_path}},
        "data": {"context_len": int(context_episodes * 20), "context_episodes": None, "mode": "ad"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(seed)
    returns = rng.uniform(0, 10 + context_episodes, size=(4, EPISODES))
    optimal = np.full(4, 18.0)
    result = {
        "checkpoint": str(run / "checkpoints" / "last.ckpt"),
        "env": {"name": "darkroom", "params": {}, "episode_len": 20},
        "mode": "stream",
        "split": "test",
        "seed": 0,
        "greedy": False,
        "episodes": EPISODES,
        "tasks": [3, 7, 11, 40],
        "optimal": optimal.tolist(),
        "returns": returns.tolist(),
        "summary": {
            "return_final": float(returns[:, -2:].mean()),
            "return_first": 1.0,
            "auc": 2.0,
            "fraction_optimal": float(returns[:, -2:].mean() / 18.0),
            "optimal": 18.0,
        },
        "source": {
            "learner": "q_learning",
            "episodes": EPISODES,
            "returns": rng.uniform(0, 18, size=(4, EPISODES)).tolist(),
            "summary": {"return_final": 15.0},
        },
    }
    write_outputs(result, run / "eval-stream")
    return run


def test_report_from_results(tmp_path: Path) -> None:
    for backbone in ("gru", "lstm"):
        for context in (1.0, 2.0):
            for seed in (0, 1):
                _evaluation(
                    tmp_path
                    / "runs"
                    / f"{backbone}-{context}-{seed}"
                    / "lightning_logs"
                    / "version_0",
                    backbone=backbone,
                    context_episodes=context,
                    seed=seed,
                )
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "returns.json").write_text("{not json")
    out = tmp_path / "report"
    assert (
        zoo(["report", "--results", str(tmp_path / "runs"), "--out", str(out), "--reps", "200"])
        == 0
    )
    _, markdown = _check_links(out)
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert sorted(zip(summary["backbone"], summary["context_episodes"], strict=True)) == [
        ("gru", 1.0),
        ("gru", 2.0),
        ("lstm", 1.0),
        ("lstm", 2.0),
    ]
    assert set(summary["seeds"]) == {2}
    assert "skipped" in markdown and "broken" in markdown
    trials = pd.read_csv(out / "tables" / "trials.csv")
    assert trials["fit_command"].str.contains("config.yaml").all()
    assert trials["evaluate_command"].str.startswith("zoo evaluate").all()


def test_single_seed_says_no_interval(tmp_path: Path) -> None:
    _evaluation(tmp_path / "runs" / "a" / "v", backbone="gru", context_episodes=1.0, seed=0)
    out = tmp_path / "report"
    assert zoo(["report", "--results", str(tmp_path / "runs"), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "1 seed: no interval" in markdown
    assert "every configuration has 1 seed: no interval can be given" in markdown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "x"], "--study needs --storage"),
        ([], "give --records DIR, --storage URL --study NAME"),
    ],
)
def test_usage_errors(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert zoo(["report", *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


def test_missing_study_and_empty_results_are_one_line_errors(
    storage: str, tmp_path: Path, capsys
) -> None:
    assert (
        zoo(["report", "--storage", storage, "--study", "nope", "--out", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no study 'nope'" in err and "darkroom_ablation" in err
    assert zoo(["report", "--results", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no returns.json under" in capsys.readouterr().err


def test_page_shows_every_image_at_a_readable_size_in_a_headless_browser(
    storage: str, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (Debian package `chromium`; make test installs it)")
    out = tmp_path / "report"
    argv = ["--storage", storage, "--study", "darkroom_ablation", "--study", "tune_gru"]
    assert zoo(["report", *argv, "--out", str(out), "--reps", "200"]) == 0
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,2000",
        "--virtual-time-budget=5000",
        "--dump-dom",
        (out / "index.html").resolve().as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    images = re.findall(r"<img [^>]*>", dom)
    assert len(images) == 6  # context, curves, cost; tune_gru: its trials, history, importances
    assert all('data-loaded="1"' in image for image in images), images
    # drawn at a readable size in a 1280-pixel window: wide, and not shrunk below half its pixels
    for image in images:
        shown = int(re.search(r'data-shown="(\d+)"', image).group(1))
        natural = int(re.search(r'data-natural="(\d+)"', image).group(1))
        assert shown >= 480 and shown >= natural / 2, image


def test_a_tuning_study_alone_and_a_rerun_into_the_same_directory(
    storage: str, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    argv = ["report", "--storage", storage, "--out", str(out), "--reps", "200"]
    assert zoo([*argv, "--study", "darkroom_ablation"]) == 0
    assert zoo([*argv, "--study", "tune_lstm"]) == 0
    _, markdown = _check_links(out)  # the first report's figures and tables are gone
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "history_tune_lstm.png",
        "tuning_curves.png",
    ]
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["trials.csv", "tuning.csv"]
    assert "No complete ablation trial or evaluation to summarise: tuning trials" in markdown


def _tune_record(root: Path, trial: int, curve: list[list[float]], pruned: bool) -> None:
    """A tuning trial's record as `zoo sweep` writes it (a tuning plays no held-out split)."""
    best = max(curve, key=lambda point: point[1])
    record = {
        "study": "tune_gru",
        "trial": trial,
        "state": "PRUNED" if pruned else "COMPLETE",
        "params": {"lr": 1e-3 * (trial + 1)},
        "axes": {"model.backbone": "gru", "data.context_episodes": 8.0, "seed_everything": 0},
        "protocol": {"test": False},
        "validation": {
            "curve": curve,
            "peak": {"step": best[0], "value": best[1]},
            "final": {"step": curve[-1][0], "value": curve[-1][1]},
        },
        "cost": {"wall_seconds": 100.0 * (trial + 1)},
        **({"pruned_at": curve[-1][0]} if pruned else {
            "budgets": {"6000": {"step": best[0], "val": best[1]}}}),
    }  # fmt: skip
    (root / f"trial-{trial:04d}.json").write_text(json.dumps(record))


def test_a_tuning_report_from_records_alone(tmp_path: Path) -> None:
    records = tmp_path / "records" / "tune_gru"
    records.mkdir(parents=True)
    _tune_record(records, 0, [[500, 2.0], [1000, 9.0], [1500, 8.0]], pruned=False)
    _tune_record(records, 1, [[500, 0.4]], pruned=True)
    _tune_record(records, 2, [[500, 3.0], [1000, 11.0], [1500, 12.5]], pruned=False)
    lstm = tmp_path / "records" / "tune_lstm"  # a study whose trials were all pruned so far
    lstm.mkdir()
    _tune_record(lstm, 0, [[500, 0.2]], pruned=True)
    (lstm / "trial-0000.json").write_text(
        (lstm / "trial-0000.json").read_text().replace('"tune_gru"', '"tune_lstm"')
    )
    out = tmp_path / "report"
    assert zoo(["report", "--records", str(tmp_path / "records"), "--out", str(out)]) == 0
    _, markdown = _check_links(out)
    assert (out / "figures" / "tuning_curves.png").is_file()
    assert "| gru | 8 | 1 (0 complete, 1 pruned) | 500 | - | - |" in markdown  # nothing chosen
    row = pd.read_csv(out / "tables" / "tuning.csv").iloc[0]
    assert (row["finished"], row["complete"], row["pruned"], row["pruned_at"]) == (3, 2, 1, "[500]")
    assert (row["best_trial"], row["best_position"], row["best_step"]) == (2, 3, 1500)
    assert row["best_value"] == 12.5 and row["worker_seconds"] == 600.0
    assert "12.500 at step 1,500 (trial 2, 3 of 3)" in markdown


def test_a_storage_that_does_not_exist_is_refused(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    assert zoo(["report", "--storage", url, "--study", "x", "--out", str(tmp_path / "r")]) == 2
    assert "no database file" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_intervals_are_rliable_iqm_with_a_bootstrap_over_seeds() -> None:
    from rliable import metrics

    from reporting.tables import interval

    scores = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    point, low, high = interval(scores, reps=500)
    assert point == pytest.approx(metrics.aggregate_iqm(scores[:, None]))
    assert low < point < high and (low, high) == interval(scores, reps=500)[1:]  # seeded
    assert interval(np.full(4, 2.5), reps=500) == (2.5, 2.5, 2.5)
    single = interval(np.array([3.0]), reps=500)
    assert single[0] == 3.0 and np.isnan(single[1]) and np.isnan(single[2])
    curves = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    mean, low, high = interval(curves, reps=500)
    np.testing.assert_allclose(mean, [1.0, 2.0, 3.0])
    assert (low <= mean).all() and (mean <= high).all() and (low < high).all()


def test_data_mode_of_a_study(tmp_path: Path) -> None:
    from reporting.data import data_mode_of

    experiment = tmp_path / "mine.yaml"
    experiment.write_text(yaml.safe_dump({"data": {"mode": "ed", "path": "data/x"}}))
    assert data_mode_of(str(experiment)) == "ed"
    assert data_mode_of("configs/experiments/darkroom.yaml") == "ad"
    assert data_mode_of("elsewhere/darkroom_ed.yaml") == "unknown"  # not readable: no guess
    assert data_mode_of("configs/experiments/darkroom.yaml", {"data": {"mode": "ed"}}) == "ed"
    assert data_mode_of(str(experiment), {"data": {"mode": "ad"}}) == "ad"
    # a study recorded before `fit:`: its `--data.mode` argument
    assert data_mode_of("configs/experiments/darkroom.yaml", None, ["--data.mode=ed"]) == "ed"
    assert data_mode_of(str(experiment), None, ["--data.mode", "ad"]) == "ad"


def test_the_checkpoint_decides_what_was_trained(tmp_path: Path) -> None:
    """A config.yaml rewritten by a later run in the same log directory must not relabel a run."""
    import torch

    run = _evaluation(tmp_path / "runs" / "v0", backbone="gru", context_episodes=1.0, seed=4)
    (run / "checkpoints").mkdir()
    torch.save(
        {
            "hyper_parameters": {"backbone": {"class_path": "backbones.rnn.LSTMBackbone"}},
            "datamodule_hyper_parameters": {"context_len": 60, "mode": "ed"},
            "state_dict": {"backbone.w": torch.zeros(3, 4), "head.w": torch.zeros(5)},
        },
        run / "checkpoints" / "last.ckpt",
    )
    out = tmp_path / "report"
    assert zoo(["report", "--results", str(tmp_path / "runs"), "--out", str(out)]) == 0
    row = pd.read_csv(out / "tables" / "trials.csv").iloc[0]
    assert (row["backbone"], row["context_episodes"], row["data_mode"]) == ("lstm", 3.0, "ed")
    assert row["parameters"] == 12 and row["seed"] == 4


def test_a_folder_that_is_not_a_report_is_refused_and_kept(
    storage: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "my_plot.png").write_bytes(b"mine")
    (out / "tables").mkdir()
    (out / "tables" / "my_table.csv").write_text("a,b\n")
    argv = ["report", "--storage", storage, "--study", "darkroom_ablation", "--reps", "200"]
    assert zoo([*argv, "--out", str(out)]) == 2
    assert "not a report of `zoo report`" in capsys.readouterr().err
    assert (out / "figures" / "my_plot.png").read_bytes() == b"mine"  # nothing deleted
    assert (out / "tables" / "my_table.csv").is_file()
    assert zoo([*argv, "--out", str(out), "--overwrite", "true"]) == 0  # said, and done
    assert not (out / "figures" / "my_plot.png").exists() and (out / "index.html").is_file()


def test_an_interrupted_report_leaves_the_old_one_whole(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reporting import build

    out = tmp_path / "report"
    argv = ["report", "--storage", storage, "--study", "darkroom_ablation", "--out", str(out)]
    assert zoo([*argv, "--reps", "200"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the new report's figures are drawn

    monkeypatch.setattr(build.figures_, "ablation_figures", interrupted)
    assert zoo([*argv, "--reps", "200"]) == 130
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the old report, every page and every file it links
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no leftovers


def test_a_bandit_is_scored_above_random_play_beside_its_fraction_of_optimal() -> None:
    from reporting.html import summary_rows
    from reporting.tables import summary_table

    rng = np.random.default_rng(0)
    rows = [
        {
            **_attrs(rng, backbone="gru", context=1.0, seed=seed),
            "data_mode": "ad", "backbone": "gru", "context_episodes": 1.0, "seed": seed,
            "kind": "ablation", "test_split": "ood", "above_random": 0.5 + 0.1 * seed,
            "source_above_random": 0.8,
        }
        for seed in range(3)
    ]  # fmt: skip
    summary = summary_table(pd.DataFrame(rows), reps=50)
    assert summary.loc[0, "above_random"] == pytest.approx(0.6)
    assert summary.loc[0, "of_source_above_random"] == pytest.approx(0.6 / 0.8)
    header, table = summary_rows(summary)
    at = header.index("above random: of optimal (mean)")
    assert header[at - 1] == "of optimal (same statistic)"
    assert table[0][at : at + 2] == ["60.0%", "75.0%"]


def test_the_tables_facet_by_any_further_axis_of_the_runs() -> None:
    """A grid over the number of training tasks (`data.train_tasks`, a config path): one summary
    row per value, its own column in the page, and rankings per value."""
    from reporting.html import summary_rows
    from reporting.tables import budget_table, summary_table

    rng = np.random.default_rng(1)
    rows = [
        {
            **_attrs(rng, backbone=backbone, context=4.0, seed=seed),
            "data_mode": "ad", "backbone": backbone, "context_episodes": 4.0, "seed": seed,
            "kind": "ablation", "test_split": "test", "data.train_tasks": tasks,
            "budgets": {"50": {"step": 50, "val": 1.0, "return_final": float(tasks + seed)},
                        "100": {"step": 100, "val": 2.0, "return_final": float(tasks - seed)}},
        }
        for backbone in BACKBONES for tasks in (16, 32) for seed in range(2)
    ]  # fmt: skip
    runs = pd.DataFrame(rows)
    summary = summary_table(runs, reps=50)
    assert len(summary) == 4 and sorted(summary["data.train_tasks"]) == [16, 16, 32, 32]
    header, table = summary_rows(summary)
    assert header[3] == "data.train_tasks" and {row[3] for row in table} == {"16", "32"}
    ranking, _ = budget_table(runs, reps=50)
    assert sorted(ranking.groupby("data.train_tasks").size()) == [4, 4]  # 2 backbones x 2 budgets


def _study_record(
    root: Path,
    trial: int,
    *,
    backbone: str,
    context: float,
    seed: int,
    mode: str = "ad",
    level: float,
) -> None:
    """A grid trial's record as `zoo sweep` writes it: 4 test tasks of optimal 10 x 2 evaluation
    seeds, the final 2 episodes at `level` of optimal; budgets 100 and 200 (the cap), the 100-step
    checkpoint at half the cap's return; the cap's checkpoint on the lockbox at 0.9 x level."""
    returns = np.linspace(0.1, level, 6) * 10.0
    play = {str(s): {"returns": [returns.tolist()] * 4, "optimal": [10.0] * 4} for s in (0, 1)}
    final = float(returns[-2:].mean())
    record = {
        "study": "s" if mode == "ad" else "s_ed",
        "trial": trial,
        "state": "COMPLETE",
        "params": {},
        "axes": {
            "model.backbone": backbone,
            "data.context_episodes": context,
            "seed_everything": seed,
        },
        "settings": {"data": {"mode": mode}},
        "protocol": {"test": True, "final_episodes": 2},
        "validation": {
            "curve": [[100, 1.0], [200, 2.0]],
            "peak": {"step": 200, "value": 2.0},
            "final": {"step": 200, "value": 2.0},
        },
        "steps_trained": 200,
        "max_steps": 200,
        "budget_capped": True,
        "budgets": {
            "100": {"step": 100, "val": 1.0, "test": {"return_final": final / 2}},
            "200": {"step": 200, "val": 2.0, "test": {"return_final": final}},
        },
        "test": {"split": "test", "by_seed": play},
        "lockbox": {
            "split": "lockbox",
            "by_seed": {
                k: {**v, "returns": (0.9 * np.asarray(v["returns"])).tolist()}
                for k, v in play.items()
            },
        },
        "cost": {"wall_seconds": 10.0},
    }
    if mode == "ad":  # the source learner on the same tasks and seeds, at 0.95 of optimal
        learner = (np.linspace(0.1, 0.95, 6) * 10.0).tolist()
        record["source"] = {
            "learner": "q_learning",
            "by_seed": {"0": [learner] * 4, "1": [learner] * 4},
        }
    (root / f"trial-{trial:04d}.json").write_text(json.dumps(record))


def test_the_headline_from_records_and_into_a_readme(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    levels = {"gru": 0.5, "transformer": 0.8}
    trial = 0
    for backbone, level in levels.items():
        for context, seeds in ((0.5, 3), (8.0, 5)):  # 5 seeds at the largest context, 3 below
            for seed in range(seeds):
                scale = level * (1.0 if context == 8.0 else 0.5) + 0.01 * seed
                _study_record(
                    records, trial, backbone=backbone, context=context, seed=seed, level=scale
                )
                trial += 1
        for seed in range(5):
            _study_record(
                records, trial, backbone=backbone, context=8.0, seed=seed, mode="ed", level=0.1
            )
            trial += 1
    out = tmp_path / "report"
    assert zoo(["report", "--records", str(records), "--out", str(out), "--reps", "200"]) == 0
    headline = (out / "headline.md").read_text()
    table = [line for line in headline.splitlines() if line.startswith("| ")]
    header = "| backbone | 0.5 episodes | 8 episodes | 8 episodes, 100 steps | lockbox | ED |"
    assert table[0] == header
    assert table[1].startswith("| transformer | ") and table[2].startswith("| gru | ")  # best first
    transformer = table[1].removesuffix(" |").split(" | ")
    # the final 2 of 6 episodes of linspace(0.1, level, 6) x optimal: 0.01 + 0.9 x level of it
    assert transformer[1] == "37.9% [37.0, 38.8] (mean, n=3)"  # levels 0.40, 0.41, 0.42
    iqm = 0.01 + 0.9 * 0.82  # rliable's IQM of 5 seeds: the mean of the middle 3 (0.81-0.83)
    assert transformer[2].startswith(f"{iqm:.1%} [") and "(mean" not in transformer[2]
    assert transformer[3].startswith(f"{iqm / 2:.1%} [")  # the 100-step budget's checkpoint
    assert transformer[4].startswith(f"{0.9 * iqm:.1%} [")  # the lockbox
    assert transformer[5] == "10.0% [10.0, 10.0]"  # ED: every seed at level 0.1
    # the source learner once: every run played it with the same evaluation seeds
    assert "| source learner |  | 86.5% (1 run) |  |  |  |" in headline
    assert "Kendall's tau between the ranking at 100 steps and at the cap" in headline
    assert "![" in headline and "](figures/context.png)" in headline

    readme = tmp_path / "README.md"
    readme.write_text(f"# zoo\n\nbefore\n{BEGIN}\nold block\n{END}\nafter\n")
    assert (
        main_readme(
            [
                "--report",
                str(out),
                "--readme",
                str(readme),
                "--assets",
                str(tmp_path / "docs" / "headline"),
            ]
        )
        == 0
    )
    text = readme.read_text()
    assert "old block" not in text and header in text
    assert text.startswith("# zoo\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "](docs/headline/context.png)" in text
    assert (tmp_path / "docs" / "headline" / "context.png").is_file()
    # a README without its markers is refused, untouched, in one line
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# zoo\n")
    with pytest.raises(ReadmeError, match="needs one line"):
        splice(plain, out, tmp_path / "assets")
    assert plain.read_text() == "# zoo\n" and not (tmp_path / "assets").exists()
