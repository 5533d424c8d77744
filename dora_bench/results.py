"""Per-run result files: schema, atomic writes, completeness, loading for tables."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

SCHEMA_VERSION = 1


def run_name(cfg: DictConfig) -> str:
    """`task/method-budget[tag]`; budget-free methods (Full FT, BitFit) have no budget part."""
    method = cfg.method.name + (f"-{cfg.budget.name}" if cfg.method.uses_budget else "")
    return f"{cfg.task.name}/{method}{cfg.tag}"


def result_path(cfg: DictConfig, seed: int) -> Path:
    return Path(cfg.results_dir) / "runs" / cfg.model.name / run_name(cfg) / f"seed={seed}.json"


def checkpoint_dir(cfg: DictConfig, seed: int) -> Path:
    return Path(cfg.results_dir) / "checkpoints" / cfg.model.name / run_name(cfg) / f"seed={seed}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(value: Any) -> Any:
    """JSON has no NaN/Inf: store them as strings so files stay standard and nothing is hidden."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_result(path: Path, result: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(_finite(result), indent=2, sort_keys=False) + "\n")


def read_result(path: Path) -> dict[str, Any]:
    """Load one result file; raises ValueError when it is not a dora-bench result."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or "status" not in data:
        raise ValueError(f"{path}: not a dora-bench result (schema {SCHEMA_VERSION})")
    return data


def is_complete(path: Path) -> bool:
    try:
        return read_result(path)["status"] == "complete"
    except ValueError:
        return False


def iter_results(root: Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every `*.json` under root/runs as (path, result or None, problem or None); never raises."""
    for path in sorted((Path(root) / "runs").rglob("seed=*.json")):
        try:
            yield path, read_result(path), None
        except ValueError as err:
            yield path, None, str(err)
