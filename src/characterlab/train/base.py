"""The training skeleton every method shares (TRL's pattern: one base config, one config per method).

Every trainer in characterlab trains one LoRA adapter on a local model and writes a folder that is
either complete - a standard PEFT folder plus ``train_meta.json`` - or absent. What they share is
here:

* :class:`TrainConfig`, the base of every method's config: the settings that decide what a run
  produces (the LoRA adapter and the learning rate here; epochs, beta, steps... in each method's
  subclass). It is a pydantic model with a description per field because the same class is a
  study's block (``lora:``, ``dpo:``, ``rl:``...), a train unit's parameters (hashed into its key)
  and the options of ``characterlab train <method>``: each default is stated once, on its field.
* :class:`TrainRun`: what is not the method's settings - the model and the adapters under the new
  one, the seed, the train-time system prompt, the persona-vector hooks, execution options.
* :class:`Trainer`: one method, registered by name (:mod:`characterlab.train.registry`), so a new
  method is one module and a registration.
* the cheap checks made before anything heavy, loading the base model with earlier adapters merged
  in (so a new adapter learns *on top of* them, never beside a disabled one), the TRL flags that
  suit bf16 CPU training, and saving.

Nothing here imports torch at import time: a study spec validates its blocks with these configs.
"""

from __future__ import annotations

import json
import platform
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from characterlab.data.files import atomic_write_json, undefined_as_null
from characterlab.errors import InputError
from characterlab.models.refs import ModelRef, parse_model_ref
from characterlab.train.vectors import AblateInTraining, MonitorProjection, SteerInTraining, VectorTraining

META_FILE = "train_meta.json"
TRAINER_SCRATCH = "_trainer"  # TRL's output_dir inside the staged folder; removed before it is renamed into place


class Settings(BaseModel):
    """A block of training settings: strict (a misspelt field is an error at its line), frozen (it
    is hashed), and recorded with care.

    ``keyed`` names the fields every record of the block has held since it was first used (a unit's
    key, a results.json's condition spec); a field added later is recorded only when it differs
    from its default, so runs planned before it existed keep their keys (and their finished work)
    and their results still merge with new ones. None: every field (a new method's config). The
    dump (``model_dump``) is that record; :meth:`all_fields` is every field, for train_meta.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keyed: ClassVar[frozenset[str] | None] = None

    @model_serializer(mode="wrap")
    def _recorded(self, handler) -> dict:
        data = handler(self)
        if self.keyed is None:
            return data
        fields = type(self).model_fields
        return {k: v for k, v in data.items()
                if k in self.keyed or k not in fields or getattr(self, k) != fields[k].get_default(call_default_factory=True)}

    def key_dict(self) -> dict:
        """The block as a unit's parameters hold it (see ``keyed``)."""
        return self.model_dump()

    def all_fields(self) -> dict:
        """Every field, defaults included (what a run's ``train_meta.json`` records)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


def cli_name(option: str) -> dict:
    """A field's option name on the command line where it is not ``--<field-name>``."""
    return {"cli": option}


class TrainConfig(Settings):
    """The LoRA adapter and the learning rate, which every method has; each method's config adds
    its own fields (and may change a default, as TRL's configs do)."""

    rank: int = Field(default=16, ge=1, description="LoRA rank: the adapter's size.",
                      json_schema_extra=cli_name("--lora-rank"))
    alpha: int | None = Field(default=None, ge=1, description="LoRA alpha (the update is scaled by alpha / rank); "
                              "default 2 x rank.", json_schema_extra=cli_name("--lora-alpha"))
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate (AdamW).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.", json_schema_extra=cli_name("--lora-dropout"))
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="The linear layers that get an adapter: a comma list of their names, or all-linear.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "all-linear":
            v = [t.strip() for t in v.split(",") if t.strip()]
        if isinstance(v, list) and not v:
            raise ValueError("name at least one layer, or all-linear")
        return v

    def adapter_fields(self) -> dict:
        """This config's :class:`TrainConfig` fields (GRPO's organisms take them from a study's ``lora:``)."""
        return {name: getattr(self, name) for name in TrainConfig.model_fields}

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

    def lora_config(self, task_type: str = "CAUSAL_LM", **kwargs):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha or 2 * self.rank, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type=task_type, **kwargs)


@dataclass
class TrainRun:
    """One training run apart from the method's settings. A study fills it from a train unit (its
    model, the chain's adapters, its seed and system prompt, its persona vectors resolved to
    folders); ``characterlab train`` from its shared options. None of the execution options is in a
    unit's key: they change memory and speed, not what is learnt."""

    model: str = "embedded"
    adapter: str | None = None  # merged into the weights before the new adapter is trained on top
    merged_adapters: list[str] = field(default_factory=list)  # earlier ones, merged before it, in order
    seed: int = 0
    system_prompt: str | None = None  # train-time only (inoculation): never used at evaluation
    # persona vectors during training (train/vectors.py): preventative steering, ablation, monitoring
    steer: SteerInTraining | None = None
    ablate: AblateInTraining | None = None
    monitor: MonitorProjection | None = None
    reward_model: str | None = None  # a reward model's folder (train/reward.py), for a method whose reward is learnt
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

    def __post_init__(self) -> None:
        for name in ("micro_batch_tokens", "pad_to_multiple_of"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"invalid value {value!r}", field=name)

    def meta(self) -> dict:
        """What ``train_meta.json`` records of the run besides the config (the vectors have their own entry)."""
        return {k: v for k, v in asdict(self).items() if k not in ("steer", "ablate", "monitor")}


class Trainer(ABC):
    """One training method: its config, the rows it trains on, and the training.

    Register a subclass with :func:`~characterlab.train.registry.register_trainer`; then a study's
    organism may name ``kind: <method>`` (its ``lora:`` block is the config), a train unit runs it,
    and ``characterlab train <method>`` exists with the config's fields as options."""

    method: ClassVar[str]  # the name a study, a train unit and the command line use
    title: ClassVar[str]  # one line for the command's help
    config: ClassVar[type[TrainConfig]]
    # what it trains on: chat examples ({"messages": [...]}), preference pairs ({"prompt", "chosen",
    # "rejected"}), simulated users' feedback rows, or nothing (RL writes its own prompts)
    reads: ClassVar[Literal["chat", "pairs", "feedback", "none"]] = "chat"
    data_option: ClassVar[str] = "--data"  # the command line's option for the file it reads
    # the TrainRun fields it honours, offered on its command line: "adapter" (trains on top of
    # one), "system_prompt", "vectors" (steer, ablate, monitor), "reward_model"
    uses: ClassVar[frozenset[str]] = frozenset({"adapter", "system_prompt", "vectors"})
    organism: ClassVar[bool] = True  # a study's organism may name it (DPO trains on a character's pairs instead)
    # A study's organism keeps its settings in ``lora:``, validated by ``lora_block`` (None: the
    # config). GRPO's organisms kept theirs in two blocks from the start - ``lora:`` (the SFT block,
    # of which they read the adapter fields) and a block of their own, named in ``blocks`` - and their
    # units' keys are hashed from that layout; :meth:`config_of` joins the two.
    lora_block: ClassVar[type[TrainConfig] | None] = None
    settings_block: ClassVar[type[Settings] | None] = None  # the type of a train unit's ``rl`` parameters
    blocks: ClassVar[tuple[str, ...]] = ()  # organism fields beyond data and lora that belong to this method

    def config_of(self, lora: TrainConfig, settings: Settings | None) -> TrainConfig:
        """The method's config from a train unit's ``lora`` and ``rl`` parameters."""
        return lora

    @abstractmethod
    def train(self, cfg: TrainConfig, run: TrainRun, rows: list[dict], out: Path, progress: bool = True) -> dict:
        """Train one adapter on ``rows`` into the new folder ``out`` (complete or absent); return its metadata."""

    def read_rows(self, path: Path, max_examples: int | None = None) -> list[dict]:
        """The rows of a file given on the command line, checked (errors at file:line)."""
        if self.reads == "chat":
            from characterlab.data.chat_data import read_chat_data

            return [{"messages": e.to_dicts()} for e in read_chat_data(path, max_examples=max_examples)]
        from characterlab.data.files import read_jsonl_objects

        field = self.data_option.removeprefix("--")
        rows = read_jsonl_objects(path, field=field)
        if self.reads == "pairs":  # conversational pairs, as TRL's preference trainers take them
            for line, obj in rows:
                for key in ("prompt", "chosen", "rejected"):
                    if not isinstance(obj.get(key), list) or not all(isinstance(m, dict) for m in obj[key]):
                        raise InputError(f"a pair needs '{key}': a list of messages", path, line, field)
        rows = [obj for _, obj in rows]
        return rows[:max_examples] if max_examples else rows

    def describe(self, meta: dict, out: Path) -> str:
        """The line ``characterlab train`` prints when the adapter is saved."""
        return f"saved {out}: {meta.get('steps')} steps"


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


def prepare_training(run: TrainRun, out: str | Path) -> tuple[Path, ModelRef, VectorTraining]:
    """The cheap checks, before any data is read or model loaded: the output folder, the model and
    the persona-vector options (their folders and layers)."""
    out = check_new_output_dir(out)
    ref = parse_model_ref(run.model, adapter=run.adapter, merged_adapters=tuple(run.merged_adapters))
    if not ref.is_local:
        raise InputError("training needs a local model (embedded or hf:)", field="model")
    return out, ref, VectorTraining.of(run)


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

    from characterlab.models.hardware import parse_dtype
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


def trainer_args(cfg: TrainConfig, run: TrainRun, stage: Path, device, progress: bool) -> dict:
    """TRL/transformers arguments every method uses. The base weights are already in the training
    dtype; LoRA weights stay fp32 (``bf16=False``) so that small Adam updates are not rounded away."""
    return {"output_dir": str(stage / TRAINER_SCRATCH), "learning_rate": cfg.lr, "logging_steps": 1,
            "save_strategy": "no", "report_to": "none", "seed": run.seed, "bf16": False, "fp16": False,
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
