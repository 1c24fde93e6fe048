"""The figures of `zoo report`: in-context curves, return against context length (the central
ablation figure), cost against return, every tuning trial's validation curve, and Optuna's
parameter importances and history."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter, MaxNLocator

from reporting.tables import finite

COST_AXES = (
    ("parameters", "backbone parameters", True),
    ("train_tokens_per_s", "training tokens / s", True),
    ("eval_steps_per_s", "evaluation env steps / s", True),
    ("peak_rss_mb", "peak resident memory (MB)", False),
)


@dataclasses.dataclass
class Figure:
    """A PNG of the report, by its path relative to the report directory."""

    path: str
    title: str
    caption: str


@dataclasses.dataclass
class Tuning:
    figures: list[Figure]
    notes: list[str]
    tables: dict[str, pd.DataFrame]


def _colours(labels: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    backbones = sorted({name.split(" (")[0] for name in labels})
    return {name: cmap(backbones.index(name.split(" (")[0]) % 10) for name in labels}


def _save(fig: plt.Figure, out: Path, name: str, *, tight: bool = True) -> str:
    if tight:  # a figure with a legend outside its axes has laid itself out
        fig.tight_layout()
    # the saved image grows to hold every artist: a legend outside the axes is never cut off
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}"


def _band(ax: plt.Axes, x: np.ndarray, rows: pd.DataFrame, **style: Any) -> None:
    ax.plot(x, rows["mean"], **style)
    if rows["ci_low"].notna().all():
        ax.fill_between(x, rows["ci_low"], rows["ci_high"], alpha=0.2, color=style.get("color"))


def ablation_figures(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    validation: pd.DataFrame,
    out: Path,
) -> list[Figure]:
    """Final return against context (when there are several contexts), curves per backbone,
    validation return against training steps (when the runs recorded it), cost against return."""
    if runs.empty:
        return []
    several = summary["context_episodes"].dropna().nunique() > 1
    return [
        *([_context(summary, runs, out)] if several else []),
        _curves(curves, runs, out),
        *([_validation(validation, out)] if len(validation) else []),
        _cost(runs, out),
    ]


def _grid(panels: int) -> tuple[plt.Figure, np.ndarray]:
    """A grid of at most 3 columns, readable at a laptop's width, one y-axis; spare panels hidden."""
    ncols = min(3, panels)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.9), sharey=True, squeeze=False
    )
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, axes


def _by_backbone(axes: np.ndarray, table: pd.DataFrame, x: str, xlabel: str) -> dict[str, Any]:
    """One panel a backbone: a line and band per data mode, context and further axis (AD solid,
    ED dashed, a colour a context, a further axis's value named in the label); the labels drawn,
    for one legend."""
    contexts = sorted(table["context_episodes"].dropna().unique())
    extras = [c for c in table.columns if "." in str(c) and table[c].notna().any()]
    cmap = plt.get_cmap("viridis")
    legend: dict[str, Any] = {}
    for ax, backbone in zip(axes.flat, sorted(table["backbone"].unique()), strict=False):
        mine = table[table["backbone"] == backbone]
        for key, rows in mine.groupby(["data_mode", "context_episodes", *extras], dropna=False):
            mode, context = key[0], key[1]
            shade = (
                cmap(contexts.index(context) / max(len(contexts) - 1, 1))
                if context in contexts
                else "k"
            )
            facet = "".join(
                f", {axis} {value:g}" if isinstance(value, int | float) else f", {axis} {value}"
                for axis, value in zip(extras, key[2:], strict=True)
            )
            name = f"{mode.upper()}, {context:g} ep.{facet} (n={rows['runs'].iloc[0]})"
            style = {"color": shade, "linestyle": "-" if mode == "ad" else "--", "label": name}
            _band(ax, rows[x].to_numpy(), rows, **style)
        ax.set_title(backbone)
        ax.set_xlabel(xlabel)
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles, strict=True))
    return legend


def _save_grid(fig: plt.Figure, axes: np.ndarray, legend: dict[str, Any], ylabel: str,
               out: Path, name: str) -> str:  # fmt: skip
    """One y label a row, one legend below the panels; the saved image grows to hold the
    legend, so it is never cut off at any width."""
    for row in axes:
        row[0].set_ylabel(ylabel)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1))
    fig.legend(
        legend.values(), legend.keys(), loc="lower center", ncol=min(3, len(legend)), fontsize=10
    )
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{name}"


def _curves(curves: pd.DataFrame, runs: pd.DataFrame, out: Path) -> Figure:
    models = curves[curves["data_mode"] != "source"]
    sources = curves[curves["data_mode"] == "source"]
    backbones = sorted(models["backbone"].unique())
    # the source learner: a panel of its own
    fig, axes = _grid(len(backbones) + (1 if len(sources) else 0))
    legend = _by_backbone(axes, models, "episode", "episode on a held-out task")
    optimal = pd.to_numeric(runs["optimal"], errors="coerce").mean()
    if np.isfinite(optimal):
        for ax in axes.flat[: len(backbones) + (1 if len(sources) else 0)]:
            ax.axhline(optimal, color="grey", linewidth=0.8, linestyle="--", label="optimal")
        legend["optimal"] = axes.flat[0].get_lines()[-1]
    if len(sources):
        # once, on its own episode axis: the source learner's episodes, of which the training
        # histories kept every keep_every-th (the model's context episode k ~ its episode k x
        # keep_every); one line per distinct evaluation play, not one per trial
        ax = axes.flat[len(backbones)]
        for learner, rows in sources.groupby("label"):
            _band(
                ax,
                rows["episode"].to_numpy(),
                rows,
                color="tab:red",
                linestyle=":",
                label=f"{learner} ({rows['runs'].iloc[0]} plays)",
            )
        ax.set_title("source learner (its own episodes)")
        ax.set_xlabel("source learner's episode on the same tasks")
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles, strict=True))
    ylabel = "return (mean; band: 95% CI\nfrom 5 runs, else range)"
    return Figure(
        _save_grid(fig, axes, legend, ylabel, out, "curves.png"),
        "In-context learning curves",
        "Return per episode on held-out tasks with frozen weights, per backbone and training "
        "context (solid: AD, dashed: ED); the source RL learner on the same tasks in its own panel, "
        "on its own episodes (the training histories kept every keep_every-th of them). Mean over "
        "seeds; the band is rliable's 95% stratified-bootstrap interval from 5 runs, else the "
        "range (min, max); n = seeds.",
    )


def _validation(validation: pd.DataFrame, out: Path) -> Figure:
    fig, axes = _grid(validation["backbone"].nunique())
    legend = _by_backbone(axes, validation, "step", "training step")
    for ax in axes.flat:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ylabel = "validation return (mean; band:\n95% CI from 5 runs, else range)"
    return Figure(
        _save_grid(fig, axes, legend, ylabel, out, "validation.png"),
        "Validation return against training steps",
        "The return on the validation goals (carved from the training goals; every checkpoint "
        "choice is made on it) at each validation of training, per backbone and training "
        "context (solid: AD, dashed: ED): mean over training seeds, the band rliable's 95% "
        "stratified-bootstrap interval from 5 runs, else the range; n = seeds. Where it peaks "
        "and falls, in-context ability fades with more training (the budget columns of the "
        "ranking read the same runs earlier).",
    )


def _context(summary: pd.DataFrame, runs: pd.DataFrame, out: Path) -> Figure:
    # wide enough for the legend beside the axes, where it covers no line
    fig, ax = plt.subplots(figsize=(8.6, 4.4))
    colours = _colours(list(summary["label"]))
    for name, rows in summary.groupby("label"):
        rows = rows.sort_values("context_episodes")
        x, y = rows["context_episodes"].to_numpy(float), rows["iqm_return_final"].to_numpy(float)
        mode = rows["data_mode"].iloc[0]
        seeds = "/".join(str(int(n)) for n in sorted(set(rows["seeds"])))
        # ED, the control, in black and dashed: never the colour of an AD member
        colour = colours[name] if mode == "ad" else "black"
        colours[name] = colour
        ax.plot(
            x,
            y,
            marker="o" if mode == "ad" else "s",
            color=colour,
            linestyle="-" if mode == "ad" else "--",
            label=f"{name} (n={seeds})",
        )
        low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
        has = np.isfinite(low)
        if has.any():
            ax.fill_between(
                x, np.where(has, low, y), np.where(has, high, y), color=colours[name], alpha=0.15
            )
    source = pd.to_numeric(runs["source_return_final"], errors="coerce").mean()
    if np.isfinite(source):
        ax.axhline(source, color="tab:red", linestyle=":", label="source learner (final)")
    optimal = pd.to_numeric(runs["optimal"], errors="coerce").mean()
    if np.isfinite(optimal):
        ax.axhline(optimal, color="grey", linestyle="--", linewidth=0.8, label="optimal")
    ax.set_xscale("log", base=2)
    contexts = sorted(summary["context_episodes"].dropna().unique())
    ax.set_xticks(contexts, [f"{c:g}" for c in contexts])
    ax.minorticks_off()
    ax.set_xlabel("training context (episodes)")
    ax.set_ylabel("final in-context return\n(IQM [95% CI] from 5 runs, else mean [range])")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    path = _save(fig, out, "context.png")
    return Figure(
        path,
        "Final return against context length",
        "The central ablation figure: the final in-context return over seeds (n per line) "
        "against the training context length: rliable's IQM and 95% stratified-bootstrap "
        "interval where a point has 5 runs or more, else the mean and the range over its runs.",
    )


def _cost(runs: pd.DataFrame, out: Path) -> Figure:
    fig, axes = plt.subplots(1, len(COST_AXES), figsize=(3.6 * len(COST_AXES), 3.8), sharey=True)
    labels = [
        f"{b}" if m == "ad" else f"{b} ({m.upper()})"
        for m, b in zip(runs["data_mode"], runs["backbone"], strict=True)
    ]
    colours = _colours(labels)
    missing = []
    for ax, (column, name, log) in zip(axes, COST_AXES, strict=True):
        x = pd.to_numeric(runs[column], errors="coerce").to_numpy(float)
        y = runs["return_final"].to_numpy(float)
        for each in sorted(set(labels)):
            mask = np.array([lab == each for lab in labels]) & np.isfinite(x)
            ed = each.endswith("(ED)")  # the control in black squares, as in the context figure
            style = {"color": "black", "marker": "s"} if ed else {"color": colours[each]}
            ax.scatter(x[mask], y[mask], label=each, s=22, alpha=0.8, **style)
        if not np.isfinite(x).any():
            missing.append(name)
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        elif log and (x[np.isfinite(x)] > 0).all() and np.nanmax(x) > 20 * np.nanmin(x):
            ax.set_xscale("log")
        else:  # a few short ticks (100k, 1.2M): long numbers run into each other at this width
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(name)
    axes[0].set_ylabel("final in-context return")
    # one legend below the panels, where it covers no point
    handles, names = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=9)
    path = _save(fig, out, "cost.png", tight=False)
    caption = "Each point is one trained model (one seed): its cost against its final return."
    if missing:
        caption += f" Not recorded for these runs: {', '.join(missing)} (sweep trials record them)."
    return Figure(path, "Cost against return", caption)


def tuning_curves(runs: pd.DataFrame, tuning: pd.DataFrame, out: Path) -> list[Figure]:
    """Per tuning study, every finished trial's validation return against training steps: the
    complete ones solid, the pruned ones dashed to the validation at which the pruner stopped
    them, the chosen trial bold; one panel a study, one y-axis."""
    tune = runs[(runs["kind"] == "tune") & runs["state"].isin(["COMPLETE", "PRUNED"])]
    tune = tune[tune["validation_curve"].map(lambda c: isinstance(c, list) and len(c) > 0)]
    studies = [s for s in tuning["study"] if s in set(tune["study"])] if len(tuning) else []
    if not studies:
        return []
    fig, axes = _grid(len(studies))
    legend: dict[str, Any] = {}
    for ax, study in zip(axes.flat, studies, strict=False):
        row = tuning[tuning["study"] == study].iloc[0]
        for _, trial in tune[tune["study"] == study].sort_values("trial").iterrows():
            steps, values = zip(*trial["validation_curve"], strict=True)
            if trial["trial"] == row["best_trial"]:
                style = {"color": "black", "linewidth": 2.2, "zorder": 3, "label": "chosen"}
            elif trial["state"] == "COMPLETE":
                style = {"color": "tab:blue", "linewidth": 1.0, "alpha": 0.7, "label": "complete"}
            else:
                style = {"color": "tab:orange", "linewidth": 1.0, "linestyle": "--",
                         "marker": "x", "markevery": [-1], "alpha": 0.8, "label": "pruned"}  # fmt: skip
            ax.plot(steps, values, **style)
        best = f", best {row['best_value']:.2f}" if finite(row["best_value"]) else ""
        ax.set_title(f"{row['backbone']}: {row['finished']} trials{best}", fontsize=10)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles, strict=True))
    return [
        Figure(
            _save_grid(fig, axes, legend, "validation return", out, "tuning_curves.png"),
            "Tuning: every trial's validation curve",
            "Per backbone's tuning study, the validation return of each finished trial against "
            "its training steps, on the validation goals (the objective the tuning chooses on): "
            "complete trials solid, the chosen one bold; pruned trials dashed, ending (x) at the "
            "validation after which the pruner stopped them.",
        )
    ]


def tuning_figures(storage_url: str, runs: pd.DataFrame, out: Path) -> Tuning:
    """Per tuning study: Optuna's own optimisation-history and parameter-importance plots
    (`optuna.visualization.matplotlib`), the importances as a table."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from reporting.data import open_study_storage

    result = Tuning([], [], {})
    storage = open_study_storage(storage_url)
    for name in sorted(runs.loc[runs["kind"] == "tune", "study"].unique()):
        study = optuna.load_study(study_name=name, storage=storage)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if complete:
                ax = optuna_plots.plot_optimization_history(study, target_name="objective")
                ax.set_title(f"{name}: optimisation history")
                result.figures.append(
                    Figure(
                        _save(cast(plt.Figure, ax.figure), out, f"history_{name}.png"),
                        f"Tuning history: {name}",
                        f"Optuna's optimisation history: the objective (validation return) of "
                        f"each of the {len(complete)} complete trials and the best so far "
                        f"({pruned} pruned trials not drawn).",
                    )
                )
            if len(complete) < 2:
                result.notes.append(
                    f"study {name}: parameter importances need at least 2 complete trials "
                    f"({len(complete)} so far); none computed"
                )
                continue
            try:
                # Optuna 5.1's default, named: PED-ANOVA (no random forest: the same numbers each run)
                evaluator = optuna.importance.PedAnovaImportanceEvaluator()
                importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
                ax = optuna_plots.plot_param_importances(study, evaluator=evaluator)
            except (RuntimeError, ValueError) as error:  # e.g. every trial has one value
                result.notes.append(f"study {name}: parameter importances not computable: {error}")
                continue
        table = pd.DataFrame(
            {"parameter": list(importances), "importance": list(importances.values())}
        )
        result.tables[f"importances_{name}"] = table
        ax.set_title(f"{name}: parameter importances")
        result.figures.append(
            Figure(
                _save(cast(plt.Figure, ax.figure), out, f"importances_{name}.png"),
                f"Parameter importances: {name}",
                f"Optuna's PED-ANOVA importances over {len(complete)} complete trials: how far "
                f"each setting's density among the best 10% of them (at least one trial) "
                f"departs from its density among all of them.",
            )
        )
    return result
