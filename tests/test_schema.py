"""The schemas: every group file declares one, the rules sit next to their fields and agree with the code they
protect, run_seed checks them too, and README's config reference is the one they generate."""
from dataclasses import fields
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from cli_runner import run_script
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dora_bench import schema
from dora_bench.schema import ConfigError, Range, validate

REPO = Path(__file__).resolve().parents[1]
CONF = files("dora_bench.conf")


def group_files(group):
    return {p.name.removesuffix(".yaml"): yaml.safe_load(p.read_text())
            for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml")}


def expected_schema(group, data):
    """The schema a group file must name: one per task family and one per method implementation."""
    return {"task": {"glue": schema.GlueTask, "squad": schema.SquadTask, "xsum": schema.XsumTask,
                     "gsm8k": schema.Gsm8kTask}.get(data.get("family")),
            "method": {"full_ft": schema.FullFtMethod, "bitfit": schema.BitFitMethod, "lora": schema.LoraMethod,
                       "adalora": schema.AdaLoraMethod, "adapters": schema.AdapterMethod,
                       "dora": schema.DoraMethod, "none": schema.NoneMethod}.get(data.get("impl")),
            "model": schema.Model, "budget": schema.Budget}[group]


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        yield


@pytest.mark.parametrize("group", ["task", "method", "model", "budget"])
@pytest.mark.slow
def test_every_group_file_names_its_schema_first_and_composes_to_it(group, hydra_conf):
    for option, data in group_files(group).items():
        wanted = expected_schema(group, data)
        assert wanted is not None, (group, option)
        assert data["defaults"][0] == f"/{schema.SCHEMA_NAMES[wanted]}@_here_", (group, option)
        other = {"xsum": ["model=bart_base"], "gsm8k": ["model=tiny_llama"]}.get(option, []) if group == "task" else []
        if group == "model" and "causal_lm" in data["heads"]:
            other = ["task=gsm8k"]
        cfg = compose("config", overrides=[f"{group}={option}", *other])
        assert OmegaConf.get_type(cfg[group]) is wanted, (group, option)
        assert set(data) - {"defaults"} == {f.name for f in fields(wanted)}, (group, option)  # the YAML sets every key


def test_the_top_level_config_names_its_schema(hydra_conf):
    assert OmegaConf.get_type(compose("config")) is schema.Config
    assert yaml.safe_load(CONF.joinpath("config.yaml").read_text())["defaults"][0] == "schema_config"


def test_ranges_include_and_exclude_their_bounds():
    dropout, positive = Range(low=0, high=1, high_open=True), Range(low=0, low_open=True)
    assert [dropout.allows(v) for v in (0, 0.5, 0.999, 1, -1e-9)] == [True, True, True, False, False]
    assert [positive.allows(v) for v in (1e-12, 0, -1)] == [True, False, False]
    assert not positive.allows(float("nan")) and not positive.allows(True)
    assert (dropout.text(), positive.text(), Range(low=1).text(), Range(low=0, high=1).text()) == (
        "[0, 1)", "> 0", ">= 1", "[0, 1]")


def test_rules_name_the_key_the_value_and_what_is_allowed(hydra_conf):
    cases = {
        ("method=adalora", "method.init_r=2", "budget=large"): "method.init_r=2 is not valid; allowed: >= target_r=8",
        ("trainer.warmup_ratio=1.5",): "trainer.warmup_ratio=1.5 is not valid; allowed: [0, 1]",
        ("method=dora", "method.initial_budget=1"): "method.initial_budget=1 must be >= final_budget=2",
        ("trainer.max_length=513",): "trainer.max_length=513 is not valid; allowed: <= 512",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError) as err:
            validate(compose("config", overrides=list(overrides)))
        assert str(err.value).startswith(message), overrides
    # the bounds themselves pass
    validate(compose("config", overrides=["method=adalora", "method.init_r=8", "budget=large",
                                          "trainer.warmup_ratio=1", "trainer.max_length=512"]))


def test_keys_added_with_a_plus_are_refused_too(hydra_conf):
    with pytest.raises(ConfigError, match=r"trainer\.lr=0\.1 is not a config key; allowed under trainer: epochs"):
        validate(compose("config", overrides=["+trainer.lr=0.1"]))


def test_run_seed_checks_the_schemas_without_the_cli(tmp_path, glue_dir, hydra_conf):
    from dora_bench.run import run_seed

    cfg = compose("config", overrides=["model=tiny_roberta", f"data.dir={glue_dir}", f"results_dir={tmp_path}",
                                       "method.lora_dropout=1"])
    with pytest.raises(ConfigError, match=r"method\.lora_dropout=1\.0 is not valid"):
        run_seed(cfg, 1)
    assert not list(tmp_path.iterdir())


def test_choices_match_the_code_that_uses_them():
    from transformers import SchedulerType

    from dora_bench.dora.config import ADAPTER_DTYPES, SCHEDULES
    from dora_bench.methods.adapters import ADAPTER_CONFIGS
    from dora_bench.methods.base import PEFT_TASK_TYPES
    from dora_bench.models import MODEL_CLASSES
    from dora_bench.tasks.squad import squad_scores

    assert set(schema.HEADS) == set(MODEL_CLASSES) == set(PEFT_TASK_TYPES)
    assert set(schema.ADAPTER_CONFIGS) == set(ADAPTER_CONFIGS)
    assert set(schema.LR_SCHEDULERS) <= {s.value for s in SchedulerType}
    schedule = next(f for f in fields(schema.DoraMethod) if f.name == "schedule")
    assert schedule.metadata["allowed"].split(", ") == list(SCHEDULES)
    adapter_dtype = next(f for f in fields(schema.DoraMethod) if f.name == "adapter_dtype")
    assert adapter_dtype.metadata["allowed"].split(", ") == list(ADAPTER_DTYPES)
    assert set(schema.squad_metric_names(False)) <= set(squad_scores({"a": "x"}, {"a": ["x"]}, version_2=False))
    # v2: one answerable and one unanswerable question, so that every part is reported
    v2 = squad_scores({"a": "x", "b": ""}, {"a": ["x"], "b": []}, version_2=True)
    assert set(schema.squad_metric_names(True)) <= set(v2)


def test_dora_options_are_exactly_doraconfig_fields():
    from dora_bench.dora import DoraConfig

    own = {f.name for f in fields(schema.DoraMethod)} - {f.name for f in fields(schema.Method)}
    assert own == {f.name for f in fields(DoraConfig)} - {"target_modules"}


def test_readme_config_reference_is_the_generated_one():
    out = run_script(REPO / "scripts" / "config_reference.py", "--check", cwd=REPO)
    assert out.returncode == 0, out.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sections = {schema.Config: "", schema.Data: "data.", schema.Trainer: "trainer."}
    sections |= {cls: f"{cls.KEY}." for classes in schema.GROUP_SCHEMAS.values() for cls in classes}
    for cls, prefix in sections.items():
        for spec in fields(cls):
            if not (cls is schema.Config and spec.name in {"model", "task", "budget", "method", "data", "trainer"}):
                assert f"| `{prefix}{spec.name}" in readme, (cls.__name__, spec.name)
