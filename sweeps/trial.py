"""One sweep trial: `zoo fit` then `zoo evaluate`, in a child process of the sweep worker.

The child builds everything through the same LightningCLI as `zoo fit` (no second way to build a
model) and evaluates the last checkpoint through the same code as `zoo evaluate`. A child process
per trial gives each trial its own peak memory reading and keeps a crashing trial from taking the
worker down; it dies with its worker (PR_SET_PDEATHSIG), so a killed worker leaves only a stale
trial, which the heartbeat fails and re-queues. The child reports intermediate in-context returns
to the study itself, by global step, and stops when the pruner says so.

    python -m sweeps.trial SPEC.json    (what the worker runs; SPEC is written by `run_trial`)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

PRUNED_EXIT_CODE = 3


@dataclasses.dataclass
class EvaluationSettings:
    """How every trial is evaluated in context on held-out tasks (frozen weights)."""

    tasks: int = 16
    """Held-out tasks, one sub-env each."""
    episodes: int = 20
    """In-context episodes per task."""
    mode: str = "stream"
    """Context mode: `stream` (state carried) or `window` (fresh forward over the last steps)."""
    final_episodes: int = 5
    """Episodes averaged into the final return (the objective)."""
    every_n_steps: int = 0
    """Evaluate (and report to the pruner) every this many training steps; 0: only at the end."""
    seed: int = 0
    """Seed of the held-out tasks and of the evaluation's sampling."""


def run_trial(
    trial: optuna.Trial,
    *,
    experiment: str,
    backbone_preset: str,
    context_episodes: float,
    seed: int,
    fit_args: list[str],
    evaluation: EvaluationSettings,
    runs_dir: str,
) -> float:
    """Train and evaluate one configuration in a child process; its final in-context return."""
    run_dir = Path(runs_dir) / trial.study.study_name / f"trial-{trial.number:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["--config", experiment, "--model.backbone", backbone_preset]
    args += [f"--data.context_episodes={context_episodes}", f"--seed_everything={seed}"]
    # each trial logs into its own directory: concurrent trials never share a logger's versions
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger"}
    logger["init_args"] = {"save_dir": str(run_dir), "name": "csv", "version": 0}
    args += [f"--trainer.default_root_dir={run_dir}", f"--trainer.logger={json.dumps(logger)}"]
    args += list(fit_args)
    spec = {
        "fit_args": args,
        "evaluation": dataclasses.asdict(evaluation),
        "run_dir": str(run_dir),
        "storage": _storage_url(trial.study),
        "study": trial.study.study_name,
        "trial_id": trial._trial_id,
    }
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    trial.set_user_attr("run_dir", str(run_dir))
    started = time.monotonic()
    log_path = run_dir / "trial.log"
    with log_path.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "sweeps.trial", str(run_dir / "spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    trial.set_user_attr("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))
    trial.set_user_attr("wall_seconds", round(time.monotonic() - started, 1))
    if code == PRUNED_EXIT_CODE:
        raise optuna.TrialPruned("pruned on its intermediate in-context return")
    result_path = run_dir / "result.json"
    if code != 0 or not result_path.is_file():
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        raise RuntimeError(f"trial exited with code {code}: {last} (log: {log_path})")
    result = json.loads(result_path.read_text())
    for key, value in result["attrs"].items():
        trial.set_user_attr(key, value)
    return float(result["attrs"]["return_final"])


def _storage_url(study: optuna.Study) -> str:
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # CachedStorage wraps the RDB storage
    url = getattr(storage, "url", None)
    if url is None:
        raise RuntimeError("sweep trials need an RDB storage (sqlite:///, postgresql://)")
    return url


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGKILL when the worker that started it dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# ----------------------------------------------------------------------------- the child process
def _child(spec_path: str) -> int:
    import lightning.pytorch as pl
    import torch

    from backbones import count_parameters
    from zoo.evaluate import evaluate_checkpoint, parse_args, write_outputs
    from zoo.evaluation import InContextEvaluation
    from zoo.train import make_cli

    spec = json.loads(Path(spec_path).read_text())
    settings = EvaluationSettings(**spec["evaluation"])
    run_dir = Path(spec["run_dir"])
    study = optuna.load_study(study_name=spec["study"], storage=spec["storage"])
    trial = optuna.trial.Trial(study, spec["trial_id"])

    class Report(pl.Callback):
        """Training throughput, and intermediate in-context returns for the pruner by step."""

        def __init__(self) -> None:
            self.evaluation = InContextEvaluation(
                every_n_steps=max(settings.every_n_steps, 1),
                episodes=settings.episodes,
                tasks=settings.tasks,
                mode=settings.mode,  # type: ignore[arg-type]
                final_episodes=settings.final_episodes,
                seed=settings.seed,
            )
            self.train_seconds, self.tokens, self._start = 0.0, 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.train_seconds += time.perf_counter() - self._start
            self.tokens += int(batch["actions"].numel())
            step = trainer.global_step
            if settings.every_n_steps and step % settings.every_n_steps == 0:
                summary = self.evaluation.evaluate(pl_module)
                pl_module.log_dict({f"eval/{k}": v for k, v in summary.items()})
                trial.report(summary["return_final"], step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

    args = list(spec["fit_args"])
    cli = make_cli(args, run=False)
    window = getattr(cli.model.backbone, "context_len", None)
    if window is not None and window != cli.datamodule.context_len:
        # an attention window follows the training context it is swept with
        args.append(f"--model.backbone.init_args.context_len={cli.datamodule.context_len}")
        cli = make_cli(args, run=False)
    report = Report()
    cli.trainer.callbacks.append(report)
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
    except optuna.TrialPruned:
        return PRUNED_EXIT_CODE
    checkpoint = run_dir / "final.ckpt"  # the weights at the end of training, evaluated below
    cli.trainer.save_checkpoint(checkpoint)
    eval_args = [str(checkpoint), "--episodes", str(settings.episodes)]
    eval_args += ["--tasks", str(settings.tasks), "--mode", settings.mode]
    eval_args += ["--final_episodes", str(settings.final_episodes), "--seed", str(settings.seed)]
    result = evaluate_checkpoint(parse_args(eval_args))
    write_outputs(result, run_dir / "eval")
    returns = result["returns"]
    attrs: dict[str, Any] = {
        **result["summary"],
        "curve": [float(sum(col) / len(col)) for col in zip(*returns)],
        "parameters": count_parameters(cli.model.backbone),
        "parameters_total": count_parameters(cli.model),
        "train_tokens_per_s": round(report.tokens / max(report.train_seconds, 1e-9), 1),
        "eval_steps_per_s": round(result["env_steps"] / max(result["seconds"], 1e-9), 1),
        "global_step": cli.trainer.global_step,
        "checkpoint": str(checkpoint),
        "eval_dir": str(run_dir / "eval"),
        "fit_command": "zoo fit " + shlex.join(args),
        "evaluate_command": "zoo evaluate " + shlex.join(eval_args),
    }
    if result["source"]:
        source = result["source"]["returns"]
        attrs["source_learner"] = result["source"]["learner"]
        attrs["source_curve"] = [float(sum(col) / len(col)) for col in zip(*source)]
        attrs["source_return_final"] = result["source"]["summary"]["return_final"]
    if torch.cuda.is_available():
        attrs["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (run_dir / "result.json").write_text(json.dumps({"attrs": attrs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
