"""SQuAD windows and postprocessing: synthetic logits over overlapping windows, no-answer, labels."""
import numpy as np
import pytest
from datasets import Dataset

from dora_bench.models import char_tokenizer
from dora_bench.tasks.squad import (
    SpanSettings,
    answer_token_span,
    eval_features,
    postprocess,
    train_features,
)

CONTEXT = "aaa bbb ccc ddd eee fff ggg hhh"
WORDS = [(i * 4, i * 4 + 3) for i in range(8)]  # character offsets of the eight words
# Two windows of [CLS] question [SEP] + context words, sharing words 3 and 4 (ddd eee).
WINDOW_A = [None, None, None, *WORDS[0:5]]
WINDOW_B = [None, None, None, *WORDS[3:8]]
V1, V2 = SpanSettings(version_2=False), SpanSettings(version_2=True)


def logits(window, marks, cls=0.0):
    """Low logits everywhere except `marks` ({word index: value}) and the CLS position."""
    values = np.full(len(window), -5.0)
    values[0] = cls
    for word, value in marks.items():
        values[window.index(WORDS[word])] = value
    return values


def run(starts, ends, settings=V1):
    predictions, odds = postprocess(["q"], [CONTEXT], ["q", "q"], [WINDOW_A, WINDOW_B], starts, ends, settings)
    return predictions["q"], odds["q"]


def test_an_answer_across_the_window_boundary_is_found_in_the_window_that_holds_it_whole():
    # "eee fff" (words 4-5) starts in window A's last word; only window B holds both ends.
    starts = [logits(WINDOW_A, {4: 9.0}), logits(WINDOW_B, {4: 8.0})]
    ends = [logits(WINDOW_A, {4: 1.0}), logits(WINDOW_B, {5: 8.0})]
    assert run(starts, ends)[0] == "eee fff"  # beats "eee" in window A (score 10 < 16)


def test_spans_must_be_ordered_short_and_inside_the_context():
    question_heavy = logits(WINDOW_A, {})
    question_heavy[1] = 50.0  # a question token: never part of an answer
    starts = [question_heavy, logits(WINDOW_B, {6: 9.0, 3: 1.0})]
    ends = [question_heavy, logits(WINDOW_B, {3: 9.0, 7: 0.5})]
    assert run(starts, ends)[0] == "ddd"  # not "ggg ... ddd" (18): it ends before it starts
    long = [question_heavy, logits(WINDOW_B, {3: 9.0})], [question_heavy, logits(WINDOW_B, {7: 9.0, 4: 1.0})]
    assert run(*long)[0] == "ddd eee fff ggg hhh"
    assert run(*long, SpanSettings(max_answer_length=4))[0] == "ddd eee"


def test_batch_padding_beyond_a_window_is_ignored():
    padded = [np.append(logits(WINDOW_A, {1: 3.0}), [99.0, 99.0]), np.append(logits(WINDOW_B, {}), [99.0])]
    assert run(padded, padded)[0] == "bbb"


@pytest.mark.parametrize("null_in_b,expected", [(2.0, "ccc"), (40.0, "")])
def test_v2_null_score_is_the_minimum_over_windows_and_wins_only_above_the_threshold(null_in_b, expected):
    # the best span "ccc" scores 5 + 5 = 10 in window A, whose null score is 20
    starts = [logits(WINDOW_A, {2: 5.0}, cls=10.0), logits(WINDOW_B, {}, cls=null_in_b / 2)]
    ends = [logits(WINDOW_A, {2: 5.0}, cls=10.0), logits(WINDOW_B, {}, cls=null_in_b / 2)]
    prediction, odds = run(starts, ends, V2)
    assert (prediction, odds) == (expected, pytest.approx(min(20.0, null_in_b) - 10.0))
    assert run(starts, ends, V1)[0] == "ccc"  # v1 always answers
    assert run(starts, ends, SpanSettings(version_2=True, null_threshold=15.0))[0] == "ccc"


def test_answer_token_span_needs_the_whole_answer_inside_the_window():
    sequence_ids = [None, 0, None, 1, 1, 1, 1, 1]
    offsets = [(0, 0), (0, 3), (0, 0), *WORDS[0:5]]
    eee_fff = (WORDS[4][0], WORDS[5][1])
    assert answer_token_span(offsets, sequence_ids, *eee_fff) is None
    assert answer_token_span(offsets, sequence_ids, WORDS[1][0], WORDS[2][1]) == (4, 5)
    assert answer_token_span(offsets, sequence_ids, WORDS[1][0] + 1, WORDS[1][1] - 1) == (4, 4)  # inside a token


def test_features_from_a_real_tokenizer_round_trip_the_answer(tmp_path):
    """Oracle logits at the training labels of each window give back the gold text through postprocess."""
    tokenizer = char_tokenizer(tmp_path)
    context = "the small cat sat on a mat near the big red house. " * 3
    start = context.index("big red house", 60)
    batch = Dataset.from_dict({"id": ["q"], "question": [" where?"], "context": [context],
                               "answers": [{"text": ["big red house"], "answer_start": [start]}]})[:]
    train = train_features(batch, tokenizer, max_length=48, stride=12)
    evals = eval_features(batch, tokenizer, max_length=48, stride=12)
    assert len(train["input_ids"]) == len(evals["input_ids"]) > 3  # several windows
    labelled = [w for w, s in enumerate(train["start_positions"]) if s != 0]
    assert labelled and len(labelled) < len(train["input_ids"])  # other windows point at CLS
    starts = np.full((len(evals["input_ids"]), 48), -10.0)
    ends = starts.copy()
    for w in labelled:
        starts[w, train["start_positions"][w]] = ends[w, train["end_positions"][w]] = 10.0
    predictions, _ = postprocess(["q"], [context], evals["example_id"], evals["offset_mapping"],
                                 starts, ends, V2)
    assert predictions == {"q": "big red house"}
