"""`zoo run`: one run end to end under a protocol, and its record.

    zoo run --config configs/experiments/darkroom.yaml --protocol configs/protocols/darkroom.yaml \
        --seed 0 --out runs/darkroom/seed0 [--set model.backbone=configs/backbone/gru-100k.yaml ...]

Trains what `zoo fit --config ...` would (the configs and `--set`s in the order given, then the
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
                        help="a `zoo fit` config file; repeat it, and --set: they apply in the "
                        "order given, later ones over earlier ones")  # fmt: skip
    parser.add_argument("--set", type=str, action="append", default=None, dest="sets",
                        help="KEY=VALUE, KEY a `zoo fit` config path and VALUE read as YAML (e.g. "
                        "--set data.context_episodes=2); the seed is --seed")  # fmt: skip
    parser.add_argument("--protocol", type=str, required=True,
                        help="how the run is selected and played: configs/protocols/<family>.yaml")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the training seed")
    parser.add_argument("--test", action=ActionYesNo, default=None,
                        help="play the held-out split (default: the protocol's `test`); "
                        "--no_test trains and selects only, a screen on validation tasks")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the run's folder")
    return parser


SEEDED = ("seed_everything", "data.seed")
"""Set by `--seed` (the training seed seeds both), never by `--set`."""


def mapping_of(setting: str) -> dict:
    """`a.b.c=VALUE` as `{"a": {"b": {"c": VALUE}}}`, VALUE read as YAML."""
    import yaml

    key, equals, value = setting.partition("=")
    if not equals or not key or "" in key.split("."):
        raise UsageError(f"--set {setting!r}: give KEY=VALUE (e.g. data.context_episodes=2)")
    if key in SEEDED:
        raise UsageError(
            f"--set {key}: the training seed is --seed (it sets both {' and '.join(SEEDED)})"
        )
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise UsageError(
            f"--set {setting!r}: the value is not YAML ({str(error).splitlines()[0]})"
        ) from None
    node: dict = {}
    *parents, last = key.split(".")
    top = node
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = parsed
    return top


def in_order(argv: list[str]) -> list[str | dict]:
    """The `--config` files and `--set` mappings of a command line in the order they were given:
    later ones override earlier ones, as `zoo fit --config A --key value --config B` does."""
    sources: list[str | dict] = []
    for i, word in enumerate(argv):
        for option in ("--config", "--set"):
            value = None
            if word == option and i + 1 < len(argv):
                value = argv[i + 1]
            elif word.startswith(option + "="):
                value = word.split("=", 1)[1]
            if value is not None:
                sources.append(value if option == "--config" else mapping_of(value))
    return sources


def run(args: Namespace, argv: list[str]) -> int:
    from sweeps.trial import load_protocol, run_record

    overrides = {} if args.test is None else {"test": bool(args.test)}
    protocol = load_protocol(args.protocol, **overrides)
    configs = in_order(argv)
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
