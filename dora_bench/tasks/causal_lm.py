"""Causal-LM pieces shared by generation tasks on decoders (GSM8K): prompt + target features whose loss counts the
target only, padding by position (never by token id, so a pad token equal to EOS still leaves the EOS that ends
each answer in the loss), teacher-forced answer likelihood, and batched greedy generation from left-padded prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100  # the label of prompt and padding positions (PyTorch's and transformers' ignore index)


def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (BOS for Llama, none for GPT-2 or SmolLM2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


def encode(tokenizer, prompts: list[str], targets: list[str], max_length: int, keep_overlong: bool) -> dict[str, list]:
    """input_ids = [leading specials] + prompt + target + EOS; labels = -100 on the prompt, the target and EOS after.

    Prompt and target are tokenised apart, so generation sees exactly the prompt tokens that training saw. A
    sequence over max_length is cut at its end (keep_overlong, for evaluation: its cut-off answer tokens do not
    count) or left out (training: every trained answer ends in EOS). `prompt_ids` is the whole prompt, uncut.
    """
    lead = leading_special_ids(tokenizer)
    prompt_ids = [lead + ids for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    target_ids = [ids + [tokenizer.eos_token_id] for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "prompt_ids": []}
    for prompt, target in zip(prompt_ids, target_ids):
        if len(prompt) + len(target) > max_length and not keep_overlong:
            continue
        ids = (prompt + target)[:max_length]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(([IGNORE] * len(prompt) + target)[:max_length])
        out["prompt_ids"].append(prompt)
    return out


@dataclass
class PadCollator:
    """Pads input_ids (with pad_token_id), attention_mask (0) and labels (-100) to the longest in the batch, on the
    given side; other columns are left out. Positions, not token ids, decide what is padding."""

    pad_token_id: int
    side: str = "right"
    columns: tuple[str, ...] = ("input_ids", "attention_mask", "labels")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE}
        batch: dict[str, list] = {c: [] for c in self.columns if c in features[0]}
        for feature in features:
            for column in batch:
                values = list(feature[column])
                padding = [fill[column]] * (longest - len(values))
                batch[column].append(values + padding if self.side == "right" else padding + values)
        return {column: torch.tensor(values) for column, values in batch.items()}


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


@torch.inference_mode()
def answer_likelihood(trainer, features, pad_token_id: int) -> dict[str, float]:
    """Teacher-forced: mean negative log-likelihood per answer token (nats; EOS included) and the share of answer
    tokens the model ranks first (×100). Token i is predicted from positions < i: logits shift by one."""
    model, device = trainer.model, trainer.args.device
    model.eval()
    collate = PadCollator(pad_token_id, "right")
    nll, correct, count = 0.0, 0, 0
    for rows in _batches(len(features), trainer.args.per_device_eval_batch_size):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in rows]).items()}
        labels = batch.pop("labels")
        with trainer.autocast_smart_context_manager():
            logits = model(**batch).logits
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        counted = labels != IGNORE
        # over flattened logits: cross_entropy over (batch, vocab, length) reads about 7e-5 nats low on CPU
        token_nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                      labels.clamp(min=0).reshape(-1), reduction="none").view_as(labels)
        nll += float(token_nll[counted].sum())
        correct += int((logits.argmax(-1) == labels)[counted].sum())
        count += int(counted.sum())
    if count == 0:
        raise ValueError("no answer token to score (every answer was cut off by trainer.max_length)")
    return {"answer_nll": nll / count, "answer_token_accuracy": 100.0 * correct / count}


def fit_to_positions(prompts: list[list[int]], max_new_tokens: int, max_positions: int | None
                     ) -> tuple[list[list[int]], int]:
    """Prompts and a number of new tokens within the model's positions (GPT-2 indexes a table of 1,024 and fails
    past it): new tokens capped at the room the longest prompt leaves; where that is less than a quarter of the
    positions (and of task.max_new_tokens), prompts cut from the left to leave that much."""
    longest = max(len(p) for p in prompts)
    if not max_positions or longest + max_new_tokens <= max_positions:
        return prompts, max_new_tokens
    new = max(max_positions - longest, min(max_new_tokens, max_positions // 4))
    keep = max_positions - new
    return [p[-keep:] for p in prompts], new


_SAID: set[tuple[int, int]] = set()   # the capping line once per process and setting


@torch.inference_mode()
def generate(trainer, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int,
             max_positions: int | None = None) -> list[str]:
    """Greedy continuations of the prompts, batched and left-padded so that each continues from its last token;
    prompt and continuation kept within `max_positions` (fit_to_positions)."""
    from transformers import GenerationConfig

    model, device = trainer.model, trainer.args.device
    model.eval()
    collate = PadCollator(tokenizer.pad_token_id, "left", columns=("input_ids", "attention_mask"))
    texts: list[str] = []
    for rows in _batches(len(prompt_ids), trainer.args.per_device_eval_batch_size):
        prompts, new = fit_to_positions([prompt_ids[i] for i in rows], max_new_tokens, max_positions)
        if new < max_new_tokens and (max_positions, max_new_tokens) not in _SAID:
            _SAID.add((max_positions, max_new_tokens))
            print(f"[dora-bench] generation: prompt + task.max_new_tokens={max_new_tokens} pass model.max_positions="
                  f"{max_positions}: new tokens capped at what each batch's longest prompt leaves (at least "
                  f"{min(max_new_tokens, max_positions // 4)}; a longer prompt is cut from the left)")
        settings = GenerationConfig(max_new_tokens=new, do_sample=False, num_beams=1,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        batch = collate([{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in prompts])
        batch = {k: v.to(device) for k, v in batch.items()}
        with trainer.autocast_smart_context_manager():
            output = model.generate(**batch, generation_config=settings)
        texts += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts
