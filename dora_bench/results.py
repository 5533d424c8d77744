"""Run identity, result paths and the one typed result record (writer, tables and tests share it).

A run's identity is its resolved config minus the keys that cannot change its numbers (NOT_IDENTITY),
plus its seed. Result files live at

    <results_dir>/runs/<model>/<task>/<method>[-<budget>][<tag>]/<variant>/seed=<n>.json

where <variant> names the identity's values that differ from the defaults of its model/task/method/budget
(`default` when none). A result is reused only when its stored fingerprint equals the current one.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import re
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from dora_bench.errors import UserError
from dora_bench.files import atomic_write_text  # noqa: F401  (results.atomic_write_text: callers keep the name)

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)   # 1 is migrated on read (see _migrate_v1)

# The only keys that are not part of a run's identity, because they cannot change its numbers: where
# things are written or cached, whether finished seeds are redone, checkpoint housekeeping (resume is exact,
# so extra step checkpoints change nothing), logging and progress output, what a second process does while
# another trains the run (`lock`), Hydra's own settings, and `report` (applied when a result is read, from its
# epochs). `seeds` only lists the seeds to run; each run's own seed is part of its identity.
NOT_IDENTITY = ("results_dir", "cache_dir", "force", "keep_checkpoints", "report", "seeds", "lock",
                "trainer.save_steps", "trainer.progress_bar", "trainer.logging_steps", "trainer.report_to", "hydra")

# Keys added after results were first committed, each with the value that does exactly what the code did before
# the key existed: at that value the key is left out of the identity, so a result made before it existed is
# still found (and never retrained); any other value is part of the identity like every key. A new key whose
# default changes the numbers does not belong here: its runs are new configurations.
ADDED_KEYS: dict[str, Any] = {
    "method.adapter_dtype": "fp32",             # DoRA's A, B, c took the base's dtype, and every base was fp32
    "model.dtype": "fp32",                      # base weights loaded in fp32
    "model.gguf_file": None,                    # weights from safetensors, not a GGUF file
    "trainer.gradient_checkpointing": False,
}

# Where the data lies is not what it is: these location keys give way to `data.sha256`, a digest of the
# files they point to, so a committed result is found again from any checkout of the same files.
DATA_LOCATIONS = ("dir", "train_file", "validation_file")

# Headline metrics where lower is better (every other metric: higher is better). Wherever a best is chosen (the
# best epoch, a table cell's configuration, a search's objective, an edge-of-grid mark) this decides the order.
LOWER_IS_BETTER = frozenset({"answer_nll", "loss"})

MAX_VARIANT_CHARS = 200   # under the usual 255-byte file name limit, with room for an alternate suffix
_SAFE = re.compile(r"[A-Za-z0-9._+-]+")


class _Absent:
    """A default key that a run's config does not have (an older layout, or `~key` on the command line)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


# ----- identity --------------------------------------------------------------------------------------
def _canonical(value: Any) -> Any:
    """0 and 0.0 (or 1e-3 typed twice) are one configuration: integral floats become ints."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def identity(cfg: DictConfig | dict, seed: int | None = None) -> dict[str, Any]:
    """The resolved config minus NOT_IDENTITY, with `seed` the run's seed (None: the configuration alone).

    A budget-free method (Full FT, BitFit) ignores the budget group, so it is not part of its identity.
    """
    spec = copy.deepcopy(cfg) if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    for dotted in (*NOT_IDENTITY, "seed"):
        _pop(spec, dotted)
    for dotted, before in ADDED_KEYS.items():
        _pop(spec, dotted, only_if=before)
    method = spec.get("method")
    if isinstance(method, dict) and method.get("uses_budget") is False:
        spec.pop("budget", None)
    _data_by_content(spec)
    spec = _canonical(spec)
    if seed is not None:
        spec["seed"] = int(seed)
    return spec


def _pop(spec: dict[str, Any], dotted: str, only_if: Any = ABSENT) -> None:
    """Remove a dotted key from a nested config (when it holds `only_if`, if given)."""
    *parents, last = dotted.split(".")
    node = spec
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and last in node and (only_if is ABSENT or _same(node[last], only_if)):
        node.pop(last)


def _same(value: Any, expected: Any) -> bool:
    """Equal and of one kind: False is not 0, 1.0 is 1 (see _canonical)."""
    value = _canonical(value)
    return value == expected and type(value) is type(expected)


def _data_by_content(spec: dict[str, Any]) -> None:
    """Replace the data location keys by `data.sha256` of the files they name (nothing for hub data). Files
    that cannot be read leave the locations in place: the run then fails at loading, naming them, and an
    old result whose files are gone keeps the identity it had."""
    data = spec.get("data")
    if not isinstance(data, dict):
        return
    named = {key: value for key in DATA_LOCATIONS if (value := data.pop(key, None)) is not None}
    if not named:
        return   # hub data
    from dora_bench.tasks import data_sha256   # datasets is imported only when local data is named

    try:
        data["sha256"] = data_sha256(OmegaConf.create(spec | {"data": data | named}))
    except (UserError, OSError, KeyError, AttributeError):
        data.update(named)


def fingerprint(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def without_seed(ident: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ident.items() if k != "seed"}


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"trainer.learning_rate": 0.002, ...}; lists and empty mappings are values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _choice(ident: dict[str, Any], group: str) -> str | None:
    node = ident.get(group)
    return node.get("name") if isinstance(node, dict) else None


def compose_config(overrides: tuple[str, ...] | list[str]) -> DictConfig:
    """The config composed from these overrides alone. Inside a running dora-bench (Hydra initialised) the
    app's own search path is used, so extra config dirs from the command line are found too."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=list(overrides))
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@functools.lru_cache(maxsize=256)
def _default_leaves(model: str, task: str, method: str, budget: str | None) -> dict[str, Any] | None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = (f"model={model}", f"task={task}", f"method={method}") + ((f"budget={budget}",) if budget else ())
    try:
        return leaves(identity(compose_config(overrides)))
    except (HydraException, OmegaConfBaseException):
        return None   # a group option this install does not have: no defaults to compare with


def variant(ident: dict[str, Any]) -> dict[str, Any] | None:
    """The identity's values that differ from the defaults of its model, task, method and budget (the tag
    and seed are named elsewhere in the path); None when those defaults cannot be composed."""
    choices = [_choice(ident, group) for group in ("model", "task", "method", "budget")]
    if None in choices[:3]:
        return None
    defaults = _default_leaves(*choices)
    if defaults is None:
        return None
    ours = leaves({k: v for k, v in ident.items() if k not in ("seed", "tag")})
    defaults = {k: v for k, v in defaults.items() if k != "tag"}
    changed = {k: v for k, v in ours.items() if k not in defaults or defaults[k] != v}
    return changed | {k: ABSENT for k in defaults if k not in ours}


def value_text(value: Any) -> str:
    """How a config value reads in labels: YAML-like scalars, compact JSON for lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _short_hash(text: str, chars: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def _path_item(key: str, value: Any) -> str:
    """`key=value`, with a value that is not file-name safe (paths, lists, long text) shown as its last
    safe part and a hash of the whole value: `data.dir=glue~1a2b3c4d`."""
    if value is ABSENT:
        return f"~{key}"
    text = value_text(value)
    if not (_SAFE.fullmatch(text) and len(text) <= 40):
        tail = "".join(_SAFE.findall(text.rstrip("/").rsplit("/", 1)[-1]))[:24]
        text = f"{tail}~{_short_hash(text)}"
    return f"{key}={text}" if _SAFE.fullmatch(key) else f"key~{_short_hash(key)}={text}"


def variant_dir(changed: dict[str, Any] | None, config_fingerprint: str) -> str:
    """The <variant> folder: `default`, or the changed keys like Hydra's override_dirname (sorted,
    `key=value` joined by commas); when too long, the leading items and a hash of the full text."""
    if changed is None:
        return f"config-{config_fingerprint[:12]}"
    if not changed:
        return "default"
    items = [_path_item(k, v) for k, v in sorted(changed.items())]
    name = ",".join(items)
    if len(name) <= MAX_VARIANT_CHARS:
        return name
    kept: list[str] = []
    for item in items:   # room for the tail ",+NNmore~<10 hex>"
        if len(",".join(kept + [item])) > MAX_VARIANT_CHARS - 20:
            break
        kept.append(item)
    return ",".join(kept + [f"+{len(items) - len(kept)}more~{_short_hash(name, 10)}"])


def folder_name(text: str) -> str:
    """One folder name at most MAX_VARIANT_CHARS long: a `/` (a path in an override's value) reads `%2F`, so the
    name never leads elsewhere; a longer text is cut and ends in a hash of the whole."""
    text = text.replace("/", "%2F")
    return text if len(text) <= MAX_VARIANT_CHARS else f"{text[:MAX_VARIANT_CHARS - 11]}~{_short_hash(text, 10)}"


def run_name(cfg: DictConfig) -> str:
    """`task/method-budget[tag]`; budget-free methods (Full FT, BitFit) have no budget part."""
    method = cfg.method.name + (f"-{cfg.budget.name}" if cfg.method.uses_budget else "")
    return f"{cfg.task.name}/{method}{cfg.tag}"


@dataclass(frozen=True)
class RunLocation:
    """Where one (configuration, seed) keeps its result and its checkpoints, and what identifies it."""
    result: Path
    checkpoints: Path
    identity: dict[str, Any]
    fingerprint: str

    def existing(self) -> RunResult | None:
        """The complete result of this very run, if one was written (else None: train)."""
        try:
            found = read_result(self.result)
        except ValueError:
            return None
        return found if found.complete and found.fingerprint == self.fingerprint else None

    @property
    def logs(self) -> Path:
        """Tracker event files (TensorBoard), kept beside the result."""
        return self.result.with_suffix(".logs")

    @property
    def lock(self) -> Path:
        """The lock file of whoever trains this run now (dora_bench/locks.py), beside its checkpoint folder."""
        return self.checkpoints.with_name(f"{self.checkpoints.name}.lock")

    @property
    def predictions(self) -> Path:
        """SQuAD answers / XSum summaries of the latest evaluation. A folder, not `seed=N.predictions.json`:
        result files are found by the pattern `seed=*.json`."""
        return self.result.with_suffix(".predictions")


def locate(cfg: DictConfig, seed: int) -> RunLocation:
    """The result file and checkpoint folder of (cfg, seed): the readable variant folder, unless results of
    another configuration are already there (e.g. written before a default changed): then the same name
    with `~<config hash>`. A file of another configuration is never reused nor overwritten."""
    ident = identity(cfg, seed)
    config = without_seed(ident)
    config_fp = fingerprint(config)
    name = variant_dir(variant(ident), config_fp)
    relative = Path(cfg.model.name) / run_name(cfg)
    root = Path(cfg.results_dir)
    for candidate in (name, f"{name}~{config_fp[:10]}"):
        if not _held_by_another(root / "runs" / relative / candidate, config_fp):
            return check_inside(root, RunLocation(root / "runs" / relative / candidate / f"seed={seed}.json",
                                                  root / "checkpoints" / relative / candidate / f"seed={seed}",
                                                  ident, fingerprint(ident)))
    raise UserError(f"{root / 'runs' / relative / name} and its alternate hold results of other configurations; "
                    f"move them or choose another results_dir")


def check_inside(root: Path, where: RunLocation) -> RunLocation:
    """Every path of a run lies under results_dir (the schema keeps names free of `/` and `..`; this holds
    whatever builds a name). Lexical, so a results_dir that is a symlink to scratch space stays allowed."""
    base = os.path.abspath(root)
    for what in ("result", "checkpoints", "lock", "logs", "predictions"):
        path = os.path.abspath(getattr(where, what))
        if os.path.commonpath([base, path]) != base or path == base:
            raise UserError(f"the {what} path {path} of this run lies outside results_dir={str(root)!r}; "
                            "nothing was written")
    return where


def _held_by_another(folder: Path, config_fp: str) -> bool:
    for path in folder.glob("seed=*.json"):
        try:
            other = read_result(path)
        except ValueError:
            continue   # not a result (cut off, foreign): it identifies nothing
        if fingerprint(without_seed(other.identity)) != config_fp:
            return True
    return False


# ----- the result record -----------------------------------------------------------------------------
@dataclass
class Epoch:
    epoch: float
    step: int
    metrics: dict[str, Any]


@dataclass
class Selection:
    """The per-seed score under a `report` rule, computed when a result is read."""
    rule: str
    after_step: int
    epoch: float
    step: int
    score: float
    metrics: dict[str, Any]


@dataclass
class Params:
    trainable_paper: int      # the paper's convention: task head excluded
    trainable_with_head: int
    total: int


@dataclass
class Timing:
    wall_s: float | None = None
    train_runtime_s: float | None = None
    step_time_median_s: float | None = None
    eval_runtime_s: float | None = None
    train_samples_per_s: float | None = None
    peak_memory_mb: float | None = None
    # "run": the peak since this run's training began (memory.reset_peak); None (results written before it was
    # recorded): on a CPU the process's lifetime peak, which in a multirun includes the jobs before it
    peak_memory_scope: str | None = None
    train_tokens: int | None = None          # non-padding input tokens trained on (this process)
    train_tokens_per_s: float | None = None  # train_tokens / the summed optimizer-step times


@dataclass
class TrainInfo:
    optimizer_steps: int
    train_samples: int
    eval_samples: dict[str, int]
    resumed_from: str | None = None
    world_size: int = 1
    rank_agreement: dict[str, Any] | None = None


@dataclass
class RunResult:
    """One seed of one configuration; `complete` or `failed` (then `error` and `traceback`)."""
    status: str
    task: str
    method: str
    budget: str | None
    model: str
    tag: str
    seed: int
    identity: dict[str, Any]          # what made the numbers (see NOT_IDENTITY)
    fingerprint: str                  # fingerprint(identity): reuse and checkpoint resume compare it
    config: dict[str, Any]            # the full resolved config, identity or not
    env: dict[str, Any]               # versions, platform, device, git commit
    metric: str | None = None
    epochs: list[Epoch] = field(default_factory=list)
    final_structure_step: int = 0     # pruning methods: the `best` rule looks at epochs from this step on
    params: Params | None = None
    method_summary: dict[str, Any] = field(default_factory=dict)
    train: TrainInfo | None = None
    timing: Timing = field(default_factory=Timing)
    data: dict[str, Any] = field(default_factory=dict)   # data file hashes
    search_space: dict[str, Any] | None = None   # an Optuna trial: the space it was drawn from (search_space.py)
    adapter_dir: str | None = None
    adapter_bytes: int | None = None  # the exported adapter's size on disk (None: the method exports none)
    error: str | None = None
    traceback: str | None = None
    schema: int = SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def lower_is_better(self) -> bool:
        """The headline metric's direction (answer NLL: lower is better)."""
        return lower_is_better(self.metric)

    def select(self, report: str) -> Selection:
        """`best`: the best dev epoch (the lowest for a lower-is-better metric) at or after the final structure
        step (pruning methods; else any); `last`: the last evaluated epoch."""
        if report not in ("best", "last"):
            raise ValueError(f"report={report!r} is not a rule; allowed: best, last")
        if not self.epochs:
            raise ValueError("no evaluated epochs")
        if missing := [e.epoch for e in self.epochs if "score" not in e.metrics]:
            raise ValueError(f"epoch(s) {missing} without a score")
        eligible = [e for e in self.epochs if e.step >= self.final_structure_step] or self.epochs[-1:]
        better = self.lower_is_better
        chosen = (max(eligible, key=lambda e: ranking(e.metrics["score"], better)) if report == "best"
                  else self.epochs[-1])
        try:
            score = float(chosen.metrics["score"])   # "nan" as stored stays NaN
        except (TypeError, ValueError):
            raise ValueError(f"score {chosen.metrics['score']!r} is not a number") from None
        return Selection(report, self.final_structure_step, chosen.epoch, chosen.step, score, chosen.metrics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        result = _build(cls, data, "result")
        if result.status not in ("complete", "failed"):
            raise ValueError(f"status {result.status!r} (expected complete or failed)")
        return result


def _number(value: Any) -> float:
    """Scores as stored; non-finite ones are kept as strings ("nan") and never win."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


def lower_is_better(metric: str | None) -> bool:
    """Whether a smaller value of this headline metric is the better one (NLL); unknown names: higher is better."""
    return metric in LOWER_IS_BETTER


def ranking(value: Any, lower_better: bool) -> float:
    """A score as a number where larger is always better (minimised metrics negated); non-finite ones never win."""
    number = _number(value)
    return number if not lower_better or number == -math.inf else -number


def _dataclass_of(hint: Any) -> tuple[type | None, bool]:
    """(dataclass, is_list) inside `X`, `X | None` or `list[X]`."""
    if get_origin(hint) is list:
        inner = get_args(hint)[0]
        return (inner, True) if is_dataclass(inner) else (None, False)
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return (inner[0], False) if len(inner) == 1 and is_dataclass(inner[0]) else (None, False)
    return (hint, False) if is_dataclass(hint) else (None, False)


def _build(cls: type, data: Any, where: str):
    """A dataclass from parsed JSON: every required field present, no unknown field, nested records built."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    declared = {f.name: f for f in fields(cls)}
    if unknown := sorted(set(data) - set(declared)):
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    required = [n for n, f in declared.items() if f.default is MISSING and f.default_factory is MISSING]
    if missing := [n for n in required if n not in data]:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        inner, is_list = _dataclass_of(hints[name])
        if inner is None or value is None:
            kwargs[name] = value
        elif is_list:
            if not isinstance(value, list):
                raise ValueError(f"{where}.{name}: expected a list")
            kwargs[name] = [_build(inner, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[name] = _build(inner, value, f"{where}.{name}")
    return cls(**kwargs)


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (path without the variant folder, `selected` stored at write time) -> schema 2: the
    identity comes from the stored resolved config, the epoch rule's step from `selected.after_step`."""
    for key in ("config", "seed", "status"):
        if key not in data:
            raise ValueError(f"no {key!r}")
    migrated = {k: v for k, v in data.items() if k not in ("schema", "selected")}
    ident = identity(data["config"], data["seed"])
    migrated |= {"schema": SCHEMA_VERSION, "identity": ident, "fingerprint": fingerprint(ident)}
    if data["status"] == "complete":
        selected = data.get("selected")
        if not isinstance(selected, dict) or not isinstance(selected.get("after_step"), int):
            raise ValueError("no selected.after_step (the step the epoch rule starts at)")
        migrated["final_structure_step"] = selected["after_step"]
    return migrated


# ----- files -----------------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    """JSON has no NaN/Inf: store them as strings so files stay standard and nothing is hidden."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_result(path: Path, result: RunResult) -> None:
    atomic_write_text(path, json.dumps(_finite(result.to_dict()), indent=2, sort_keys=False) + "\n")


def read_result(path: Path) -> RunResult:
    """Load one result file (schema 1 is migrated); raises ValueError naming the file and the reason."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict) or "schema" not in data or "status" not in data:
        raise ValueError(f"{path}: not a dora-bench result")
    if data["schema"] not in READABLE_SCHEMAS:
        raise ValueError(f"{path}: result schema {data['schema']!r}; this version reads "
                         f"{', '.join(map(str, READABLE_SCHEMAS))}")
    try:
        return RunResult.from_dict(_migrate_v1(data) if data["schema"] == 1 else data)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: schema {data['schema']} result, {err}") from None


def iter_results(root: Path) -> Iterator[tuple[Path, RunResult | None, str | None]]:
    """Every `seed=*.json` under root/runs as (path, result or None, problem or None); never raises."""
    for path in sorted((Path(root) / "runs").rglob("seed=*.json")):
        try:
            yield path, read_result(path), None
        except ValueError as err:
            yield path, None, str(err)
