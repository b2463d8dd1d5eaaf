"""LoRA DPO with TRL's ``DPOTrainer`` on conversational pairs (``prompt``, ``chosen``, ``rejected``).

Character training uses it with the teacher's answer (given the constitution) chosen and the
student's rejected; the reference policy is the model with the new adapter disabled.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from characterlab.data.files import staged_dir
from characterlab.errors import InputError
from characterlab.train.base import (
    TrainConfig,
    load_training_base,
    micro_batches,
    prepare_training,
    quiet,
    quiet_datasets,
    save_adapter,
    trainer_args,
)


@dataclass
class LoraDPOConfig(TrainConfig):
    lr: float = 5e-5
    beta: float = 0.1
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 768

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "beta": self.beta > 0, "epochs": self.epochs > 0, "batch_size": self.batch_size >= 1,
                "max_length": self.max_length >= 8}


def train_dpo(cfg: LoraDPOConfig, pairs: list[dict], out: str | Path, progress: bool = True) -> dict:
    """LoRA DPO on conversational pairs; writes a PEFT folder plus ``train_meta.json`` atomically."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    out, ref, vectors = prepare_training(cfg, out)
    if not pairs:
        raise InputError("no DPO pairs survived the filters; generate more or loosen min_chars", field="pairs")
    quiet_datasets(progress)
    base = load_training_base(ref, cfg.dtype)
    cfg.check_targets(base.model)
    with staged_dir(out) as stage:
        # A pair is two sequences (chosen and rejected) of up to max_length tokens in one pass.
        rows_per_pass, passes = micro_batches(cfg.batch_size, 1, 2 * cfg.max_length, cfg.micro_batch_tokens)
        args = DPOConfig(**trainer_args(cfg, stage, base.device, progress), per_device_train_batch_size=rows_per_pass,
                         gradient_accumulation_steps=passes, pad_to_multiple_of=cfg.pad_to_multiple_of,
                         num_train_epochs=cfg.epochs, beta=cfg.beta, max_length=cfg.max_length, data_seed=cfg.seed,
                         lr_scheduler_type="cosine", warmup_steps=0.1)
        trainer = DPOTrainer(model=base.model, args=args, train_dataset=Dataset.from_list(pairs),
                             processing_class=base.tokenizer, peft_config=cfg.lora_config())
        quiet(trainer, progress)
        start = time.perf_counter()
        vectors.train(trainer)
        seconds = time.perf_counter() - start
        logs = [h for h in trainer.state.log_history if "loss" in h]
        meta = {
            "kind": "lora_dpo", "model": str(ref), "stacking": base.stacking, "config": asdict(cfg),
            "n_pairs": len(pairs), "rows_per_pass": rows_per_pass, "passes_per_step": passes,
            "steps": trainer.state.global_step, "seconds": seconds,
            "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in logs],
            "final_loss": logs[-1]["loss"] if logs else None,
            "reward_accuracy_curve": [{"step": h["step"], "accuracy": h.get("rewards/accuracies")} for h in logs
                                      if "rewards/accuracies" in h],
            **vectors.meta(),
        }
        save_adapter(trainer, stage, meta)
    return meta
