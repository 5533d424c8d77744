"""Peak memory is per run: a multirun trains its jobs in one process, so one job's peak must not carry into the next."""
import numpy as np
import pytest

from dora_bench import memory


@pytest.mark.skipif(not memory.CLEAR_REFS.exists(), reason="needs Linux's /proc/self/clear_refs")
def test_the_cpu_peak_is_reset_before_a_run():
    memory.reset_peak()
    baseline = memory.peak_mb()
    big = np.ones(300 * 2**20 // 8)           # 300 MiB touched
    assert memory.peak_mb() >= baseline + 250
    del big
    memory.reset_peak()                        # the next run starts here
    assert memory.peak_mb() < baseline + 100   # the previous run's peak is gone (a lifetime peak would keep it)
