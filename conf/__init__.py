"""The configs, installed as the package dora_bench.conf; importing it registers their schemas and resolvers."""
import os

from omegaconf import OmegaConf

from dora_bench.schema import path_part, register


def shared_data(relative: str) -> str | None:
    """`${dora_bench.data:glue}`: <$DORA_BENCH_DATA>/glue, or null (the hub) when DORA_BENCH_DATA is unset."""
    root = os.environ.get("DORA_BENCH_DATA")
    return os.path.join(root, relative) if root else None


def lookup(name: str, table: dict):
    """`${dora_bench.lookup:${method.name},{lora: 5.0e-4, ...}}`: the table's entry for this name."""
    if name not in table:
        raise ValueError(f"{name!r} has no entry in {sorted(table)}")
    return table[name]


register()
OmegaConf.register_new_resolver("dora_bench.data", shared_data, replace=True)
OmegaConf.register_new_resolver("dora_bench.lookup", lookup, replace=True)
OmegaConf.register_new_resolver("dora_bench.path_part", path_part, replace=True)
