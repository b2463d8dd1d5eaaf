"""Loading local models (``embedded`` and ``hf:``), optionally with a LoRA adapter stacked on top.

Nothing here reaches a model hub unless the user opts in with ``CHARACTERLAB_ALLOW_HUB=1``: an
``hf:`` id must already be in the local Hugging Face cache, or be a folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from characterlab.errors import InputError
from characterlab.models.hardware import default_device, default_dtype
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


def hub_allowed() -> bool:
    return os.environ.get("CHARACTERLAB_ALLOW_HUB") == "1"


def resolve_model_path(ref: ModelRef) -> str:
    """The folder (or cached hub id) that transformers should load for ``ref``."""
    if ref.kind == "embedded":
        from characterlab.models.embedded import embedded_model_dir

        return str(embedded_model_dir())
    if ref.kind == "hf":
        return ref.name
    raise InputError(f"{ref} is not a local model", field="model")


def load_tokenizer(path: str, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=not hub_allowed())
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
    if Path(path).exists():
        return f"cannot load a model from {path}: {err}"
    return (
        f"model {path!r} is neither a folder nor in the local Hugging Face cache "
        "(characterlab does not download at run time; set CHARACTERLAB_ALLOW_HUB=1 to allow it)"
    )


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
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, local_files_only=not hub_allowed(), attn_implementation=attn_implementation
        )
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
