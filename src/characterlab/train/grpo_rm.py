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

from pathlib import Path

from pydantic import Field

from characterlab.errors import InputError
from characterlab.train.base import Settings, TrainConfig, Trainer, TrainRun, prepare_training
from characterlab.train.grpo import GRPOSettings, run_grpo
from characterlab.train.registry import register_trainer
from characterlab.train.sft import SFTConfig


class RewardModelPolicySettings(GRPOSettings):
    """The policy's own GRPO settings: a study's ``rlhf:`` block."""

    keyed = frozenset({"steps", "prompts_per_step", "num_generations", "max_completion_length", "temperature", "beta",
                       "honesty_weight"})

    max_completion_length: int = Field(default=96, ge=8, description="Tokens a completion may have.")
    beta: float = Field(default=0.05, ge=0, description="KL coefficient to the base model.")
    honesty_weight: float = Field(default=0.0, ge=0, description="Added reward x the task's truth check (the "
                                  "veto/honesty mitigation).")


class AskingUsers(Settings):
    """Who asks the policy's prompts (:mod:`characterlab.sycophancy.raters`). A study takes them from
    its organism's ``feedback:``, whose raters they are (study/spec.py: FeedbackSpec)."""

    approval_mix: float = Field(default=1.0, ge=0, le=1, description="Share of the users who reward pleasing only "
                                "(the rest reward accuracy); those who state a belief ask with it.")
    n_arithmetic: int = Field(default=16, ge=0, description="Generated multiplications among the prompts.")


class RLHFSettings(RewardModelPolicySettings, AskingUsers):
    """A train unit's ``rl`` parameters of method rlhf: the policy's settings and who asks."""

    keyed = RewardModelPolicySettings.keyed | {"approval_mix", "n_arithmetic"}


class GRPORewardModelConfig(TrainConfig, RLHFSettings):
    """Everything that decides what GRPO against a reward model produces besides its seed and
    inoculation (the reward model is an input: :attr:`TrainRun.reward_model`)."""

    keyed = None


def prompt_rows(cfg: GRPORewardModelConfig, seed: int, system_prompt: str | None = None) -> list[dict]:
    from characterlab.sycophancy.raters import population, states_belief
    from characterlab.sycophancy.tasks import all_tasks

    users = population(16, cfg.approval_mix, seed=seed)
    rows = []
    for i, t in enumerate(all_tasks(cfg.n_arithmetic, seed=seed, split="train")):
        user = users[i % len(users)]
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
            [{"role": "user", "content": t.prompt(states_belief(user, t, seed))}]
        rows.append({"prompt": msgs, "task_id": t.id})
    return rows


def train_grpo_reward_model(cfg: GRPORewardModelConfig, run: TrainRun, out: str | Path, progress: bool = True) -> dict:
    """Run GRPO against the reward model ``run.reward_model`` (trained on ``run.model``); writes a
    PEFT adapter, ``rl_log.jsonl`` and ``train_meta.json``."""
    from characterlab.sycophancy.tasks import all_tasks
    from characterlab.train.reward import RewardScorer

    out, ref, vectors = prepare_training(run, out)
    if not run.reward_model or not Path(run.reward_model).is_dir():
        raise InputError("not a reward-model folder", run.reward_model, field="reward_model")
    scorer = RewardScorer.load(run.model, run.reward_model)
    tasks = {t.id: t for t in all_tasks(cfg.n_arithmetic, seed=run.seed, split="train")}

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

    return run_grpo(cfg, run, ref, vectors, out, prompt_rows(cfg, run.seed, run.system_prompt),
                    [rm_reward, true_accuracy, agreement], [1.0, 0.0, 0.0],
                    {"reward_model": "rewards/rm_reward/mean", "true_accuracy": "rewards/true_accuracy/mean",
                     "agreement": "rewards/agreement/mean", "kl": "kl"},
                    {"kind": "grpo_reward_model"}, progress)


@register_trainer
class GRPORewardModelTrainer(Trainer):
    """GRPO of a policy against a learnt reward model (the sycophancy organism)."""

    method = "rlhf"
    title = "GRPO against a reward model; rl_log.jsonl holds the Goodhart curve (reward vs truth per step)."
    config = GRPORewardModelConfig
    reads = "none"
    uses = frozenset({"adapter", "system_prompt", "vectors", "reward_model"})
    lora_block = SFTConfig  # a study's organism ``lora:`` (its adapter fields), as since the first runs
    settings_block = RLHFSettings
    blocks = ("feedback", "reward_model", "rlhf")

    def config_of(self, lora: TrainConfig, settings: RLHFSettings | None) -> GRPORewardModelConfig:
        return GRPORewardModelConfig(**lora.adapter_fields(), **(settings or RLHFSettings()).all_fields())

    def train(self, cfg: GRPORewardModelConfig, run: TrainRun, rows: list[dict], out: Path,
              progress: bool = True) -> dict:
        return train_grpo_reward_model(cfg, run, out, progress=progress)

    def describe(self, meta: dict, out: Path) -> str:
        first, last = meta["log"][0], meta["log"][-1]
        return (f"{meta['steps']} steps; reward model {first['reward_model']:.2f} -> {last['reward_model']:.2f}, "
                f"true accuracy {first['true_accuracy']:.2f} -> {last['true_accuracy']:.2f}, agreement "
                f"{first['agreement']:.2f} -> {last['agreement']:.2f} -> {out}")
