"""The ablation report, from Optuna studies or from `zoo evaluate` outputs (`zoo report`).

Writes `index.html` (opens from file://), `report.md`, `figures/*.png` and `tables/*.csv`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pandas as pd

from reporting import figures as figures_
from reporting import html
from reporting.data import RUN_COLUMNS, ReportError, load_records, load_results, load_studies
from reporting.tables import (
    budget_table,
    comparison_table,
    completed,
    curve_table,
    headline_table,
    peak_table,
    ranking_steps,
    summary_table,
    trial_table,
    tuning_table,
    validation_only_table,
    validation_table,
)


@dataclasses.dataclass
class ReportSettings:
    """What a report is made of and where it goes."""

    out: Path
    """Report directory (reports/<name>)."""
    storage: str | None = None
    """Optuna storage URL of the studies (e.g. sqlite:///runs/sweeps.db)."""
    study: list[str] = dataclasses.field(default_factory=list)
    """Study names."""
    results: Path | None = None
    """Directory tree of `zoo evaluate` outputs."""
    records: Path | None = None
    """Folder of trial records (every `trial-*.json` under it): a study's committed results."""
    title: str | None = None
    """Title of the report (None: its directory's name)."""
    reps: int = 2000
    """Bootstrap resamples per interval."""
    against: Path | None = None
    """Trial records of a reference (the committed results of the same study): a section and
    `tables/against.csv` compare the report's cells with them."""
    overwrite: bool = False
    """Replace `out` even if it is not a report of `zoo report` (its files are then lost)."""

    def __post_init__(self) -> None:
        if not self.study and self.results is None and self.records is None:
            raise ReportError(
                "give --records DIR, --storage URL --study NAME [--study NAME ...], "
                "or --results DIR"
            )
        if self.study and not self.storage:
            raise ReportError("--study needs --storage URL (e.g. sqlite:///runs/sweeps.db)")
        if self.reps < 100:
            raise ReportError("--reps must be >= 100")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {out} is a file, not a report directory: give another --out")
        if (
            out.is_dir()
            and any(out.iterdir())
            and not (out / MARKER).is_file()
            and not self.overwrite
        ):
            raise ReportError(
                f"--out {out} holds files that are not a report of `zoo report`: give an empty or "
                "new --out (or --overwrite to replace the folder and everything in it)"
            )


MARKER = ".zoo-report"
"""File that marks a folder as a report `zoo report` wrote (and may replace)."""


def build_report(args: ReportSettings) -> Path:
    """Load the runs, compute the tables, draw the figures, write the pages; the index.html path."""
    frames, notes = [], []
    if args.study:
        assert args.storage is not None  # ReportSettings refuses studies without a storage
        frames.append(load_studies(args.storage, args.study))
    if args.records is not None:
        frames.append(load_records(args.records))
    if args.results is not None:
        results, skipped = load_results(args.results)
        frames.append(results)
        notes += skipped
    runs = pd.concat(frames, ignore_index=True).reindex(
        columns=list(dict.fromkeys([*frames[0].columns, *RUN_COLUMNS]))
    )
    final: Path = Path(args.out)
    # the new report is written beside the old one and swapped in when complete: an interrupted
    # or failed report leaves the old one whole (or nothing), never a page whose files are gone
    final.parent.mkdir(parents=True, exist_ok=True)
    out = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    for folder in ("figures", "tables"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    try:
        _write(args, runs, notes, out)
        (out / MARKER).write_text("written by zoo report; the folder is replaced on its next run\n")
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        moved = final.exists()
        if moved:
            final.rename(old)
        try:
            out.rename(final)
        except BaseException:
            if moved:  # interrupted between the two renames: the old report goes back
                old.rename(final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return final / "index.html"


def _write(args: ReportSettings, runs: pd.DataFrame, notes: list[str], out: Path) -> None:
    """The tables, figures and pages of a report, into `out`."""
    done = completed(runs)
    summary = summary_table(done, reps=args.reps) if len(done) else pd.DataFrame()
    curves = curve_table(done, reps=args.reps) if len(done) else pd.DataFrame()
    validation = validation_table(done, reps=args.reps) if len(done) else pd.DataFrame()
    trials = trial_table(runs)
    ranking, taus = budget_table(done, reps=args.reps) if len(done) else (pd.DataFrame(),) * 2
    peaks = peak_table(done) if len(done) else pd.DataFrame()
    steps = ranking_steps(ranking, done, reps=args.reps) if len(done) else pd.DataFrame()
    tuning = tuning_table(runs)
    validation_only = validation_only_table(runs)
    headline = headline_table(done, reps=args.reps)
    tables = {
        "summary": summary,
        "curves": curves,
        "validation_curves": validation,
        "trials": trials,
        "budget_ranking": ranking,
        "budget_kendall_tau": taus,
        "ranking_steps": steps,
        "validation_peaks": peaks,
        "tuning": tuning,
        "headline": headline,
        "validation_only": validation_only,
    }
    figures = figures_.ablation_figures(done, summary, curves, validation, out / "figures")
    figures += figures_.tuning_curves(runs, tuning, out / "figures")
    if args.study:
        tune = figures_.tuning_figures(str(args.storage), runs, out / "figures")
        figures += tune.figures
        notes += tune.notes
        tables.update(tune.tables)
    sections = html.budget_sections(ranking, taus, peaks, steps)
    if not headline.empty:
        sections.insert(0, html.headline_section(headline, taus, done))
        (out / "headline.md").write_text(html.headline_markdown(sections[0], figures))
    if not validation_only.empty:
        sections.append(html.validation_only_section(validation_only))
    if not tuning.empty:
        sections.append(html.tuning_section(tuning))
    if args.against is not None:
        tables["against"] = comparison_table(runs, load_records(args.against))
        sections.append(html.comparison_section(tables["against"], str(args.against)))
    tables = {name: table for name, table in tables.items() if not table.empty}
    for name, table in tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
    seeds = sorted({int(n) for n in summary["seeds"]}) if len(summary) else []
    if seeds and max(seeds) < 2:
        notes.append("every configuration has 1 seed: no interval can be given (means are shown)")
    elif 1 in seeds:
        notes.append("configurations with 1 seed have no interval (their means are shown)")
    page = html.Page(
        title=args.title or Path(args.out).resolve().name,
        sources=_sources(args),
        runs=runs,
        summary=summary,
        trials=trials,
        figures=figures,
        tables=sorted(f"tables/{name}.csv" for name in tables),
        notes=notes,
        reps=args.reps,
        sections=sections,
    )
    (out / "report.md").write_text(html.markdown(page))
    (out / "index.html").write_text(html.html(page))


def _sources(args: ReportSettings) -> list[str]:
    names = ", ".join(f"`{name}`" for name in args.study)
    sources = [f"studies {names} in `{args.storage}`"] if args.study else []
    sources += [f"trial records under `{args.records}`"] if args.records else []
    return sources + ([f"`zoo evaluate` outputs under `{args.results}`"] if args.results else [])
