"""Collection: record the learning histories of a source RL learner into a dataset (`zoo collect`).

Every history h plays task `h % num_tasks` of the task table; shard s holds a contiguous range of
histories and is a deterministic function of the config, the seed and s alone, so a killed run
resumes shard by shard (valid shards are skipped) and machines can each write some shards
(`--only_shards`); the manifest is written once all shards are there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from datamodules.reader import check_shard_files, read_shard_record
from datamodules.storage import (
    COLLECTION,
    FORMAT_VERSION,
    MANIFEST,
    DatasetError,
    Manifest,
    read_json,
    shard_name,
    write_json_atomic,
)
from datamodules.writer import write_manifest, write_shard
from envs.base import EnvFamily, make_family
from envs.collection import collect_histories
from envs.learners import LEARNERS, make_learner
from zoo.errors import UsageError


@dataclasses.dataclass
class CollectConfig:
    """What to collect: every field but `output` and `only_shards` makes the dataset's identity."""

    env: str = "darkroom"
    """Registered env family (envs.ENV_FAMILIES), e.g. darkroom, darkroom_hard, key_to_door, bandit."""
    env_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Parameters of the env family (its dataclass fields); the rest keep their defaults."""
    split: Literal["train", "test", "ood"] = "train"
    """Task split to sample from: train (training data), test (held out) or ood."""
    num_tasks: int = 100
    """Number of distinct tasks (rows of the task table, drawn with `seed`)."""
    histories_per_task: int = 1
    """Independent learning histories per task (different learner and env seeds)."""
    learner: str = "q_learning"
    """Registered source learner (envs.learners), e.g. q_learning (grids), ucb1, thompson, epsilon_greedy (bandits)."""
    learner_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Hyper-parameters of the learner; the rest keep their defaults."""
    episodes: int = 200
    """Episodes each learner runs: the length of its learning history."""
    keep_every: int = 1
    """Store every k-th episode of a history (the learning curve keeps all of them)."""
    expert: bool = False
    """Record expert episodes (ED data) instead of learning histories (AD data)."""
    seed: int = 0
    """Seed of the task table and of every shard's learners and envs."""
    num_shards: int = 1
    """Shards to split the histories into: the unit of resuming and of parallel collection."""
    output: str = "data/darkroom"
    """Dataset directory to write."""
    only_shards: list[int] | None = None
    """Collect only these shard indices (several machines, one dataset); default: all."""


RUN_OPTIONS = ("output", "only_shards")
"""Config fields that say how to run a collection, not what it holds."""


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """The histories of shard `index` and the seeds that make it reproducible anywhere."""

    index: int
    histories: np.ndarray  # global history indices
    task_index: np.ndarray  # their rows of the task table
    env_seed: int
    learner_seed: int


def plan_shard(config: CollectConfig, index: int) -> ShardPlan:
    """Shard `index`: a contiguous range of histories, seeds spawned from (`seed`, `index`)."""
    total = config.num_tasks * config.histories_per_task
    start, stop = index * total // config.num_shards, (index + 1) * total // config.num_shards
    histories = np.arange(start, stop, dtype=np.int64)
    seeds = np.random.SeedSequence(config.seed, spawn_key=(index,)).generate_state(2)
    return ShardPlan(
        index=index,
        histories=histories,
        task_index=histories % config.num_tasks,
        env_seed=int(seeds[0]),
        learner_seed=int(seeds[1]),
    )


def identity(
    config: CollectConfig, family: EnvFamily, learner_params: dict[str, Any]
) -> dict[str, Any]:
    """What the dataset holds, with env and learner defaults filled in (same data, same identity)."""
    ident = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_OPTIONS}
    return {
        **ident,
        "env_params": family.params(),
        "learner_params": learner_params,
        "format_version": FORMAT_VERSION,
    }


def fingerprint_of(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def check_config(config: CollectConfig) -> tuple[EnvFamily, np.ndarray, dict[str, Any]]:
    """Validate everything before anything is written; return the family, the task table and the
    learner's full parameters (defaults filled in)."""
    for name in ("num_tasks", "histories_per_task", "episodes", "keep_every", "num_shards"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(config, name)}")
    total = config.num_tasks * config.histories_per_task
    if config.num_shards > total:
        raise UsageError(f"--num_shards {config.num_shards} exceeds the {total} histories")
    bad = sorted(set(config.only_shards or ()) - set(range(config.num_shards)))
    if bad:
        raise UsageError(f"--only_shards {bad} not in [0, {config.num_shards})")
    try:
        family = make_family(config.env, **config.env_params)
        tasks = family.sample_tasks(config.split, config.num_tasks, seed=config.seed)
        learner = make_learner(
            config.learner, num_envs=1, family=family, seed=0, **config.learner_params
        )
    except (ValueError, TypeError) as e:
        raise UsageError(" ".join(str(e).split())) from None
    params: Any = getattr(learner, "params", None)
    is_instance = dataclasses.is_dataclass(params) and not isinstance(params, type)
    full = dataclasses.asdict(params) if is_instance else {}
    return family, tasks, {**full, **config.learner_params}


def parameter_defaults(config: CollectConfig, family: EnvFamily) -> dict[str, dict[str, Any]]:
    """The default of every env and learner parameter, by identity section."""
    params: Any = getattr(LEARNERS[config.learner], "Params", None)
    return {
        # families are dataclasses (the EnvFamily ABC is not, so mypy cannot see it)
        "env_params": dataclasses.asdict(type(family)()),  # type: ignore[call-overload]
        "learner_params": (
            dataclasses.asdict(params())
            if isinstance(params, type) and dataclasses.is_dataclass(params)
            else {}
        ),
    }


def with_new_defaults(ident: dict[str, Any], defaults: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An identity recorded before some env or learner parameters existed, with those at their
    defaults: a new parameter's default keeps the env or learner as it was, so the data is the same."""
    filled = dict(ident)
    for section, values in defaults.items():
        recorded = ident.get(section, {})
        filled[section] = {**{k: v for k, v in values.items() if k not in recorded}, **recorded}
    return filled


def prepare_output(
    root: Path,
    *,
    ident: dict[str, Any],
    fingerprint: str,
    overwrite: bool,
    defaults: dict[str, dict[str, Any]],
) -> str:
    """Refuse an output that holds something else; start it (collection.json) if new. Returns the
    fingerprint its shards carry (an older dataset of the same collection keeps its own)."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"--output {root} is a file; choose a directory")
    if root.is_dir() and any(root.iterdir()):
        if not (root / COLLECTION).exists():
            raise UsageError(f"--output {root} is not empty and not a zoo dataset; choose another")
        try:
            previous = read_json(root / COLLECTION, what="collection record")
        except DatasetError:
            previous = {}  # unreadable: treated as a different collection
        old = previous.get("identity", {})
        if previous.get("fingerprint") != fingerprint:
            if fingerprint_of(with_new_defaults(old, defaults)) == fingerprint:
                return str(previous["fingerprint"])  # the same collection, recorded earlier
            if not overwrite:
                changed = sorted(k for k in ident if old.get(k) != ident[k])
                raise UsageError(
                    f"--output {root} holds a different collection (differs in {', '.join(changed)}); "
                    "choose another --output, or pass --overwrite to replace it"
                )
            shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / COLLECTION, {"fingerprint": fingerprint, "identity": ident})
    return fingerprint


def valid_record(root: Path, plan: ShardPlan, fingerprint: str) -> dict[str, Any] | None:
    """The record of shard `plan.index` if it is complete and intact, else None (recollect it)."""
    try:
        record = read_shard_record(root, plan.index)
        if record is None or record.get("fingerprint") != fingerprint:
            return None
        if record.get("histories") != len(plan.histories):
            return None
        check_shard_files(root / record["name"], record, verify="checksum")
    except (DatasetError, KeyError, TypeError):
        return None
    return record


@dataclasses.dataclass(frozen=True)
class CollectResult:
    root: Path
    collected: list[int]  # shards written by this run
    reused: list[int]  # shards already complete
    transitions: int  # stored by this run
    played: int  # transitions the learners played this run (more than stored when keep_every > 1)
    seconds: float
    manifest: Manifest | None  # None while some shards are missing (--only_shards)


def collect(
    config: CollectConfig, *, command: str, overwrite: bool = False, progress: bool = True
) -> CollectResult:
    """Collect the missing shards of `config`'s dataset; write the manifest once all are there."""
    family, tasks, learner_params = check_config(config)
    ident = identity(config, family, learner_params)
    fingerprint = fingerprint_of(ident)
    root = Path(config.output)
    fingerprint = prepare_output(
        root,
        ident=ident,
        fingerprint=fingerprint,
        overwrite=overwrite,
        defaults=parameter_defaults(config, family),
    )

    plans = [plan_shard(config, s) for s in range(config.num_shards)]
    records, todo, reused = _shards_to_write(config, plans, root, fingerprint)
    start, written, played = time.perf_counter(), 0, 0

    def advance(n: int) -> None:
        nonlocal played
        played += n
        bar.update(n)

    with tqdm(
        unit=" transitions", unit_scale=True, disable=not progress, dynamic_ncols=True
    ) as bar:
        for plan in todo:
            bar.set_description_str(f"shard {plan.index + 1}/{config.num_shards}")
            records[plan.index] = _collect_shard(
                config, family, tasks, plan, root, fingerprint, progress=advance
            )
            written += records[plan.index]["transitions"]
    seconds = time.perf_counter() - start
    manifest = None
    if len(records) == len(plans):
        ordered = [records[p.index] for p in plans]
        manifest = _manifest(config, family, tasks, learner_params, ordered, fingerprint, command)
        write_manifest(root, manifest)
    return CollectResult(root, [p.index for p in todo], reused, written, played, seconds, manifest)


def _shards_to_write(
    config: CollectConfig, plans: list[ShardPlan], root: Path, fingerprint: str
) -> tuple[dict[int, dict[str, Any]], list[ShardPlan], list[int]]:
    """(the valid shards' records by index, the plans of the wanted shards to write, the wanted
    shards already valid). With shards to write, the manifest goes (the dataset is not complete
    until every shard is valid again), and so do a killed writer's leftovers of those shards."""
    records = {p.index: r for p in plans if (r := valid_record(root, p, fingerprint)) is not None}
    wanted = set(config.only_shards) if config.only_shards is not None else set(range(len(plans)))
    todo = [p for p in plans if p.index in wanted and p.index not in records]
    if todo:
        (root / MANIFEST).unlink(missing_ok=True)
    for plan in todo:
        for stale in root.glob(f".{shard_name(plan.index)}.*"):
            shutil.rmtree(stale, ignore_errors=True)
    return records, todo, sorted(wanted & set(records))


def _collect_shard(
    config: CollectConfig,
    family: EnvFamily,
    tasks: np.ndarray,
    plan: ShardPlan,
    root: Path,
    fingerprint: str,
    *,
    progress: Any,
) -> dict[str, Any]:
    """Play shard `plan`'s learners on their tasks and write the shard; its record."""
    learner = make_learner(
        config.learner,
        num_envs=len(plan.histories),
        family=family,
        seed=plan.learner_seed,
        **config.learner_params,
    )
    histories = collect_histories(
        family,
        tasks[plan.task_index],
        learner,
        episodes=config.episodes,
        keep_every=config.keep_every,
        expert=config.expert,
        seed=plan.env_seed,
        task_index=plan.task_index,
        progress=progress,
    )
    return write_shard(
        root,
        index=plan.index,
        histories=histories,
        fingerprint=fingerprint,
        meta={
            "first_history": int(plan.histories[0]),
            "env_seed": plan.env_seed,
            "learner_seed": plan.learner_seed,
        },
    )


def _manifest(
    config: CollectConfig,
    family: EnvFamily,
    tasks: np.ndarray,
    learner_params: dict[str, Any],
    ordered: list[dict[str, Any]],
    fingerprint: str,
    command: str,
) -> Manifest:
    """The dataset's manifest from every shard's record, in shard order."""
    return Manifest(
        format_version=FORMAT_VERSION,
        fingerprint=fingerprint,
        env=config.env,
        env_id=family.env_id,
        env_params=family.params(),
        split=config.split,
        mode="expert" if config.expert else "ad",
        tasks=tasks.tolist(),
        learner=config.learner,
        learner_params=learner_params,
        seed=config.seed,
        num_histories=sum(r["histories"] for r in ordered),
        num_transitions=sum(r["transitions"] for r in ordered),
        episodes_per_history=config.episodes,
        keep_every=config.keep_every,
        num_shards=config.num_shards,
        shards=ordered,
        command=command,
        config=dataclasses.asdict(config),
    )


def summary(result: CollectResult, config: CollectConfig) -> str:
    rate = result.played / result.seconds if result.seconds > 0 else 0.0
    lines = [
        f"collected {len(result.collected)} shard(s), reused {len(result.reused)} already complete: "
        f"played {result.played:,} transitions ({rate:,.0f}/s, {result.seconds:.1f} s), "
        f"stored {result.transitions:,}"
    ]
    manifest = result.manifest
    if manifest is None:
        lines.append(
            f"{result.root}: not complete yet (the other shards of {config.num_shards} are missing); "
            "the manifest is written by the run that completes the last shard"
        )
    else:
        size = sum(f["bytes"] for r in manifest.shards for f in r["files"].values())
        lines += [
            f"{result.root}: {manifest.env} ({manifest.split}, {len(manifest.tasks)} tasks), "
            f"learner {manifest.learner}, mode {manifest.mode}",
            f"  {manifest.num_histories:,} histories x {manifest.episodes_per_history} episodes "
            f"(every {manifest.keep_every} kept), {manifest.num_transitions:,} transitions, "
            f"{manifest.num_shards} shard(s), {size / 2**20:.1f} MiB",
            f"inspect it with: zoo data info {result.root}",
        ]
    return "\n".join(lines)


def collected_with_seed(config_path: str | Path, seed: int) -> Path:
    """The dataset of the `zoo collect` config at `config_path` collected with `seed` (its task
    table, its learners' and envs' seeds), at `<output>-seed<seed>`; collected first if it is not
    complete there. Several processes asking at once wait for one another (a lock beside it), and
    a collection cut off resumes shard by shard."""
    import fcntl

    import yaml

    from zoo.yaml_keys import check_unique_keys

    text = Path(config_path).read_text()
    check_unique_keys(text, source=str(config_path))
    raw = yaml.safe_load(text) or {}
    known = {f.name for f in dataclasses.fields(CollectConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UsageError(f"{config_path}: unknown collect options {unknown}")
    base = CollectConfig(**raw)
    config = dataclasses.replace(base, seed=seed, output=f"{base.output}-seed{seed}")
    root = Path(config.output)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{root}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        collect(config, command=f"collected_with_seed({config_path!s}, {seed})", progress=False)
    return root
