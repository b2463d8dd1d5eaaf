"""A reward model learnt from preference pairs (users' thumbs-up and -down), with TRL's RewardTrainer.

The base model becomes a sequence classifier with one output (a fresh ``score`` head on top of the
transformer), trained with a LoRA on the transformer and the head in full, on conversational
pairs ``{prompt, chosen, rejected}`` (:func:`characterlab.sycophancy.feedback.preference_pairs`).
After training, held-out pairs give the accuracy on the raters' own labels (chosen scored above
rejected); :class:`RewardScorer` scores any (prompt, answer) for the policy that is optimised
against it and for the Goodhart curve (reward against true accuracy).
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from characterlab.errors import InputError
from characterlab.train.base import (
    TrainConfig,
    Trainer,
    TrainRun,
    check_new_output_dir,
    micro_batches,
    quiet,
    quiet_datasets,
    save_adapter,
    trainer_args,
)
from characterlab.train.registry import register_trainer

SCORE_HEAD = "score"


class RewardConfig(TrainConfig):
    """What decides what a reward model learns from a feedback file besides its seed: a study's
    ``reward_model:`` block, a reward unit's parameters, the options of ``characterlab train reward``."""

    keyed = frozenset({"rank", "lr", "epochs", "batch_size", "heldout"})

    lr: float = Field(default=1e-4, gt=0, description="Peak learning rate (AdamW).")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the preference pairs.")
    batch_size: int = Field(default=8, ge=1, description="Pairs per optimizer step.")
    max_length: int = Field(default=512, ge=8, description="Tokens of a conversation the reward model reads.")
    heldout: float = Field(default=0.2, ge=0, lt=1, description="Share of prompts held out to measure the model's "
                           "accuracy on the raters' labels and against the truth.")


def _load_classifier(run: TrainRun):
    """The base model as a one-output sequence classifier, and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from characterlab.models.hardware import parse_dtype
    from characterlab.models.hub import load_pretrained
    from characterlab.models.local import load_tokenizer, resolve_model_path
    from characterlab.models.refs import parse_model_ref

    ref = parse_model_ref(run.model)
    if not ref.is_local:
        raise InputError("a reward model trains a local model (embedded or hf:)", field="model")
    if run.adapter or run.merged_adapters:
        raise InputError("a reward model starts from a base model; adapters are not stacked under it", field="adapter")
    path = resolve_model_path(ref)
    tokenizer = load_tokenizer(path, padding_side="right")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = load_pretrained(AutoModelForSequenceClassification.from_pretrained, path, num_labels=1,
                            dtype=parse_dtype(run.dtype, device))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer, ref, device


def train_reward(cfg: RewardConfig, run: TrainRun, pairs: list[dict], out: str | Path, *,
                 eval_pairs: list[dict] | None = None, truth_rows: list[dict] | None = None, progress: bool = True) -> dict:
    """Train on ``pairs``; write the adapter (with its head) and ``train_meta.json``; return the meta,
    with the accuracy on ``eval_pairs`` (held out) when given, and how the scores of ``truth_rows``
    (rated answers that know whether they are ``correct``) track the truth."""
    import trl
    from datasets import Dataset

    from characterlab.data.files import staged_dir

    out = check_new_output_dir(out)
    if not pairs:
        raise InputError("no preference pairs: the feedback has no prompt answered both up and down", field="pairs")
    quiet_datasets(progress)
    # the fresh score head and the LoRA are drawn from the global generator before the trainer
    # seeds it: seed it first, so a reward model does not depend on what ran before in the process
    from transformers import set_seed

    set_seed(run.seed)
    model, tokenizer, ref, device = _load_classifier(run)
    cfg.check_targets(model)
    lora = cfg.lora_config("SEQ_CLS", modules_to_save=[SCORE_HEAD])
    # a pair is two sequences: the batch is split into passes of whole pairs that fit the budget
    pairs_per_pass, passes = micro_batches(cfg.batch_size, 1, 2 * longest_pair_tokens(tokenizer, pairs, cfg.max_length),
                                           run.micro_batch_tokens)
    with staged_dir(out) as stage:
        args = trl.RewardConfig(**trainer_args(cfg, run, stage, device, progress),
                                per_device_train_batch_size=pairs_per_pass, gradient_accumulation_steps=passes,
                                pad_to_multiple_of=run.pad_to_multiple_of, num_train_epochs=cfg.epochs,
                                max_length=cfg.max_length, data_seed=run.seed)
        trainer = trl.RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                                    processing_class=tokenizer, peft_config=lora)
        # The pair loss is each pass's mean, not a sum normalised by the step's item count, and the
        # classifier's forward takes **kwargs, so transformers would take it as scaled already: say
        # it is not, and each pass counts 1/passes of the step (the unsplit batch's gradient).
        trainer.loss_is_scaled_for_ga = False
        quiet(trainer, progress)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        scorer = RewardScorer(trainer.model, tokenizer, device)
        meta = {"kind": "lora_reward", "model": str(ref), "config": cfg.all_fields(), "run": run.meta(),
                "n_pairs": len(pairs),
                "steps": trainer.state.global_step, "seconds": seconds, "pairs_per_pass": pairs_per_pass,
                "passes_per_step": passes,
                "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
                "train_accuracy": scorer.pair_accuracy(pairs),
                "heldout_accuracy": scorer.pair_accuracy(eval_pairs) if eval_pairs else None,
                "n_heldout_pairs": len(eval_pairs or []),
                "heldout_truth": truth_agreement(scorer, truth_rows or [])}
        save_adapter(trainer, stage, meta)
    return meta


def longest_pair_tokens(tokenizer, pairs: list[dict], max_length: int) -> int:
    """Tokens of the longest side of any pair as the reward model reads it (chat template), at most
    ``max_length`` (the trainer truncates there)."""
    texts = [tokenizer.apply_chat_template(p["prompt"] + p[side], tokenize=False) for p in pairs for side in ("chosen", "rejected")]
    return min(max_length, max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts))


def train_reward_on_feedback(cfg: RewardConfig, run: TrainRun, rows: list[dict], out: str | Path,
                             progress: bool = True) -> dict:
    """A reward model from feedback rows (:mod:`characterlab.sycophancy.feedback`): the prompts split
    (``cfg.heldout`` of them held out, drawn with ``run.seed``), trained on the pairs of the rest,
    measured on the held-out pairs (the raters' labels) and on their truth (``correct``)."""
    from characterlab.sycophancy.feedback import preference_pairs, split_by_prompt

    train_rows, heldout_rows = split_by_prompt(rows, cfg.heldout, run.seed)
    return train_reward(cfg, run, preference_pairs(train_rows), out, eval_pairs=preference_pairs(heldout_rows),
                        truth_rows=heldout_rows, progress=progress)


def truth_agreement(scorer: RewardScorer, rows: list[dict]) -> dict | None:
    """Does the reward follow the truth? Over rated answers that know whether they are ``correct``:
    AUROC (a correct answer scores above an incorrect one) and the point-biserial correlation."""
    from scipy.stats import pointbiserialr
    from sklearn.metrics import roc_auc_score

    graded = [r for r in rows if "correct" in r]
    if not graded:
        return None
    scores = scorer.scores([r["messages"] for r in graded])
    truth = [int(r["correct"]) for r in graded]
    both = 0 < sum(truth) < len(truth)
    return {"n": len(graded), "n_correct": sum(truth), "auroc": float(roc_auc_score(truth, scores)) if both else None,
            "correlation": float(pointbiserialr(truth, scores).statistic) if both else None}


class RewardScorer:
    """Scores (prompt messages, answer) with a trained reward model."""

    def __init__(self, model, tokenizer, device, batch_size: int = 8):
        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size

    @classmethod
    def load(cls, base_model: str, adapter: str | Path) -> RewardScorer:
        from peft import PeftModel

        model, tokenizer, _, device = _load_classifier(TrainRun(model=base_model))
        return cls(PeftModel.from_pretrained(model, str(adapter)).to(device).eval(), tokenizer, device)

    def scores(self, conversations: list[list[dict]]) -> list[float]:
        import torch

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
        out: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(texts), self.batch_size):
                    enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                         add_special_tokens=False).to(self.device)
                    out += self.model(**enc).logits[:, 0].float().tolist()
        finally:
            self.model.train(was_training)
        return out

    def pair_accuracy(self, pairs: list[dict]) -> float | None:
        """The share of pairs whose chosen answer scores above the rejected one."""
        if not pairs:
            return None
        chosen = self.scores([p["prompt"] + p["chosen"] for p in pairs])
        rejected = self.scores([p["prompt"] + p["rejected"] for p in pairs])
        return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


@register_trainer
class RewardModelTrainer(Trainer):
    """A reward model learnt from simulated (or real) users' feedback: a LoRA and a score head."""

    method = "reward"
    title = "Train a reward model on a feedback file's preference pairs; report held-out accuracy on the raters' labels."
    config = RewardConfig
    reads = "feedback"
    data_option = "--feedback"
    uses = frozenset()
    organism = False  # a study learns it in a reward unit, read by an rlhf organism

    def train(self, cfg: RewardConfig, run: TrainRun, rows: list[dict], out: Path, progress: bool = True) -> dict:
        return train_reward_on_feedback(cfg, run, rows, out, progress=progress)

    def read_rows(self, path: Path, max_examples: int | None = None) -> list[dict]:
        from characterlab.sycophancy.feedback import read_feedback

        return read_feedback(path)

    def describe(self, meta: dict, out: Path) -> str:
        truth = meta["heldout_truth"]
        return (f"{meta['n_pairs']} pairs, {meta['steps']} steps; accuracy on the raters' labels: train "
                f"{meta['train_accuracy']:.2f}, held out "
                + ("–" if meta["heldout_accuracy"] is None else f"{meta['heldout_accuracy']:.2f}")
                + "; held-out score vs the truth: AUROC "
                + ("–" if truth is None or truth["auroc"] is None else f"{truth['auroc']:.2f}") + f" -> {out}")
