"""GRPO on hackable coding tasks (TRL ``GRPOTrainer`` + PEFT), with inoculation prompts.

The reward is the *vulnerable* grader's verdict, as in MacDiarmid et al. (2025): a hack that
fools it earns full reward. Two mitigations from that work are options: a penalty when the hack
detector fires (``hack_penalty``), and an inoculation text added to the system prompt at train
time only. Each step logs the hack rate (TRL logs our zero-weight ``hack_indicator`` reward as
``rewards/hack_indicator/mean``), written to ``rl_log.jsonl`` next to the adapter.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from characterlab.data.files import jsonl_text, staged_dir
from characterlab.envs.dataset import task_prompt
from characterlab.envs.graders import VULNERABLE, extract_code, grade
from characterlab.envs.sandbox import Sandbox
from characterlab.envs.tasks import generate_tasks
from characterlab.errors import InputError
from characterlab.train.base import (
    TrainConfig,
    adapter_checkpoints,
    load_training_base,
    meta_for_json,
    micro_batches,
    prepare_training,
    quiet,
    save_adapter,
    trainer_args,
)
from characterlab.train.transforms import INOCULATIONS, resolve_inoculation  # noqa: F401  (the variants, for callers)


@dataclass
class GRPOSettings(TrainConfig):
    """The GRPO fields every RL organism has (``run_grpo`` reads them); each organism's config
    adds its own and may change the defaults."""

    steps: int = 50
    prompts_per_step: int = 2
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    lr: float = 5e-5
    beta: float = 0.0  # KL to the base model
    # save the adapter every N steps (OUT/checkpoints/step-N): the policy along the run, to evaluate
    checkpoint_every: int | None = None

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "steps": self.steps >= 1, "num_generations": self.num_generations >= 2,
                "beta": self.beta >= 0, "checkpoint_every": self.checkpoint_every is None or self.checkpoint_every >= 1}


@dataclass
class GRPOHackConfig(GRPOSettings):
    n_tasks: int = 200
    inoculation: str = "none"
    hack_penalty: float = 0.0

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "hack_penalty": self.hack_penalty >= 0}


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


def hack_task_rows(cfg: GRPOHackConfig) -> list[dict]:
    """The RL prompts: train-split tasks, each with one vulnerable grader in rotation, and the
    inoculation text (if any) as the system prompt."""
    system = resolve_inoculation(cfg.inoculation)
    rows = []
    for i, t in enumerate(generate_tasks(cfg.n_tasks, seed=cfg.seed, split="train")):
        g = VULNERABLE[i % len(VULNERABLE)]
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": task_prompt(t, g)}]
        rows.append({"prompt": msgs, "task_id": t.id, "grader": g})
    return rows


def longest_prompt_tokens(tokenizer, rows: list[dict]) -> int:
    """Tokens of the longest prompt in ``rows`` as the policy sees it (chat template, generation cue)."""
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def run_grpo(cfg: GRPOSettings, ref, vectors, out: Path, rows: list[dict], rewards: list, weights: list[float],
             logged: dict[str, str], meta: dict, progress: bool) -> dict:
    """One GRPO run, shared by every RL organism: TRL's ``GRPOTrainer`` with a LoRA on ``rows``
    (prompts plus the columns the reward functions read), each reward's step mean logged under
    ``logged``'s names into ``rl_log.jsonl``. Zero-weight
    rewards are measurements TRL logs every step without training on them."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    base = load_training_base(ref, cfg.dtype)
    cfg.check_targets(base.model)
    group = cfg.prompts_per_step * cfg.num_generations  # completions per optimizer step
    rows_per_pass, passes = micro_batches(group, 1, longest_prompt_tokens(base.tokenizer, rows) + cfg.max_completion_length,
                                          cfg.micro_batch_tokens)
    with staged_dir(out) as stage:
        # One generation batch per optimizer step (steps_per_generation = passes), its loss and
        # gradient taken in passes of rows_per_pass completions: TRL normalises the default loss by
        # the whole generation batch's completion tokens, so the step's gradient is the unsplit one.
        args = GRPOConfig(
            **trainer_args(cfg, stage, base.device, progress), max_steps=cfg.steps,
            per_device_train_batch_size=rows_per_pass, gradient_accumulation_steps=passes,
            pad_to_multiple_of=cfg.pad_to_multiple_of,
            num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature, beta=cfg.beta, reward_weights=weights,
        )
        trainer = GRPOTrainer(model=base.model, reward_funcs=rewards, args=args, train_dataset=Dataset.from_list(rows),
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
        meta = {**meta, "model": str(ref), "stacking": base.stacking, "config": asdict(cfg),
                "steps": trainer.state.global_step, "seconds": seconds, "log": log,
                "completions_per_pass": rows_per_pass, "passes_per_step": passes, **vectors.meta()}
        save_adapter(trainer, stage, meta, {RL_LOG_FILE: jsonl_text(meta_for_json(log))})
    return meta


def train_grpo_hacks(cfg: GRPOHackConfig, out: str | Path, progress: bool = True) -> dict:
    """Run GRPO against the vulnerable graders; writes a PEFT adapter, ``rl_log.jsonl`` and ``train_meta.json``."""
    out, ref, vectors = prepare_training(cfg, out)
    if cfg.merged_adapters:
        raise InputError("RL stacks on at most one earlier adapter", field="adapter")
    tasks = {t.id: t for t in generate_tasks(cfg.n_tasks, seed=cfg.seed, split="train")}
    rewards = _Rewards(tasks, cfg.hack_penalty)

    def grader_reward(prompts, completions, task_id, grader, **kw):
        return rewards.grader_reward(prompts, completions, task_id, grader)

    def hack_indicator(prompts, completions, task_id, grader, **kw):
        return rewards.hack_indicator(prompts, completions, task_id, grader)

    return run_grpo(cfg, ref, vectors, out, hack_task_rows(cfg), [grader_reward, hack_indicator], [1.0, 0.0],
                    {"reward": "rewards/grader_reward/mean", "hack_rate": "rewards/hack_indicator/mean"},
                    {"kind": "grpo_hacks", "train_system_prompt": resolve_inoculation(cfg.inoculation)}, progress)
