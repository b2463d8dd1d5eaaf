"""The training skeleton every method shares (TRL's pattern: one base config, one config per method).

Every trainer in characterlab trains one LoRA adapter on a local model and writes a folder that is
either complete - a standard PEFT folder plus ``train_meta.json`` - or absent. What they share is
here: the base config (model, adapter chain, LoRA settings, seed, dtype), the cheap checks made
before anything heavy, loading the base model with earlier adapters merged in (so a new adapter
learns *on top of* them, never beside a disabled one), the TRL flags that suit bf16 CPU training,
and saving. ``sft.py``, ``dpo.py`` and ``grpo.py`` add what their method needs.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from characterlab.data.files import atomic_write_json, undefined_as_null
from characterlab.errors import InputError
from characterlab.models.hardware import parse_dtype
from characterlab.models.refs import ModelRef, parse_model_ref
from characterlab.train.vectors import AblateInTraining, MonitorProjection, SteerInTraining, VectorTraining

META_FILE = "train_meta.json"
TRAINER_SCRATCH = "_trainer"  # TRL's output_dir inside the staged folder; removed before it is renamed into place


@dataclass
class TrainConfig:
    """What every method needs. ``adapter`` is an existing adapter merged into the weights before a
    new one is trained on top; ``merged_adapters`` are earlier ones, merged before it, in order."""

    model: str = "embedded"
    adapter: str | None = None
    merged_adapters: list[str] = field(default_factory=list)
    lora_rank: int = 16
    lora_alpha: int | None = None  # default 2 x rank
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    lr: float = 2e-4
    seed: int = 0
    dtype: str = "auto"
    # "auto": SDPA, which keeps no [batch, heads, L, L] probabilities (its speed and memory against
    # eager attention on CPU: docs/performance.md).
    attn_implementation: str = "auto"
    # The most (padded) tokens one forward and backward pass may hold. A batch whose rows could
    # exceed it is run as micro-batches whose gradients are accumulated into the same optimizer step
    # (see :func:`micro_batches`): activations, not weights, set a CPU study's peak memory (peak and
    # speed per pass size: docs/performance.md). None: never split. SFT, DPO, GRPO (its group of
    # completions, by the longest prompt plus the completion budget) and the reward model (whole
    # pairs, by the longest side of any pair) split.
    micro_batch_tokens: int | None = 512
    # Padded batch lengths are rounded up to a multiple of this (None: to the longest row), so that
    # oneDNN, which compiles and caches a kernel per matmul shape, sees few shapes and keeps few
    # kernels resident (measured with bench/train_padding.py: docs/performance.md).
    pad_to_multiple_of: int | None = 64
    # persona vectors during training (train/vectors.py): preventative steering, ablation, monitoring
    steer: SteerInTraining | None = None
    ablate: AblateInTraining | None = None
    monitor: MonitorProjection | None = None

    def checks(self) -> dict[str, bool]:
        """Field -> whether its value is valid; subclasses add theirs."""
        return {"lora_rank": self.lora_rank >= 1, "lr": self.lr > 0,
                "micro_batch_tokens": self.micro_batch_tokens is None or self.micro_batch_tokens >= 1,
                "pad_to_multiple_of": self.pad_to_multiple_of is None or self.pad_to_multiple_of >= 1}

    def __post_init__(self) -> None:
        for name, ok in self.checks().items():
            if not ok:
                raise InputError(f"invalid value {getattr(self, name)!r}", field=name)

    def check_targets(self, model) -> None:
        """Every named LoRA target must match a linear layer of ``model`` (PEFT's own error is a traceback)."""
        if self.target_modules == "all-linear":
            return
        import torch

        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        unknown = [t for t in self.target_modules if t not in linear]
        if unknown:
            raise InputError(f"no such layer(s) {', '.join(unknown)} in this model; its linear layers are "
                             f"{', '.join(linear)} (or use all-linear)", field="target_modules")

    def lora_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha or 2 * self.lora_rank,
                          lora_dropout=self.lora_dropout, target_modules=self.target_modules, task_type="CAUSAL_LM")


def micro_batches(batch_size: int, grad_accum: int, tokens_per_row: int, budget: int | None) -> tuple[int, int]:
    """``(rows per forward pass, passes per optimizer step)`` for ``batch_size`` x ``grad_accum`` rows.

    The rows per pass is the largest divisor of ``batch_size`` whose rows fit ``budget`` tokens at
    ``tokens_per_row`` (at least one row), so an optimizer step still sees exactly the rows it
    would unsplit: transformers draws ``rows per pass x passes`` rows per step from its
    length-grouped sampler, and a loss normalised by the step's item count (SFT's token sum over
    ``num_items_in_batch``, DPO's per-pass mean divided by the passes) gives the same gradient.
    """
    rows = batch_size
    if budget is not None:
        rows = max([d for d in range(1, batch_size + 1) if batch_size % d == 0 and d * tokens_per_row <= budget],
                   default=1)
    return rows, grad_accum * (batch_size // rows)


def check_new_output_dir(out: str | Path) -> Path:
    """Training writes into a new (or empty) folder only; it never mixes with an older run."""
    from characterlab.data.files import check_output_dir

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("output folder already exists and is not empty", file=out, field="out")
    return check_output_dir(out, "out")


def prepare_training(cfg: TrainConfig, out: str | Path) -> tuple[Path, ModelRef, VectorTraining]:
    """The cheap checks, before any data is read or model loaded: the output folder, the model and
    the persona-vector options (their folders and layers)."""
    out = check_new_output_dir(out)
    ref = parse_model_ref(cfg.model, adapter=cfg.adapter, merged_adapters=tuple(cfg.merged_adapters))
    if not ref.is_local:
        raise InputError("training needs a local model (embedded or hf:)", field="model")
    return out, ref, VectorTraining.of(cfg)


def quiet(trainer, progress: bool) -> None:
    """Without progress output, drop the printer callback (it prints every log dict to stdout)."""
    if not progress:
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

    @property
    def tokenizer(self):
        return self.local.tokenizer


def load_training_base(ref: ModelRef, dtype_name: str = "auto", attn_implementation: str = "auto") -> TrainingBase:
    """Load ``ref`` for training: bf16 where the hardware has it; an existing adapter is merged first."""
    import torch

    from characterlab.models.local import load_local_model

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dtype = parse_dtype(dtype_name, device)
    attn = "sdpa" if attn_implementation == "auto" else attn_implementation
    local = load_local_model(ref, dtype=dtype, device=device, trainable=True, attn_implementation=attn)
    model, stacking = local.model, None
    if ref.adapter is not None:
        model = model.merge_and_unload()
        stacking = {"base_adapter": str(ref.adapter), "merged_before": [str(a) for a in ref.merged_adapters],
                    "mode": "merged"}
    return TrainingBase(local, model, stacking, device, dtype)


def trainer_args(cfg: TrainConfig, stage: Path, device, progress: bool) -> dict:
    """TRL/transformers arguments every method uses. The base weights are already in the training
    dtype; LoRA weights stay fp32 (``bf16=False``) so that small Adam updates are not rounded away."""
    return {"output_dir": str(stage / TRAINER_SCRATCH), "learning_rate": cfg.lr, "logging_steps": 1,
            "save_strategy": "no", "report_to": "none", "seed": cfg.seed, "bf16": False, "fp16": False,
            "use_cpu": device.type == "cpu", "disable_tqdm": not progress, "gradient_checkpointing": False}


CHECKPOINTS_DIR = "checkpoints"  # inside an adapter folder: step-N/ adapters saved along training


def adapter_checkpoints(stage: Path, every: int, steps: int, meta: dict):
    """A callback that saves the adapter every ``every`` optimizer steps (before the last one, which
    is the folder itself) into ``stage/checkpoints/step-N``: a plain PEFT folder that any command
    taking ``--adapter`` evaluates, with a ``train_meta.json`` saying where it came from. Only the
    adapter is written (no optimizer state): a checkpoint is for measuring, not for resuming."""
    from transformers import TrainerCallback

    class AdapterCheckpoints(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if step % every == 0 and step < steps:
                folder = stage / CHECKPOINTS_DIR / f"step-{step}"
                model.save_pretrained(folder)
                atomic_write_json(folder / META_FILE, meta_for_json({**meta, "checkpoint_step": step, "of_steps": steps}))
            return control

    return AdapterCheckpoints()


def checkpoint_folders(adapter_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every checkpoint saved in an adapter folder, by step."""
    root = Path(adapter_dir) / CHECKPOINTS_DIR
    found = [(int(d.name.removeprefix("step-")), d) for d in root.glob("step-*") if d.name.removeprefix("step-").isdigit()]
    return sorted(found)


def host_info() -> dict:
    import torch

    return {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def meta_for_json(meta: Any) -> Any:
    """Training metadata as JSON can hold it, for ``train_meta.json`` and the unit's stored result:
    values JSON has no type for (paths, dtypes) as text, and a loss or logged figure that diverged
    (NaN, or an overflow to infinity) as null (:func:`~characterlab.data.files.undefined_as_null`).
    The strict writers refuse NaN, and a diverged run's adapter is still what it trained: one
    undefined figure must not lose the unit."""
    text = json.dumps(meta, default=str)  # Python's json writes NaN and Infinity bare; read back as NaN
    return undefined_as_null(json.loads(text, parse_constant=lambda _: float("nan")))


def save_adapter(trainer, stage: Path, meta: dict, extra_files: dict[str, str] | None = None) -> None:
    """The trained adapter, ``train_meta.json`` and any extra text files into the staged folder."""
    trainer.model.save_pretrained(stage)
    for name, text in (extra_files or {}).items():
        (stage / name).write_text(text, encoding="utf-8")
    shutil.rmtree(stage / TRAINER_SCRATCH, ignore_errors=True)
    atomic_write_json(stage / META_FILE, meta_for_json(meta))
