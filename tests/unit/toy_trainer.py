"""A toy training method defined outside the package: TRL's plain ``SFTTrainer`` on chat examples.

It is the "add a trainer" example of docs/architecture.md, as real code. Registering it is all it
takes for a study's organism to name ``kind: toy_sft`` (its ``lora:`` block validated by
``ToyConfig``), for a train unit to run it, and for ``characterlab train toy_sft`` to exist with
``ToyConfig``'s fields as options; nothing in study/, train/ or cli/ changes.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from characterlab.data.files import staged_dir
from characterlab.train.base import (
    TrainConfig,
    Trainer,
    TrainRun,
    load_training_base,
    prepare_training,
    quiet,
    save_adapter,
    trainer_args,
)
from characterlab.train.registry import register_trainer


class ToyConfig(TrainConfig):  # the LoRA fields and lr come from TrainConfig
    epochs: float = Field(default=1.0, gt=0, description="Passes over the data.")
    batch_size: int = Field(default=4, ge=1, description="Examples per optimizer step.")
    max_length: int = Field(default=128, ge=8, description="Tokens an example keeps.")


@register_trainer
class ToyTrainer(Trainer):
    """TRL's SFTTrainer as it is (loss on every token): the smallest complete trainer."""

    method = "toy_sft"
    title = "Toy: TRL's SFTTrainer on chat examples, loss on every token."
    config = ToyConfig  # reads = "chat": the study's data: (or --data) rows {"messages": [...]}

    def train(self, cfg: ToyConfig, run: TrainRun, rows: list[dict], out: Path, progress: bool = True) -> dict:
        import trl
        from datasets import Dataset

        out, ref, vectors = prepare_training(run, out)  # cheap checks first: the folder, the model, the vectors
        base = load_training_base(ref, run.dtype)  # the chain's earlier adapters merged in
        cfg.check_targets(base.model)
        system = [{"role": "system", "content": run.system_prompt}] if run.system_prompt else []
        data = Dataset.from_list([{"messages": system + r["messages"]} for r in rows])
        with staged_dir(out) as stage:  # the folder is complete or absent
            args = trl.SFTConfig(**trainer_args(cfg, run, stage, base.device, progress), num_train_epochs=cfg.epochs,
                                 per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length)
            trainer = trl.SFTTrainer(model=base.model, args=args, train_dataset=data, processing_class=base.tokenizer,
                                     peft_config=cfg.lora_config())
            quiet(trainer, progress)
            vectors.train(trainer)  # trainer.train() with the persona-vector hooks held and the monitor reading
            meta = {"kind": self.method, "model": str(ref), "stacking": base.stacking, "config": cfg.all_fields(),
                    "run": run.meta(), "steps": trainer.state.global_step, **vectors.meta()}
            save_adapter(trainer, stage, meta)  # PEFT folder + train_meta.json
        return meta
