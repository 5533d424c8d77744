"""Checkpoints hold what trains: the trainable parameters, not the frozen base the run rebuilds anyway.

Every run builds its model from the source (hub, local folder, random config) and applies its method before it
resumes, so a checkpoint needs only what changed since: the trainable parameters (adapters, biases, the task
head, DoRA's A, B, c, AdaLoRA's masked triplets) in `trainables.safetensors`, beside the Trainer's optimizer,
scheduler, RNG and trainer state and the method's own state (engine.METHOD_STATE: DoRA's scores and masks,
AdaLoRA's importance). Loading is strict: every trainable parameter of the rebuilt model is in the file with
its shape, and the file holds nothing else. A model whose every parameter trains (Full FT) keeps the Trainer's
own checkpoint (the whole model, loadable with from_pretrained).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

TRAINABLES = "trainables.safetensors"


def trains_everything(model: nn.Module) -> bool:
    return all(p.requires_grad for p in model.parameters())


def trainables(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_trainables(model: nn.Module, folder: Path) -> Path:
    path = Path(folder) / TRAINABLES
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: p.detach().cpu().contiguous() for name, p in trainables(model).items()}, str(path),
              metadata={"format": "pt", "content": "dora-bench trainable parameters"})
    return path


def has_trainables(folder: Path | str) -> bool:
    return (Path(folder) / TRAINABLES).is_file()


class CheckpointMismatch(RuntimeError):
    """A checkpoint's trainables do not fit the rebuilt model (another method or model wrote it)."""


def load_trainables(model: nn.Module, folder: Path | str) -> None:
    """Copy the checkpoint's trainables into the rebuilt model: all of them, exactly these, shapes equal."""
    path = Path(folder) / TRAINABLES
    saved = load_file(str(path))
    expected = trainables(model)
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    wrong = sorted(n for n in expected.keys() & saved.keys() if saved[n].shape != expected[n].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(names[:3])}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if names]
        raise CheckpointMismatch(f"{path} does not hold this model's trainable parameters: {'; '.join(parts)}")
    with torch.no_grad():
        for name, parameter in expected.items():
            parameter.copy_(saved[name].to(device=parameter.device, dtype=parameter.dtype))
