"""GSM8K: the final-number extraction and exact match on hand-made cases, the features (loss on the answer and
its EOS only, also when the pad token is EOS), the answer NLL against transformers' own loss, and the splits."""
import json

import pytest
import torch
from datasets import Dataset
from helpers import write_jsonl
from hydra import compose, initialize_config_module

from dora_bench import schema
from dora_bench.errors import UserError
from dora_bench.models import byte_tokenizer, load_model
from dora_bench.tasks import gsm8k
from dora_bench.tasks.causal_lm import (IGNORE, PadCollator, answer_likelihood, encode, fit_to_positions,
                                       leading_special_ids)

OFFICIAL = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
            "in April and May.\n#### 72")


@pytest.mark.parametrize("text,number", [
    ("She has 3 + 4 = 7 apples.\n#### 1,234", "1234"),             # comma in the answer
    ("The answer is $18.00.", "18"),                                # $, trailing .00 and the full stop
    ("x = 3.50", "3.5"),                                            # trailing zero of a decimal
    ("#### -7", "-7"),                                              # negative
    ("10 cookies and 20 cakes", "20"),                              # no mark: the last number
    ("#### 72\nQuestion: Tom has 5 apples", "72"),                  # rambling after the mark: the first after it
    ("I think 5, so #### $1,000.0 dollars", "1000"),
    ("#### \nso 12", "12"),                                         # the number after the mark, even a line later
    ("a half is .5", ".5"),
    ("no number at all", None),
    ("It was on 2024-01-05.", "5"),                                 # hyphens of a date are not minus signs
    ("x = -3 and y = 5-2", "2"),                                    # a sign after a space; 5-2 is 5 and 2
    ("the list 1,2,3", "3"),                                        # commas between single digits: three numbers
    ("about 12,345 people", "12345"),                               # a thousands separator
    ("The answer is 42. Check: 42 - 40 = 2", "42"),                 # a stated answer before a later check
    ("Answer: $7.50, so 3 left", "7.5"),
    ("#### 9\nThe answer is 8", "9"),                               # the mark goes first
    ("007 agents", "7"),                                            # leading zeros
])
def test_extract_answer(text, number):
    assert gsm8k.extract_answer(text) == number


def test_gold_answer_and_exact_match():
    assert gsm8k.gold_answer(OFFICIAL) == "72"
    assert gsm8k.gold_answer("It costs 5 + 1 = 6.\n#### 1,000") == "1000"
    assert gsm8k.gold_answer("no mark 5") is None
    score, extracted = gsm8k.exact_match(["so #### 72", "#### 72.0", "it is 71", "nothing"], ["72", "72", "72", "72"])
    assert score == 50.0 and extracted == ["72", "72", "71", None]


def test_calculator_notes_are_stripped():
    assert gsm8k.strip_calculator_notes(OFFICIAL) == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 "
                                                      "clips altogether in April and May.\n#### 72")


def test_labels_cover_the_answer_and_its_eos_only_even_when_pad_is_eos():
    tokenizer = byte_tokenizer(with_pad=False)
    tokenizer.pad_token = tokenizer.eos_token                       # GPT-2's way: pad with EOS
    out = encode(tokenizer, ["Q: 1+1?\nA:", "Q: 10+20?\nA:"], [" 2\n#### 2", " 30\n#### 30"], max_length=64,
                 keep_overlong=False)
    for ids, labels, prompt, answer in zip(out["input_ids"], out["labels"], ["Q: 1+1?\nA:", "Q: 10+20?\nA:"],
                                           [" 2\n#### 2", " 30\n#### 30"]):
        n = len(prompt.encode())                                    # one token per byte, no BOS
        assert labels[:n] == [IGNORE] * n and IGNORE not in labels[n:]
        assert tokenizer.decode(ids[:n]) == prompt and tokenizer.decode(labels[n:-1]) == answer
        assert labels[-1] == ids[-1] == tokenizer.eos_token_id      # the answer ends in EOS, and it counts
    batch = PadCollator(tokenizer.pad_token_id, "right")([{k: out[k][i] for k in out} for i in range(2)])
    first = len(out["input_ids"][0])
    assert batch["labels"][0, first - 1] == tokenizer.eos_token_id  # its EOS is labelled ...
    assert (batch["labels"][0, first:] == IGNORE).all()             # ... the padding (also EOS ids) is not
    assert (batch["input_ids"][0, first:] == tokenizer.eos_token_id).all()
    assert batch["attention_mask"][0].tolist() == [1] * first + [0] * (batch["input_ids"].shape[1] - first)
    left = PadCollator(tokenizer.pad_token_id, "left", columns=("input_ids",))([{"input_ids": [5, 6]}, {"input_ids": [7]}])
    assert left["input_ids"].tolist() == [[5, 6], [tokenizer.pad_token_id, 7]]


def test_overlong_examples_are_left_out_of_training_and_cut_for_evaluation():
    tokenizer = byte_tokenizer(with_pad=True)
    kwargs = dict(prompts=["Q: a\nA:", "Q: a much longer question\nA:"], targets=[" 1", " 2"], max_length=12)
    assert len(encode(tokenizer, keep_overlong=False, **kwargs)["input_ids"]) == 1
    cut = encode(tokenizer, keep_overlong=True, **kwargs)
    assert [len(ids) for ids in cut["input_ids"]] == [10, 12] and set(cut["labels"][1]) == {IGNORE}
    assert len(cut["prompt_ids"][1]) == len("Q: a much longer question\nA:")   # generation sees the whole prompt


def test_a_tokenizer_that_adds_bos_keeps_it_before_the_prompt_only():
    from tokenizers.processors import TemplateProcessing

    tokenizer = byte_tokenizer(with_pad=True)
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[
        ("<|endoftext|>", tokenizer.eos_token_id)])
    assert leading_special_ids(tokenizer) == [tokenizer.eos_token_id]
    out = encode(tokenizer, ["Q:"], [" 1"], max_length=16, keep_overlong=False)
    assert out["input_ids"][0] == [tokenizer.eos_token_id, *tokenizer("Q: 1", add_special_tokens=False)["input_ids"],
                                   tokenizer.eos_token_id]
    assert out["labels"][0][:3] == [IGNORE] * 3


class _Eval:
    """What answer_likelihood needs of a Trainer."""

    def __init__(self, model, batch_size):
        self.model = model
        self.args = type("Args", (), {"device": torch.device("cpu"), "per_device_eval_batch_size": batch_size})

    def autocast_smart_context_manager(self):
        return torch.autocast("cpu", enabled=False)


def test_answer_nll_equals_transformers_loss_over_the_answer_tokens(cache_dir):
    """Hand computation with transformers' own causal-LM loss (mean cross-entropy over labelled, shifted tokens):
    the same number for one example, and for a padded batch the token-weighted mean; a loss over every token
    (prompt included) is another number."""
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["task=gsm8k", "model=tiny_gpt2"])
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg.model, "causal_lm", str(cache_dir))
    model.eval()
    out = encode(tokenizer, ["Question: 2+2?\nAnswer:", "Question: what is 10 times 3?\nAnswer:"],
                 [" 2+2 = 4\n#### 4", " 30\n#### 30"], max_length=128, keep_overlong=False)
    features = Dataset.from_dict(out)
    with torch.no_grad():
        singles = [model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
                   for ids, labels in zip(out["input_ids"], out["labels"])]
        whole = model(input_ids=torch.tensor([out["input_ids"][0]]), labels=torch.tensor([out["input_ids"][0]])).loss
    counts = [sum(label != IGNORE for label in labels[1:]) for labels in out["labels"]]
    one = answer_likelihood(_Eval(model, 1), features.select([0]), tokenizer.pad_token_id)
    assert one["answer_nll"] == pytest.approx(float(singles[0].loss), rel=1e-5)
    assert one["answer_nll"] != pytest.approx(float(whole), rel=1e-3)
    both = answer_likelihood(_Eval(model, 2), features, tokenizer.pad_token_id)   # one padded batch
    weighted = sum(float(s.loss) * c for s, c in zip(singles, counts)) / sum(counts)
    assert both["answer_nll"] == pytest.approx(weighted, rel=1e-5)
    hits = sum(int((s.logits[0, :-1].argmax(-1) == torch.tensor(labels[1:]))[torch.tensor(labels[1:]) != IGNORE].sum())
               for s, labels in zip(singles, out["labels"]))
    assert both["answer_token_accuracy"] == pytest.approx(100 * hits / sum(counts))


class _FixedLogits(torch.nn.Module):
    """A causal LM whose logits are given: a vocabulary as large as SmolLM2's, peaked like a trained model's."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None):
        return type("Output", (), {"logits": self.logits[: input_ids.shape[0], : input_ids.shape[1]]})


def test_answer_nll_equals_a_float64_computation_over_a_large_vocabulary():
    """Against log_softmax in float64 over the same logits, mean per answer token: cross_entropy over
    (batch, vocab, length) was about 7e-5 nats low here, over flattened logits it is within 4e-6."""
    torch.manual_seed(0)
    batch, length, vocab = 2, 40, 49_152
    logits = 4 * torch.randn(batch, length, vocab)
    ids = torch.randint(0, vocab, (batch, length))
    labels = ids.clone()
    labels[:, :5] = IGNORE                                        # the prompt
    labels[1, 30:] = IGNORE                                       # a shorter answer, padded
    features = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    got = answer_likelihood(_Eval(_FixedLogits(logits), 2), features, pad_token_id=0)["answer_nll"]
    shifted, targets = logits[:, :-1].double(), labels[:, 1:]
    counted = targets != IGNORE
    reference = -torch.log_softmax(shifted, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)[counted]
    assert abs(got - float(reference.mean())) < 2e-5, (got, float(reference.mean()))


@pytest.mark.parametrize("lengths,max_new,expected_lengths,expected_new", [
    ([100, 50], 256, [100, 50], 256),              # fits: nothing changes
    ([381, 300], 256, [381, 300], 131),            # new tokens capped at the room the longest prompt leaves
    ([500, 10], 256, [384, 10], 128),              # less room than a quarter of the positions: cut from the left
    ([500], 64, [448], 64),                        # ... or than task.max_new_tokens, if that is smaller
    ([5000], 256, [5000], 256),                    # no limit known (max_positions None)
])
def test_generation_fits_the_model_positions(lengths, max_new, expected_lengths, expected_new):
    prompts = [list(range(n)) for n in lengths]
    fitted, new = fit_to_positions(prompts, max_new, None if lengths == [5000] else 512)
    assert [len(p) for p in fitted] == expected_lengths and new == expected_new
    assert all(p == prompt[len(prompt) - len(p):] for p, prompt in zip(fitted, prompts))   # the ends are kept
    assert lengths == [5000] or max(len(p) for p in fitted) + new <= 512


@pytest.mark.slow
def test_tiny_gpt2_on_real_gsm8k_generates_within_its_positions_and_writes_its_result(tmp_path, real_data, cache_dir):
    """The command that failed at evaluation (IndexError past GPT-2's 512 positions) and lost the seed."""
    from helpers import run_cli

    data = real_data("gsm8k/train.jsonl").parent
    out = run_cli("task=gsm8k", "model=tiny_gpt2", "method=lora", f"data.dir={data}", "data.max_train_samples=16",
                  "data.max_eval_samples=4", "trainer.epochs=1", "seed=1", "trainer.progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("[dora-bench] generation: prompt + task.max_new_tokens=256 pass model.max_positions=512") == 1
    [result] = (tmp_path / "results/runs").rglob("seed=1.json")
    assert json.loads(result.read_text())["status"] == "complete"


def test_the_validation_slice_is_fixed_disjoint_and_never_trained_on():
    train = Dataset.from_dict({"question": [f"q{i}" for i in range(30)], "answer": [f"#### {i}" for i in range(30)]})
    rest, validation = gsm8k.carve_validation(train, 5, seed=0)
    again_rest, again = gsm8k.carve_validation(train, 5, seed=0)
    assert validation["question"] == again["question"] and rest["question"] == again_rest["question"]
    assert len(validation) == 5 and len(rest) == 25 and not set(validation["question"]) & set(rest["question"])
    assert rest["question"] == sorted(rest["question"], key=lambda q: int(q[1:]))       # file order kept
    assert gsm8k.carve_validation(train, 5, seed=1)[1]["question"] != validation["question"]
    with pytest.raises(UserError, match="task.validation_size=30"):
        gsm8k.carve_validation(train, 30, seed=0)


def gsm8k_cfg(*overrides):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["task=gsm8k", "model=tiny_llama", *overrides])


def write_gsm8k(folder, n_train=12, n_test=4):
    rows = [{"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}"
             f"\n#### {i + 2}"} for i in range(n_train + n_test)]
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", rows[:n_train])
    write_jsonl(folder / "test.jsonl", rows[n_train:])
    return folder


def test_loading_local_files_carves_the_slice_and_keeps_test(tmp_path):
    cfg = gsm8k_cfg(f"data.dir={write_gsm8k(tmp_path)}", "task.validation_size=3")
    raw, fingerprint = gsm8k.load(cfg)
    assert {k: len(v) for k, v in raw.items()} == {"train": 9, "validation": 3, "test": 4}
    assert set(fingerprint["files"]) == {"train", "test"}
    explicit = gsm8k_cfg(f"data.train_file={tmp_path / 'train.jsonl'}", f"data.validation_file={tmp_path / 'test.jsonl'}",
                         "task.validation_size=3")
    assert gsm8k.data_files(explicit) == {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}


@pytest.mark.parametrize("line,message", [
    ('{"question": "q", "answer": "no final mark"}', "row 2: the answer does not end in '#### <number>'"),
    ('{"question": "", "answer": "#### 1"}', "row 2: needs non-empty text fields"),
    ('{"question": "q"', "line 2: not JSON"),
])
def test_bad_rows_are_named(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n' + line + "\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gsm8k.read_jsonl(path)


def test_without_local_data_the_hub_is_refused_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"openai/gsm8k/main would come from the hub.*data.dir="):
        gsm8k.load(gsm8k_cfg())


def test_evaluation_reports_the_schema_metrics_for_validation_and_test(tmp_path, cache_dir):
    """One evaluation through the task's own prepare/evaluate: every metric the schema allows as headline, the test
    split beside it with a test_ prefix, the score the validation slice's, predictions written per eval set."""
    cfg = gsm8k_cfg(f"data.dir={write_gsm8k(tmp_path / 'data')}", "task.validation_size=3", "task.max_new_tokens=4",
                    "task.generate_samples=2", f"cache_dir={cache_dir}", "task.metric=answer_nll")
    raw, fingerprint = gsm8k.load(cfg)
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg.model, "causal_lm", str(cache_dir))
    data = gsm8k.prepare(cfg, tokenizer, raw, fingerprint)
    trainer = _Eval(model, 2)
    trainer.predictions_dir = tmp_path / "predictions"
    trainer.is_world_process_zero = lambda: True
    metrics = data.evaluate(trainer)
    assert set(metrics) == {*schema.GSM8K_METRICS, *(f"test_{m}" for m in schema.GSM8K_METRICS), "score"}
    assert metrics["score"] == metrics["answer_nll"] != metrics["test_answer_nll"]
    lines = [json.loads(line) for line in (tmp_path / "predictions" / "test.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and set(lines[0]) == {"question", "generation", "extracted", "gold", "correct"}
    assert [line["gold"] for line in lines] == [gsm8k.gold_answer(a) for a in raw["test"]["answer"][:2]]
    assert len(data.train) == 9 and set(data.train.column_names) == {"input_ids", "attention_mask", "labels"}
