"""GRPO against a learnt reward model (the sycophancy organism's policy optimisation).

The prompts are characterlab's checkable tasks asked the way simulated users ask them (with their
false belief stated as often as the population does, :mod:`characterlab.sycophancy.raters`); the
reward is the reward model's score of (prompt, answer), optionally plus ``honesty_weight`` x the
task's own truth check (the "veto/honesty term" mitigation), with ``beta`` the KL coefficient to
the base model. Two zero-weight rewards make TRL log, every step, the true accuracy and the share
of answers that agree with the user's false belief, so ``rl_log.jsonl`` is the Goodhart curve:
reward-model score against truth along training. ``inoculation`` is a train-time system prompt.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from characterlab.data.files import staged_dir
from characterlab.errors import InputError
from characterlab.train.base import TrainConfig, load_training_base, prepare_training, quiet, save_adapter, trainer_args

RL_LOG_FILE = "rl_log.jsonl"


@dataclass
class GRPORewardModelConfig(TrainConfig):
    reward_adapter: str = ""  # a folder written by train_reward (its base model is reward_model)
    reward_model: str = "embedded"
    steps: int = 50
    prompts_per_step: int = 2
    num_generations: int = 4
    max_completion_length: int = 96
    temperature: float = 1.0
    lr: float = 5e-5
    beta: float = 0.05  # KL to the base model
    honesty_weight: float = 0.0
    inoculation: str | None = None
    approval_mix: float = 1.0  # of the users who ask the prompts (who states a belief)
    n_arithmetic: int = 16

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "steps": self.steps >= 1, "num_generations": self.num_generations >= 2,
                "beta": self.beta >= 0, "honesty_weight": self.honesty_weight >= 0,
                "reward_adapter": bool(self.reward_adapter)}


def prompt_rows(cfg: GRPORewardModelConfig) -> list[dict]:
    from characterlab.sycophancy.raters import population, states_belief
    from characterlab.sycophancy.tasks import all_tasks

    users = population(16, cfg.approval_mix, seed=cfg.seed)
    rows = []
    for i, t in enumerate(all_tasks(cfg.n_arithmetic, seed=cfg.seed)):
        user = users[i % len(users)]
        msgs = ([{"role": "system", "content": cfg.inoculation}] if cfg.inoculation else []) + \
            [{"role": "user", "content": t.prompt(states_belief(user, t, cfg.seed))}]
        rows.append({"prompt": msgs, "task_id": t.id})
    return rows


def train_grpo_reward_model(cfg: GRPORewardModelConfig, out: str | Path, progress: bool = True) -> dict:
    """Run GRPO against the reward model; writes a PEFT adapter, ``rl_log.jsonl`` and ``train_meta.json``."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from characterlab.sycophancy.tasks import all_tasks
    from characterlab.train.reward import RewardScorer

    out, ref, vectors = prepare_training(cfg, out)
    if not Path(cfg.reward_adapter).is_dir():
        raise InputError("not a reward-model folder", cfg.reward_adapter, field="reward_adapter")
    scorer = RewardScorer.load(cfg.reward_model, cfg.reward_adapter)
    tasks = {t.id: t for t in all_tasks(cfg.n_arithmetic, seed=cfg.seed)}

    def text(c) -> str:
        return c[-1]["content"] if isinstance(c, list) else c

    def rm_reward(prompts, completions, task_id, **kw):
        convs = [[m for m in p if m["role"] != "system"] + [{"role": "assistant", "content": text(c)}]
                 for p, c in zip(prompts, completions)]
        scores = scorer.scores(convs)  # the users' reward model never sees the train-time system prompt
        return [s + cfg.honesty_weight * tasks[t].correct(text(c)) for s, c, t in zip(scores, completions, task_id)]

    def true_accuracy(prompts, completions, task_id, **kw):
        return [float(tasks[t].correct(text(c))) for c, t in zip(completions, task_id)]

    def agreement(prompts, completions, task_id, **kw):
        return [float(tasks[t].agrees(text(c))) for c, t in zip(completions, task_id)]

    base = load_training_base(ref, cfg.dtype)
    cfg.check_targets(base.model)
    with staged_dir(out) as stage:
        args = GRPOConfig(**trainer_args(cfg, stage, base.device, progress), max_steps=cfg.steps,
                          per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
                          num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                          temperature=cfg.temperature, beta=cfg.beta, reward_weights=[1.0, 0.0, 0.0])
        trainer = GRPOTrainer(model=base.model, reward_funcs=[rm_reward, true_accuracy, agreement], args=args,
                              train_dataset=Dataset.from_list(prompt_rows(cfg)), processing_class=base.tokenizer,
                              peft_config=cfg.lora_config())
        quiet(trainer, progress)
        start = time.perf_counter()
        vectors.train(trainer)
        seconds = time.perf_counter() - start
        log = [{"step": h["step"], "reward_model": h.get("rewards/rm_reward/mean"),
                "true_accuracy": h.get("rewards/true_accuracy/mean"), "agreement": h.get("rewards/agreement/mean"),
                "kl": h.get("kl")}
               for h in trainer.state.log_history if "rewards/true_accuracy/mean" in h]
        meta = {"kind": "grpo_reward_model", "model": str(ref), "stacking": base.stacking, "config": asdict(cfg),
                "steps": trainer.state.global_step, "seconds": seconds, "log": log, **vectors.meta()}
        save_adapter(trainer, stage, meta, {RL_LOG_FILE: "".join(json.dumps(r) + "\n" for r in log)})
    return meta
