"""`zoo backbones`: lists every registered backbone with real preset sizes; fails on a bad preset set."""

from __future__ import annotations

import shutil

from backbones import BACKBONES, count_parameters
from backbones.presets import PRESET_DIR, load_preset, preset_path
from cli import main as zoo


def test_lists_every_backbone_with_its_real_parameter_count(capsys) -> None:
    assert zoo(["backbones", "--size", "tiny"]) == 0
    out = capsys.readouterr().out
    for name in BACKBONES:
        count = count_parameters(load_preset(preset_path(name, "tiny")))
        assert f"| tiny | {name} | {count:,} |" in out
    assert "- tiny: " in out and "(ok)" in out


def test_fails_on_too_wide_a_spread_and_missing_presets(tmp_path, capsys) -> None:
    shutil.copy(PRESET_DIR / "gru-tiny.yaml", tmp_path / "gru-tiny.yaml")
    wide = (PRESET_DIR / "lstm-tiny.yaml").read_text().replace("depth: 3", "depth: 9")
    (tmp_path / "lstm-tiny.yaml").write_text(wide)
    assert zoo(["backbones", "--size", "tiny", "--presets", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "TOO WIDE" in captured.out
    assert "tiny presets spread" in captured.err
    assert "backbone 'transformer' has no tiny preset" in captured.err


def test_missing_preset_directory_is_a_clear_error(tmp_path, capsys) -> None:
    assert zoo(["backbones", "--presets", str(tmp_path / "nope")]) == 2
    assert "no preset directory" in capsys.readouterr().err


def test_misnamed_preset_file_is_a_clear_error(tmp_path, capsys) -> None:
    (tmp_path / "gru.yaml").write_text("class_path: backbones.rnn.GRUBackbone\n")
    assert zoo(["backbones", "--presets", str(tmp_path)]) == 2
    assert "must be named <backbone>-<size>.yaml" in capsys.readouterr().err
