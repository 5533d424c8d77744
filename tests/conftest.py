import os
import sys
from pathlib import Path

import pytest

# Tests never reach the hub: the loading code must fail fast or use local paths.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # -n 2 on 2 cores: one thread per worker (and per process it starts). Two workers of two threads each make
    # OpenMP wait on each other and run the suite several times slower; a test that needs a thread count sets it.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # a test that asks for more threads waits without spinning
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> Path:
    from helpers import write_glue

    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One feature/model cache for the whole session, as users share ~/.cache/dora_bench: one for both xdist workers
    too (its writes are atomic, as for parallel sweeps), so a tiny model or a GGUF conversion is made once a run."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache"
    path.mkdir(exist_ok=True)
    os.environ["DORA_BENCH_CACHE"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _accelerate_env():
    """TrainingArguments leaves ACCELERATE_* variables (mixed precision, compile backend) in the process:
    one test's bf16 or compilation must not reach the next test."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE_")}
    yield
    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        del os.environ[key]
    os.environ.update(saved)
@pytest.fixture
def real_data():
    """Locate a real data file under $DORA_BENCH_DATA (the folder holding glue/, squad_v1/, squad_v2/, xsum/).

    Every other test writes its own data; these skip, naming the variable, where it is unset or lacks the file.
    """
    def locate(relative: str) -> Path:
        root = os.environ.get("DORA_BENCH_DATA")
        if not root:
            pytest.skip(reason=f"DORA_BENCH_DATA is not set (real data for {relative}; .ci/run sets it)")
        path = Path(root) / relative
        if not path.exists():
            pytest.skip(reason=f"DORA_BENCH_DATA={root} has no {relative}")
        return path
    return locate


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="every tier: the tests marked slow too (the README's full command; CI runs it)")


def pytest_collection_modifyitems(config, items):
    """The fast tier by default (what `python -m pytest -q` runs); --full, or any -m expression, decides otherwise."""
    if config.getoption("--full") or config.getoption("markexpr"):
        # slow tests first: two workers then start on the longest ones and end together
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
