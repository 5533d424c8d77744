"""Small GLUE-layout files written by the tests, and a CLI runner."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

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


def run_cli(*overrides: str, cwd: Path, script: str = "dora_bench", timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <script> overrides...` the way a user runs the console script."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", script, *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


TINY = ("model=tiny_roberta", "trainer.epochs=2", "trainer.batch_size=8", "trainer.logging_steps=1",
        "trainer.progress_bar=false")
