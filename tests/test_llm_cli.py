"""`dora-bench task=gsm8k` end to end on tiny random decoders (tiny_llama: GQA, a pad token of its own; tiny_gpt2:
Conv1D, pads with EOS), every applicable method, data the test writes; what a decoder table reads from each result;
the refusals (BitFit without biases, half-precision training) in one line."""
import json
import math

import pytest
from helpers import run_cli, variant_dir, write_jsonl

from dora_bench import cli
from dora_bench.results import RunResult, read_result

pytestmark = pytest.mark.slow   # trains end to end (module fixtures): the full tier

N_TRAIN, N_TEST, VALIDATION, EPOCHS = 20, 4, 4, 2
PROMPT, TARGET = "Question: {question}\nAnswer:", " {answer}"
RUN = ("task=gsm8k", f"task.validation_size={VALIDATION}", "task.max_new_tokens=4", "task.metric=answer_nll",
       "task.prune_interval=1", f"trainer.epochs={EPOCHS}", "trainer.batch_size=4", "trainer.max_length=128",
       "trainer.learning_rate=0.01", "trainer.logging_steps=1", "trainer.progress_bar=false", "seed=1")
LLAMA_METHODS = ("full_ft", "lora", "adalora", "dora", "h_adapter", "p_adapter", "none")
GPT2_METHODS = ("full_ft", "bitfit", "lora", "adalora", "dora", "h_adapter", "p_adapter")
EXPORTS = {"lora", "adalora", "dora", "h_adapter", "p_adapter"}


def gsm8k_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"question": f"Tom has {i} apples and buys {i % 5} more. How many apples does he have?",
             "answer": f"He has {i} + {i % 5} = <<{i}+{i % 5}={i + i % 5}>>{i + i % 5} apples.\n#### {i + i % 5}"}
            for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gsm8k")
    write_jsonl(folder / "train.jsonl", gsm8k_rows(N_TRAIN))
    write_jsonl(folder / "test.jsonl", gsm8k_rows(N_TEST, offset=100))
    return folder


def sweep(model, methods, data_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"runs_{model}")
    out = run_cli("-m", f"model={model}", f"method={','.join(methods)}", f"data.dir={data_dir}", *RUN, cwd=work)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    runs = work / "results/runs" / model / "gsm8k"
    return {method: variant_dir(next(runs.glob(f"{method}*"))) for method in methods}


@pytest.fixture(scope="module")
def llama(data_dir, tmp_path_factory, cache_dir):
    return sweep("tiny_llama", LLAMA_METHODS, data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def gpt2(data_dir, tmp_path_factory, cache_dir):
    return sweep("tiny_gpt2", GPT2_METHODS, data_dir, tmp_path_factory)


def trained_tokens(data_dir) -> int:
    """Non-padding tokens of the training examples, by hand: the byte tokenizer has one token per UTF-8 byte and
    adds nothing before the prompt; each example is prompt + answer without calculator notes + EOS."""
    from dora_bench.tasks.gsm8k import carve_validation, read_jsonl

    train, _ = carve_validation(read_jsonl(data_dir / "train.jsonl"), VALIDATION, seed=0)
    answers = [a.replace(a[a.index("<<"):a.index(">>") + 2], "") for a in train["answer"]]
    return EPOCHS * sum(len(PROMPT.format(question=q).encode()) + len(TARGET.format(answer=a).encode()) + 1
                        for q, a in zip(train["question"], answers))


def check_result(folder, method, data_dir) -> RunResult:
    result = read_result(folder / "seed=1.json")
    assert result.complete, result.error
    metrics = ("exact_match", "answer_nll", "answer_token_accuracy")
    for epoch in result.epochs:
        assert set(epoch.metrics) == {*metrics, *(f"test_{m}" for m in metrics), "score"}
        assert all(math.isfinite(v) for v in epoch.metrics.values())
        assert epoch.metrics["score"] == epoch.metrics["answer_nll"]
    best = result.select("best")                                   # answer_nll: lower is better
    assert best.score == min(e.metrics["answer_nll"] for e in result.epochs)
    for split, n in (("validation", VALIDATION), ("test", N_TEST)):
        lines = [json.loads(line) for line in (folder / "seed=1.predictions" / f"{split}.jsonl").read_text().splitlines()]
        assert len(lines) == n and all(set(line) == {"question", "generation", "extracted", "gold", "correct"}
                                       for line in lines)
    timing = result.timing
    if method == "none":
        assert [(e.epoch, e.step) for e in result.epochs] == [(0.0, 0)] and result.train.optimizer_steps == 0
        assert result.params.trainable_paper == result.params.trainable_with_head == 0 and timing.train_tokens == 0
    else:
        assert len(result.epochs) == EPOCHS and result.train.optimizer_steps == EPOCHS * 4
        assert timing.train_tokens == trained_tokens(data_dir)
        assert timing.train_tokens_per_s > 0 and timing.step_time_median_s > 0
    assert timing.peak_memory_mb > 0
    if method in EXPORTS:
        adapter = folder / "seed=1.adapter"
        assert result.adapter_bytes == sum(f.stat().st_size for f in adapter.rglob("*") if f.is_file()) > 0
    else:
        assert result.adapter_bytes is None and result.adapter_dir is None
    return result


@pytest.mark.parametrize("method", LLAMA_METHODS)
def test_every_method_runs_gsm8k_on_tiny_llama(llama, method, data_dir):
    result = check_result(llama[method], method, data_dir)
    if method in ("full_ft", "lora", "adalora", "dora"):   # it learned: the validation NLL went down
        assert result.epochs[-1].metrics["answer_nll"] < result.epochs[0].metrics["answer_nll"]


@pytest.mark.parametrize("method", GPT2_METHODS)
def test_every_method_runs_gsm8k_on_tiny_gpt2(gpt2, method, data_dir):
    check_result(gpt2[method], method, data_dir)


def test_adalora_on_a_decoder_really_reallocates(llama):
    """PEFT AdaLoRA on a causal LM: total_step set and update_and_allocate called (else ranks stay at init_r)."""
    summary = read_result(llama["adalora"] / "seed=1.json").method_summary
    ranks, matrices = summary["rank_pattern"], 2 * 7
    assert summary["total_step"] == EPOCHS * 4 and len(ranks) == matrices
    assert sum(ranks.values()) == summary["target_r"] * matrices < summary["init_r"] * matrices


def test_counts_on_gpt2_conv1d_are_the_counted_ones(gpt2):
    """LoRA on the four Conv1D projections of each block (both c_proj: attention and MLP), BitFit on every bias."""
    d, ffn, r, blocks = 32, 64, 2, 2
    lora = read_result(gpt2["lora"] / "seed=1.json").params
    assert lora.trainable_paper == blocks * r * ((d + 3 * d) + (d + d) + (d + ffn) + (ffn + d))
    bitfit = read_result(gpt2["bitfit"] / "seed=1.json").params
    per_block = d + 3 * d + d + d + ffn + d        # ln_1, c_attn, attn c_proj, ln_2, c_fc, mlp c_proj
    assert bitfit.trainable_paper == blocks * per_block + d   # + ln_f


def one_line_refusal(out, *phrases):
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dora-bench: error: "), lines
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("overrides,phrases", [
    (("method=bitfit",), ("method=bitfit trains bias terms", "model=tiny_llama", "has none")),
    (("method=full_ft", "model.dtype=bf16"), ("model.dtype='bf16' is not valid with method=full_ft",
                                              "without fp32 master weights", "allowed: model.dtype=fp32")),
    (("method=h_adapter", "model.dtype=bf16"), ("model.dtype='bf16' is not valid with method=h_adapter",)),
])
def test_refusals_are_one_line_and_leave_nothing(tmp_path, data_dir, cache_dir, overrides, phrases):
    out = run_cli("model=tiny_llama", f"data.dir={data_dir}", *RUN, *overrides, cwd=tmp_path,
                  env={"HYDRA_FULL_ERROR": "0"})
    one_line_refusal(out, *phrases)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("seed=*.json"))


def test_a_search_minimises_a_lower_is_better_metric():
    """The objective handed to the Optuna sweeper (direction: maximize) is the negated mean NLL: the trial with
    the lowest NLL wins; a higher-is-better metric is passed as it is."""
    def outcome(metric, score):
        from dora_bench.results import Epoch

        return RunResult("complete", "gsm8k", "lora", "small", "tiny_llama", "", 1, {}, "f", {}, {}, metric=metric,
                         epochs=[Epoch(1.0, 4, {"score": score})])
    trials = {"low_nll": [outcome("answer_nll", 1.2)], "high_nll": [outcome("answer_nll", 1.9)]}
    assert max(trials, key=lambda t: cli.objective(trials[t], "best")) == "low_nll"
    assert cli.objective([outcome("answer_nll", 1.2), outcome("answer_nll", 1.4)], "best") == pytest.approx(-1.3)
    assert cli.objective([outcome("exact_match", 12.5)], "best") == 12.5
