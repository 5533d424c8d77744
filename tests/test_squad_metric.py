"""The official SQuAD v1.1 / v2.0 scoring on hand-made cases."""
import pytest

from dora_bench.tasks.squad import exact_match, normalize_answer, squad_scores, token_f1


@pytest.mark.parametrize("text,normalised", [
    ("The Eiffel  Tower!", "eiffel tower"),
    ("an apple, a day", "apple day"),
    ("Theatre (the play)", "theatre play"),   # articles only as whole words
    ("  A.  ", ""),
    ("U.S.-based", "usbased"),                # punctuation is deleted, not replaced by spaces
])
def test_normalisation_lowercases_and_strips_punctuation_articles_and_extra_spaces(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1_ignore_case_articles_and_punctuation():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel tower") == 0.0
    assert token_f1("Eiffel tower, Paris", "the Eiffel Tower") == pytest.approx(0.8)  # P 2/3, R 1
    assert token_f1("tower tower", "tower") == pytest.approx(2 / 3)  # tokens count with multiplicity
    assert token_f1("Paris", "London") == 0.0


def test_v1_takes_the_best_gold_answer_and_averages_x100():
    golds = {"q1": ["Denver Broncos", "Denver", "the Broncos"], "q2": ["Carolina Panthers"]}
    scores = squad_scores({"q1": "Broncos", "q2": "the Carolina Panthers team"}, golds, version_2=False)
    # q1: exact via "the Broncos"; q2: F1 with P 2/3, R 1 = 0.8
    assert scores == pytest.approx({"exact": 50.0, "f1": 90.0})


def test_empty_answers_score_differently_in_v1_and_v2():
    assert token_f1("", "", version_2=True) == 1.0
    assert token_f1("", "", version_2=False) == 0.0
    assert token_f1("", "") == 0.0                        # the default is the v1.1 script
    assert token_f1("something", "", version_2=True) == 0.0


def test_v2_scores_no_answer_questions_and_breaks_down_hasans_noans():
    golds = {"a1": ["Normandy"], "a2": ["10th century"], "n1": [], "n2": []}
    predictions = {"a1": "normandy", "a2": "", "n1": "", "n2": "the Franks"}
    scores = squad_scores(predictions, golds, version_2=True)
    assert scores == pytest.approx({"exact": 50.0, "f1": 50.0, "HasAns_exact": 50.0, "HasAns_f1": 50.0,
                                    "NoAns_exact": 50.0, "NoAns_f1": 50.0})


def test_v2_gold_answers_that_normalise_to_nothing_count_as_no_answer():
    # the v2.0 script drops such golds and compares with ""; the question still counts as HasAns
    scores = squad_scores({"q": ""}, {"q": ["The"]}, version_2=True)
    assert scores == {"exact": 100.0, "f1": 100.0, "HasAns_exact": 100.0, "HasAns_f1": 100.0}


def test_v1_has_no_breakdown_and_every_question_needs_a_prediction():
    assert set(squad_scores({"q": "x"}, {"q": ["x"]}, version_2=False)) == {"exact", "f1"}
    with pytest.raises(KeyError):
        squad_scores({}, {"q": ["x"]}, version_2=False)
