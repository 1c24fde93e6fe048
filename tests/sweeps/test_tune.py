"""Per-backbone tuning: widths fill the parameter budget without passing it; a TPE study runs
trials end to end and reports intermediate in-context returns by global step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from backbones import count_parameters, create_backbone
from sweeps.study import SweepError, open_storage
from sweeps.tune import TuneConfig, depth_choices, preset_init_args, widest_within_budget

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["transformer", "gru", "mamba2"])
@pytest.mark.parametrize("depth", [1, 3])
def test_widest_width_fills_the_budget(name: str, depth: int) -> None:
    _, init_args = preset_init_args(name, "100k")
    budget = count_parameters(create_backbone(name, **init_args))
    shaped = widest_within_budget(name, {**init_args, "depth": depth}, budget)
    assert count_parameters(create_backbone(name, **shaped)) <= budget
    width = shaped.get("d_model", shaped.get("hidden_size"))
    for wider in range(width + 8, width + 257, 8):  # every buildable wider model is too big
        args = {**shaped, **{k: wider for k in ("d_model", "hidden_size") if k in shaped}}
        try:
            model = create_backbone(name, **args)
        except ValueError:
            continue
        assert count_parameters(model) > budget


@pytest.mark.parametrize(("name", "depth"), [("gru", 4), ("lstm", 3), ("transformer", 2)])
def test_depths_null_keeps_each_presets_own_depth(name: str, depth: int) -> None:
    _, init_args = preset_init_args(name, "100k")
    config = TuneConfig(experiment="unused.yaml", backbone=name, depths=None)
    assert depth_choices(config, init_args) == [depth]
    default = TuneConfig(experiment="unused.yaml", backbone=name)
    assert depth_choices(default, init_args) == [1, 2, 3, 4]


def test_a_budget_below_the_narrowest_model_is_refused() -> None:
    _, init_args = preset_init_args("gru", "100k")
    with pytest.raises(SweepError, match="exceeds the budget"):
        widest_within_budget("gru", init_args, 10)


def test_a_tuned_file_written_by_hand_names_no_seed(tmp_path: Path) -> None:
    """`seeds_tuned_on` reads the `# tuning:` line `write_tuned` writes; a line written by hand
    (not JSON, or a seed as text) is no reason to refuse the grid."""
    from sweeps.ablation import AblationConfig

    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "gru.yaml").write_text("# tuning: chosen by eye\nmodel: {lr: 0.001}\n")
    (tuned / "lstm.yaml").write_text('# tuning: {"training_seed": "1"}\nmodel: {lr: 0.001}\n')
    (tuned / "transformer.yaml").write_text('# tuning: {"training_seed": 2}\nmodel: {lr: 0.001}\n')
    grid = AblationConfig(
        experiment=str(ROOT / "configs/experiments/darkroom.yaml"),
        backbones=["gru", "lstm", "transformer", "mamba"],
        context_episodes=[1],
        seeds=[1, 2, 3],
        tuned=str(tuned),
    )
    assert grid.seeds_tuned_on() == {1: ["lstm"], 2: ["transformer"]}


def test_tuning_selects_on_validation_and_writes_settings_the_ablation_reads(
    tmp_path: Path, experiment: Path
) -> None:
    tuned = tmp_path / "tuned" / "gru.yaml"
    config = {
        "study": "tune",
        "name": "tiny_tune",
        "experiment": str(experiment),
        "backbone": "gru",
        "size": "tiny",
        "context_episodes": 1,
        "depths": [1, 2],
        "evaluation": {"episodes": 2, "final_episodes": 1},
        "runs_dir": str(tmp_path / "runs"),
        "output": str(tuned),
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(config))
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    command = ["sweep", "run", "--config", str(path), "--storage", storage, "--n_trials", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name="tiny_tune", storage=open_storage(storage))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    for trial in complete:
        assert set(trial.params) == {
            "lr", "warmup_steps", "depth", "dropout", "token_mask", "label_smoothing"
        }  # fmt: skip
        assert list(trial.intermediate_values) == [3]  # the validation at global step 3
        # the objective is the validation return of the selected checkpoint; no test task played
        assert trial.value == pytest.approx(trial.user_attrs["val_return_final"])
        assert "return_final" not in trial.user_attrs
        assert not list(Path(trial.user_attrs["run_dir"]).glob("test-seed*"))
        assert trial.user_attrs["backbone_parameters"] <= trial.user_attrs["param_budget"]
        # what the trial trained, as one `zoo fit` config: the depth it drew, the width it got
        fit_config = trial.user_attrs["fit_command"].removeprefix("zoo fit --config ")
        trained = yaml.safe_load(Path(fit_config).read_text())["model"]["backbone"]["init_args"]
        assert trained["depth"] == trial.params["depth"]
        assert trained["hidden_size"] == trial.user_attrs["backbone_init_args"]["hidden_size"]
    # the chosen settings, as a zoo fit config fragment applied after the preset
    fragment = yaml.safe_load(tuned.read_text())
    best = study.best_trial
    assert fragment["model"]["lr"] == pytest.approx(best.params["lr"])
    assert fragment["model"]["token_mask"] == best.params["token_mask"]
    assert fragment["model"]["backbone"]["init_args"]["depth"] == best.params["depth"]
    assert f"trial {best.number}" in tuned.read_text()
    # its provenance, as the study's own configs read it (tests/sweeps/test_protocol.py)
    from sweeps.tune import read_tuning

    tuning = read_tuning(tuned)
    assert tuning is not None
    assert (tuning["best_trial"], tuning["training_seed"]) == (best.number, 0)
    assert (tuning["trials"], tuning["context_episodes"]) == (2, 1)
    # an ablation with `tuned:` trains every trial of that backbone on these settings
    ablation = {
        "study": "ablation",
        "name": "tiny_tuned_ablation",
        "experiment": str(experiment),
        "size": "tiny",
        "backbones": ["gru"],
        "context_episodes": [1],
        "seeds": [0],
        "tuned": str(tuned.parent),
        "evaluation": {"tasks": 2, "episodes": 2, "final_episodes": 1, "seeds": [0]},
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(ablation))
    command = ["sweep", "run", "--config", str(path), "--storage", storage]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # seed 0 is the seed these settings were chosen on: the ablation says so as it starts
    assert "training seed 0 is the seed the tuned settings of gru were chosen on" in done.stderr
    (trial,) = optuna.load_study(study_name="tiny_tuned_ablation", storage=storage).trials
    assert trial.user_attrs["tuned_from"] == str(tuned)
    config_yaml = yaml.safe_load(
        (Path(trial.user_attrs["run_dir"]) / "csv/version_0/config.yaml").read_text()
    )
    assert config_yaml["model"]["lr"] == pytest.approx(best.params["lr"])
    assert config_yaml["model"]["backbone"]["init_args"]["depth"] == best.params["depth"]


def test_a_tuned_file_is_known_for_the_protocol_it_was_tuned_at(tmp_path: Path) -> None:
    """Every committed tuned file is its study's finished choice at the committed tuning
    protocol; a file tuned at another cap, with fewer trials or without its tuning line is not,
    and the reason names what differs (what scripts/study.sh refuses a study on)."""
    from sweeps.study import load_spec
    from sweeps.tune import untuned_reason

    config = str(ROOT / "configs/sweeps/darkroom_tune.yaml")
    committed = sorted((ROOT / "configs/tuned/darkroom").glob("*.yaml"))
    assert committed
    for path in committed:
        spec = load_spec(config, kind=None, name=None, storage=None, backbone=path.stem)
        assert untuned_reason(path, spec.config, spec.name) is None, path
    spec = load_spec(config, kind=None, name=None, storage=None, backbone=committed[0].stem)
    text = committed[0].read_text()
    other = tmp_path / "other.yaml"
    other.write_text(text.replace('"max_steps": 6000', '"max_steps": 1500').replace(
        '"trials": 12,', '"trials": 5,'))  # fmt: skip
    why = untuned_reason(other, spec.config, spec.name)
    assert why and "trials 5 (this protocol: 12)" in why and "max_steps 1500" in why
    other.write_text("\n".join(line for line in text.splitlines() if "tuning:" not in line))
    assert "no '# tuning:' line" in (untuned_reason(other, spec.config, spec.name) or "")
    assert "does not exist" in (untuned_reason(tmp_path / "no.yaml", spec.config, spec.name) or "")
    # the command scripts/study.sh reads: one line per backbone that is not tuned here
    done = subprocess.run(
        [sys.executable, "-m", "cli", "sweep", "tuned", "--config", config, "--dir",
         str(tmp_path), "--backbones", committed[0].stem],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith(f"{committed[0].stem}: "), done
