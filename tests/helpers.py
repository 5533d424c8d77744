"""Small GLUE-layout files written by the tests, and a CLI runner."""
from __future__ import annotations

import copy
import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from cli_runner import IN_PROCESS, run_in_process

WORDS = ("the cat dog sat ran on a mat park big small red blue quickly slowly house tree bird sings "
         "music loud quiet man woman child plays ball").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "."


def _rows(task: str, rng: random.Random, n: int) -> tuple[list[str] | None, list[list[str]]]:
    s = lambda: sentence(rng)  # noqa: E731
    if task == "cola":
        return None, [["gj04", str(rng.randint(0, 1)), "" if rng.random() < .5 else "*", s()] for _ in range(n)]
    if task == "sst2":
        return ["sentence", "label"], [[s(), str(rng.randint(0, 1))] for _ in range(n)]
    if task == "mrpc":
        return (["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                [[str(rng.randint(0, 1)), str(i), str(i + 1), s(), s()] for i in range(n)])
    if task == "stsb":
        return ("index genre filename year old_index source1 source2 sentence1 sentence2 score".split(),
                [[str(i), "main-news", "x", "2012", str(i), "s", "s", s(), s(), f"{rng.uniform(0, 5):.3f}"]
                 for i in range(n)])
    if task == "qqp":
        return ("id qid1 qid2 question1 question2 is_duplicate".split(),
                [[str(i), str(2 * i), str(2 * i + 1), s(), s(), str(rng.randint(0, 1))] for i in range(n)])
    if task == "qnli":
        return ("index question sentence label".split(),
                [[str(i), s(), s(), rng.choice(["entailment", "not_entailment"])] for i in range(n)])
    if task == "rte":
        return ("index sentence1 sentence2 label".split(),
                [[str(i), s(), s(), rng.choice(["entailment", "not_entailment"])] for i in range(n)])
    if task == "mnli":
        header = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
                  "sentence2_parse sentence1 sentence2 label1 gold_label").split()
        labels = ["entailment", "neutral", "contradiction"]
        return header, [[str(i), "1", "1", "fiction", "(", "(", "(", "(", s(), s(), "x", rng.choice(labels)]
                        for i in range(n)]
    raise KeyError(task)


GLUE_FILES = {"mnli": ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")}


def write_tsv(path: Path, header, rows) -> None:
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glue(root: Path, n_train: int = 24, n_dev: int = 12) -> Path:
    """One folder per task in the original GLUE layouts (CoLA headerless, MRPC with a BOM)."""
    rng = random.Random(0)
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "qnli", "rte", "mnli"):
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        for name in GLUE_FILES.get(task, ("train.tsv", "dev.tsv")):
            write_tsv(folder / name, *_rows(task, rng, n_train if name == "train.tsv" else n_dev))
    return root


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def variant_dir(run_dir: Path) -> Path:
    """The one configuration folder under runs/<model>/<task>/<method-budget> (a test running one configuration)."""
    found = [p for p in Path(run_dir).iterdir() if p.is_dir() and not p.name.endswith((".adapter", ".predictions"))]
    assert len(found) == 1, found
    return found[0]


def run_cli(*overrides: str, cwd: Path, script: str = "dora_bench", timeout: int = 600,
            env: dict | None = None, process: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m <script> overrides...` as a user runs the console script (env: None unsets a variable).

    In this interpreter by default (tests/cli_runner.py: the same entry function, exit code, stdout and stderr);
    `process=True` for what only a process shows: the interpreter's start-up, a variable read when it starts
    (proxies, the hub), signals, a module that is not a console script's."""
    full_env = {"HYDRA_FULL_ERROR": "1", **(env or {})}
    if not process and script in IN_PROCESS:
        return run_in_process(script, overrides, cwd=cwd, env=full_env)
    proc_env = {k: v for k, v in {**os.environ, **full_env}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", script, *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=proc_env)


TINY = ("model=tiny_roberta", "trainer.epochs=2", "trainer.batch_size=8", "trainer.logging_steps=1",
        "trainer.progress_bar=false")


def squad_articles(rng: random.Random, n_questions: int, version_2: bool) -> dict:
    """An official-layout SQuAD file: short questions, answers cut from the context at their offsets."""
    paragraphs = []
    for p in range(0, n_questions, 3):
        context = " ".join(sentence(rng) for _ in range(3))
        qas = []
        for q in range(p, min(p + 3, n_questions)):
            start = rng.randrange(0, len(context) - 12)
            text = context[start:start + rng.randint(3, 10)]
            qa = {"id": f"q{q}", "question": f"what {rng.choice(WORDS)}?", "answers": [
                {"text": text, "answer_start": start}, {"text": text, "answer_start": start}]}
            if version_2:
                qa["is_impossible"] = q % 3 == 2
                if qa["is_impossible"]:
                    qa["plausible_answers"], qa["answers"] = qa["answers"], []
            qas.append(qa)
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "v2.0" if version_2 else "1.1", "data": [{"title": "Synthetic", "paragraphs": paragraphs}]}


def write_squad(root: Path, version_2: bool, n_train: int = 24, n_dev: int = 12) -> Path:
    """`data.dir` for task=squad_v1|squad_v2 with the official file names."""
    rng = random.Random(1)
    names = ("train-v2.0.json", "dev-v2.0.json") if version_2 else ("train-v1.1.json", "dev-v1.1.json")
    root.mkdir(parents=True, exist_ok=True)
    for name, n in zip(names, (n_train, n_dev)):
        (root / name).write_text(json.dumps(squad_articles(rng, n, version_2)), encoding="utf-8")
    return root


def write_xsum(root: Path, n_train: int = 16, n_dev: int = 6) -> Path:
    """`data.dir` for task=xsum: JSONL with document (one sentence a line), summary and id."""
    rng = random.Random(2)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.jsonl", n_train), ("validation.jsonl", n_dev)):
        write_jsonl(root / name, [{"id": str(i), "document": "\n".join(sentence(rng) for _ in range(4)),
                                   "summary": sentence(rng)} for i in range(n)])
    return root


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]):
    from dora_bench import results

    return results.compose_config(list(overrides))


def composed(*overrides: str):
    """results.compose_config(overrides), a fresh copy of it: a composition (about 0.15 s of Hydra) is made once
    per distinct overrides for the whole test run, where the table tests write hundreds of result files."""
    return copy.deepcopy(_composed(tuple(overrides)))


def write_result_file(root: Path, task: str, method: str, budget: str | None = None, seed: int = 1,
                      score: float = 80.0, *, model: str = "roberta_base", tag: str = "", overrides=(),
                      status: str = "complete", metrics: dict | None = None, epochs: list[dict] | None = None,
                      final_structure_step: int = 0, params: int = 331_776, timing: dict | None = None,
                      train: dict | None = None, method_summary: dict | None = None) -> Path:
    """A result file as run.py writes it (the real composed config, identity and location), with made-up
    numbers: one epoch scoring `score` unless `epochs` are given."""
    from omegaconf import OmegaConf

    from dora_bench import results

    cfg = composed(f"task={task}", f"method={method}", f"model={model}", f"tag='{tag}'",
                   *([f"budget={budget}"] if budget else []), *overrides)
    cfg.results_dir = str(root)
    where = results.locate(cfg, seed)
    record = results.RunResult(status=status, task=task, method=method,
                               budget=cfg.budget.name if cfg.method.uses_budget else None, model=model, tag=tag,
                               seed=seed, identity=where.identity, fingerprint=where.fingerprint,
                               config=OmegaConf.to_container(cfg, resolve=True), env={"device": "cpu"})
    if status == "complete":
        record.metric = cfg.task.metric
        record.epochs = [results.Epoch(**e) for e in epochs or
                         [{"epoch": 1.0, "step": 10, "metrics": {"score": score, **(metrics or {})}}]]
        record.final_structure_step = final_structure_step
        record.params = results.Params(trainable_paper=params, trainable_with_head=params + 10, total=10**6)
        record.timing = results.Timing(**(timing or {"train_runtime_s": 60.0, "peak_memory_mb": 1000.0}))
        record.train = results.TrainInfo(optimizer_steps=10, train_samples=80, eval_samples={"validation": 20},
                                         **(train or {}))
        record.method_summary = method_summary or {}
    else:
        record.error = "RuntimeError: boom"
    results.write_result(where.result, record)
    return where.result
