"""`zoo run`: one run end to end under a protocol file, the run a sweep trial makes and
`bench/reference.sh` calls. It chooses and plays what `zoo fit` (the experiment's own validation
and checkpoint choice) then `zoo evaluate` of the chosen checkpoint give, to the digit, and writes
the record that `zoo sweep rerun` repeats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli import main as zoo

TINY = [
    "model.backbone=configs/backbone/gru-tiny.yaml",
    "model.compile=false",
    "model.warmup_steps=1",
    "data.context_episodes=1",
    "data.batch_size=4",
    "data.val_windows=8",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def protocol(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "protocol.yaml"
    base = {"episodes": 2, "val_repeats": 2, "seeds": [0, 1], "paired": True, "budgets": []}
    path.write_text(yaml.safe_dump({**base, **fields}))
    return path


def test_zoo_run_is_fit_then_evaluate_of_the_chosen_checkpoint(
    six_task_dataset: Path, tmp_path: Path, capsys
) -> None:
    sets = [f"data.path={six_task_dataset}", *TINY]
    out = tmp_path / "run"
    args = ["run", "--config", "configs/experiments/darkroom.yaml", "--seed", "0"]
    args += ["--protocol", str(protocol(tmp_path)), "--out", str(out)]
    assert zoo([*args, *(a for s in sets for a in ("--set", s))]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "record.json").read_text())
    assert f"record: {out / 'record.json'}" in printed and "budget 6: chose step" in printed
    assert record["protocol"]["episodes"] == 2 and record["settings"]["data"]["seed"] == 0
    step = record["budgets"]["6"]["step"]

    # the same by hand: the experiment's own validation (2 episodes, each goal twice) and
    # checkpoint choice, then the chosen checkpoint played under each evaluation seed
    fit = tmp_path / "fit"
    by_hand = ["fit", "--config", "configs/experiments/darkroom.yaml"]
    by_hand += [f"--{s}" for s in sets]
    experiment = yaml.safe_load(Path("configs/experiments/darkroom.yaml").read_text())
    callbacks = experiment["trainer"]["callbacks"]  # its validation, then its choice
    assert callbacks[0]["class_path"] == "zoo.evaluation.InContextEvaluation"
    callbacks[0]["init_args"].update(episodes=2, repeats=2)
    shorter = tmp_path / "callbacks.yaml"
    shorter.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    by_hand += ["--config", str(shorter)]
    by_hand += [f"--trainer.default_root_dir={fit}", "--trainer.logger=false"]
    assert zoo(by_hand) == 0
    (selected,) = fit.glob("checkpoints/selected-step*.ckpt")
    assert selected.stem == f"selected-step{step}"  # the same choice
    for seed in (0, 1):
        played = tmp_path / f"eval-{seed}"
        assert (
            zoo(["evaluate", str(selected), "--episodes=2", f"--seed={seed}", f"--out={played}"])
            == 0
        )
        mine = json.loads(next(out.glob(f"test-step{step}-seed{seed}/returns.json")).read_text())
        theirs = json.loads((played / "returns.json").read_text())
        assert mine["returns"] == theirs["returns"] and mine["tasks"] == theirs["tasks"]
        assert (
            record["test"]["return_final_by_seed"][str(seed)] == theirs["summary"]["return_final"]
        )


def test_zoo_run_refuses_a_bad_protocol_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("episodes: 2\nrepeats: 3\n")
    args = ["run", "--config", "configs/experiments/darkroom.yaml", "--out", str(tmp_path / "o")]
    assert zoo([*args, "--protocol", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown field(s) ['repeats']" in err[0] and "val_repeats" in err[0]
    assert zoo([*args, "--protocol", str(tmp_path / "none.yaml")]) == 2
    assert "protocol" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", sorted(Path("configs/protocols").glob("*.yaml")), ids=str)
def test_every_family_protocol_loads(path: Path) -> None:
    from envs import make_family
    from sweeps.trial import load_protocol

    settings = load_protocol(path)
    family = make_family(path.stem.removesuffix("_study"))  # <family>.yaml, <family>_study.yaml
    assert family.split_size(settings.split) is not None or settings.tasks  # tasks to play


def test_validation_and_held_out_plays_of_a_protocol() -> None:
    from sweeps.trial import EvaluationSettings

    protocol = EvaluationSettings(episodes=80, val_episodes=40, val_repeats=2, tasks=None)
    validation, held_out = protocol.validation(3), protocol.held_out(3000)
    assert (validation.episodes, validation.repeats, validation.split) == (40, 2, "val")
    assert (validation.seed, validation.tasks) == (
        3,
        None,
    )  # every validation task, by the training seed
    assert (held_out.episodes, held_out.repeats, held_out.split, held_out.seed) == (
        80,
        1,
        "test",
        3000,
    )
    assert EvaluationSettings(episodes=20).validation(0).episodes == 20  # None: the same episodes
    with pytest.raises(ValueError, match="val_episodes"):
        EvaluationSettings(val_episodes=0)


def test_a_study_names_its_protocol_file(tmp_path: Path) -> None:
    """`evaluation: FILE` in a study config is the file's fields, as inline; `--set` reaches them."""
    from sweeps.study import SweepError, load_spec
    from sweeps.trial import load_protocol

    inline = yaml.safe_load(Path("configs/sweeps/darkroom_study.yaml").read_text())
    assert inline["evaluation"] == "configs/protocols/darkroom_study.yaml"
    inline["evaluation"] = yaml.safe_load(Path(inline["evaluation"]).read_text())
    (tmp_path / "inline.yaml").write_text(yaml.safe_dump(inline))
    spec = {"kind": None, "name": None, "storage": "sqlite:///:memory:"}
    named = load_spec("configs/sweeps/darkroom_study.yaml", **spec)
    assert named.config == load_spec(str(tmp_path / "inline.yaml"), **spec).config
    assert named.config.evaluation == load_protocol("configs/protocols/darkroom_study.yaml")
    changed = load_spec(
        "configs/sweeps/darkroom_study.yaml", **spec, sets=["evaluation.patience=2"]
    )
    assert changed.config.evaluation.patience == 2
    missing = tmp_path / "missing.yaml"
    missing.write_text("study: ablation\nevaluation: configs/protocols/nowhere.yaml\n")
    with pytest.raises(SweepError, match=r"nowhere\.yaml does not exist"):
        load_spec(str(missing), **spec)


def test_zoo_run_options_apply_in_the_order_given() -> None:
    """`--config` and `--set` interleave as `zoo fit`'s options do (a member's preset, then its
    tuned settings over it); the seed is `--seed`; a value that is not YAML is one line."""
    from cli.run import in_order
    from zoo.errors import UsageError

    argv = ["--config", "a.yaml", "--set", "model.lr=0.001", "--config=b.yaml", "--set=x.y=[1, 2]"]
    assert in_order([*argv, "--seed", "3", "--out", "o"]) == [
        "a.yaml", {"model": {"lr": 0.001}}, "b.yaml", {"x": {"y": [1, 2]}},
    ]  # fmt: skip
    for bad, said in (
        ("seed_everything=2", "the training seed is --seed"),
        ("data.seed=2", "the training seed is --seed"),
        ("model.lr=[", "the value is not YAML"),
        ("model.lr", "give KEY=VALUE"),
    ):
        with pytest.raises(UsageError, match=said):
            in_order(["--set", bad])
