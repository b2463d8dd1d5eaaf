"""LoRA DPO with TRL's ``DPOTrainer`` on conversational pairs (``prompt``, ``chosen``, ``rejected``).

Character training uses it with the teacher's answer (given the constitution) chosen and the
student's rejected; the reference policy is the model with the new adapter disabled.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from characterlab.data.files import staged_dir
from characterlab.errors import InputError
from characterlab.train.base import (
    TrainConfig,
    Trainer,
    TrainRun,
    load_training_base,
    micro_batches,
    prepare_training,
    quiet,
    quiet_datasets,
    save_adapter,
    trainer_args,
)
from characterlab.train.registry import register_trainer


class DPOConfig(TrainConfig):
    """What decides what a DPO run produces besides its pairs and seed: a character's ``dpo:`` block,
    a train unit's ``lora`` parameters (method dpo), and the options of ``characterlab train dpo``."""

    keyed = frozenset({"rank", "alpha", "lr", "epochs", "batch_size", "max_length", "beta"})

    lr: float = Field(default=5e-5, gt=0, description="Peak learning rate (AdamW).")
    beta: float = Field(default=0.1, gt=0, description="DPO's beta: how far the policy may move from the reference "
                        "(the model with the new adapter disabled).")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the pairs.")
    batch_size: int = Field(default=4, ge=1, description="Pairs per optimizer step.")
    max_length: int = Field(default=768, ge=8, description="Tokens of prompt and answer a pair's side keeps; a pair "
                            "whose prompt fills it is dropped.")


def train_dpo(cfg: DPOConfig, run: TrainRun, pairs: list[dict], out: str | Path, progress: bool = True) -> dict:
    """LoRA DPO on conversational pairs; writes a PEFT folder plus ``train_meta.json`` atomically."""
    import trl
    from datasets import Dataset

    out, ref, vectors = prepare_training(run, out)
    if not pairs:
        raise InputError("no DPO pairs survived the filters; generate more or loosen min_chars", field="pairs")
    quiet_datasets(progress)
    base = load_training_base(ref, run.dtype)
    cfg.check_targets(base.model)
    with staged_dir(out) as stage:
        # A pair is two sequences (chosen and rejected) of up to max_length tokens in one pass.
        rows_per_pass, passes = micro_batches(cfg.batch_size, 1, 2 * cfg.max_length, run.micro_batch_tokens)
        args = trl.DPOConfig(**trainer_args(cfg, run, stage, base.device, progress),
                             per_device_train_batch_size=rows_per_pass, gradient_accumulation_steps=passes,
                             pad_to_multiple_of=run.pad_to_multiple_of, num_train_epochs=cfg.epochs, beta=cfg.beta,
                             max_length=cfg.max_length, data_seed=run.seed, lr_scheduler_type="cosine", warmup_steps=0.1)
        trainer = trl.DPOTrainer(model=base.model, args=args, train_dataset=Dataset.from_list(pairs),
                                 processing_class=base.tokenizer, peft_config=cfg.lora_config())
        quiet(trainer, progress)
        start = time.perf_counter()
        vectors.train(trainer)
        seconds = time.perf_counter() - start
        logs = [h for h in trainer.state.log_history if "loss" in h]
        meta = {
            "kind": "lora_dpo", "model": str(ref), "stacking": base.stacking, "config": cfg.all_fields(),
            "run": run.meta(), "n_pairs": len(pairs), "rows_per_pass": rows_per_pass, "passes_per_step": passes,
            "steps": trainer.state.global_step, "seconds": seconds,
            "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in logs],
            "final_loss": logs[-1]["loss"] if logs else None,
            "reward_accuracy_curve": [{"step": h["step"], "accuracy": h.get("rewards/accuracies")} for h in logs
                                      if "rewards/accuracies" in h],
            **vectors.meta(),
        }
        save_adapter(trainer, stage, meta)
    return meta


@register_trainer
class DPOTrainer(Trainer):
    """LoRA DPO on preference pairs (a character's teacher answers chosen over the student's)."""

    method = "dpo"
    title = "LoRA DPO on conversational preference pairs (JSONL of {prompt, chosen, rejected})."
    config = DPOConfig
    reads = "pairs"
    uses = frozenset({"adapter", "vectors"})
    organism = False  # a study trains it on a character's pairs (study/plan.py: character)

    def train(self, cfg: DPOConfig, run: TrainRun, rows: list[dict], out: Path, progress: bool = True) -> dict:
        return train_dpo(cfg, run, rows, out, progress=progress)

    def describe(self, meta: dict, out: Path) -> str:
        loss = meta.get("final_loss")
        return f"saved {out}: {meta['steps']} steps, {meta['n_pairs']} pairs, final loss " + (
            "n/a" if loss is None else f"{loss:.3f}")
