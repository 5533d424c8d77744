"""The hub: a run that needs it while it cannot be reached stops within 5 s in one line; a run with local model
and data never touches the network; script-based hub datasets load from the hub's Parquet conversion."""
import re
import shutil
import socket
import threading
import time

import pytest
from datasets import Dataset, DatasetDict
from helpers import TINY, run_cli, variant_dir
from hydra import compose, initialize_config_module

from dora_bench import hub, tasks
from dora_bench.errors import UserError
from dora_bench.tasks import xsum

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
ONLINE = {"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None, "NO_PROXY": None, "no_proxy": None}


class Proxy:
    """A local TCP listener used as the HTTP(S) proxy: it records every connection and either holds it without
    answering (a firewall that drops packets) or closes it at once."""

    def __init__(self, answer: bool):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.answer, self.connections = answer, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            if self.answer:
                connection.close()

    def env(self) -> dict:
        return ONLINE | dict.fromkeys(PROXY_VARS, f"http://127.0.0.1:{self.server.getsockname()[1]}")

    def close(self):
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def proxy():
    made = []

    def make(answer: bool) -> Proxy:
        made.append(Proxy(answer))
        return made[-1]
    yield make
    for p in made:
        p.close()


UNROUTABLE = ONLINE | dict.fromkeys(PROXY_VARS, "http://10.255.255.1:9")  # a private address nobody routes


@pytest.mark.parametrize("network", ["HF_HUB_OFFLINE=1", "unroutable proxy", "proxy that never answers"])
@pytest.mark.slow
def test_a_run_needing_an_unreachable_hub_stops_within_5_s_in_one_line(tmp_path, proxy, network):
    if network == "HF_HUB_OFFLINE=1":
        env = {"HF_HUB_OFFLINE": "1"}
    else:
        env = UNROUTABLE if network == "unroutable proxy" else proxy(answer=False).env()
    started = time.monotonic()
    env = {**env, "HYDRA_FULL_ERROR": "0"}  # as a user runs it: the one line, no traceback
    out = run_cli("task=rte", "method=lora", "seed=1", cwd=tmp_path, env=env, timeout=60, process=True)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-2000:]
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stdout + out.stderr  # no retry warnings
    line = out.stderr.strip()
    assert line.startswith("dora-bench: error: task=rte's data and model 'FacebookAI/roberta-base' would come "
                           "from the hub, which cannot be reached")
    assert "data.dir=" in line and "model.name_or_path=" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_run_with_local_model_and_data_never_touches_the_network(tmp_path, proxy, glue_dir, cache_dir):
    recorder = proxy(answer=True)
    out = run_cli("task=rte", "method=lora", "seed=1", f"data.dir={glue_dir}", "data.max_train_samples=8",
                  *TINY, cwd=tmp_path, env=recorder.env(), process=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert recorder.connections == []
    assert (variant_dir(tmp_path / "results/runs/tiny_roberta/rte/lora-small") / "seed=1.json").is_file()


@pytest.mark.slow
def test_complete_results_are_skipped_without_asking_the_hub(tmp_path, glue_dir, cache_dir):
    """A finished run started again offline skips its seeds, as before: the hub is asked only for work left."""
    from dora_bench.models import resolve_model_path

    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        tiny = compose("config", overrides=["model=tiny_roberta"]).model
    shutil.copytree(resolve_model_path(tiny, str(cache_dir)), tmp_path / "tiny-model")
    args = ("task=rte", "method=bitfit", "seed=1", f"data.dir={glue_dir}", "data.max_train_samples=8", *TINY,
            "model.name_or_path=tiny-model", "model.random_init=null")
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(tmp_path / "tiny-model")  # "tiny-model" now reads as a hub id, and the hub is offline
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "complete result exists, skipping" in again.stdout, again.stderr[-2000:]
    forced = run_cli(*args, "force=true", cwd=tmp_path)
    assert forced.returncode == 2 and "model 'tiny-model' would come from the hub" in forced.stderr


# ---- script-based hub datasets: the Parquet conversion ----------------------------------------------------

def xsum_cfg():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=xsum", "model=tiny_bart"])


def pairs(n: int) -> Dataset:
    return Dataset.from_dict({"id": [str(i) for i in range(n)], "document": [f"document {i}." for i in range(n)],
                              "summary": [f"summary {i}." for i in range(n)]})


def hub_that_refuses_scripts(monkeypatch, parquet):
    """The hub answers; its main revision is refused as datasets 4+ refuses a loading script."""
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        if kwargs.get("revision") != tasks.PARQUET_REVISION:
            raise RuntimeError("Dataset scripts are no longer supported, but found xsum.py")
        if isinstance(parquet, Exception):
            raise parquet
        return parquet

    monkeypatch.setattr(hub, "unreachable_reason", lambda: None)
    monkeypatch.setattr(tasks, "load_dataset", load_dataset)
    return calls


def test_a_script_based_hub_dataset_loads_from_its_parquet_conversion(monkeypatch, capsys):
    calls = hub_that_refuses_scripts(monkeypatch, DatasetDict(train=pairs(5), validation=pairs(3)))
    raw, fingerprint = xsum.load(xsum_cfg())
    assert (len(raw["train"]), len(raw["validation"])) == (5, 3)
    assert raw["train"][0]["summary"] == "summary 0."
    assert fingerprint["source"] == "hub" and fingerprint["id"] == "EdinburghNLP/xsum"
    assert calls == [("EdinburghNLP/xsum", None, {}),
                     ("EdinburghNLP/xsum", None, {"revision": "refs/convert/parquet", "data_dir": None})]
    assert "loading its Parquet conversion (revision=refs/convert/parquet)" in capsys.readouterr().out


def test_without_a_parquet_conversion_the_refusal_is_one_line_naming_data_dir(monkeypatch):
    hub_that_refuses_scripts(monkeypatch, FileNotFoundError("Revision 'refs/convert/parquet' doesn't exist"))
    with pytest.raises(UserError) as err:
        xsum.load(xsum_cfg())
    message = str(err.value)
    assert "\n" not in message
    assert re.match(r"EdinburghNLP/xsum is script-based .* \(revision=refs/convert/parquet\) cannot be loaded "
                    r"\(FileNotFoundError\); pass data\.dir=<folder with train\.jsonl and validation\.jsonl>", message)


def test_other_hub_errors_are_not_taken_for_a_script_refusal(monkeypatch):
    def load_dataset(path, name=None, **kwargs):
        raise RuntimeError("something else went wrong")

    monkeypatch.setattr(hub, "unreachable_reason", lambda: None)
    monkeypatch.setattr(tasks, "load_dataset", load_dataset)
    with pytest.raises(RuntimeError, match="something else went wrong"):
        xsum.load(xsum_cfg())
