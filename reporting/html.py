"""The pages of `zoo report`: a self-contained index.html (relative links only, opens from file://)
and report.md, each with the summary table on top, the figures, and every trial with its commands."""

from __future__ import annotations

import dataclasses
import html as _html
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from reporting.figures import Figure
from reporting.tables import HOLDS_WITHIN, finite

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fdecea; } tr.dup td { color: #888; }
code { font-size: 12px; word-break: break-all; } tr.cmd td { border-top: none; padding-left: 2em; } figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #555; font-size: 13px; }
.notes li { color: #8a4b00; }
"""


@dataclasses.dataclass
class Page:
    """Everything the pages show."""

    title: str
    sources: list[str]
    runs: pd.DataFrame
    summary: pd.DataFrame
    trials: pd.DataFrame
    figures: list[Figure]
    tables: list[str]
    notes: list[str]
    reps: int
    sections: list[Section] = dataclasses.field(default_factory=list)
    """More tables, each under its own heading after the summary."""


@dataclasses.dataclass
class Section:
    """A table of the report with its heading and what it shows."""

    title: str
    text: str
    header: list[str]
    rows: list[list[str]]


def _number(value: Any, digits: int = 3) -> str:
    if not finite(value):
        return "" if value is None or isinstance(value, float) else str(value)
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def _ci(row: pd.Series) -> str:
    point = _number(row["iqm_return_final"])
    statistic = str(row.get("statistic") or "")
    if not finite(row["ci_low"]):
        return f"{point} (mean, 1 run: no range)"
    what = "IQM" if statistic.startswith("IQM") else f"mean, range over {int(row['seeds'])}"
    return f"{point} [{_number(row['ci_low'])}, {_number(row['ci_high'])}] ({what})"


def _fraction(row: pd.Series, point: str = "iqm_fraction_optimal", ci: str = "fraction") -> str:
    value = row.get(point)
    if not finite(value):
        return ""
    if not finite(row.get(f"{ci}_ci_low")):
        return f"{value:.1%}"
    return f"{value:.1%} [{row[f'{ci}_ci_low']:.1%}, {row[f'{ci}_ci_high']:.1%}]"


def _percent(value: Any) -> str:
    return f"{value:.1%}" if finite(value) else ""


def _episodes_to_80(row: pd.Series) -> str:
    """Censored: "reached by k of n runs, median among them"."""
    runs = row.get("episodes_to_80_runs")
    if not finite(runs) or not runs:
        return ""
    reached = int(row["episodes_to_80_reached"])
    median = row.get("episodes_to_80_median")
    among = f", median {_number(median, 1)}" if finite(median) else ""
    return f"reached by {reached} of {int(runs)}{among}"


def summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = [
        "backbone",
        "data",
        "context (episodes)",
        "training seeds",
        "final return: IQM [95% CI] from 5 runs, else mean [range]",
        "of optimal (same statistic)",
        "NAUC",
        "episodes to 80% of optimal",
        "selected step (mean)",
        "steps trained / budget",
        "ended at budget",
        "settings",
        "evaluation",
        "source learner final",
        "parameters",
    ]
    rows = [
        [
            r["backbone"],
            str(r["data_mode"]).upper(),
            _number(r["context_episodes"]),
            str(int(r["seeds"])),
            _ci(r),
            _fraction(r),
            _number(r.get("nauc")),
            _episodes_to_80(r),
            _number(r.get("selected_step"), 0),
            f"{_number(r.get('steps_trained'), 0)} / {_number(r.get('max_steps'), 0)}"
            if finite(r.get("steps_trained"))
            else "",
            str(r.get("budget_capped") or ""),
            str(r.get("tuned") or ""),
            str(r.get("evaluation") or ""),
            _number(r["source_return_final"]) if finite(r["source_return_final"]) else "-",
            _number(r["parameters"]),
        ]
        for _, r in summary.iterrows()
    ]
    extras = [c for c in summary.columns if "." in str(c)]  # a study's further axes
    header[3:3] = extras
    for row, (_, r) in zip(rows, summary.iterrows(), strict=True):
        row[3:3] = [_number(r[axis]) for axis in extras]
    if "above_random" in summary and summary["above_random"].notna().any():
        # the bandit's score: a fraction of optimal flatters (random play earns ~45% of it)
        at = header.index("of optimal (same statistic)") + 1
        header[at:at] = ["above random: of optimal (mean)", "above random: of source (mean)"]
        for row, (_, r) in zip(rows, summary.iterrows(), strict=True):
            row[at:at] = [
                _percent(r.get("above_random")),
                _percent(r.get("of_source_above_random")),
            ]
    if "iqm_lockbox_fraction" in summary and summary["iqm_lockbox_fraction"].notna().any():
        # beside the test split's fraction: the lockbox, played once by the same checkpoints
        at = header.index("of optimal (same statistic)") + 1
        header.insert(at, "lockbox: of optimal (same statistic)")
        for row, (_, r) in zip(rows, summary.iterrows(), strict=True):
            row.insert(at, _fraction(r, "iqm_lockbox_fraction", "lockbox"))
    return header, rows


def budget_sections(
    ranking: pd.DataFrame, taus: pd.DataFrame, peaks: pd.DataFrame, steps: pd.DataFrame
) -> list[Section]:
    """The ranking at each training budget with Kendall's tau against the largest, how sure
    each step of it is, and each run's validation peak against its final value."""
    sections = []
    if not ranking.empty:
        sections.append(_ranking_section(ranking, taus))
    if not steps.empty:
        sections.append(_steps_section(steps))
    if not peaks.empty:
        sections.append(_peaks_section(peaks))
    return sections


def _ranking_section(ranking: pd.DataFrame, taus: pd.DataFrame) -> Section:
    rows = []
    extras = [c for c in ranking.columns if "." in str(c)]
    for values, cell in ranking.groupby(
        ["data_mode", "context_episodes", *extras, "budget"], sort=True
    ):
        mode, context, budget = values[0], values[1], values[-1]
        facet = dict(zip(extras, values[2:-1], strict=True))
        order = " > ".join(
            f"{r['backbone']} {_number(r['mean_return_final'])}"
            for _, r in cell.sort_values("rank").iterrows()
        )
        seeds = sorted({int(n) for n in cell["seeds"]})
        rows.append(
            [
                str(mode).upper(),
                _number(context)
                + "".join(f", {axis} {_number(value)}" for axis, value in facet.items()),
                _number(budget),
                "/".join(map(str, seeds)),
                order,
                _tau_text(taus, mode, context, budget, facet),
            ]
        )
    return Section(
        title="Ranking at each training budget (the same runs)",
        text=(
            "Per budget, every run's checkpoint chosen on validation goals among its "
            "validations at or before that step plays the test split; backbones ranked "
            "by the mean final return over training seeds. Kendall's tau compares each "
            "budget's ranking with the largest budget's, with a 95% bootstrap interval "
            "over training seeds from 5 seeds (each backbone's seeds resampled, the same draw at both "
            "budgets)."
        ),
        header=[
            "data",
            "context",
            "budget (steps)",
            "seeds",
            "ranking (mean final return)",
            "Kendall's tau vs largest [95% CI from 5 seeds]",
        ],
        rows=rows,
    )


def _steps_section(steps: pd.DataFrame) -> Section:
    extras = [c for c in steps.columns if "." in str(c)]
    rows = []
    for _, r in steps.sort_values(
        ["data_mode", "context_episodes", *extras, "budget", "rank"]
    ).iterrows():
        seeds = f"{int(r['seeds_above'])}/{int(r['seeds_below'])}"
        sure = (
            f"{_probability(r['p_above'])} [{_probability(r['ci_low'])}, "
            f"{_probability(r['ci_high'])}]"
            if finite(r["ci_low"])
            else f"{_probability(r['p_above'])} (no interval from {seeds} seeds)"
        )
        rows.append(
            [
                str(r["data_mode"]).upper(),
                _number(r["context_episodes"])
                + "".join(f", {axis} {_number(r[axis])}" for axis in extras),
                _number(r["budget"]),
                f"{r['above']} {'=' if r['equal_means'] else '>'} {r['below']}",
                sure,
                seeds,
            ]
        )
    return Section(
        title="How sure each step of the ranking is",
        text=(
            "For every two neighbours in a budget's ranking, the probability that a run of the "
            "one above scores above a run of the one below (rliable's probability of "
            "improvement over training seeds, ties counted half), with a 95% stratified-"
            "bootstrap interval from 5 seeds each. 0.5 is no order; an interval that holds 0.5 "
            "leaves the two unordered; below 0.5, most pairs of runs order the two the other way "
            "from their means (an outlier run); '=': equal means, the order arbitrary. With 5 "
            "seeds an interval of [1, 1] says every run of one beat every run of the other, "
            "not that a sixth seed must."
        ),
        header=["data", "context", "budget (steps)", "step", "P(above > below) [95% CI]", "seeds"],
        rows=rows,
    )


def _probability(value: Any) -> str:
    return f"{float(value):.2f}" if finite(value) else "-"


def _tau_text(
    taus: pd.DataFrame, mode: Any, context: Any, budget: Any, facet: dict[str, Any]
) -> str:
    """Kendall's tau of one cell's budget against the largest, with its interval where there
    is one."""
    tau = taus
    if not taus.empty:
        match = (
            (taus["data_mode"] == mode)
            & (taus["context_episodes"] == context)
            & (taus["budget"] == budget)
        )
        for axis, value in facet.items():
            match &= taus[axis] == value
        tau = taus[match]
    if not len(tau):
        return "(the largest budget)"
    if finite(tau.iloc[0]["ci_low"]):
        return (
            f"{tau.iloc[0]['kendall_tau']:.2f} [{_number(tau.iloc[0]['ci_low'], 2)}, "
            f"{_number(tau.iloc[0]['ci_high'], 2)}]"
        )
    return f"{tau.iloc[0]['kendall_tau']:.2f} (no interval from {int(tau.iloc[0]['seeds'])} seeds)"


def _peaks_section(peaks: pd.DataFrame) -> Section:
    rows = [
        [
            str(r["backbone"]),
            str(r["data_mode"]).upper(),
            _number(r["context_episodes"]),
            _number(r["seed"]),
            f"{_number(r['peak_val'])} at {_number(r['peak_step'])}",
            f"{_number(r['final_val'])} at {_number(r['final_step'])}",
            _number(r["final_minus_peak"]),
            "cap" if r["budget_capped"] else "early stop",
        ]
        for _, r in peaks.sort_values(
            ["data_mode", "context_episodes", "backbone", "seed"]
        ).iterrows()
    ]
    return Section(
        title="Validation peak against final value, per run",
        text=(
            "Does in-context ability fade with training? Each run's best validation "
            "return and its step, against its last validation; a run ends at its cap or "
            "by early stopping (patience)."
        ),
        header=[
            "backbone",
            "data",
            "context",
            "seed",
            "peak (val) at step",
            "final (val) at step",
            "final - peak",
            "ended by",
        ],
        rows=rows,
    )


def headline_section(headline: pd.DataFrame, taus: pd.DataFrame, runs: pd.DataFrame) -> Section:
    """The study's answer: a row per backbone (best first at the largest context and the cap),
    the source learner last; a column per context, smaller budget, lockbox and ED."""
    order = list(dict.fromkeys(headline["column"]))
    contexts = [c for c in order if c.endswith(" episodes")]
    ranked = headline[headline["column"] == contexts[-1]].sort_values("point", ascending=False)
    rows_in = [r for r in ranked["row"] if r != "source learner"]
    rows_in += [r for r in dict.fromkeys(headline["row"]) if r not in rows_in]
    rows = []
    for name in rows_in:
        mine = headline[headline["row"] == name].set_index("column")
        rows.append(
            [name, *(_headline_cell(mine.loc[c]) if c in mine.index else "" for c in order)]
        )
    done = runs[runs["data_mode"] == "ad"]
    cap = pd.to_numeric(done["max_steps"], errors="coerce").max()
    tasks, seeds = done["test_tasks"].dropna(), done["eval_seeds"].dropna()
    played = (
        f" ({int(tasks.iloc[0])} tasks x {len(seeds.iloc[0])} evaluation seeds each)"
        if len(tasks) and len(seeds)
        else ""
    )
    text = (
        f"Final return as a fraction of optimal on the held-out split{played}, over training "
        "seeds: IQM [95% CI] from 5 seeds, else the mean [range] and n. AD at the cap"
        + (f" ({_number(cap)} steps)" if finite(cap) else "")
        + " for each training context; at the largest context also the checkpoint chosen on "
        "validation within each smaller budget (`N steps`), the lockbox played once by the "
        "cap's checkpoint, and ED; the source learner on the same tasks. Best first at the "
        "largest context."
    )
    if not taus.empty:
        largest = taus[taus["context_episodes"] == taus["context_episodes"].max()]
        largest = largest[largest["data_mode"] == "ad"]
        for _, tau in largest.iterrows():
            text += (
                f" Kendall's tau between the ranking at {int(tau['budget'])} steps and at the "
                f"cap (by mean final return, as in the ranking below): "
                f"{_tau_text(taus, 'ad', tau['context_episodes'], tau['budget'], {})}."
            )
    return Section(title="Headline", text=text, header=["backbone", *order], rows=rows)


def _headline_cell(cell: pd.Series) -> str:
    if not finite(cell["low"]):
        return f"{cell['point']:.1%} (1 run)"
    what = "" if str(cell["statistic"]).startswith("IQM") else f" (mean, n={int(cell['runs'])})"
    return f"{cell['point']:.1%} [{100 * cell['low']:.1f}, {100 * cell['high']:.1f}]{what}"


def headline_markdown(section: Section, figures: list[Figure]) -> str:
    """The headline as a Markdown block of its own (`headline.md`, for a README): the table, what
    it shows, and the ablation's central figures."""
    lines = [section.text, "", *_md_table(section.header, section.rows), ""]
    for figure in figures:
        if Path(figure.path).stem in ("context", "curves", "validation"):
            lines += [f"![{figure.title}]({figure.path})", "", figure.caption, ""]
    return "\n".join(lines)


def validation_only_section(table: pd.DataFrame) -> Section:
    """The grid runs that played no held-out split, by their validation return."""
    extras = [c for c in table.columns if "." in str(c)]
    rows = [
        [
            str(r["backbone"]),
            str(r["data_mode"]).upper(),
            _number(r["context_episodes"]),
            *(_number(r[axis]) for axis in extras),
            str(int(r["seeds"])),
            f"{_number(r['mean_val_return'])} [{_number(r['low'])}, {_number(r['high'])}]",
            _number(r["selected_step"], 0),
            *(["best" if r["best"] else ""] if "best" in table else []),
            *([r["holds"]] if "holds" in table else []),
        ]
        for _, r in table.iterrows()
    ]
    return Section(
        title="Validation only: runs that played no held-out split",
        text=(
            "Grid runs whose protocol plays no held-out split (a choice is being made, such as "
            "whether settings tuned at one context hold at another: docs/protocol.md): the "
            "validation return of each run's chosen checkpoint, on validation goals only, mean "
            "[min, max] over training seeds, and its step; with one further axis, its best value "
            "per backbone and context is marked, and for a check of a tuned setting by factors "
            f"(`scales`) whether factor 1 holds: the best or within {HOLDS_WITHIN:.0%} of it, the "
            "rule fixed before the check (docs/protocol.md). No test or lockbox goal is played."
        ),
        header=[
            "backbone",
            "data",
            "context",
            *extras,
            "seeds",
            "validation return: mean [min, max]",
            "selected step",
            *(["best"] if "best" in table else []),
            *([f"factor 1: within {HOLDS_WITHIN:.0%} of the best?"] if "holds" in table else []),
        ],
        rows=rows,
    )


def tuning_section(tuning: pd.DataFrame) -> Section:
    """Each tuning study's trials, its choice on validation goals and its cost."""
    rows = []
    for _, r in tuning.iterrows():
        pruned_at = [int(s) for s in r["pruned_at"] if finite(s)]
        rows.append(
            [
                str(r["backbone"]),
                _number(r["context_episodes"]),
                f"{r['finished']} ({r['complete']} complete, {r['pruned']} pruned)",
                ", ".join(map(str, sorted(pruned_at))) or "-",
                "-" if not finite(r["best_trial"]) else (
                    f"{_number(r['best_value'])} at step {_number(r['best_step'])} "
                    f"(trial {int(r['best_trial'])}, {int(r['best_position'])} of {r['finished']})"
                ),
                r["best_params"] if finite(r["best_trial"]) else "-",
                "" if not finite(r["worker_seconds"]) else f"{r['worker_seconds']:,.0f}",
            ]
        )  # fmt: skip
    return Section(
        title="Tuning: trials, choice and cost per backbone",
        text=(
            "Each backbone's tuning study: its finished trials (a pruned trial stopped by the "
            "pruner at the validation step named), the best complete trial's validation return "
            "on the validation goals and the step of its chosen checkpoint, where it came among "
            "the finished trials by number (a best found last says more trials might find "
            "better), its settings, and the worker-seconds of all its trials. A tuned file "
            "(`zoo sweep export`) takes the best of the study's first `trials` finished trials "
            "by number, so equal counts give every backbone the same budget; where two workers "
            "finished one more, the choice here is among all of them: the file's `# tuning:` "
            "line says which it took."
        ),
        header=[
            "backbone",
            "context",
            "finished trials",
            "pruned at step",
            "best validation return",
            "its settings",
            "worker-seconds",
        ],
        rows=rows,
    )


TRIAL_HEADER = [
    "study",
    "trial",
    "state",
    "backbone",
    "context",
    "seed",
    "params",
    "value",
    "parameters",
    "tokens/s",
    "eval steps/s",
    "peak MB",
    "rerun",
]


def trial_rows(trials: pd.DataFrame) -> list[tuple[str, list[str], list[str]]]:
    """(row class, cells, commands) of every trial."""
    out = []
    for _, t in trials.iterrows():
        state = str(t["state"])
        kind = (
            "dup" if state.startswith("DUPLICATE") else "bad" if state in ("FAIL", "PRUNED") else ""
        )
        shown = ("backbone", "context_episodes", "seed")  # their own columns
        params = {k: v for k, v in json.loads(t["params"] or "{}").items() if k not in shown}
        cells = [
            str(t["study"]),
            str(t["trial"]),
            state,
            str(t["backbone"] or ""),
            _number(t["context_episodes"]),
            _number(t["seed"]),
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(params.items())
            ),
            _number(t["value"]),
            _number(t["parameters"]),
            _number(t["train_tokens_per_s"]),
            _number(t["eval_steps_per_s"]),
            _number(t["peak_rss_mb"]),
        ]
        commands = [
            c
            for c in (t["rerun_command"], t["fit_command"], t["evaluate_command"])
            if isinstance(c, str) and c
        ]
        out.append((kind, cells, commands))
    return out


def _counts(runs: pd.DataFrame) -> str:
    states = runs["state"].map(lambda s: "DUPLICATE" if s.startswith("DUPLICATE") else s)
    parts = [f"{n} {s.lower()}" for s, n in states.value_counts().sort_index().items()]
    return ", ".join(parts)


def _intro(page: Page) -> list[str]:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Generated {when} from " + "; ".join(page.sources) + ".",
        f"Trials: {_counts(page.runs)}. Only complete trials count; duplicates of a grid point "
        "never trained, and failed or pruned trials are listed at the end, not averaged.",
        "Final return: mean of the last episodes over the held-out tasks, per trained model. "
        "Over seeds (runs): from 5 runs, rliable's interquartile mean and its 95% "
        f"stratified-bootstrap percentile interval ({page.reps} resamples); with fewer runs "
        "the mean and the range (min, max) over them, said so in each cell (with 3 runs the "
        "IQM trims nothing and its interval is the range). Curves show the mean.",
    ]


def _no_summary(page: Page) -> str:
    text = "No complete ablation trial or evaluation to summarise"
    kinds = set(page.runs["kind"])
    if "tune" in kinds:
        return text + ': tuning trials, which play no held-out task (see "Tuning" below).'
    if "ablation" in kinds and page.runs["return_final"].isna().all():
        return text + ': the runs played no held-out task (see "Validation only" below).'
    return text + "."


# ------------------------------------------------------------------------------------- HTML
def _e(text: Any) -> str:
    return _html.escape(str(text))


def _code(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html(page: Page) -> str:
    parts = [f"<h1>{_e(page.title)}</h1>"] + [f"<p>{_code(p)}</p>" for p in _intro(page)]
    parts.append("<h2>Summary</h2>")
    if page.summary.empty:
        parts.append(f"<p>{_code(_no_summary(page))}</p>")
    else:
        parts.append(_table(*summary_rows(page.summary)))
    if page.notes:
        parts.append(
            "<ul class='notes'>" + "".join(f"<li>{_code(n)}</li>" for n in page.notes) + "</ul>"
        )
    for section in page.sections:
        parts.append(f"<h2>{_e(section.title)}</h2><p>{_code(section.text)}</p>")
        parts.append(_table(section.header, section.rows))
    for figure in page.figures:
        parts.append(
            f"<figure><h2>{_e(figure.title)}</h2>"
            f"<img src='{_e(figure.path)}' alt='{_e(figure.title)}' data-loaded='pending' "
            # loaded, and the size it is drawn at (the browser test reads both)
            "onload=\"this.dataset.loaded='1'; this.dataset.shown=Math.round(this.width); "
            'this.dataset.natural=this.naturalWidth" onerror="this.dataset.loaded=\'0\'">'
            f"<figcaption>{_e(figure.caption)}</figcaption></figure>"
        )
    parts.append(
        "<h2>Every trial</h2><p>Each row reruns with its commands (training, then "
        "evaluation). Failed and pruned trials are shaded; grid duplicates greyed.</p>"
    )
    head = "".join(f"<th>{_e(h)}</th>" for h in TRIAL_HEADER[:-1])
    body = []
    for kind, cells, commands in trial_rows(page.trials):
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
        rerun = "<br>".join(f"<code>{_e(c)}</code>" for c in commands) or (
            "(a duplicate grid point: never trained)" if kind == "dup" else "(no command recorded)"
        )
        body.append(f"<tr class='{kind}'>{tds}</tr>")
        body.append(f"<tr class='{kind} cmd'><td colspan='{len(cells)}'>{rerun}</td></tr>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    parts.append(
        "<h2>Tables</h2><ul>"
        + "".join(f"<li><a href='{_e(t)}'>{_e(t)}</a></li>" for t in page.tables)
        + "</ul>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(page.title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


# --------------------------------------------------------------------------------- Markdown
def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown(page: Page) -> str:
    lines = [f"# {page.title}", ""]
    for paragraph in _intro(page):
        lines += [paragraph, ""]
    lines += ["## Summary", ""]
    if page.summary.empty:
        lines += [_no_summary(page), ""]
    else:
        lines += [*_md_table(*summary_rows(page.summary)), ""]
    lines += [f"- {note}" for note in page.notes] + ([""] if page.notes else [])
    for section in page.sections:
        lines += [
            f"## {section.title}",
            "",
            section.text,
            "",
            *_md_table(section.header, section.rows),
            "",
        ]
    for figure in page.figures:
        lines += [
            f"## {figure.title}",
            "",
            f"![{figure.title}]({figure.path})",
            "",
            figure.caption,
            "",
        ]
    lines += ["## Every trial", ""]
    rows = [
        [*cells, "<br>".join(f"`{c}`" for c in commands)]
        for _, cells, commands in trial_rows(page.trials)
    ]
    lines += [*_md_table(TRIAL_HEADER, rows), ""]
    lines += ["## Tables", ""] + [f"- [{t}]({t})" for t in page.tables] + [""]
    return "\n".join(lines)


def comparison_section(table: pd.DataFrame, reference: str) -> Section:
    """This report's cells against a reference's (`zoo report --against`)."""

    def cell(r: pd.Series, suffix: str) -> str:
        if not finite(r.get(f"seeds{suffix}")):
            return "not run"
        n = int(r[f"seeds{suffix}"])
        return (
            f"{_number(r[f'mean{suffix}'])} [{_number(r[f'low{suffix}'])}, "
            f"{_number(r[f'high{suffix}'])}] ({n} seed{'s' * (n != 1)})"
        )

    extras = [c for c in table.columns if "." in str(c)]  # a study's further axes
    rows = [
        [
            str(r["backbone"]),
            str(r["data_mode"]).upper(),
            _number(r["context_episodes"])
            + "".join(f", {axis} {_number(r[axis])}" for axis in extras),
            cell(r, ""),
            cell(r, "_reference"),
            _number(r["difference"]),
            ("yes" if r["within_reference_range"] else "no") if finite(r["difference"]) else "",
        ]
        for _, r in table.iterrows()
    ]
    return Section(
        title=f"Against {reference}",
        text=(
            "Cell by cell, the final return of this report's runs against the reference's (mean "
            "[range over training seeds]): the same study run again gives the same numbers to "
            "the digit on the same machine type where every seed is there; elsewhere, how far "
            "it lands from them."
        ),
        header=[
            "backbone",
            "data",
            "context",
            "here: mean [range]",
            "reference: mean [range]",
            "difference of means",
            "inside the reference's range",
        ],
        rows=rows,
    )
