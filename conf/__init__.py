"""The configs, installed as the package dora_bench.conf; importing it registers their schemas."""
from dora_bench.schema import register

register()
