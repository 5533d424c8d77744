"""RoBERTa-base-shaped models built from a config (random weights, no download)."""
import copy
from functools import lru_cache

from hydra import compose, initialize_config_module
from transformers import RobertaConfig, RobertaForQuestionAnswering, RobertaForSequenceClassification

ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)


@lru_cache(maxsize=2)
def _model(head: str):
    cls = RobertaForQuestionAnswering if head == "qa" else RobertaForSequenceClassification
    return cls(RobertaConfig(**ROBERTA_BASE))


def roberta_base(head: str = "seq_cls"):
    """A fresh copy of one cached RoBERTa-base-shaped model (building it is the slow part)."""
    return copy.deepcopy(_model(head))


def config(*overrides: str):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["model=roberta_base", *overrides])
