"""LoRA supervised fine-tuning with TRL's ``SFTTrainer`` and PEFT.

What we add to TRL: strict chat-JSONL input, loss on assistant tokens only for any chat template
(:mod:`characterlab.train.tokenize`), the train-time system prompt (inoculation), stacking on an
existing adapter by merging it first (so the new adapter learns *on top of* it, never beside a
disabled one), bf16 on CPUs that have it, and an output folder that is either complete - a
standard PEFT folder plus ``train_meta.json`` - or absent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from characterlab import __version__
from characterlab.data.chat_data import read_chat_data
from characterlab.data.chat_jsonl import hash_examples
from characterlab.data.files import staged_dir
from characterlab.data.records import ChatExample, Message
from characterlab.errors import InputError
from characterlab.train.base import (
    TrainConfig,
    Trainer,
    TrainRun,
    host_info,
    load_training_base,
    micro_batches,
    prepare_training,
    quiet,
    quiet_datasets,
    save_adapter,
    trainer_args,
)
from characterlab.train.registry import register_trainer
from characterlab.train.tokenize import tokenize_chat
from characterlab.train.transforms import with_system_prompt


class SFTConfig(TrainConfig):
    """What decides what an SFT run produces besides its data and seed: a study's ``lora:`` block of
    an SFT step (organism, intervention, safety training, introspection), a train unit's ``lora``
    parameters, and the options of ``characterlab train sft``."""

    keyed = frozenset({"rank", "alpha", "lr", "epochs", "batch_size", "max_length"})

    epochs: float = Field(default=1.0, gt=0, description="Passes over the data.")
    batch_size: int = Field(default=8, ge=1, description="Examples per optimizer step (with grad_accum 1).")
    max_length: int = Field(default=1024, ge=8, description="Tokens an example keeps; an example whose "
                            "assistant tokens are all cut is dropped.")
    grad_accum: int = Field(default=1, ge=1, description="Batches whose gradients make one optimizer step.")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Share of the steps over which the learning "
                                "rate warms up (then a cosine decay).")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps (overrides "
                                  "epochs: benchmarks, smoke runs).")


@dataclass
class SFTResult:
    out: Path
    meta: dict[str, Any] = field(default_factory=dict)


def prepare_examples(examples: list[ChatExample], system_prompt: str | None) -> list[ChatExample]:
    if system_prompt:
        return [with_system_prompt(e, system_prompt) for e in examples]
    return examples


CHARS_PER_TOKEN_BOUND = 64  # no token of a chat model's vocabulary is longer than this many characters


def cut_to_budget(example: ChatExample, max_chars: int) -> tuple[ChatExample, bool]:
    """The example's first ``max_chars`` characters of content (later messages dropped): text past
    ``max_length`` tokens is truncated away anyway, and tokenising a 10 MB line first took 7.5 GB."""
    from characterlab.data.records import Message

    total, kept = 0, []
    for m in example.messages:
        if total + len(m.content) > max_chars:
            kept.append(Message(m.role, m.content[: max(0, max_chars - total)]))
            return ChatExample(tuple(kept)), True
        total += len(m.content)
        kept.append(m)
    return example, False


def build_dataset(tokenizer: Any, examples: list[ChatExample], max_length: int, stats: dict | None = None):
    """Tokenise with assistant masks; truncate; drop examples whose trained tokens were all cut.

    Returns the dataset and how many were dropped; ``stats`` (if given) also gets how many were cut
    by characters before tokenising and how many were truncated to ``max_length`` tokens."""
    from datasets import Dataset

    ids_col, mask_col, dropped, cut, truncated = [], [], 0, 0, 0
    for e in examples:
        e, was_cut = cut_to_budget(e, max_length * CHARS_PER_TOKEN_BOUND)
        cut += was_cut
        ids, mask = tokenize_chat(tokenizer, e)
        truncated += len(ids) > max_length
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            dropped += 1
            continue
        ids_col.append(ids)
        mask_col.append(mask)
    if stats is not None:
        stats.update(n_cut_before_tokenising=cut, n_truncated_to_max_length=truncated)
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
    import trl

    from characterlab.models.local import unwrap_adapter
    from characterlab.train.losses import frozen_head_cross_entropy_sum

    class AssistantOnlySFTTrainer(trl.SFTTrainer):
        tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            base = unwrap_adapter(model)
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


def train_sft(cfg: SFTConfig, run: TrainRun, data: list[ChatExample] | str | Path, out: str | Path, *,
              progress: bool = True) -> SFTResult:
    """Train a LoRA adapter on chat examples (or a chat data file) and write it to ``out`` atomically."""
    import trl

    out, ref, vectors = prepare_training(run, out)  # validates before any heavy work
    source = None
    if isinstance(data, (str, Path)):
        source = str(Path(data).resolve())
        examples = read_chat_data(data)
    else:
        examples = list(data)
    examples = prepare_examples(examples, run.system_prompt)

    quiet_datasets(progress)
    base = load_training_base(ref, run.dtype, run.attn_implementation)
    cfg.check_targets(base.model)
    cut_stats: dict = {}
    dataset, dropped = build_dataset(base.tokenizer, examples, cfg.max_length, cut_stats)
    n_tokens_per_epoch = sum(len(x) for x in dataset["input_ids"])
    n_trained_per_epoch = sum(sum(m) for m in dataset["assistant_masks"])

    with staged_dir(out) as stage:
        rows_per_pass, passes = micro_batches(cfg.batch_size, cfg.grad_accum, cfg.max_length, run.micro_batch_tokens)
        args = trl.SFTConfig(
            **trainer_args(cfg, run, stage, base.device, progress),
            per_device_train_batch_size=rows_per_pass,
            gradient_accumulation_steps=passes,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
            lr_scheduler_type="cosine",
            warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
            max_length=cfg.max_length,
            data_seed=run.seed,
            dataloader_num_workers=0,
            train_sampling_strategy="group_by_length",  # batches of similar length: less padding
            pad_to_multiple_of=run.pad_to_multiple_of,
        )
        trainer = _assistant_only_trainer_class()(model=base.model, args=args, train_dataset=dataset,
                                                   processing_class=base.tokenizer, peft_config=cfg.lora_config())
        recorder = _recorder(lambda: trainer.tokens_seen)
        trainer.add_callback(recorder)
        quiet(trainer, progress)
        start = time.perf_counter()
        output = vectors.train(trainer)
        seconds = time.perf_counter() - start
        tokens_seen = trainer.tokens_seen
        meta = {
            "characterlab_version": __version__,
            "kind": "lora_sft",
            "model": str(ref),
            "model_path": base.local.path,
            "dtype": str(base.dtype).replace("torch.", ""),
            "device": base.device.type,
            "stacking": base.stacking,
            "data": {
                "path": source,
                "examples_hash": hash_examples(examples),  # after the system-prompt transform
                "n_examples": len(examples),
                "n_dropped_by_max_length": dropped,
                **cut_stats,
                "tokens_per_epoch": n_tokens_per_epoch,
                "trained_tokens_per_epoch": n_trained_per_epoch,
            },
            "config": cfg.all_fields(),
            "run": run.meta(),
            "rows_per_pass": rows_per_pass,
            "passes_per_step": passes,
            "train_system_prompt": run.system_prompt,
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch or 0.0,
            "loss_curve": recorder.curve,
            "final_loss": recorder.curve[-1]["loss"] if recorder.curve else None,
            "train_loss": float(output.training_loss) if not math.isnan(output.training_loss) else None,
            "seconds": seconds,
            "tokens_seen": tokens_seen,
            "tokens_per_s": tokens_seen / seconds if seconds > 0 else None,
            "steady_tokens_per_s": recorder.steady_tokens_per_s(),
            "n_params": base.local.n_params,
            "host": host_info(),
            **vectors.meta(),
        }
        save_adapter(trainer, stage, meta)
    return SFTResult(out=out, meta=meta)


@register_trainer
class SFTTrainer(Trainer):
    """LoRA supervised fine-tuning on chat examples (loss on assistant tokens only)."""

    method = "sft"
    title = "LoRA supervised fine-tuning on chat examples (loss on assistant tokens only)."
    config = SFTConfig

    def train(self, cfg: SFTConfig, run: TrainRun, rows: list[dict], out: Path, progress: bool = True) -> dict:
        examples = [ChatExample(tuple(Message(m["role"], m["content"]) for m in r["messages"])) for r in rows]
        return train_sft(cfg, run, examples, out, progress=progress).meta

    def describe(self, meta: dict, out: Path) -> str:
        curve = meta["loss_curve"]
        first = sum(c["loss"] for c in curve[:5]) / max(1, len(curve[:5]))
        last = sum(c["loss"] for c in curve[-5:]) / max(1, len(curve[-5:]))
        speed = f", {meta['tokens_per_s']:.0f} tokens/s" if meta.get("tokens_per_s") else ""
        return (f"saved {out}: {meta['steps']} steps, {meta['data']['n_examples']} examples, "
                f"loss {first:.3f} -> {last:.3f} (mean of first/last 5 steps){speed}")
