"""What a task head implies, in one table: the model class, PEFT's task type, the trainer, the modules that are
head (they train fully in every method and are left out of the paper's counts) and the padding side.

Everything else reads it: the schema (which heads exist), models.py (the Auto class), methods/ (head modules,
PEFT task type), run.py (trainer and training arguments). Light on purpose (no torch or transformers at
import): the schema imports it before the heavy imports.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    name: str
    auto_class: str                  # transformers Auto class that loads a model with this head
    peft_task_type: str              # PEFT TaskType (PEFT keeps modules_to_save trainable through it)
    trainer: str                     # trainer class in dora_bench.engine
    head_modules: tuple[str, ...]    # module names (one dotted part) that are the task head: they train fully
    padding_side: str                # where padding goes when this head's inputs are batched for inference
    predict_with_generate: bool = False  # Seq2SeqTrainingArguments: the Trainer itself generates at evaluation

    def is_head_parameter(self, name: str) -> bool:
        return any(part in self.head_modules for part in name.split("."))


# BERT keeps the dense + tanh of its sentence head in the encoder as `pooler`; RoBERTa (the paper's model) has it
# in `classifier`. Both are head, so a BERT model (MiniLM) is tuned under the paper's protocol. A decoder's
# lm_head is the pretrained output layer (tied to the embeddings in most models), not a new head: no causal_lm
# module trains fully, and a decoder's prompt is padded on the left so that generation continues from its end.
HEADS: dict[str, Head] = {
    "seq_cls": Head("seq_cls", "AutoModelForSequenceClassification", "SEQ_CLS", "BenchTrainer",
                    ("classifier", "score", "pooler"), "right"),
    "qa": Head("qa", "AutoModelForQuestionAnswering", "QUESTION_ANS", "BenchTrainer", ("qa_outputs", "pooler"), "right"),
    "seq2seq": Head("seq2seq", "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", "BenchSeq2SeqTrainer", (), "right",
                    predict_with_generate=True),
    "causal_lm": Head("causal_lm", "AutoModelForCausalLM", "CAUSAL_LM", "BenchTrainer", (), "left"),
}


def head(name: str) -> Head:
    """The head of this name (the schema has already refused any other)."""
    return HEADS[name]
