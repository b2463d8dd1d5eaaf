"""Loading local models (``embedded`` and ``hf:``), optionally with a LoRA adapter stacked on top.

An ``hf:`` model is a folder or a hub id. Every load reads local files first and downloads only a
hub model missing from the Hugging Face cache, and only when not offline
(:mod:`characterlab.models.hub`); ``embedded`` never reaches the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from characterlab.errors import InputError
from characterlab.models.hardware import default_device, default_dtype
from characterlab.models.hub import cached_folder, is_offline, load_pretrained, offline_message
from characterlab.models.refs import ModelRef


@dataclass
class LocalModel:
    """A causal LM ready to run, with the tokenizer and numerics it was loaded with."""

    ref: ModelRef
    path: str
    model: Any  # transformers PreTrainedModel, or a peft PeftModel wrapping one
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def n_params(self) -> int:
        """Parameters of the base model (adapters excluded), counting tied weights once."""
        base = unwrap_adapter(self.model)
        seen: set[int] = set()
        total = 0
        for name, p in base.named_parameters():
            if "lora_" in name or id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
        return total


def unwrap_adapter(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (its layers still carry the adapter), or ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def resolve_model_path(ref: ModelRef) -> str:
    """The folder (or hub id) that transformers should load for ``ref``."""
    if ref.kind == "embedded":
        from characterlab.models.embedded import embedded_model_dir

        return str(embedded_model_dir(name=ref.embedded_name))
    if ref.kind == "hf":
        return ref.name
    raise InputError(f"{ref} is not a local model", field="model")


def load_tokenizer(path: str, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    try:
        tok = load_pretrained(AutoTokenizer.from_pretrained, path)
    except (OSError, ValueError) as e:
        raise InputError(_not_found_message(path, e), field="model") from None
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def render_chat(tokenizer, request) -> str:
    """The prompt text of a chat request (a :class:`~characterlab.data.records.GenerationRequest`)
    in the model's own template, ready for the reply. Every local backend renders through this one
    call, so they see the same tokens."""
    msgs = [m.to_dict() for m in request.messages]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def _not_found_message(path: str, err: Exception) -> str:
    """One line: a folder that does not load, a hub model offline and not cached, or one the hub
    would not give."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if Path(path).expanduser().exists() or cached_folder(path) is not None:
        return f"cannot load a model from {path}: {first}"
    if is_offline():
        return offline_message(path)
    return f"model 'hf:{path}' could not be loaded from the Hugging Face hub ({first})"


def load_local_model(
    ref: ModelRef,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    trainable: bool = False,
    attn_implementation: str = "sdpa",
) -> LocalModel:
    """Load ``ref`` (and its adapter) for inference, or as a base for training when ``trainable``."""
    from transformers import AutoModelForCausalLM

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    path = resolve_model_path(ref)
    tokenizer = load_tokenizer(path)
    try:
        model = load_pretrained(AutoModelForCausalLM.from_pretrained, path, dtype=dtype,
                                attn_implementation=attn_implementation)
    except (OSError, ValueError) as e:
        raise InputError(_not_found_message(path, e), field="model") from None
    model.to(device)
    for merged in ref.merged_adapters:  # the order they were trained in: each on top of the last
        model = attach_adapter(model, merged).merge_and_unload()
    if ref.adapter is not None:
        model = attach_adapter(model, ref.adapter, trainable=trainable)
    if not trainable:
        # PEFT keeps adapter weights in fp32; at inference that casts every LoRA input to fp32 and
        # back (an fp32 copy of each projection's input and output, and fp32 matmuls). In the
        # model's dtype the adapter costs two small matmuls per projection, as it does in vLLM.
        model.to(dtype)
        model.eval()
    return LocalModel(ref=ref, path=path, model=model, tokenizer=tokenizer, device=device, dtype=dtype)


def attach_adapter(model: Any, adapter: Path, trainable: bool = False) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise InputError(f"cannot load this LoRA adapter onto the model: {e}", file=adapter, field="adapter") from None
