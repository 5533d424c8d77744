"""Typed schemas of every config group, registered in Hydra's ConfigStore.

The YAML files in conf/ hold the values and name their schema first in their defaults list
(`- /schema_<group>_<impl>@_here_`), so composition already refuses a wrong type or an unknown key.
Ranges and choices sit next to their field (`ranged`, `choice`); rules that tie fields together sit in the
class's `check`. Both run when `validate` turns the resolved config into these dataclasses
(`OmegaConf.to_object` calls every `__post_init__`), before anything is loaded or written.
This module stays light (no torch/transformers at import): the CLI validates before the heavy imports.
"""
import math
import re
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from typing import (Any, ClassVar, Dict, List, NoReturn, Optional, Sequence, Union, get_args, get_origin,
                    get_type_hints)

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dora_bench.errors import UserError
from dora_bench.heads import HEADS as HEAD_TABLE

HEADS = tuple(HEAD_TABLE)  # task heads: dora_bench/heads.py says what each implies
HEADS_ALLOWED = f"a non-empty list of {', '.join(HEADS)}"
# transformers schedules that need no extra arguments (lr_scheduler_kwargs is not exposed)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")
PRECISIONS = ("fp32", "bf16", "fp16")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
ROUGE_L_VARIANTS = ("rougeL", "rougeLsum")
ADAPTER_CONFIGS = ("double_seq_bn", "seq_bn")  # methods.adapters.ADAPTER_CONFIGS (AdapterHub classes)
LOCK_WHEN_HELD = ("wait", "skip")
MODEL_DTYPES = ("fp32", "bf16")  # models.DTYPES
FP32_BASE_IMPLS = ("full_ft", "bitfit", "adapters")  # methods that train in the base weights' precision
GSM8K_METRICS = ("exact_match", "answer_nll", "answer_token_accuracy")  # what tasks/gsm8k.py reports


class ConfigError(UserError):
    """A config value outside what its schema allows."""


def squad_metric_names(version_2: bool) -> tuple[str, ...]:
    """What the SQuAD evaluation reports (v2.0 adds the answerable / unanswerable splits)."""
    return ("exact", "f1") + (("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1") if version_2 else ())


# ---- field declarations: the allowed values sit next to the field -----------------------------------------

@dataclass(frozen=True)
class Range:
    """An interval of numbers; None is an open end."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class Choice:
    options: tuple

    def allows(self, value) -> bool:
        return value in self.options

    def text(self) -> str:
        return ", ".join(map(str, self.options))


# Values that become file or folder names (result, checkpoint, log and Hydra output paths): one name each,
# never a path. results._SAFE, which shapes variant folder names, is the same character set.
SAFE_NAME = re.compile(r"[A-Za-z0-9._+-]+")
SAFE_NAME_TEXT = "letters, digits, '.', '_', '+', '-' (it names a folder: no '/', not '.' or '..')"


@dataclass(frozen=True)
class PathPart:
    """A config value that becomes (part of) a folder name, so that no value can lead a path elsewhere."""

    empty_ok: bool = False

    def allows(self, value) -> bool:
        if value == "" and self.empty_ok:
            return True
        return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None and value not in (".", "..")

    def text(self) -> str:
        return SAFE_NAME_TEXT + (", or empty" if self.empty_ok else "")


def path_part(key: str, value):
    """Resolver `${dora_bench.path_part:tag,${tag}}` (Hydra's output folders): the value, or the schema's refusal.
    Hydra creates its run folder before the app validates the config, so the folder's own parts check here."""
    rule = PathPart(empty_ok=key == "tag")
    if not rule.allows(value):
        raise ConfigError(f"{key}={value!r} is not valid; allowed: {rule.text()}")
    return value


def _default(value) -> dict:
    if isinstance(value, (list, dict)):
        return {"default_factory": lambda: value.copy()}
    return {"default": value}


def ranged(default=MISSING, *, ge=None, gt=None, le=None, lt=None, doc: str = ""):
    """A number with bounds: ge/gt (>=, >) below, le/lt (<=, <) above."""
    bounds = Range(low=gt if gt is not None else ge, high=lt if lt is not None else le,
                   low_open=gt is not None, high_open=lt is not None)
    return field(**_default(default), metadata={"check": bounds, "doc": doc})


def choice(default=MISSING, *, options: Sequence, doc: str = ""):
    return field(**_default(default), metadata={"check": Choice(tuple(options)), "doc": doc})


def path_name(default=MISSING, *, doc: str, empty_ok: bool = False):
    """A string that becomes a folder name (see PathPart)."""
    return field(**_default(default), metadata={"check": PathPart(empty_ok), "doc": doc})


def plain(default=MISSING, *, doc: str = "", allowed: str = ""):
    """A field without a range of its own; `allowed` describes a rule checked elsewhere (for the reference)."""
    return field(**_default(default), metadata={"doc": doc, "allowed": allowed})


class Checked:
    """Runs the declared ranges and choices, then the class's cross-field `check`, when the object is built."""

    KEY: ClassVar[str] = ""  # where this schema sits in the config ("" = top level)

    def __post_init__(self) -> None:
        if any(getattr(self, spec.name) is MISSING for spec in fields(self)):
            return  # the schema itself (defaults of a nested schema); a resolved config has no missing value
        for spec in fields(self):
            rule, value = spec.metadata.get("check"), getattr(self, spec.name)
            if rule is not None and value is not None and not rule.allows(value):
                self.refuse(spec.name, value, rule.text())
        self.check()

    def check(self) -> None:
        """Rules that involve more than one field."""

    @classmethod
    def key(cls, name: str) -> str:
        return f"{cls.KEY}.{name}" if cls.KEY else name

    @classmethod
    def refuse(cls, name: str, value, allowed: str) -> NoReturn:
        raise ConfigError(f"{cls.key(name)}={value!r} is not valid; allowed: {allowed}")


# ---- model and budget -----------------------------------------------------------------------------------

@dataclass
class Model(Checked):
    KEY: ClassVar[str] = "model"
    name: str = path_name(doc="config name, used in result paths")
    name_or_path: Optional[str] = plain(None, doc="hub id or local folder (config.json, tokenizer, safetensors)")
    package: Optional[str] = plain(None, doc="Python package shipping the weights (minilm)")
    random_init: Optional[Dict[str, Any]] = plain(None, doc="transformers config of a random test model")
    gguf_file: Optional[str] = plain(None, doc="GGUF file in the package or name_or_path folder (dequantised once)")
    dtype: str = choice("fp32", options=MODEL_DTYPES, doc="base weights' precision (bf16: only for methods whose own "
                        "weights stay fp32)")
    max_positions: int = ranged(ge=1, doc="longest input the model accepts (tokens)")
    heads: List[str] = plain(doc="task heads the model family supports", allowed=HEADS_ALLOWED)
    adapted_modules: str = plain(doc="regex (fullmatch) of the matrices LoRA/AdaLoRA/DoRA adapt",
                                 allowed="a valid regular expression")

    def check(self) -> None:
        if not self.heads or any(head not in HEADS for head in self.heads):
            self.refuse("heads", self.heads, HEADS_ALLOWED)
        try:
            re.compile(self.adapted_modules)
        except re.error as err:
            self.refuse("adapted_modules", self.adapted_modules, f"a valid regular expression ({err})")


@dataclass
class Budget(Checked):
    KEY: ClassVar[str] = "budget"
    name: str = path_name(doc="config name, used in result paths")
    rank: int = ranged(ge=1, doc="LoRA r / AdaLoRA target_r / DoRA final budget b(T)")
    houlsby_bottleneck: int = ranged(ge=1, doc="Houlsby adapter bottleneck at this budget")
    pfeiffer_bottleneck: int = ranged(ge=1, doc="Pfeiffer adapter bottleneck at this budget")


# ---- tasks: one schema per family ------------------------------------------------------------------------

@dataclass
class SplitFiles(Checked):
    KEY: ClassVar[str] = "task.data_files"
    train: str = plain(doc="training file name in data.dir")
    validation: str = plain(doc="evaluation file name in data.dir")


@dataclass
class HubSplits(Checked):
    KEY: ClassVar[str] = "task.splits"
    train: str = plain(doc="hub split used for training")
    validation: str = plain(doc="hub split used for evaluation")


@dataclass
class Generation(Checked):
    KEY: ClassVar[str] = "task.generation"
    generation_num_beams: int = ranged(ge=1, doc="beam size at evaluation")
    generation_max_length: int = ranged(ge=1, doc="longest generated summary (tokens)")


@dataclass
class Rouge(Checked):
    KEY: ClassVar[str] = "task.rouge"
    use_stemmer: bool = plain(False, doc="Porter stemming before matching")
    l_variant: str = choice("rougeL", options=ROUGE_L_VARIANTS, doc="ROUGE-L flavour reported")


@dataclass
class Task(Checked):
    KEY: ClassVar[str] = "task"
    FAMILY: ClassVar[str] = ""
    name: str = path_name(doc="task name, used in result paths")
    family: str = plain(doc="task family (module dora_bench.tasks.<family>)", allowed="the schema's family")
    head: str = choice(options=HEADS, doc="model head the task needs")
    metric: str = plain(doc="headline metric (the result's score)", allowed="a metric the family reports")
    max_length: int = ranged(ge=1, doc="input tokens (trainer.max_length defaults to it)")
    learning_rate: float = ranged(gt=0, doc="Table 8 learning rate (low-rank methods)")
    batch_size: int = ranged(ge=1, doc="Table 8 batch size")
    epochs: int = ranged(ge=1, doc="Table 8 epochs")
    reg_coefficient: float = ranged(ge=0, doc="DoRA's DEM weight eta (Table 8)")
    prune_interval: int = ranged(ge=1, doc="pruning interval of DoRA / AdaLoRA (optimizer steps)")

    def check(self) -> None:
        if self.family != self.FAMILY:
            self.refuse("family", self.family, f"{self.FAMILY} (the family of this task's schema)")

    def check_in(self, cfg: "Config") -> None:
        """Rules against the model and trainer the task runs with."""


@dataclass
class GlueTask(Task):
    FAMILY: ClassVar[str] = "glue"


@dataclass
class SquadTask(Task):
    FAMILY: ClassVar[str] = "squad"
    version_2: bool = plain(doc="SQuAD v2.0 (unanswerable questions)")
    doc_stride: int = ranged(ge=0, doc="tokens shared by consecutive windows (< trainer.max_length)")
    n_best: int = ranged(ge=1, doc="start and end candidates per window")
    max_answer_length: int = ranged(ge=1, doc="longest answer (tokens)")
    null_threshold: float = plain(0.0, doc="v2: answer '' when null score - best span score > this")
    hub_id: str = plain(doc="hub dataset when no local data is given")
    data_files: SplitFiles = field(default_factory=SplitFiles)

    def check(self) -> None:
        super().check()
        if self.metric not in squad_metric_names(self.version_2):
            self.refuse("metric", self.metric, ", ".join(squad_metric_names(self.version_2)))

    def check_in(self, cfg: "Config") -> None:
        if self.doc_stride >= cfg.trainer.max_length:
            self.refuse("doc_stride", self.doc_stride, f"< trainer.max_length={cfg.trainer.max_length}")


@dataclass
class XsumTask(Task):
    FAMILY: ClassVar[str] = "xsum"
    max_target_length: int = ranged(ge=1, doc="summary tokens in training (<= model.max_positions)")
    generation: Generation = field(default_factory=Generation)
    rouge: Rouge = field(default_factory=Rouge)
    hub_id: str = plain(doc="hub dataset when no local data is given")
    splits: HubSplits = field(default_factory=HubSplits)
    data_files: SplitFiles = field(default_factory=SplitFiles)

    def check(self) -> None:
        super().check()
        reported = ("rouge1", "rouge2", self.rouge.l_variant)
        if self.metric not in reported:
            self.refuse("metric", self.metric, ", ".join(reported))

    def check_in(self, cfg: "Config") -> None:
        if self.max_target_length > cfg.model.max_positions:
            self.refuse("max_target_length", self.max_target_length,
                        f"<= {cfg.model.max_positions} (model {cfg.model.name}'s positions)")


@dataclass
class TestSplitFiles(Checked):
    KEY: ClassVar[str] = "task.data_files"
    train: str = plain(doc="training file name in data.dir")
    test: str = plain(doc="test file name in data.dir (evaluated beside the validation slice, never chosen on)")


@dataclass
class Gsm8kTask(Task):
    FAMILY: ClassVar[str] = "gsm8k"
    prompt: str = plain(doc="prompt template; {question} is the question", allowed="text with {question}")
    target: str = plain(doc="what follows the prompt in training; {answer} is the worked solution",
                        allowed="text with {answer}")
    strip_calculator: bool = plain(True, doc="remove the <<expr=value>> calculator notes from the answers")
    validation_size: int = ranged(ge=1, doc="training questions held out as the validation slice (never trained on)")
    validation_seed: int = plain(0, doc="seed of the validation slice (the same slice for every run seed)")
    max_new_tokens: int = ranged(ge=1, doc="greedy generation length at evaluation (tokens)")
    generate_samples: Optional[int] = ranged(None, ge=1, doc="questions per eval set whose generation is scored (the "
                                             "first ones; null: all); NLL and token accuracy use every one")
    hub_id: str = plain(doc="hub dataset when no local data is given")
    hub_config: str = plain(doc="hub dataset config")
    data_files: TestSplitFiles = field(default_factory=TestSplitFiles)

    def check(self) -> None:
        super().check()
        if self.metric not in GSM8K_METRICS:
            self.refuse("metric", self.metric, ", ".join(GSM8K_METRICS))
        for key, placeholder in (("prompt", "question"), ("target", "answer")):
            try:
                filled = getattr(self, key).format(**{placeholder: ""})
            except (KeyError, IndexError, ValueError) as err:
                self.refuse(key, getattr(self, key), f"text with {{{placeholder}}} and no other field "
                            f"({type(err).__name__}: {err}; write literal braces as {{{{ }}}})")
            if filled == getattr(self, key):
                self.refuse(key, getattr(self, key), f"text with {{{placeholder}}}")


# ---- methods: one schema per implementation ----------------------------------------------------------------

@dataclass
class Method(Checked):
    KEY: ClassVar[str] = "method"
    IMPL: ClassVar[str] = ""
    name: str = path_name(doc="method name, used in result paths")
    impl: str = plain(doc="module dora_bench.methods.<impl>", allowed="the schema's implementation")
    uses_budget: bool = plain(doc="whether the budget group changes this method (else one result path)")

    def check(self) -> None:
        if self.impl != self.IMPL:
            self.refuse("impl", self.impl, f"{self.IMPL} (the implementation of this method's schema)")


@dataclass
class OwnSchedule(Method):
    """Budget-free methods train with the learning rate and epochs of their own papers."""

    learning_rate: float = ranged(gt=0, doc="learning rate (replaces the task's)")
    epochs: int = ranged(ge=1, doc="epochs (replace the task's)")


@dataclass
class FullFtMethod(OwnSchedule):
    IMPL: ClassVar[str] = "full_ft"


@dataclass
class BitFitMethod(OwnSchedule):
    IMPL: ClassVar[str] = "bitfit"


@dataclass
class NoneMethod(Method):
    """Evaluation only: the base model as it is (a zero-shot reference)."""

    IMPL: ClassVar[str] = "none"


@dataclass
class LoraMethod(Method):
    IMPL: ClassVar[str] = "lora"
    r: int = ranged(ge=1, doc="LoRA rank")
    lora_alpha: float = ranged(8.0, gt=0, doc="LoRA scaling alpha")
    lora_dropout: float = ranged(0.1, ge=0, lt=1, doc="dropout on the LoRA input")


@dataclass
class AdaLoraMethod(Method):
    IMPL: ClassVar[str] = "adalora"
    target_r: int = ranged(ge=1, doc="average final rank")
    init_r: Optional[int] = ranged(None, ge=1, doc="initial rank (>= target_r); null: ceil(1.5 * target_r)")
    t_init: float = ranged(0.15, ge=0, lt=1, doc="warm-up without pruning, fraction of optimizer steps")
    t_final: float = ranged(0.5, ge=0, lt=1, doc="final phase with a fixed mask, fraction (t_init + t_final < 1)")
    delta_t: int = ranged(ge=1, doc="pruning interval (optimizer steps)")
    beta1: float = ranged(0.85, ge=0, lt=1, doc="EMA of the sensitivity")
    beta2: float = ranged(0.85, ge=0, lt=1, doc="EMA of the uncertainty")
    orth_reg_weight: float = ranged(0.1, ge=0, doc="orthogonality regulariser weight")
    lora_alpha: float = ranged(8.0, gt=0, doc="LoRA scaling alpha")
    lora_dropout: float = ranged(0.1, ge=0, lt=1, doc="dropout on the LoRA input")

    def check(self) -> None:
        super().check()
        if self.init_r is not None and self.init_r < self.target_r:
            self.refuse("init_r", self.init_r, f">= target_r={self.target_r} (pruning only removes ranks)")
        if self.t_init + self.t_final >= 1:
            self.refuse("t_init + t_final", self.t_init + self.t_final,
                        f"< 1 (t_init={self.t_init!r}, t_final={self.t_final!r} leave no pruning phase)")


@dataclass
class AdapterMethod(Method):
    IMPL: ClassVar[str] = "adapters"
    adapter_config: str = choice(options=ADAPTER_CONFIGS, doc="AdapterHub config: Houlsby or Pfeiffer")
    bottleneck: int = ranged(ge=1, doc="adapter bottleneck width")


@dataclass
class DoraMethod(Method):
    """Ranges and rules are DoraConfig's (dora/config.py): `check` builds one, the reference only describes them."""

    IMPL: ClassVar[str] = "dora"
    final_budget: float = plain(doc="b(T): average kept components per matrix", allowed=">= 1")
    initial_budget: Optional[int] = plain(None, doc="b(0) = r'; null: ceil(1.5 * final_budget)",
                                          allowed="integer >= final_budget, or null")
    lora_alpha: float = plain(8.0, doc="scaling alpha", allowed="> 0")
    lora_dropout: float = plain(0.1, doc="dropout on the adapter input", allowed="[0, 1)")
    beta: float = plain(0.9, doc="EMA of the importance scores (Eq. 8)", allowed="[0, 1)")
    t_init: float = plain(0.15, doc="warm-up without pruning, fraction of optimizer steps", allowed="[0, 1)")
    t_final: float = plain(0.5, doc="final phase with a frozen mask, fraction", allowed="[0, 1), t_init + t_final < 1")
    prune_interval: int = plain(doc="optimizer steps between pruning steps", allowed=">= 1")
    reg_coefficient: float = plain(doc="eta of the DEM loss (Eq. 10); 0 = without DEM", allowed=">= 0")
    schedule: str = plain("paper", doc="budget schedule", allowed="paper, authors_code")
    adapter_dtype: str = plain("fp32", doc="dtype of A, B, c: fp32 also on a bf16/fp16 base, or the base weight's",
                               allowed="fp32, base")

    def check(self) -> None:
        super().check()
        from dora_bench.dora.config import DoraConfig  # imports torch (the dora package): only for DoRA runs

        options = {f.name: getattr(self, f.name) for f in fields(DoraConfig) if hasattr(self, f.name)}
        try:
            DoraConfig(target_modules=".*", **options)
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err).replace("DoraConfig.", "method.")) from None


# ---- data, trainer, top level -----------------------------------------------------------------------------

@dataclass
class Data(Checked):
    KEY: ClassVar[str] = "data"
    dir: Optional[str] = plain(None, doc="local data folder (GLUE layout, or the task's data_files)")
    train_file: Optional[str] = plain(None, doc="explicit training file (.tsv/.jsonl/.json/.csv)")
    validation_file: Optional[Any] = plain(None, doc="explicit evaluation file, or {eval set: file} (MNLI)",
                                           allowed="a path or a mapping of eval set to path")
    max_train_samples: Optional[int] = ranged(None, ge=1, doc="fixed random subset of the training split")
    max_eval_samples: Optional[int] = ranged(None, ge=1, doc="first N examples of each evaluation split")
    subsample_seed: int = plain(0, doc="seed of the training subset (the same for every seed and method)")

    def check(self) -> None:
        evals = self.validation_file
        if evals is not None and not isinstance(evals, str) and not (
                isinstance(evals, dict) and all(isinstance(v, str) for v in evals.values())):
            self.refuse("validation_file", evals, "a path, or a mapping of eval set to path")


@dataclass
class Trainer(Checked):
    KEY: ClassVar[str] = "trainer"
    epochs: int = ranged(ge=1, doc="training epochs")
    learning_rate: float = ranged(gt=0, doc="peak learning rate (AdamW)")
    batch_size: int = ranged(ge=1, doc="global batch size (split over processes)")
    eval_batch_size: int = ranged(64, ge=1, doc="per-device evaluation batch size")
    grad_accum: int = ranged(1, ge=1, doc="gradient accumulation steps")
    max_length: int = ranged(ge=1, doc="input tokens (<= model.max_positions)")
    weight_decay: float = ranged(0.01, ge=0, doc="AdamW weight decay")
    warmup_ratio: float = ranged(0.06, ge=0, le=1, doc="linear warm-up, fraction of optimizer steps")
    max_grad_norm: float = ranged(1.0, ge=0, doc="gradient-norm clip (0: none)")
    lr_scheduler: str = choice("linear", options=LR_SCHEDULERS, doc="learning-rate schedule")
    group_by_length: bool = plain(False, doc="batch examples of similar length")
    logging_steps: int = ranged(50, ge=1, doc="optimizer steps between loss logs")
    dataloader_workers: int = ranged(0, ge=0, doc="data-loading worker processes")
    use_cpu: bool = plain(False, doc="train on the CPU even when a GPU is present")
    progress_bar: bool = plain(True, doc="tqdm progress bars")
    precision: str = choice("fp32", options=PRECISIONS, doc="training precision (fp16 needs CUDA)")
    gradient_checkpointing: bool = plain(False, doc="recompute activations in the backward pass (less memory)")
    tf32: bool = plain(True, doc="TF32 matmuls (only where CUDA hardware has them)")
    compile: bool = plain(False, doc="torch.compile the model")
    report_to: str = choice("none", options=REPORT_TO, doc="experiment tracker for the training logs")
    save_steps: Optional[int] = ranged(None, ge=1, doc="also checkpoint every N optimizer steps (long epochs); "
                                       "null: at epoch ends only")

    def check(self) -> None:
        if self.precision == "fp16" and (self.use_cpu or not _cuda_available()):
            self.refuse("precision", self.precision, f"{', '.join(p for p in PRECISIONS if p != 'fp16')} "
                        "(fp16 needs a CUDA GPU and none is used here)")


def _cuda_available() -> bool:
    import torch  # only asked for fp16: keeps the schema light

    return torch.cuda.is_available()


@dataclass
class Lock(Checked):
    """One trainer per result (dora_bench/locks.py): what a process does when another one trains a seed."""

    KEY: ClassVar[str] = "lock"
    when_held: str = choice("wait", options=LOCK_WHEN_HELD, doc="another process trains the seed: wait for its "
                            "result (the job's other seeds first) or skip it and go on")
    stale_minutes: float = ranged(10.0, gt=0, doc="a holder on another host silent this long is gone: its lock "
                                  "is taken over")


@dataclass
class Config(Checked):
    # budget before method: a bad budget.rank is named as such, not as the method key interpolating it
    model: Model = MISSING
    task: Any = MISSING    # one Task schema per family, chosen by the task file
    budget: Budget = MISSING
    method: Any = MISSING  # one Method schema per implementation, chosen by the method file
    seed: Optional[int] = plain(None, doc="one seed (multirun: seed=1,2,3); null runs every seed in `seeds`")
    seeds: List[int] = plain([1, 2, 3, 4, 5], doc="seeds run when seed is null", allowed="a non-empty list of integers")
    force: bool = plain(False, doc="rerun seeds whose complete result exists")
    report: str = choice("best", options=("best", "last"), doc="per-seed score: best dev epoch or last")
    tag: str = path_name("", doc="appended to the run name (experiment variants)", empty_ok=True)
    results_dir: str = plain("results", doc="where results and checkpoints go", allowed="a writable folder")
    cache_dir: str = plain(doc="feature and model cache ($DORA_BENCH_CACHE)")
    keep_checkpoints: bool = plain(False, doc="keep checkpoints after a seed completes")
    data: Data = field(default_factory=Data)
    trainer: Trainer = field(default_factory=Trainer)
    lock: Lock = field(default_factory=Lock)

    def check(self) -> None:
        if not self.seeds:
            self.refuse("seeds", self.seeds, "a non-empty list of integers")
        for name in ("task", "method"):
            node = getattr(self, name)
            if not isinstance(node, (Task, Method)):
                raise ConfigError(f"{name} has no schema: its config file must name one in its defaults list")
        if self.task.head not in self.model.heads:
            raise ConfigError(f"task={self.task.name} needs a {self.task.head} model but model={self.model.name} has "
                              f"{', '.join(self.model.heads)} heads; models with one: "
                              f"{', '.join(models_with_head(self.task.head))}")
        if self.model.dtype != "fp32" and self.method.IMPL in FP32_BASE_IMPLS:
            raise ConfigError(f"model.dtype={self.model.dtype!r} is not valid with method={self.method.name}, which "
                              f"would train in {self.model.dtype} without fp32 master weights (Full FT and BitFit train "
                              f"the base weights, AdapterHub's adapters compute in their precision); allowed: "
                              f"model.dtype=fp32 (trainer.precision=bf16 still computes in bf16), or lora, adalora, dora")
        if self.trainer.max_length > self.model.max_positions:
            raise ConfigError(f"trainer.max_length={self.trainer.max_length} is not valid; allowed: <= "
                              f"{self.model.max_positions} (model {self.model.name}'s positions)")
        self.task.check_in(self)


def models_with_head(head: str) -> list[str]:
    folder = resources.files("dora_bench.conf") / "model"
    configs = (yaml.safe_load(p.read_text()) for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(c["name"] for c in configs if head in c.get("heads", ()))


# ---- registration and validation -------------------------------------------------------------------------

# ConfigStore names (at the root, so that `--help` does not list them as config groups) -> schema
SCHEMAS = {
    "schema_config": Config,
    "schema_model": Model,
    "schema_budget": Budget,
    "schema_task_glue": GlueTask,
    "schema_task_squad": SquadTask,
    "schema_task_xsum": XsumTask,
    "schema_task_gsm8k": Gsm8kTask,
    "schema_method_full_ft": FullFtMethod,
    "schema_method_bitfit": BitFitMethod,
    "schema_method_lora": LoraMethod,
    "schema_method_adalora": AdaLoraMethod,
    "schema_method_adapters": AdapterMethod,
    "schema_method_dora": DoraMethod,
    "schema_method_none": NoneMethod,
}

SCHEMA_NAMES = {schema: name for name, schema in SCHEMAS.items()}


def register() -> None:
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema)


def validate(cfg: DictConfig) -> Config:
    """The resolved config as schema objects: no unknown key, every range, choice and cross-field rule checked."""
    refuse_unknown_keys(cfg)
    return OmegaConf.to_object(cfg)


def refuse_unknown_keys(node: DictConfig, path: str = "") -> None:
    """Composition refuses unknown keys, except those added on purpose (`+key=`): nothing reads them, so refuse."""
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):
        return
    names = [spec.name for spec in fields(schema)]
    values = OmegaConf.to_container(node, resolve=False)
    for key, value in values.items():
        if key not in names:
            raise ConfigError(unknown_key(f"{path}{key}={value!r}", path.rstrip("."), schema))
        if isinstance(value, dict):
            refuse_unknown_keys(node[key], f"{path}{key}.")


def unknown_key(given: str, parent: str, schema: type) -> str:
    allowed = ", ".join(spec.name for spec in fields(schema))
    return f"{given} is not a config key; allowed under {parent or 'the top level'}: {allowed}"


def expected(schema: type, name: str) -> str:
    """What a schema field accepts, in words (for type errors found by OmegaConf)."""
    hints = {spec.name: spec for spec in fields(schema)} if is_dataclass(schema) else {}
    if name not in hints:
        return "a key of the schema"
    return type_words(get_type_hints(schema)[name])


def type_words(kind) -> str:
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Any: "any value"}
    if kind in words:
        return words[kind]
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) is Union:
        return f"{type_words(args[0])} or null"
    if get_origin(kind) in (list, List):
        return f"a list of {type_words(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if get_origin(kind) in (dict, Dict) or is_dataclass(kind):
        return "a mapping"
    return getattr(kind, "__name__", str(kind))


# ---- the README's config reference, generated from the schemas and the YAML values ---------------------------

GROUP_SCHEMAS = {"model": (Model,), "budget": (Budget,), "task": (GlueTask, SquadTask, XsumTask, Gsm8kTask),
                 "method": (FullFtMethod, BitFitMethod, LoraMethod, AdaLoraMethod, AdapterMethod, DoraMethod,
                            NoneMethod)}


def reference_markdown() -> str:
    """Every key with its type, what is allowed and its default (the YAML value; per file for group files)."""
    conf = resources.files("dora_bench.conf")
    top = {"config.yaml": yaml.safe_load((conf / "config.yaml").read_text())}
    parts = [_table("Top level (`conf/config.yaml`)", Config, "", top),
             _table("`data.` (`conf/config.yaml`)", Data, "data.", {k: v["data"] for k, v in top.items()}),
             _table("`trainer.` (`conf/config.yaml`)", Trainer, "trainer.", {k: v["trainer"] for k, v in top.items()}),
             _table("`lock.` (`conf/config.yaml`)", Lock, "lock.", {k: v["lock"] for k, v in top.items()})]
    for group, schemas in GROUP_SCHEMAS.items():
        files = {p.name.removesuffix(".yaml"): yaml.safe_load(p.read_text())
                 for p in sorted((conf / group).iterdir(), key=lambda p: p.name) if p.name.endswith(".yaml")}
        for schema in schemas:
            declaration = f"/{SCHEMA_NAMES[schema]}@_here_"
            chosen = {option: data for option, data in files.items() if declaration in data["defaults"]}
            title = f"`{group}=` {', '.join(chosen)} (`{schema.__name__}`)"
            parts.append(_table(title, schema, f"{group}.", chosen))
    return "\n".join(parts)


def _table(title: str, schema: type, prefix: str, sources: dict[str, dict]) -> str:
    rows = [f"#### {title}", "", "| key | type | allowed | default | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{prefix}{key}` | {kind} | {allowed} | {default} | {doc} |"
             for key, kind, allowed, default, doc in _rows(schema, sources)]
    return "\n".join(rows) + "\n"


def _rows(schema: type, sources: dict[str, dict], path: str = ""):
    hints = get_type_hints(schema)
    for spec in fields(schema):
        kind = hints[spec.name]
        if spec.name in GROUP_SCHEMAS or spec.name in ("data", "trainer", "lock") and schema is Config:
            continue  # sections of their own
        if is_dataclass(kind):
            yield from _rows(kind, {k: (v or {}).get(spec.name) or {} for k, v in sources.items()}, f"{path}{spec.name}.")
            continue
        rule = spec.metadata.get("check")
        allowed = rule.text() if rule is not None else spec.metadata.get("allowed", "")
        values = {option: data.get(spec.name, _field_default(spec)) for option, data in sources.items()}
        yield (path + spec.name, type_words(kind).removeprefix("an ").removeprefix("a "), _cell(allowed),
               _defaults(values), _cell(spec.metadata.get("doc", "")))


def _field_default(spec) -> Any:
    if spec.default is not NO_DEFAULT:
        return spec.default
    if spec.default_factory is not NO_DEFAULT:
        return spec.default_factory()
    return MISSING


def _defaults(values: dict[str, Any]) -> str:
    """One value, or each distinct value with the files that set it."""
    by_value: dict[str, list[str]] = {}
    for option, value in values.items():
        by_value.setdefault(_literal(value), []).append(option)
    if len(by_value) == 1:
        return next(iter(by_value))
    if all(options == [value.strip("`")] for value, options in by_value.items()):
        return "the file's name"
    return " · ".join(f"{value} ({', '.join(options)})" for value, options in by_value.items())


def _literal(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return _cell(f"`{text}`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
