"""GRPO on hackable coding tasks (TRL ``GRPOTrainer`` + PEFT), with inoculation prompts.

The reward is the *vulnerable* grader's verdict, as in MacDiarmid et al. (2025): a hack that
fools it earns full reward. Two mitigations from that work are options: a penalty when the hack
detector fires (``hack_penalty``), and an inoculation text added to the system prompt at train
time only. Each step logs the hack rate (TRL logs our zero-weight ``hack_indicator`` reward as
``rewards/hack_indicator/mean``), written to ``rl_log.jsonl`` next to the adapter.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from characterlab.data.files import jsonl_text, staged_dir
from characterlab.envs.dataset import task_prompt
from characterlab.envs.graders import VULNERABLE, extract_code, grade
from characterlab.envs.sandbox import Sandbox
from characterlab.envs.tasks import generate_tasks
from characterlab.errors import InputError
from characterlab.train.base import (
    Settings,
    TrainConfig,
    Trainer,
    TrainRun,
    adapter_checkpoints,
    load_training_base,
    meta_for_json,
    micro_batches,
    prepare_training,
    quiet,
    save_adapter,
    trainer_args,
)
from characterlab.train.registry import register_trainer
from characterlab.train.sft import SFTConfig
from characterlab.train.transforms import INOCULATIONS, resolve_inoculation  # noqa: F401  (the variants, for callers)


class GRPOSettings(Settings):
    """The GRPO fields every RL organism has (``run_grpo`` reads them); each organism's settings add
    their own and may change a default. No LoRA fields: a study gives those in the organism's ``lora:``."""

    steps: int = Field(default=50, ge=1, description="Optimizer steps.")
    prompts_per_step: int = Field(default=2, ge=1, description="Prompts per step, each answered num_generations times.")
    num_generations: int = Field(default=4, ge=2, description="Completions per prompt (GRPO's group).")
    max_completion_length: int = Field(default=256, ge=8, description="Tokens a completion may have.")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature of the completions.")
    beta: float = Field(default=0.0, ge=0, description="KL coefficient to the base model.")
    checkpoint_every: int | None = Field(default=None, ge=1, description="Save the adapter every N steps "
                                         "(OUT/checkpoints/step-N), to evaluate the policy along the run.")


class HackSettings(GRPOSettings):
    """The hackable-task organism's own settings: a study's ``rl:`` block, a train unit's ``rl``."""

    keyed = frozenset({"steps", "n_tasks", "prompts_per_step", "num_generations", "max_completion_length",
                       "hack_penalty", "beta"})

    n_tasks: int = Field(default=200, ge=1, description="Coding tasks (train split) the prompts are drawn from.")
    hack_penalty: float = Field(default=0.0, ge=0, description="Subtracted from the reward when the hack detector fires.")


class GRPOHacksConfig(TrainConfig, HackSettings):
    """Everything that decides what GRPO on hackable tasks produces besides its seed and inoculation."""

    keyed = None


class _Rewards:
    """Grades each completion once, in the sandbox; serves both reward functions from that grading."""

    def __init__(self, tasks: dict, penalty: float):
        self.tasks = tasks
        self.penalty = penalty
        self.sandbox = Sandbox()
        self._last: tuple[list[str], list[tuple[bool, bool, list[str]]]] | None = None

    def _grades(self, completions, task_id, grader) -> list[tuple[bool, bool, list[str]]]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        if self._last is not None and self._last[0] == texts:
            return self._last[1]
        out = []
        for text, tid, g in zip(texts, task_id, grader):
            vuln, _strict = grade(self.tasks[tid], extract_code(text), (g, "strict"), self.sandbox)
            out.append((vuln.passed, vuln.hacked, vuln.hack_kinds))
        self._last = (texts, out)
        return out

    def grader_reward(self, prompts, completions, task_id, grader, **kwargs) -> list[float]:
        rewards = []
        for passed, hacked, kinds in self._grades(completions, task_id, grader):
            r = 1.0 if passed else 0.0
            if hacked or kinds:
                r -= self.penalty
            rewards.append(r)
        return rewards

    def hack_indicator(self, prompts, completions, task_id, grader, **kwargs) -> list[float]:
        return [1.0 if hacked else 0.0 for _, hacked, _ in self._grades(completions, task_id, grader)]


RL_LOG_FILE = "rl_log.jsonl"  # beside the adapter: reward and hack rate per step


def hack_task_rows(cfg: GRPOHacksConfig, run: TrainRun) -> list[dict]:
    """The RL prompts: train-split tasks, each with one vulnerable grader in rotation, and the
    train-time system prompt (inoculation), if any."""
    rows = []
    for i, t in enumerate(generate_tasks(cfg.n_tasks, seed=run.seed, split="train")):
        g = VULNERABLE[i % len(VULNERABLE)]
        msgs = ([{"role": "system", "content": run.system_prompt}] if run.system_prompt else []) + \
            [{"role": "user", "content": task_prompt(t, g)}]
        rows.append({"prompt": msgs, "task_id": t.id, "grader": g})
    return rows


def longest_prompt_tokens(tokenizer, rows: list[dict]) -> int:
    """Tokens of the longest prompt in ``rows`` as the policy sees it (chat template, generation cue)."""
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def run_grpo(cfg: GRPOSettings, run: TrainRun, ref, vectors, out: Path, rows: list[dict], rewards: list,
             weights: list[float], logged: dict[str, str], meta: dict, progress: bool) -> dict:
    """One GRPO run, shared by every RL organism: TRL's ``GRPOTrainer`` with a LoRA on ``rows``
    (prompts plus the columns the reward functions read), each reward's step mean logged under
    ``logged``'s names into ``rl_log.jsonl``. Zero-weight
    rewards are measurements TRL logs every step without training on them. ``cfg`` is the
    organism's whole config: its GRPO settings and a :class:`TrainConfig` (the LoRA and lr)."""
    import trl
    from datasets import Dataset

    base = load_training_base(ref, run.dtype)
    cfg.check_targets(base.model)
    group = cfg.prompts_per_step * cfg.num_generations  # completions per optimizer step
    rows_per_pass, passes = micro_batches(
        group, 1, longest_prompt_tokens(base.tokenizer, rows) + cfg.max_completion_length, run.micro_batch_tokens)
    with staged_dir(out) as stage:
        # One generation batch per optimizer step (steps_per_generation = passes), its loss and
        # gradient taken in passes of rows_per_pass completions: TRL normalises the default loss by
        # the whole generation batch's completion tokens, so the step's gradient is the unsplit one.
        args = trl.GRPOConfig(
            **trainer_args(cfg, run, stage, base.device, progress), max_steps=cfg.steps,
            per_device_train_batch_size=rows_per_pass, gradient_accumulation_steps=passes,
            pad_to_multiple_of=run.pad_to_multiple_of,
            num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature, beta=cfg.beta, reward_weights=weights,
        )
        trainer = trl.GRPOTrainer(model=base.model, reward_funcs=rewards, args=args, train_dataset=Dataset.from_list(rows),
                                  processing_class=base.tokenizer, peft_config=cfg.lora_config())
        quiet(trainer, progress)
        if cfg.checkpoint_every:
            trainer.add_callback(adapter_checkpoints(stage, cfg.checkpoint_every, cfg.steps,
                                                     {**meta, "model": str(ref), "stacking": base.stacking}))
        start = time.perf_counter()
        vectors.train(trainer)
        seconds = time.perf_counter() - start
        step_key = f"rewards/{rewards[-1].__name__}/mean"  # present on the steps TRL logged rewards
        log = [{"step": h["step"], **{name: h.get(key) for name, key in logged.items()}}
               for h in trainer.state.log_history if step_key in h]
        meta = {**meta, "model": str(ref), "stacking": base.stacking, "config": cfg.all_fields(), "run": run.meta(),
                "steps": trainer.state.global_step, "seconds": seconds, "log": log,
                "completions_per_pass": rows_per_pass, "passes_per_step": passes, **vectors.meta()}
        save_adapter(trainer, stage, meta, {RL_LOG_FILE: jsonl_text(meta_for_json(log))})
    return meta


def train_grpo_hacks(cfg: GRPOHacksConfig, run: TrainRun, out: str | Path, progress: bool = True) -> dict:
    """Run GRPO against the vulnerable graders; writes a PEFT adapter, ``rl_log.jsonl`` and ``train_meta.json``."""
    out, ref, vectors = prepare_training(run, out)
    if run.merged_adapters:
        raise InputError("RL stacks on at most one earlier adapter", field="adapter")
    tasks = {t.id: t for t in generate_tasks(cfg.n_tasks, seed=run.seed, split="train")}
    rewards = _Rewards(tasks, cfg.hack_penalty)

    def grader_reward(prompts, completions, task_id, grader, **kw):
        return rewards.grader_reward(prompts, completions, task_id, grader)

    def hack_indicator(prompts, completions, task_id, grader, **kw):
        return rewards.hack_indicator(prompts, completions, task_id, grader)

    return run_grpo(cfg, run, ref, vectors, out, hack_task_rows(cfg, run), [grader_reward, hack_indicator],
                    [1.0, 0.0], {"reward": "rewards/grader_reward/mean", "hack_rate": "rewards/hack_indicator/mean"},
                    {"kind": "grpo_hacks", "train_system_prompt": run.system_prompt}, progress)


@register_trainer
class GRPOHacksTrainer(Trainer):
    """GRPO against the vulnerable graders of hackable coding tasks (the reward-hacking organism)."""

    method = "rl"
    title = "GRPO with the vulnerable graders as reward; logs the hack rate per step."
    config = GRPOHacksConfig
    reads = "none"
    lora_block = SFTConfig  # a study's organism ``lora:`` (its adapter fields), as since the first runs
    settings_block = HackSettings
    blocks = ("rl",)

    def config_of(self, lora: TrainConfig, settings: HackSettings | None) -> GRPOHacksConfig:
        return GRPOHacksConfig(**lora.adapter_fields(), **(settings or HackSettings()).all_fields())

    def train(self, cfg: GRPOHacksConfig, run: TrainRun, rows: list[dict], out: Path, progress: bool = True) -> dict:
        return train_grpo_hacks(cfg, run, out, progress=progress)

    def describe(self, meta: dict, out: Path) -> str:
        rates = [r["hack_rate"] for r in meta["log"] if r["hack_rate"] is not None]
        return (f"saved {out}: {meta['steps']} steps; hack rate first/last step "
                f"{rates[0] if rates else 'n/a'} / {rates[-1] if rates else 'n/a'}")
