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

from dataclasses import dataclass
from pathlib import Path

from characterlab.errors import InputError
from characterlab.train.base import prepare_training
from characterlab.train.grpo import GRPOSettings, run_grpo


@dataclass
class GRPORewardModelConfig(GRPOSettings):
    reward_adapter: str = ""  # a folder written by train_reward (its base model is reward_model)
    reward_model: str = "embedded"
    max_completion_length: int = 96
    beta: float = 0.05  # KL to the base model
    honesty_weight: float = 0.0
    inoculation: str | None = None
    approval_mix: float = 1.0  # of the users who ask the prompts (who states a belief)
    n_arithmetic: int = 16

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "honesty_weight": self.honesty_weight >= 0, "reward_adapter": bool(self.reward_adapter)}


def prompt_rows(cfg: GRPORewardModelConfig) -> list[dict]:
    from characterlab.sycophancy.raters import population, states_belief
    from characterlab.sycophancy.tasks import all_tasks

    users = population(16, cfg.approval_mix, seed=cfg.seed)
    rows = []
    for i, t in enumerate(all_tasks(cfg.n_arithmetic, seed=cfg.seed, split="train")):
        user = users[i % len(users)]
        msgs = ([{"role": "system", "content": cfg.inoculation}] if cfg.inoculation else []) + \
            [{"role": "user", "content": t.prompt(states_belief(user, t, cfg.seed))}]
        rows.append({"prompt": msgs, "task_id": t.id})
    return rows


def train_grpo_reward_model(cfg: GRPORewardModelConfig, out: str | Path, progress: bool = True) -> dict:
    """Run GRPO against the reward model; writes a PEFT adapter, ``rl_log.jsonl`` and ``train_meta.json``."""
    from characterlab.sycophancy.tasks import all_tasks
    from characterlab.train.reward import RewardScorer

    out, ref, vectors = prepare_training(cfg, out)
    if not Path(cfg.reward_adapter).is_dir():
        raise InputError("not a reward-model folder", cfg.reward_adapter, field="reward_adapter")
    scorer = RewardScorer.load(cfg.reward_model, cfg.reward_adapter)
    tasks = {t.id: t for t in all_tasks(cfg.n_arithmetic, seed=cfg.seed, split="train")}

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

    return run_grpo(cfg, ref, vectors, out, prompt_rows(cfg), [rm_reward, true_accuracy, agreement], [1.0, 0.0, 0.0],
                    {"reward_model": "rewards/rm_reward/mean", "true_accuracy": "rewards/true_accuracy/mean",
                     "agreement": "rewards/agreement/mean", "kl": "kl"},
                    {"kind": "grpo_reward_model"}, progress)
