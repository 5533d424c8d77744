import os
import sys
from pathlib import Path

import pytest

# Tests never reach the hub: the loading code must fail fast or use local paths.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> Path:
    from helpers import write_glue

    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One feature/model cache for the whole session, as users share ~/.cache/dora_bench."""
    path = tmp_path_factory.mktemp("cache")
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
