"""Run identity, result locations and the typed result record (no training: configs and files only)."""
import hashlib
import json
import re
from pathlib import Path
from importlib.resources import files

import pytest
import yaml
from helpers import write_glue, write_result_file
from omegaconf import OmegaConf

from dora_bench import results
from dora_bench.engine import COMPLETE_MARK, latest_checkpoint
from dora_bench.results import RunResult, compose_config, identity, leaves, locate, read_result

CONF = files("dora_bench.conf")


def cfg(tmp_path, *overrides):
    return compose_config(["task=stsb", "method=dora", "model=tiny_roberta", f"results_dir={tmp_path}", *overrides])


def relative(where: results.RunLocation, root) -> tuple[str, str]:
    return str(where.result.relative_to(root)), str(where.checkpoints.relative_to(root))


# Written out here, not read from results.NOT_IDENTITY: the leaves that may leave a run's fingerprint unchanged.
CANNOT_CHANGE_THE_NUMBERS = {
    "results_dir", "cache_dir", "force", "keep_checkpoints", "seeds",   # where and which runs, not what they compute
    "seed",                                  # the config's seed: each run's own seed is passed to identity()
    "report",                                # applied when a result is read, from its stored epochs
    "trainer.progress_bar", "trainer.logging_steps", "trainer.report_to",
    "trainer.save_steps",                    # extra checkpoints: resume is exact, so they change nothing
    "lock.when_held", "lock.stale_minutes",  # what another process does while this run is trained
}
DATA_LOCATIONS = {"data.dir", "data.train_file", "data.validation_file"}   # identified by the files' content
BUDGET_FREE = {"full_ft", "bitfit"}          # their runs ignore the budget group
IDENTITY_COMBOS = [("tiny_roberta", "stsb", "dora"), ("tiny_roberta", "rte", "lora"), ("tiny_roberta", "mrpc", "adalora"),
                   ("tiny_roberta", "cola", "h_adapter"), ("tiny_roberta", "sst2", "p_adapter"),
                   ("tiny_roberta", "qnli", "bitfit"), ("tiny_roberta", "mnli", "full_ft"),
                   ("tiny_roberta", "squad_v1", "lora"), ("tiny_roberta", "squad_v2", "dora"),
                   ("tiny_bart", "xsum", "lora"), ("tiny_bart", "xsum", "adalora")]


def changed_value(value):
    """A different value of the same kind (validity does not matter: identity() only reads the config)."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 4
    if isinstance(value, (int, float)):
        return value + 0.25 if isinstance(value, float) else value + 1
    if isinstance(value, list):     # the same length: an element changes
        return [*value[:-1], changed_value(value[-1])] if value else [1]
    if isinstance(value, dict):
        return {**value, "added": 1}
    return value + "x"


def with_leaf(tree, dotted, value):
    tree = json.loads(json.dumps(tree))
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node[part]
    node[last] = value
    return tree


@pytest.mark.parametrize("model,task,method", IDENTITY_COMBOS)
def test_every_resolved_leaf_outside_a_short_list_moves_the_fingerprint(tmp_path, model, task, method):
    """Changing any leaf of the composed config changes the fingerprint, except the leaves listed above, which
    never do: a key that can change the numbers and is dropped from identity would make runs share a result."""
    resolved = OmegaConf.to_container(cfg(tmp_path, f"model={model}", f"task={task}", f"method={method}"), resolve=True)
    as_composed = json.dumps(resolved)
    base = results.fingerprint(identity(resolved, 1))
    assert json.dumps(resolved) == as_composed                                  # the caller's config is left alone
    free = CANNOT_CHANGE_THE_NUMBERS | ({k for k in leaves(resolved) if k.startswith("budget.")}
                                        if method in BUDGET_FREE else set())
    moved, kept = set(), set()
    for key, value in leaves(resolved).items():
        if key in DATA_LOCATIONS:
            continue
        changed = results.fingerprint(identity(with_leaf(resolved, key, changed_value(value)), 1))
        (moved if changed != base else kept).add(key)
    assert kept == {k for k in free if k in leaves(resolved)}, kept ^ free
    assert moved >= {"trainer.weight_decay", "trainer.warmup_ratio", "trainer.grad_accum", "trainer.max_grad_norm",
                     "trainer.lr_scheduler", "trainer.precision", "data.max_eval_samples", "task.max_length"}
    assert results.fingerprint(identity(resolved, 2)) != base                 # the run's seed counts


@pytest.mark.parametrize("override", ["trainer.progress_bar=false", "trainer.logging_steps=7", "keep_checkpoints=true",
                                      "force=true", "report=last", "seeds=[9]", "cache_dir=/elsewhere", "seed=4"])
def test_keys_that_cannot_change_the_numbers_keep_the_location_and_fingerprint(tmp_path, override):
    base, changed = locate(cfg(tmp_path), 1), locate(cfg(tmp_path, override), 1)
    assert (base.fingerprint, relative(base, tmp_path)) == (changed.fingerprint, relative(changed, tmp_path))


def other_value(value):
    """A different value of the same kind, valid for these keys (budgets, rates, schedules, regexes)."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 4
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value / 2, 6)
    if isinstance(value, list):
        return value[:1]
    return "authors_code" if value == "paper" else value + "x"


def method_keys(method):
    data = yaml.safe_load(CONF.joinpath("method", f"{method}.yaml").read_text())
    return [k for k in data if k not in ("defaults", "name", "impl", "uses_budget")]


KEYS_THAT_COUNT = ([("dora", f"method.{k}") for k in method_keys("dora")] +
                   [("adalora", f"method.{k}") for k in method_keys("adalora")] +
                   [("dora", k) for k in ("trainer.epochs", "trainer.learning_rate", "trainer.batch_size",
                                          "data.max_train_samples", "data.subsample_seed", "model.name_or_path",
                                          "task.max_length", "budget.rank")])


@pytest.mark.parametrize("method,key", KEYS_THAT_COUNT)
@pytest.mark.slow
def test_every_key_that_can_change_the_numbers_moves_the_run(tmp_path, method, key):
    base = cfg(tmp_path, f"method={method}")
    value = other_value(OmegaConf.select(base, key))
    if key == "model.name_or_path":
        value = str(tmp_path / "my-model")
    changed = cfg(tmp_path, f"method={method}", f"{key}={json.dumps(value)}")
    assert OmegaConf.select(changed, key) == value
    a, b = locate(base, 1), locate(changed, 1)
    assert a.fingerprint != b.fingerprint and a.result != b.result and a.checkpoints != b.checkpoints
    assert a.result.parent.name == "default"
    assert b.result.parent.name.startswith(f"{key}=") or f",{key}=" in b.result.parent.name, b.result


@pytest.mark.parametrize("override", ["model.dtype=bf16", "trainer.gradient_checkpointing=true"])
def test_keys_added_later_count_once_they_leave_the_value_every_earlier_run_had(tmp_path, override):
    """Left out of the identity at their old value (earlier results keep their fingerprint and folder), they move
    the run like any other key once changed."""
    base, changed = locate(cfg(tmp_path), 1), locate(cfg(tmp_path, override), 1)
    assert not {k for k in results.ADDED_KEYS if k in leaves(base.identity)}
    assert base.fingerprint != changed.fingerprint and changed.result.parent.name == override


def test_the_data_is_identified_by_its_content_not_its_folder(tmp_path):
    """The same files in two places are one run (a committed result is found from any checkout); changed
    files are another; a folder that cannot be read keeps its path as identity (the run then names it)."""
    here, there = write_glue(tmp_path / "a"), write_glue(tmp_path / "b")
    a, b = (locate(cfg(tmp_path, f"data.dir={d}"), 1) for d in (here, there))
    assert (a.result, a.fingerprint) == (b.result, b.fingerprint)
    assert re.fullmatch(r"data\.sha256=[0-9a-f]{16}", a.result.parent.name), a.result
    assert "dir" not in a.identity["data"] and a.identity["data"]["sha256"]
    explicit = locate(cfg(tmp_path, f"data.train_file={here}/stsb/train.tsv",
                          f"data.validation_file={here}/stsb/dev.tsv"), 1)
    assert explicit.fingerprint == a.fingerprint                    # the same files, named one by one
    train = there / "stsb/train.tsv"
    train.write_text(train.read_text().replace("main-news", "main-forum", 1))
    assert locate(cfg(tmp_path, f"data.dir={there}"), 1).fingerprint != a.fingerprint
    assert locate(cfg(tmp_path, f"data.dir={here}"), 1).fingerprint == a.fingerprint
    gone = locate(cfg(tmp_path, f"data.dir={tmp_path / 'gone'}"), 1)
    assert gone.identity["data"]["dir"] == str(tmp_path / "gone")


def test_variant_folders_read_like_override_dirnames(tmp_path):
    runs = tmp_path / "runs/tiny_roberta/stsb"
    assert locate(cfg(tmp_path), 2).result == runs / "dora-small/default/seed=2.json"
    lr = locate(cfg(tmp_path, "trainer.learning_rate=1e-2", "data.max_train_samples=32", "tag=-x"), 1).result
    assert lr == runs / "dora-small-x/data.max_train_samples=32,trainer.learning_rate=0.01/seed=1.json"
    data = locate(cfg(tmp_path, "data.dir=/some/where/glue"), 1).result.parent.name
    assert re.fullmatch(r"data\.dir=glue~[0-9a-f]{8}", data)           # a path: its last part and a hash
    assert data != locate(cfg(tmp_path, "data.dir=/other/glue"), 1).result.parent.name
    assert locate(cfg(tmp_path, "method.reg_coefficient=0"), 1).result.parent.name == "method.reg_coefficient=0"
    assert (locate(cfg(tmp_path, "method.reg_coefficient=0.0"), 1).fingerprint ==
            locate(cfg(tmp_path, "method.reg_coefficient=0"), 1).fingerprint)   # one number, one configuration
    many = [f"data.max_train_samples={n}" for n in (40,)] + [f"method.{k}={v}" for k, v in (
        ("t_init", 0.1), ("t_final", 0.6), ("beta", 0.8), ("lora_alpha", 16), ("lora_dropout", 0.2),
        ("prune_interval", 3), ("reg_coefficient", 0.2), ("schedule", "authors_code"), ("initial_budget", 4))]
    long = locate(cfg(tmp_path, *many, "trainer.weight_decay=0.1", "trainer.warmup_ratio=0.1"), 1).result.parent.name
    assert len(long) <= results.MAX_VARIANT_CHARS and re.search(r",\+\d+more~[0-9a-f]{10}$", long), long


def test_budget_free_methods_ignore_the_budget(tmp_path):
    small, large = (locate(cfg(tmp_path, "method=full_ft", f"budget={b}"), 1) for b in ("small", "large"))
    assert small == large and small.result.parent == tmp_path / "runs/tiny_roberta/stsb/full_ft/default"
    assert "budget" not in small.identity


def test_a_folder_of_another_configuration_is_never_reused_nor_overwritten(tmp_path):
    """E.g. results written before a default changed: same folder name, another identity."""
    path = write_result_file(tmp_path, "stsb", "dora", "small", 1, model="tiny_roberta", score=50.0)
    mine = locate(cfg(tmp_path), 1)
    assert mine.result == path and mine.existing() is not None       # this very configuration: reused
    record = json.loads(path.read_text())
    record["identity"]["trainer"]["weight_decay"] = 0.5               # as another configuration wrote it
    record["fingerprint"] = results.fingerprint(record["identity"])
    path.write_text(json.dumps(record))
    moved = locate(cfg(tmp_path), 1)
    assert moved.result != path and moved.result.parent.name.startswith("default~")
    assert moved.existing() is None and moved.fingerprint == mine.fingerprint
    assert locate(cfg(tmp_path), 2).result.parent == moved.result.parent   # every seed of it goes there


def test_the_record_round_trips_and_reading_is_strict(tmp_path):
    path = write_result_file(tmp_path, "rte", "lora", "small", 3, 70.0, metrics={"accuracy": 70.0})
    result = read_result(path)
    assert isinstance(result, RunResult) and isinstance(result.epochs[0], results.Epoch)
    assert isinstance(result.params, results.Params) and isinstance(result.train, results.TrainInfo)
    assert RunResult.from_dict(json.loads(path.read_text())) == result
    assert result.fingerprint == results.fingerprint(result.identity) and result.identity["seed"] == 3
    data = json.loads(path.read_text())
    for broken, reason in ((data | {"bogus": 1}, "unknown field(s) bogus"), ({**data, "schema": 3}, "reads 1, 2"),
                           ({k: v for k, v in data.items() if k != "identity"}, "missing identity"),
                           (data | {"params": {"total": 1}}, "result.params: missing trainable_paper"),
                           (data | {"status": "running"}, "status 'running'")):
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=re.escape(reason)):
            read_result(path)


def test_report_is_applied_when_a_result_is_read():
    epochs = [results.Epoch(1.0, 5, {"score": 90.0}), results.Epoch(2.0, 10, {"score": 85.0}),
              results.Epoch(3.0, 15, {"score": 70.0})]
    record = RunResult("complete", "rte", "dora", "small", "tiny_roberta", "", 1, {}, "f", {}, {}, epochs=epochs,
                       final_structure_step=10)
    assert (record.select("best").score, record.select("best").step) == (85.0, 10)   # not 90: pruning still ran
    assert record.select("last").score == 70.0
    record.final_structure_step = 0
    assert record.select("best").score == 90.0
    record.epochs[0].metrics["score"] = "nan"                                        # as non-finite values are stored
    assert record.select("best").score == 85.0
    with pytest.raises(ValueError, match="allowed: best, last"):
        record.select("median")


def test_the_best_epoch_of_a_lower_is_better_metric_is_the_lowest():
    epochs = [results.Epoch(1.0, 5, {"score": 1.9}), results.Epoch(2.0, 10, {"score": 1.2}),
              results.Epoch(3.0, 15, {"score": "nan"}), results.Epoch(4.0, 20, {"score": 1.4})]
    record = RunResult("complete", "gsm8k", "lora", "small", "tiny_llama", "", 1, {}, "f", {}, {}, epochs=epochs,
                       metric="answer_nll")
    assert record.lower_is_better and record.select("best").score == 1.2   # not 1.9, and NaN never wins
    record.metric = "accuracy"
    assert not record.lower_is_better and record.select("best").score == 1.9


def as_schema_1(path):
    """A file in the format written before schema 2: no identity, the selected epoch stored at write time."""
    data = json.loads(path.read_text())
    for key in ("identity", "fingerprint", "final_structure_step"):
        data.pop(key)
    data |= {"schema": 1, "selected": {"rule": "best", "after_step": 10, "epoch": 1.0, "step": 10, "score": 0.0,
                                       "metrics": {}}}
    return data


def test_schema_1_results_are_migrated_on_read(tmp_path):
    path = write_result_file(tmp_path, "rte", "dora", "small", 2, 61.0)
    original, v1 = read_result(path), as_schema_1(path)
    path.write_text(json.dumps(v1))
    migrated = read_result(path)
    assert migrated.schema == 2 and migrated.identity == original.identity
    assert migrated.fingerprint == original.fingerprint and migrated.final_structure_step == 10
    assert migrated.select("best").score == 61.0                       # from the epochs, not the stored value
    path.write_text(json.dumps(v1 | {"selected": None}))
    with pytest.raises(ValueError, match="schema 1 result, no selected.after_step"):
        read_result(path)


@pytest.mark.parametrize("group", ["task", "method", "budget", "model"])
def test_group_options_are_named_after_their_files(group):
    """A run's defaults are composed back from these names, so they must be the option names."""
    for path in CONF.joinpath(group).iterdir():
        if path.name.endswith(".yaml"):
            assert yaml.safe_load(path.read_text())["name"] == path.name.removesuffix(".yaml")


def test_checkpoints_resume_only_for_the_same_fingerprint(tmp_path):
    for step, run in ((5, "aaa"), (10, "bbb")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / COMPLETE_MARK).write_text(json.dumps({"global_step": step, "run": run}))
    (tmp_path / "checkpoint-15").mkdir()                                 # interrupted: no mark
    assert latest_checkpoint(tmp_path, "aaa") == str(tmp_path / "checkpoint-5")
    assert latest_checkpoint(tmp_path, "bbb") == str(tmp_path / "checkpoint-10")
    assert latest_checkpoint(tmp_path, "ccc") is None


@pytest.mark.slow
def test_the_task_loaders_do_not_import_the_result_record():
    """results.identity needs a task's data digest (results -> tasks); the tasks write predictions with the atomic
    writer of dora_bench.files, never through results: no import loop between the two."""
    import subprocess
    import sys

    code = "import sys, dora_bench.tasks.glue, dora_bench.tasks.squad; print('dora_bench.results' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_key_added_later_leaves_identity_alone_only_at_the_value_that_did_what_the_code_did_before(tmp_path):
    cfg = compose_config(["method=dora", "model=tiny_roberta", "task=rte"])
    before = identity(cfg, 1)
    old_layout = OmegaConf.to_container(cfg, resolve=True)
    del old_layout["method"]["adapter_dtype"]          # a result written before the key existed
    assert identity(old_layout, 1) == before
    for dotted, value in results.ADDED_KEYS.items():
        assert OmegaConf.select(cfg, dotted, default="<unset>") in (value, "<unset>"), dotted
    changed = compose_config(["method=dora", "model=tiny_roberta", "task=rte", "method.adapter_dtype=base"])
    assert identity(changed, 1) != before and identity(changed, 1)["method"]["adapter_dtype"] == "base"


def test_identity_of_a_partial_config_and_fingerprint_of_reordered_or_non_json_values():
    """Configs written by older layouts lack keys (no trainer, no data file keys, no budget): identity keeps what
    is there. The fingerprint ignores key order (a record read back) and names non-JSON values by their text."""
    partial = {"method": {"name": "bitfit", "uses_budget": False}, "data": {"dir": None, "max_train_samples": 8},
               "report": "best"}
    assert identity(partial, 2) == {"method": {"name": "bitfit", "uses_budget": False},
                                    "data": {"max_train_samples": 8}, "seed": 2}
    assert identity({"trainer": None, "seed": 5}) == {"trainer": None}
    assert results.fingerprint({"a": 1, "b": {"c": 2, "d": 3}}) == results.fingerprint({"b": {"d": 3, "c": 2}, "a": 1})
    assert results.fingerprint({"model": Path("/m")}) == results.fingerprint({"model": "/m"})
    # the digest committed results carry: the first 16 hex digits of SHA-256 of the sorted JSON
    assert results.fingerprint({"b": 2, "a": [1, "x"]}) == hashlib.sha256(b'{"a": [1, "x"], "b": 2}').hexdigest()[:16]
