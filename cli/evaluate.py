"""`zoo evaluate CKPT`: in-context learning curves of a checkpoint on held-out tasks, frozen weights.

Writes to `--out`: `returns.json` (returns per task per episode, summaries, settings),
`returns.csv` (one row per task and episode, in-context and source learner), `curve.png` (the
in-context curve beside the source learner's learning curve on the same tasks). The options
besides the checkpoint and the outputs are the fields of `zoo.evaluation.Evaluation`.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ActionYesNo, Namespace

from cli import Parser, settings_of
from zoo.errors import UsageError, is_user_error, one_line


def parser() -> Parser:
    from zoo.evaluation import Evaluation

    parser = Parser(prog="zoo evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by `zoo fit` (.ckpt)")
    parser.add_class_arguments(Evaluation, skip={"greedy"})
    parser.add_argument("--greedy", action=ActionYesNo, default=False,
                        help="argmax actions instead of sampling")  # fmt: skip
    # a checkpoint's evaluation plays a longer history than the in-training one
    parser.set_defaults(episodes=50)
    parser.add_argument(
        "--env",
        type=str | None,
        default=None,
        help="the env the checkpoint must have been trained on (refused if it was not)",
    )
    parser.add_argument(
        "--source_episodes",
        type=int | None,
        default=None,
        help="episodes of the source learner's curve (null: K x the dataset's keep_every, "
        "none for an expert dataset; 0 skips it)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--out",
        type=Path | None,
        default=None,
        help="output directory (null: eval-<mode> beside the checkpoint's run)",
    )
    return parser


def writable_or_refuse(out: Path) -> None:
    """Refuse (one line) an output folder that cannot be written, before any work is done."""
    import tempfile

    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # nothing is created before the evaluation has run
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".zoo-probe-"):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write to --out {out} ({error.strerror or error}): choose a writable "
            "folder or free space; nothing was evaluated"
        ) from None


def run(options: Namespace, argv: list[str]) -> int:
    from zoo.evaluation import Evaluation, evaluate_checkpoint, write_outputs

    settings = settings_of(Evaluation, options)
    out = options.out or Path(options.checkpoint).resolve().parent.parent / f"eval-{settings.mode}"
    writable_or_refuse(Path(out))  # before the evaluation, not after it
    try:
        result = evaluate_checkpoint(
            options.checkpoint,
            settings,
            env=options.env,
            source_episodes=options.source_episodes,
            device=options.device,
        )
    except ValueError as e:  # e.g. a split the env does not have
        if is_user_error(e):  # already says what to fix (an env mismatch)
            raise
        raise UsageError(one_line(e)) from e
    try:
        write_outputs(result, out)
    except OSError as error:  # the disk filled up while writing: keep the evaluation elsewhere
        import json
        import tempfile

        kept = Path(tempfile.mkstemp(prefix="zoo-evaluate-", suffix=".json")[1])
        kept.write_text(json.dumps(result) + "\n")
        raise UsageError(
            f"cannot write to {out} ({error.strerror or error}): the evaluation is kept in {kept} "
            "(its returns.json); free space or choose another --out"
        ) from None
    summary = result["summary"]
    print(
        f"{result['env']['name']} ({settings.mode}, {len(result['tasks'])} {settings.split} tasks, "
        f"{settings.episodes} episodes): return first {summary['return_first']:.3f}, final "
        f"{summary['return_final']:.3f}, auc {summary['auc']:.3f}, "
        f"{summary['fraction_optimal']:.1%} of optimal"
    )
    if result["source"]:
        source = result["source"]["summary"]
        print(
            f"source learner {result['source']['learner']} ({result['source']['episodes']} "
            f"episodes): final {source['return_final']:.3f}, auc {source['auc']:.3f}"
        )
    print(f"wrote {out}/returns.json, returns.csv, curve.png")
    return 0
