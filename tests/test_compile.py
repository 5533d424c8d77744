"""trainer.compile: DoRA's layer compiles into one graph that survives pruning (the controller runs outside
it), and compiled training gives the loss of uncompiled training for DoRA and LoRA."""
import shutil

import pytest
import torch
from tiny_training import tiny_cfg, toy_dataset
from torch._dynamo.testing import CompileCounter
from transformers import DataCollatorWithPadding, RobertaConfig, RobertaForSequenceClassification

from dora_bench.dora import DoraConfig, apply_dora
from dora_bench.engine import BenchTrainer, optimizer_steps
from dora_bench.methods import apply_method
from dora_bench.models import load_model
from dora_bench.run import _training_arguments

TARGETS = r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.slow
def test_dora_model_compiles_to_one_graph_that_pruning_does_not_recompile():
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, num_labels=2,
        problem_type="single_label_classification"))  # else HF sets it on the first call: a recompile not ours
    controller = apply_dora(model, DoraConfig(target_modules=TARGETS, final_budget=2, prune_interval=1), 10)
    model.classifier.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    input_ids, labels = torch.randint(3, 100, (4, 16), generator=g), torch.randint(0, 2, (4,), generator=g)

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    model.train()
    for t in range(1, 11):
        loss = compiled(input_ids=input_ids, labels=labels).loss + controller.regularization()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        controller.step(t)
    assert len(controller.history) >= 3 and controller.history[-1]["kept"] < 12 * 3  # masks changed between steps
    assert counter.frame_count == 1  # one graph: no break in the layer, no recompilation after pruning
    explained = torch._dynamo.explain(model)(input_ids=input_ids, labels=labels)
    assert explained.graph_break_count == 0, explained.break_reasons


def train_losses(cache_dir, tmp_path, method: str, compile_: bool) -> list[float]:
    """A few optimizer steps through the runner's TrainingArguments and the engine, without dropout."""
    cfg = tiny_cfg(f"method={method}", "method.lora_dropout=0", f"trainer.compile={str(compile_).lower()}",
                   "trainer.epochs=1", "trainer.batch_size=8", "trainer.logging_steps=1", "trainer.use_cpu=true",
                   "trainer.progress_bar=false", "trainer.learning_rate=0.01", f"results_dir={tmp_path}")
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg.model, "seq_cls", str(cache_dir), num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = toy_dataset(tokenizer, n=32)  # every text tokenises to one length: one compiled shape
    handle = apply_method(model, cfg, optimizer_steps(len(data), 8, 1, 1, 1))
    args = _training_arguments(cfg, 0, tmp_path / f"{method}-{compile_}", 1)
    assert args.torch_compile is compile_
    trainer = BenchTrainer(model=handle.model, args=args, train_dataset=data, eval_dataset={"dev": data},
                           data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    trainer.setup_bench(handle, lambda t: {"score": 0.0}, "compile-test")
    trainer.train()
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule) is compile_
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++, c++, clang++): torch.compile's CPU backend needs one")
@pytest.mark.parametrize("method", ["dora", "lora"])
@pytest.mark.slow
def test_compiled_training_matches_uncompiled(method, cache_dir, tmp_path):
    torch._dynamo.reset()
    compiled = train_losses(cache_dir, tmp_path, method, compile_=True)
    eager = train_losses(cache_dir, tmp_path, method, compile_=False)
    assert len(eager) == 4
    assert compiled == pytest.approx(eager, abs=2e-4)  # logged losses are rounded to 4 decimals
