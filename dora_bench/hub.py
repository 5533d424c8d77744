"""The Hugging Face hub: whether a run needs it, and whether it can be used now (offline mode, no answer).

Light on purpose (no torch, transformers or datasets): the CLI asks before its heavy imports, so a run that
needs an unreachable hub stops within seconds instead of retrying downloads for half a minute.
"""
from __future__ import annotations

import functools
import os
import threading

from omegaconf import DictConfig

from dora_bench.errors import UserError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_TIMEOUT_S = 2.0  # the hub answers a HEAD in well under a second; DNS and proxies count within this too
MODEL_HINT = "pass model.name_or_path=/local/model/dir (or model=minilm for CPU runs)"


def unreachable_reason() -> str | None:
    """Why the hub cannot be used now (offline mode, or no answer within PROBE_TIMEOUT_S); None when it answers."""
    offline = [f"{var}={os.environ[var]}" for var in OFFLINE_VARS
               if os.environ.get(var, "0").lower() in ("1", "true", "yes")]
    return ", ".join(offline) if offline else _probe()


@functools.cache  # one probe per process: a sweep's jobs share it
def _probe() -> str | None:
    from huggingface_hub.constants import ENDPOINT

    answer: list = []
    # A thread with a deadline bounds everything, name resolution included (requests' timeouts do not cover it).
    thread = threading.Thread(target=lambda: answer.append(_head(ENDPOINT)), daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    if not answer:
        return f"no answer from {ENDPOINT} within {PROBE_TIMEOUT_S:g} s"
    return answer[0]


def _head(url: str) -> str | None:
    import requests  # honours HTTPS_PROXY / NO_PROXY like the hub client

    try:
        status = requests.head(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False).status_code
    except requests.RequestException as err:
        return f"no answer from {url}: {type(err).__name__}"
    return f"{url} answered HTTP {status}" if status >= 500 else None


def require_hub(what: str, hint: str) -> None:
    """Stop with one line naming the local override when `what` must come from a hub that cannot be used now."""
    if reason := unreachable_reason():
        raise UserError(f"{what} would come from the hub, which cannot be reached ({reason}); {hint}")


def model_hub_id(model_cfg: DictConfig) -> str | None:
    """The hub id a model config downloads; None for local weights (a package, a random model, a directory)."""
    path = model_cfg.get("name_or_path")
    if model_cfg.get("package") or model_cfg.get("random_init") or not path or os.path.isdir(path):
        return None
    return None if path.startswith((".", "/", "~")) else path  # a local path that does not exist: not a hub id


def check_hub(cfg: DictConfig) -> None:
    """Before anything heavy is imported: a run whose data or model is on an unreachable hub stops at once."""
    needs = []
    if not any(cfg.data.get(key) for key in ("dir", "train_file", "validation_file")):
        needs.append((f"task={cfg.task.name}'s data", f"pass data.dir=<folder with the {cfg.task.name} train and "
                                                        "dev files> (or data.train_file= / data.validation_file=)"))
    if hub_id := model_hub_id(cfg.model):
        needs.append((f"model {hub_id!r}", MODEL_HINT))
    if needs:
        require_hub(" and ".join(what for what, _ in needs), "; ".join(hint for _, hint in needs))
