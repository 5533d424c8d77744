"""Peak memory is per run: a multirun trains its jobs in one process, so one job's peak must not carry into the next."""
import subprocess
import sys

import pytest

from dora_bench import memory

# In a fresh, small process: a long one (pytest's) keeps freed memory resident, so a new array may not raise its RSS.
PROBE = """
import numpy as np
from dora_bench import memory
memory.reset_peak()
baseline = memory.peak_mb()
big = np.ones(300 * 2**20 // 8)            # 300 MiB touched
during = memory.peak_mb()
del big
memory.reset_peak()                         # the next run starts here
print(baseline, during, memory.peak_mb())
"""


@pytest.mark.skipif(not memory.CLEAR_REFS.exists(), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.slow
def test_the_cpu_peak_is_reset_before_a_run():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    baseline, during, after = map(float, out.stdout.split())
    assert during >= baseline + 250
    assert after < baseline + 100   # the previous run's peak is gone (a lifetime peak would keep it)
