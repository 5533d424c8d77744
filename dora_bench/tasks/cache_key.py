"""The key of a tokenised-feature cache entry: everything that shapes the features, in one place for every task.

A cached `dataset.map(fn)` may be reused only when it would compute the same features, so the key covers
- the rows: the dataset's own fingerprint (`datasets` derives it from the data and every select/shuffle since);
- the preprocessing: the function's source, and recursively the source of the dora_bench functions and classes it
  calls, its default arguments, closure values and `functools.partial` arguments (prompt templates, lengths,
  strides, the tokenizer), the way `datasets` fingerprints a map but also through helper functions;
- the tokenizer: its class, full definition (vocabulary, merges, normalisation), special tokens and sides;
- the versions of the libraries that tokenise, and the map's own arguments.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import marshal
import types
from importlib import metadata
from typing import Any, Callable

PACKAGE = "dora_bench"
TOKENISING_PACKAGES = ("transformers", "tokenizers", "datasets")


def feature_key(dataset, fn: Callable, map_kwargs: dict[str, Any]) -> str:
    """sha256 of the rows, the preprocessing (code and bound values), the tokenizer and the library versions."""
    parts = {
        "rows": dataset._fingerprint,
        "columns": sorted(dataset.column_names),
        "fn": describe(fn, set()),
        "map": describe(map_kwargs, set()),
        "versions": {name: metadata.version(name) for name in TOKENISING_PACKAGES},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def describe(value: Any, seen: set[int]) -> Any:
    """A JSON-able description of a value that changes whenever the value would compute something else."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if id(value) in seen:
        return "<recursion>"
    seen = seen | {id(value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [describe(v, seen) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(k): describe(v, seen) for k, v in value.items()}
    if isinstance(value, functools.partial):
        return {"partial": describe(value.func, seen), "args": describe(value.args, seen),
                "keywords": describe(value.keywords, seen)}
    if _is_tokenizer(value):
        return tokenizer_digest(value)
    if isinstance(value, types.MethodType):
        return {"method": describe(value.__func__, seen), "self": describe(value.__self__, seen)}
    if isinstance(value, types.FunctionType):
        return _function(value, seen)
    if isinstance(value, type):
        return _source(value) if value.__module__.startswith(PACKAGE) else f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if dataclasses.is_dataclass(value):
        return {"dataclass": type(value).__qualname__,
                "fields": describe({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, seen)}
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return describe(OmegaConf.to_container(value, resolve=True), seen)
    from datasets.fingerprint import Hasher

    return {"hash": Hasher.hash(value)}


def _is_tokenizer(value: Any) -> bool:
    return any(cls.__name__ == "PreTrainedTokenizerBase" for cls in type(value).__mro__)


def tokenizer_digest(tokenizer) -> dict[str, Any]:
    """What decides how a tokenizer splits text and which special tokens it adds."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = hashlib.sha256(backend.to_str().encode()).hexdigest()
    else:  # a slow (Python) tokenizer: its pickled state
        from datasets.fingerprint import Hasher

        definition = Hasher.hash(tokenizer)
    return {"class": type(tokenizer).__name__, "definition": definition, "size": len(tokenizer),
            "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
            "special_ids": tokenizer.all_special_ids, "padding_side": tokenizer.padding_side,
            "truncation_side": tokenizer.truncation_side, "model_max_length": tokenizer.model_max_length,
            "add_bos": getattr(tokenizer, "add_bos_token", None), "add_eos": getattr(tokenizer, "add_eos_token", None)}


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return hashlib.sha256(marshal.dumps(code)).hexdigest() if code is not None else repr(obj)


def _function(fn: types.FunctionType, seen: set[int]) -> dict[str, Any]:
    """Source, defaults, closure values and the dora_bench names it refers to (recursively)."""
    closure = {name: describe(cell.cell_contents, seen)
               for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()) if _cell_filled(cell)}
    referred = {}
    for name in sorted(_global_names(fn.__code__)):
        if name in fn.__globals__:
            target = fn.__globals__[name]
            if _ours(target) or isinstance(target, (str, int, float, bool, tuple, frozenset, list, dict)):
                referred[name] = describe(target, seen)
    return {"function": f"{fn.__module__}.{fn.__qualname__}", "source": _source(fn),
            "defaults": describe(fn.__defaults__, seen), "kwdefaults": describe(fn.__kwdefaults__, seen),
            "closure": closure, "globals": referred}


def _cell_filled(cell) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # not assigned yet
        return False
    return True


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _ours(target: Any) -> bool:
    """Functions, classes and partials defined in this package (library code is covered by its version)."""
    if isinstance(target, functools.partial):
        return _ours(target.func)
    module = getattr(target, "__module__", None) or ""
    return isinstance(target, (types.FunctionType, type)) and module.startswith(PACKAGE)
