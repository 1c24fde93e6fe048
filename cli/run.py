"""`zoo run`: one run end to end under a protocol, and its record.

    zoo run --config configs/experiments/darkroom.yaml --protocol configs/protocols/darkroom.yaml \
        --seed 0 --out runs/darkroom/seed0 [--set model.backbone=configs/backbone/gru-100k.yaml ...]

Trains what `zoo fit --config ...` would (the configs in order, then each `--set`, then the
training seed, which also seeds the data's validation carve and window order), chooses the
checkpoint on the validation tasks within each budget of the protocol, plays the held-out split
once under each evaluation seed, and writes the run's record (`OUT/record.json`: settings,
protocol, validation curve, choices, test returns per seed and task, cost, the commands that
rerun it). A sweep trial runs exactly this (`sweeps.child`); `bench/reference.sh` runs a family's
reference through it; `zoo sweep rerun OUT/record.json --out DIR` repeats it.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ActionYesNo, Namespace

from cli import Parser
from zoo.errors import UsageError


def parser() -> Parser:
    parser = Parser(prog="zoo run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, action="append", required=True,
                        help="a `zoo fit` config file (repeat it: later ones override earlier)")  # fmt: skip
    parser.add_argument("--set", type=str, action="append", default=None, dest="sets",
                        help="KEY=VALUE over the configs, KEY a `zoo fit` config path and VALUE "
                        "read as YAML (e.g. --set data.context_episodes=2); repeat it")  # fmt: skip
    parser.add_argument("--protocol", type=str, required=True,
                        help="how the run is selected and played: configs/protocols/<family>.yaml")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the training seed")
    parser.add_argument("--test", action=ActionYesNo, default=None,
                        help="play the held-out split (default: the protocol's `test`); "
                        "--no_test trains and selects only, a screen on validation tasks")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the run's folder")
    return parser


def mapping_of(setting: str) -> dict:
    """`a.b.c=VALUE` as `{"a": {"b": {"c": VALUE}}}`, VALUE read as YAML."""
    import yaml

    key, equals, value = setting.partition("=")
    if not equals or not key or "" in key.split("."):
        raise UsageError(f"--set {setting!r}: give KEY=VALUE (e.g. data.context_episodes=2)")
    node: dict = {}
    *parents, last = key.split(".")
    top = node
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)
    return top


def run(args: Namespace, argv: list[str]) -> int:
    from sweeps.trial import load_protocol, run_record

    overrides = {} if args.test is None else {"test": bool(args.test)}
    protocol = load_protocol(args.protocol, **overrides)
    configs = [*args.config, *(mapping_of(s) for s in args.sets or [])]
    record = run_record(configs, protocol=protocol, seed=args.seed, out=args.out)
    validation = record["validation"]
    for budget, choice in sorted(record["budgets"].items(), key=lambda kv: int(kv[0])):
        line = f"budget {budget}: chose step {choice['step']} (validation {choice['val']})"
        if "test" in choice:
            test = choice["test"]
            line += f"; {test['split']} return_final {test['return_final']:.4g}"
            if test.get("fraction_optimal") is not None:
                line += f" ({100 * test['fraction_optimal']:.1f}% of optimal)"
        print(line)
    if record.get("lockbox"):
        print(
            f"lockbox return_final {record['lockbox']['return_final']:.4g} (nothing is chosen on it)"
        )
    peak = validation["peak"]
    print(
        f"trained {record['steps_trained']} of {record['max_steps']} steps"
        + (f"; validation peaked at step {peak['step']} ({peak['value']:.4g})" if peak else "")
    )
    print(f"record: {Path(args.out) / 'record.json'}")
    return 0
