"""Experiment files: global deltas whose sweeps compose job by job, with the variants each table needs."""
import itertools
from importlib.resources import files

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dora_bench.schema import validate
from dora_bench import results, tables

CONF = files("dora_bench.conf")
EXPERIMENTS = sorted(p.name.removesuffix(".yaml") for p in CONF.joinpath("experiment").iterdir()
                     if p.name.endswith(".yaml"))
GROUPS = ("task", "method", "budget", "model", "lr_grid", "llm_trial")
# Everything the paper's artefacts need; a name outside these sets is a typo.
PAPER_TASKS = {"rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli", "squad_v1", "squad_v2", "xsum"}
PAPER_METHODS = {"full_ft", "bitfit", "h_adapter", "p_adapter", "lora", "adalora", "dora"}
KNOWN = {"task": PAPER_TASKS | {"gsm8k"},
         "method": PAPER_METHODS | {"none"},
         "budget": {"small", "large", "b4", "b16"},
         "model": {"roberta_base", "bart_base", "minilm", "smollm2_135m", "llama3_2_3b"},
         "lr_grid": {"lower", "low", "high", "higher", "highest", "llm_lower", "llm_low", "llm_mid", "llm_high",
                     "llm_higher", "llm_pick"},
         "llm_trial": {"search_lower", "search_low", "search_mid", "search_high", "search_higher", "confirm_2",
                       "confirm_3"}}


def available(group):
    return {p.name.removesuffix(".yaml") for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml")}


def raw(name):
    text = CONF.joinpath("experiment", f"{name}.yaml").read_text()
    return text, yaml.safe_load(text)


def is_search(name):
    """Optuna experiments: their hydra.sweeper.params are a search space, every trial runs all `seeds`."""
    return any("hydra/sweeper" in entry for item in raw(name)[1].get("defaults", []) for entry in item)


GRIDS = [name for name in EXPERIMENTS if not is_search(name)]


def sweep_overrides(name):
    """hydra.sweeper.params as Hydra's own parser reads them (OmegaConf first: `\\${...}` escapes)."""
    params = OmegaConf.load(CONF.joinpath("experiment", f"{name}.yaml")).hydra.sweeper.params
    return OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])


def sweep_lists(name):
    """{key: [values]} of a grid experiment's hydra.sweeper.params."""
    return {o.get_key_element(): list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            for o in sweep_overrides(name)}


def referenced(name):
    """Group options an experiment selects: `override /group: x` defaults and swept group keys."""
    refs = {(entry.split()[-1].strip("/:").split(":")[0], str(value))
            for item in raw(name)[1].get("defaults", []) for entry, value in item.items()
            if "hydra/" not in entry}
    lists = sweep_lists(name) if not is_search(name) else {}
    refs |= {(key, value) for key, values in lists.items() if key in GROUPS for value in values}
    return refs


def jobs(name):
    """Overrides covering every swept value: all combinations of the keys that shape a run (method, budget,
    variant), each task once beside them. Seeds never change composition; the full product takes minutes."""
    lists = sweep_lists(name)
    tasks = lists.pop("task", [None])
    lists.pop("seed", None)            # llm_cpu: each llm_trial sets its seed
    combos = [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]
    first = {"task": tasks[0]} if tasks[0] else {}
    chosen = [combo | first for combo in combos] + [combos[0] | {"task": task} for task in tasks[1:]]
    return [[f"{k}={v}" for k, v in job.items()] for job in chosen]


def composed(name, *overrides):
    """The job's config, checked by the schemas as a run checks it."""
    cfg = compose("config", overrides=[f"+experiment={name}", *overrides])
    validate(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module", autouse=True)
def hydra_conf():
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        yield


def test_the_paper_artefacts_have_experiments():
    assert set(EXPERIMENTS) >= {"table2", "table3", "table4", "table5", "table6", "table9", "figure2", "cpu_glue"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_a_global_delta_sweeping_seeds_without_a_launcher(name):
    text, data = raw(name)
    assert text.startswith("# @package _global_")
    assert set(data["hydra"]) == {"sweeper"}             # no launcher here: ignored in multirun, goes on the CLI
    assert not any("launcher" in entry for item in data.get("defaults", []) for entry in item)
    assert set(data) <= {"defaults", "hydra", "tag", "trainer", "data", "method", "task"}, set(data)
    if is_search(name):
        assert "seed" not in data["hydra"]["sweeper"]["params"]   # a trial is every seed: its objective is their mean
    else:
        lists = sweep_lists(name)
        seeds = (lists["seed"] if "seed" in lists else
                 sorted({str(composed(name, f"llm_trial={trial}")["seed"]) for trial in lists["llm_trial"]}))
        cpu_study = name in ("cpu_glue", "llm_cpu")
        assert seeds == (["1", "2", "3"] if cpu_study else ["1", "2", "3", "4", "5"]), seeds
    for group, option in referenced(name):
        assert option in KNOWN[group], (group, option)


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.slow
def test_every_job_of_the_sweep_composes(name):
    assert not {(g, o) for g, o in referenced(name) if o not in available(g)}
    for overrides in jobs(name):
        cfg = composed(name, *overrides)
        assert cfg["trainer"]["epochs"] >= 1 and cfg["trainer"]["learning_rate"] > 0, overrides


def test_table2_covers_all_methods_and_budgets_with_budget_as_outer_loop():
    lists = sweep_lists("table2")
    assert list(lists)[0] == "budget" and lists["budget"] == ["small", "large"]
    assert set(lists["method"]) == PAPER_METHODS and len(lists["task"]) == 8


def test_table5_switches_dem_off_and_reuses_the_table2_runs_with_dem():
    swept = sweep_lists("table5")["method.reg_coefficient"]
    assert len(swept) == 2 and swept[1] == "0"              # swept[0]: the job's own task.reg_coefficient
    for task in ("stsb", "cola", "sst2"):
        with_dem, without = (composed("table5", f"task={task}", f"method.reg_coefficient={value}") for value in swept)
        assert with_dem["tag"] == without["tag"] == ""
        assert with_dem["method"]["reg_coefficient"] == with_dem["task"]["reg_coefficient"] > 0
        assert without["method"]["reg_coefficient"] == 0
        assert with_dem["method"]["name"] == "dora" and with_dem["budget"]["name"] == "large"
        table2_run = OmegaConf.to_container(compose("config", overrides=[f"task={task}", "method=dora",
                                                                          "budget=large"]), resolve=True)
        assert results.identity(with_dem, 1) == results.identity(table2_run, 1)   # the same result files
        assert results.identity(without, 1) != results.identity(table2_run, 1)


@pytest.mark.slow
def test_search_spans_the_appendix_e_keys_around_table_8():
    """The paper searched learning rate, batch size, epochs, DEM weight and pruning interval (Appendix E)."""
    space = {o.get_key_element(): o for o in sweep_overrides("search")}
    assert set(space) == {"trainer.learning_rate", "trainer.batch_size", "trainer.epochs", "method.reg_coefficient",
                          "method.prune_interval"}
    assert set(space) <= set(tables.SEARCHED)               # the tables pick among exactly these
    hydra_cfg = compose("config", overrides=["+experiment=search"], return_hydra_config=True).hydra
    assert hydra_cfg.sweeper.direction == "maximize" and "optuna" in hydra_cfg.sweeper._target_
    for task in PAPER_TASKS:                                # Table 8's values lie in the space, every paper task
        model = ["model=bart_base"] if task == "xsum" else []   # the one seq2seq task
        table8 = composed("search", f"task={task}", *model)
        for key, override in space.items():
            value = OmegaConf.select(OmegaConf.create(table8), key)
            sweep = override.value()
            if hasattr(sweep, "list"):                      # choice(...)
                assert value in sweep.list, (task, key, value)
                for choice in sweep.list:
                    assert OmegaConf.select(OmegaConf.create(composed("search", f"{key}={choice}")), key) == choice
            else:                                           # interval(...)
                assert sweep.start <= value <= sweep.end, (task, key, value)


def test_table6_tags_each_initial_budget():
    assert sweep_lists("table6")["method.initial_budget"] == ["2", "3", "4", "6", "8"]
    cfg = composed("table6", "method.initial_budget=6", "task=sst2")
    assert (cfg["tag"], cfg["method"]["initial_budget"], cfg["budget"]["rank"]) == ("-init6", 6, 2)


def test_figure2_budgets_and_new_budget_files():
    assert sweep_lists("figure2")["budget"] == ["small", "b4", "large", "b16"]
    ranks = [composed("figure2", f"budget={b}")["budget"]["rank"] for b in ("small", "b4", "large", "b16")]
    assert ranks == [2, 4, 8, 16]
    assert composed("figure2", "budget=b16")["method"]["initial_budget"] is None  # DoRA's default: 1.5x final


def test_table9_trains_one_epoch_for_every_method_under_its_own_tag():
    for method in sweep_lists("table9")["method"]:
        cfg = composed("table9", f"method={method}")
        assert (cfg["trainer"]["epochs"], cfg["task"]["name"], cfg["tag"]) == (1, "qnli", "-epoch1"), method


def test_command_line_overrides_beat_the_experiment(monkeypatch):
    cfg = composed("table4", "model=tiny_bart", "trainer.epochs=1", "data.max_train_samples=8")
    assert (cfg["model"]["name"], cfg["trainer"]["epochs"], cfg["data"]["max_train_samples"]) == ("tiny_bart", 1, 8)
    monkeypatch.setenv("DORA_BENCH_DATA", "/data")
    assert composed("cpu_glue")["data"]["dir"] == "/data/glue"
    monkeypatch.delenv("DORA_BENCH_DATA")
    assert composed("cpu_glue")["data"]["dir"] is None  # the hub, never a folder only this repository's CI has
    assert composed("cpu_glue", "data.dir=/mine")["data"]["dir"] == "/mine"


@pytest.mark.slow
def test_cpu_glue_gives_every_method_a_ladder_of_rates_and_one_protocol_per_task():
    """Every low-rank method and adapter searches the same pair (5e-4 and Table 8's rate), Full FT and BitFit a pair
    of their own; the outer rungs are half the lower / twice the higher rate (and twice that again) or repeat their
    neighbour, so each cell tries at least three rates in a geometric ladder; every method of a task trains the same
    examples for the same epochs."""
    lists = sweep_lists("cpu_glue")
    assert set(lists["method"]) == PAPER_METHODS and lists["lr_grid"] == ["lower", "low", "high", "higher", "highest"]
    assert lists["seed"] == ["1", "2", "3"] and lists["task"] == ["stsb", "mrpc"]
    for task in lists["task"]:
        rates, protocol = {}, set()
        for method in lists["method"]:
            runs = [composed("cpu_glue", f"task={task}", f"method={method}", f"lr_grid={g}") for g in lists["lr_grid"]]
            lower, low, high, higher, highest = ladder = tuple(cfg["trainer"]["learning_rate"] for cfg in runs)
            assert lower in (low, low / 2) and higher in (high, 2 * high) and low < high, (task, method, ladder)
            assert highest in (higher, 2 * higher) and (highest == higher or higher > high), (task, method, ladder)
            assert len(set(ladder)) >= 3, (task, method, ladder)
            rates[method] = (low, high)
            protocol |= {(cfg["model"]["name"], cfg["budget"]["name"], cfg["trainer"]["epochs"], cfg["trainer"]["precision"],
                          cfg["trainer"]["batch_size"], cfg["trainer"]["group_by_length"], cfg["data"]["max_train_samples"],
                          cfg["data"]["max_eval_samples"]) for cfg in runs}
        low_rank = {rates[m] for m in ("h_adapter", "p_adapter", "lora", "adalora", "dora")}
        table8 = composed("cpu_glue", f"task={task}", "method=lora")["task"]["learning_rate"]
        assert low_rank == {(5e-4, table8)}, (task, low_rank)
        assert len({rates["full_ft"], rates["bitfit"], (5e-4, table8)}) == 3
        assert len(protocol) == 1 and protocol.pop()[:4] == ("minilm", "large", 2, "bf16"), task
