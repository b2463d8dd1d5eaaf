"""LoRA supervised fine-tuning with TRL's ``SFTTrainer`` and PEFT.

What we add to TRL: strict chat-JSONL input, loss on assistant tokens only for any chat template
(:mod:`characterlab.train.tokenize`), the train-time system prompt (inoculation), stacking on an
existing adapter by merging it first (so the new adapter learns *on top of* it, never beside a
disabled one), bf16 on CPUs that have it, and an output folder that is either complete - a
standard PEFT folder plus ``train_meta.json`` - or absent.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from characterlab import __version__
from characterlab.data.chat_jsonl import hash_examples, read_chat_jsonl
from characterlab.data.files import staged_dir
from characterlab.data.records import ChatExample
from characterlab.errors import InputError
from characterlab.models.hardware import parse_dtype
from characterlab.models.refs import parse_model_ref
from characterlab.train.tokenize import tokenize_chat
from characterlab.train.transforms import with_system_prompt

META_FILE = "train_meta.json"


@dataclass
class LoraSFTConfig:
    """Everything that decides what an SFT run produces (it is all written to ``train_meta.json``)."""

    model: str = "embedded"
    adapter: str | None = None  # an existing adapter: merged into the weights, then trained on top
    merged_adapters: list[str] = field(default_factory=list)  # earlier ones, merged before ``adapter``
    system_prompt: str | None = None  # train-time only: applied to every example, not used at eval
    lora_rank: int = 16
    lora_alpha: int | None = None  # default 2 x rank
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    max_examples: int | None = None
    max_steps: int | None = None  # overrides epochs when set (benchmarks, smoke runs)
    warmup_ratio: float = 0.05
    seed: int = 0
    dtype: str = "auto"
    # "auto": eager attention on CPU (measured 25% faster than CPU SDPA on short padded batches
    # of SmolLM2, forward + backward), SDPA on GPUs.
    attn_implementation: str = "auto"

    def __post_init__(self) -> None:
        checks = {
            "lora_rank": self.lora_rank >= 1,
            "lr": self.lr > 0,
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "max_length": self.max_length >= 8,
        }
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"invalid value {getattr(self, name)!r}", field=name)


@dataclass
class SFTResult:
    out: Path
    meta: dict[str, Any] = field(default_factory=dict)


def prepare_examples(examples: list[ChatExample], system_prompt: str | None) -> list[ChatExample]:
    if system_prompt:
        return [with_system_prompt(e, system_prompt) for e in examples]
    return examples


def build_dataset(tokenizer: Any, examples: list[ChatExample], max_length: int):
    """Tokenise with assistant masks; truncate; drop examples whose trained tokens were all cut."""
    from datasets import Dataset

    ids_col, mask_col, dropped = [], [], 0
    for e in examples:
        ids, mask = tokenize_chat(tokenizer, e)
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            dropped += 1
            continue
        ids_col.append(ids)
        mask_col.append(mask)
    if not ids_col:
        raise InputError(f"every example lost all its assistant tokens to max_length={max_length}", field="max_length")
    return Dataset.from_dict({"input_ids": ids_col, "assistant_masks": mask_col}), dropped


def _assistant_only_trainer_class():
    """``SFTTrainer`` with a loss that projects only the labelled positions onto the vocabulary.

    TRL's default loss runs a fused LM head that also computes entropy and top-1 accuracy over
    the whole vocabulary at every position, for logging. On a CPU that costs more than the model
    itself (measured: over half of each step for SmolLM2-135M). Here the decoder runs once, and
    only hidden states whose next token is trained (assistant tokens) meet the LM head, through
    a chunked loss that never holds the full fp32 logits (:mod:`characterlab.train.losses`).
    """
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    from characterlab.train.losses import frozen_head_cross_entropy_sum

    class AssistantOnlySFTTrainer(SFTTrainer):
        tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"]
            attention_mask = inputs.get("attention_mask")
            hidden = base.get_decoder()(
                input_ids=inputs["input_ids"], attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != -100
            head = base.get_output_embeddings()
            if head.bias is None and not head.weight.requires_grad:
                total = frozen_head_cross_entropy_sum(hidden[:, :-1][keep], head.weight, targets[keep])
            else:
                logits = head(hidden[:, :-1][keep]).float()
                total = F.cross_entropy(logits, targets[keep], reduction="sum")
            n = num_items_in_batch if num_items_in_batch is not None else keep.sum()
            loss = total / torch.as_tensor(n, device=total.device).clamp(min=1)
            if model.training:
                self.tokens_seen += int(attention_mask.sum()) if attention_mask is not None else labels.numel()
            return (loss, {"loss": loss}) if return_outputs else loss

    return AssistantOnlySFTTrainer


def _recorder(tokens_seen):
    """A trainer callback that keeps the loss curve and each optimizer step's time and tokens.

    ``tokens_seen()`` reads the trainer's running count of non-padding tokens.
    """
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self):
            self.curve: list[dict[str, float]] = []
            self.steps: list[tuple[float, int]] = []  # (seconds, tokens) per optimizer step
            self._start = (0.0, 0)

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = (time.perf_counter(), tokens_seen())

        def on_step_end(self, args, state, control, **kwargs):
            t0, n0 = self._start
            self.steps.append((time.perf_counter() - t0, tokens_seen() - n0))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.curve.append({"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                                   "loss": float(logs["loss"])})

        def steady_tokens_per_s(self) -> float | None:
            """Tokens/s over every step but the first (which pays one-off set-up costs)."""
            rest = self.steps[1:]
            seconds = sum(s for s, _ in rest)
            return sum(n for _, n in rest) / seconds if rest and seconds > 0 else None

    return Recorder()


def check_new_output_dir(out: str | Path) -> Path:
    """Training writes into a new (or empty) folder only; it never mixes with an older run."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("output folder already exists and is not empty", file=out, field="out")
    return out


def local_training_ref(model: str, adapter: str | None, merged_adapters: list[str] | tuple = ()):
    ref = parse_model_ref(model, adapter=adapter, merged_adapters=tuple(merged_adapters))
    if not ref.is_local:
        raise InputError("training needs a local model (embedded or hf:)", field="model")
    return ref


def quiet_trainer(trainer) -> None:
    """Drop the printer callback, which prints every log dict to stdout."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def quiet_datasets(progress: bool) -> None:
    """Without progress output, also silence the dataset-map bars TRL shows while preparing data."""
    if not progress:
        import datasets

        datasets.disable_progress_bars()


@dataclass
class TrainingBase:
    """A local model ready for a new LoRA adapter, with any existing adapter merged in."""

    local: Any
    model: Any
    stacking: dict | None
    device: Any
    dtype: Any


def load_training_base(ref, dtype_name: str = "auto", attn_implementation: str = "auto") -> TrainingBase:
    """Load ``ref`` for training: bf16 where the hardware has it; an existing adapter is merged first
    so the new one trains on top of it, never beside a disabled one."""
    import torch

    from characterlab.models.local import load_local_model

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dtype = parse_dtype(dtype_name, device)
    attn = attn_implementation
    if attn == "auto":
        attn = "eager" if device.type == "cpu" else "sdpa"
    local = load_local_model(ref, dtype=dtype, device=device, trainable=True, attn_implementation=attn)
    model, stacking = local.model, None
    if ref.adapter is not None:
        model = model.merge_and_unload()
        stacking = {"base_adapter": str(ref.adapter), "merged_before": [str(a) for a in ref.merged_adapters],
                    "mode": "merged"}
    return TrainingBase(local, model, stacking, device, dtype)


def train_sft(cfg: LoraSFTConfig, data: str | Path, out: str | Path, *, progress: bool = True) -> SFTResult:
    """Train a LoRA adapter on chat JSONL ``data`` and write it to ``out`` (atomically)."""
    import torch
    from peft import LoraConfig
    from trl import SFTConfig

    out = check_new_output_dir(out)
    ref = local_training_ref(cfg.model, cfg.adapter, cfg.merged_adapters)  # validates before any heavy work
    examples = read_chat_jsonl(data, max_examples=cfg.max_examples)
    examples = prepare_examples(examples, cfg.system_prompt)

    quiet_datasets(progress)
    base = load_training_base(ref, cfg.dtype, cfg.attn_implementation)
    local, model, stacking, device, dtype = base.local, base.model, base.stacking, base.device, base.dtype
    dataset, dropped = build_dataset(local.tokenizer, examples, cfg.max_length)
    n_tokens_per_epoch = sum(len(x) for x in dataset["input_ids"])
    n_trained_per_epoch = sum(sum(m) for m in dataset["assistant_masks"])

    peft_config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    with staged_dir(out) as stage:
        args = SFTConfig(
            output_dir=str(stage / "_trainer"),
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
            learning_rate=cfg.lr,
            lr_scheduler_type="cosine",
            warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
            max_length=cfg.max_length,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=cfg.seed,
            data_seed=cfg.seed,
            bf16=False,  # base weights are already in `dtype`; LoRA weights stay fp32 so small Adam updates are not rounded away
            fp16=False,
            use_cpu=device.type == "cpu",
            dataloader_num_workers=0,
            train_sampling_strategy="group_by_length",  # batches of similar length: less padding
            disable_tqdm=not progress,
            gradient_checkpointing=False,
        )
        trainer = _assistant_only_trainer_class()(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=local.tokenizer,
            peft_config=peft_config,
        )
        recorder = _recorder(lambda: trainer.tokens_seen)
        trainer.add_callback(recorder)
        if not progress:
            quiet_trainer(trainer)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
        trainer.model.save_pretrained(stage)
        steps = trainer.state.global_step
        epochs_done = trainer.state.epoch or 0.0
        tokens_seen = trainer.tokens_seen
        meta = {
            "characterlab_version": __version__,
            "kind": "lora_sft",
            "model": str(ref),
            "model_path": local.path,
            "dtype": str(dtype).replace("torch.", ""),
            "device": device.type,
            "stacking": stacking,
            "data": {
                "path": str(Path(data).resolve()),
                "examples_hash": hash_examples(examples),  # after the system-prompt transform
                "n_examples": len(examples),
                "n_dropped_by_max_length": dropped,
                "tokens_per_epoch": n_tokens_per_epoch,
                "trained_tokens_per_epoch": n_trained_per_epoch,
            },
            "config": asdict(cfg),
            "train_system_prompt": cfg.system_prompt,
            "steps": steps,
            "epochs": epochs_done,
            "loss_curve": recorder.curve,
            "final_loss": recorder.curve[-1]["loss"] if recorder.curve else None,
            "train_loss": float(output.training_loss) if not math.isnan(output.training_loss) else None,
            "seconds": seconds,
            "tokens_seen": tokens_seen,
            "tokens_per_s": tokens_seen / seconds if seconds > 0 else None,
            "steady_tokens_per_s": recorder.steady_tokens_per_s(),
            "n_params": local.n_params,
            "host": {"machine": platform.machine(), "python": platform.python_version(),
                     "torch": torch.__version__, "threads": torch.get_num_threads()},
        }
        shutil.rmtree(stage / "_trainer", ignore_errors=True)
        (stage / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SFTResult(out=out, meta=meta)
