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
from dataclasses import asdict, dataclass
from pathlib import Path

from characterlab.errors import InputError
from characterlab.train.base import (
    TrainConfig,
    check_new_output_dir,
    micro_batches,
    quiet,
    quiet_datasets,
    save_adapter,
    trainer_args,
)

SCORE_HEAD = "score"


@dataclass
class LoraRewardConfig(TrainConfig):
    epochs: float = 1.0
    batch_size: int = 8
    max_length: int = 512

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "epochs": self.epochs > 0, "batch_size": self.batch_size >= 1,
                "max_length": self.max_length >= 8}


def _load_classifier(cfg: LoraRewardConfig):
    """The base model as a one-output sequence classifier, and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from characterlab.models.hardware import parse_dtype
    from characterlab.models.local import hub_allowed, load_tokenizer, resolve_model_path
    from characterlab.models.refs import parse_model_ref

    ref = parse_model_ref(cfg.model)
    if not ref.is_local:
        raise InputError("a reward model trains a local model (embedded or hf:)", field="model")
    if cfg.adapter or cfg.merged_adapters:
        raise InputError("a reward model starts from a base model; adapters are not stacked under it", field="adapter")
    path = resolve_model_path(ref)
    tokenizer = load_tokenizer(path, padding_side="right")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=parse_dtype(cfg.dtype, device), local_files_only=not hub_allowed())
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer, ref, device


def train_reward(cfg: LoraRewardConfig, pairs: list[dict], out: str | Path, *, eval_pairs: list[dict] | None = None,
                 truth_rows: list[dict] | None = None, progress: bool = True) -> dict:
    """Train on ``pairs``; write the adapter (with its head) and ``train_meta.json``; return the meta,
    with the accuracy on ``eval_pairs`` (held out) when given, and how the scores of ``truth_rows``
    (rated answers that know whether they are ``correct``) track the truth."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    from characterlab.data.files import staged_dir

    out = check_new_output_dir(out)
    if not pairs:
        raise InputError("no preference pairs: the feedback has no prompt answered both up and down", field="pairs")
    quiet_datasets(progress)
    # the fresh score head and the LoRA are drawn from the global generator before the trainer
    # seeds it: seed it first, so a reward model does not depend on what ran before in the process
    from transformers import set_seed

    set_seed(cfg.seed)
    model, tokenizer, ref, device = _load_classifier(cfg)
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="SEQ_CLS", modules_to_save=[SCORE_HEAD])
    # a pair is two sequences: the batch is split into passes of whole pairs that fit the budget
    pairs_per_pass, passes = micro_batches(cfg.batch_size, 1, 2 * longest_pair_tokens(tokenizer, pairs, cfg.max_length),
                                           cfg.micro_batch_tokens)
    with staged_dir(out) as stage:
        args = RewardConfig(**trainer_args(cfg, stage, device, progress), per_device_train_batch_size=pairs_per_pass,
                            gradient_accumulation_steps=passes, pad_to_multiple_of=cfg.pad_to_multiple_of,
                            num_train_epochs=cfg.epochs, max_length=cfg.max_length, data_seed=cfg.seed)
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                                peft_config=lora)
        # The pair loss is each pass's mean, not a sum normalised by the step's item count, and the
        # classifier's forward takes **kwargs, so transformers would take it as scaled already: say
        # it is not, and each pass counts 1/passes of the step (the unsplit batch's gradient).
        trainer.loss_is_scaled_for_ga = False
        quiet(trainer, progress)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        scorer = RewardScorer(trainer.model, tokenizer, device)
        meta = {"kind": "lora_reward", "model": str(ref), "config": asdict(cfg), "n_pairs": len(pairs),
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


def train_reward_on_feedback(cfg: LoraRewardConfig, train_rows: list[dict], heldout_rows: list[dict], out: str | Path,
                             progress: bool = True) -> dict:
    """A reward model from feedback rows (:mod:`characterlab.sycophancy.feedback`): trained on the
    pairs of ``train_rows``, measured on ``heldout_rows``' pairs (the raters' labels) and on their
    truth (``correct``)."""
    from characterlab.sycophancy.feedback import preference_pairs

    return train_reward(cfg, preference_pairs(train_rows), out, eval_pairs=preference_pairs(heldout_rows),
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

        model, tokenizer, _, device = _load_classifier(LoraRewardConfig(model=base_model))
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
