"""`zoo report`: the architecture-ablation report, from Optuna studies or from `zoo evaluate` outputs.

    zoo report --storage sqlite:///runs/sweeps.db --study darkroom_ablation --study darkroom_ed \\
        --out reports/darkroom
    zoo report --results runs/ --out reports/darkroom
    zoo report --records results/darkroom/study --out reports/darkroom_study
    zoo report --records runs/study/study --against results/darkroom/study --out reports/study

Writes `index.html` (opens from file://), `report.md`, `figures/*.png` and `tables/*.csv`.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import Namespace

from cli import Parser


def parser() -> Parser:
    parser = Parser(prog="zoo report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", type=str | None, default=None,
                        help="Optuna storage URL of the studies (sqlite:///runs/sweeps.db)")  # fmt: skip
    parser.add_argument("--study", action="append", default=[], help="study name (repeatable)")
    parser.add_argument("--results", type=Path | None, default=None,
                        help="directory tree of `zoo evaluate` outputs")  # fmt: skip
    parser.add_argument("--records", type=Path | None, default=None,
                        help="folder of trial records (results/<family>/<study>/...; every "
                        "trial-*.json under it), the text a study commits")  # fmt: skip
    parser.add_argument("--against", type=Path | None, default=None,
                        help="trial records of a reference (the committed results of the same "
                        "study): the report compares its cells with them")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="report directory (reports/<name>)")
    parser.add_argument("--title", type=str | None, default=None,
                        help="title of the report (null: its directory's name)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples per interval")
    parser.add_argument("--overwrite", type=bool, default=False,
                        help="replace --out even if it is not a report (its files are lost)")  # fmt: skip
    return parser


def run(options: Namespace, argv: list[str]) -> int:
    from reporting.build import ReportSettings, build_report

    settings = ReportSettings(
        out=options.out,
        storage=options.storage,
        study=list(options.study),
        results=options.results,
        records=options.records,
        against=options.against,
        title=options.title,
        reps=options.reps,
        overwrite=options.overwrite,
    )
    print(f"zoo report: wrote {build_report(settings).resolve()}")
    return 0
