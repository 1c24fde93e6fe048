"""Every registry of the zoo follows one idiom: a name taken by another part is refused, and an
unknown name is one line that lists the known ones."""

from __future__ import annotations

import dataclasses

import pytest

from backbones.base import BACKBONES, create_backbone, register_backbone
from cli import COMMANDS, Command, register_command
from envs.base import ENV_FAMILIES, make_family, register_env
from envs.learners.registry import LEARNERS, make_learner, register_learner
from sweeps.study import STUDY_KINDS, StudyKind, register_study_kind


def test_a_taken_name_is_refused_in_every_registry() -> None:
    class Impostor:
        @dataclasses.dataclass
        class Params:
            pass

    for register, taken, what in (
        (register_backbone, "gru", "backbone"),
        (register_env, "darkroom", "env"),
        (register_learner, "q_learning", "learner"),
    ):
        with pytest.raises(ValueError, match=f"{what} '{taken}' is already registered by"):
            register(taken)(Impostor)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="study kind 'tune' is already registered by"):
        register_study_kind("tune", StudyKind(config=object, sampler=print, objective=print))
    with pytest.raises(ValueError, match="command 'fit' is already registered by"):
        register_command("fit", Command("elsewhere", "another fit"))
    assert "gru" in BACKBONES and "darkroom" in ENV_FAMILIES and "q_learning" in LEARNERS
    assert "tune" in STUDY_KINDS and COMMANDS["fit"].module == "cli.fit"  # unchanged


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown backbone 'nope'; known: .*gru"):
        create_backbone("nope")
    with pytest.raises(ValueError, match=r"unknown env 'nope'; known: .*darkroom"):
        make_family("nope")
    family = make_family("darkroom")
    with pytest.raises(ValueError, match=r"unknown learner 'nope'; known: .*q_learning"):
        make_learner("nope", num_envs=1, family=family, seed=0)
