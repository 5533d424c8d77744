"""Peak memory of one run: CUDA's allocator peak on a GPU; on a CPU the process's peak resident set (VmHWM).

A multirun trains its jobs one after another in one process, so the process's lifetime peak (getrusage) would
carry one job's peak into the next: the CPU peak is reset before each run through /proc/self/clear_refs
(Linux >= 4.0), as `torch.cuda.reset_peak_memory_stats` does on a GPU.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"   # proc(5): "5" resets the peak resident set size (VmHWM) to the current one


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RSS)
    except OSError:
        pass   # not Linux, or no permission: peak_mb() then reports the process's lifetime peak


def peak_mb() -> float:
    """MiB: the GPU allocator's peak, else the resident set's peak since reset_peak() (the process's model, data
    and everything else it holds included)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", STATUS.read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux reports KiB
