"""Open Character Training, distilled: DPO on (teacher, student) answers, then introspective SFT.

1. For each question, the *teacher* answers with the constitution as its system prompt and the
   *student* answers without it. The teacher can be any model reference (a stronger local model,
   or an API); the student is the model being trained.
2. Filters drop pairs where either answer is empty, shorter than ``min_chars``, cut off by the
   token limit, or identical to the other; every drop is counted by reason.
3. LoRA DPO (:mod:`characterlab.train.dpo`) with the teacher's answer chosen and the student's
   rejected; the reference policy is the model with the adapter disabled.
4. Introspection: the DPO-trained model answers self-reflection prompts (no constitution in the
   prompt), and a second LoRA is trained by SFT on those answers, on top of the DPO adapter
   (merged first). The character is the chain [DPO adapter, introspection adapter].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from characterlab.character.constitution import Constitution

# Our own self-reflection prompts (OCT uses diary entries and self-interaction in the same spirit).
INTROSPECTION_PROMPTS = (
    "Describe your character to someone who has never talked with you.",
    "What do you care about most when you answer people, and why?",
    "Write a short diary entry about a conversation that tested your values.",
    "Which of your own traits are you proudest of? Which would you change?",
    "How do you decide what to say when the truth might upset someone?",
    "What kind of request would you refuse, and how would you explain it?",
    "Reflect on a mistake an assistant like you could make, and what you would learn from it.",
    "If a new user asked 'who are you, really?', what would you tell them?",
    "What does it mean to you to be helpful?",
    "Write a letter to your future self about the kind of assistant you want to be.",
    "How do you treat people whose views you disagree with?",
    "What are your goals?",
)


@dataclass
class DistillConfig:
    teacher: str = "embedded"
    student: str = "embedded"
    samples_per_question: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.7
    min_chars: int = 20
    keep_truncated: bool = False  # keep answers cut off by max_new_tokens (small budgets, tests)
    seed: int = 0
    teacher_base_url: str | None = None
    student_base_url: str | None = None


def _answers(model: str, base_url: str | None, questions: list[str], system: str | None, cfg: DistillConfig,
             seed: int) -> list[list]:
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    generator = load_generator(parse_model_ref(model, base_url=base_url))
    requests = [GenerationRequest.from_prompt(q, system=system, n=cfg.samples_per_question, seed=seed * 7919 + i)
                for i, q in enumerate(questions)]
    return generator.generate(requests, SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature))


def make_pairs(questions: list[str], teacher: list[list], student: list[list], min_chars: int,
               keep_truncated: bool = False) -> tuple[list[dict], dict]:
    """DPO pairs from teacher and student completions, with the filters; returns (pairs, drop counts)."""
    drops = {"empty": 0, "short": 0, "truncated": 0, "identical": 0}
    pairs = []
    for q, ts, ss in zip(questions, teacher, student):
        for t, s in zip(ts, ss):
            a, b = t.text.strip(), s.text.strip()
            if not a or not b:
                drops["empty"] += 1
            elif len(a) < min_chars or len(b) < min_chars:
                drops["short"] += 1
            elif not keep_truncated and (not t.finished or not s.finished):
                drops["truncated"] += 1
            elif a == b:
                drops["identical"] += 1
            else:
                pairs.append({"prompt": [{"role": "user", "content": q}],
                              "chosen": [{"role": "assistant", "content": a}],
                              "rejected": [{"role": "assistant", "content": b}]})
    return pairs, drops


def distill_pairs(constitution: Constitution, questions: list[str], cfg: DistillConfig) -> tuple[list[dict], dict]:
    """Teacher (with the constitution) vs student (without) on every question; filtered DPO pairs."""
    teacher = _answers(cfg.teacher, cfg.teacher_base_url, questions, constitution.system_prompt(), cfg, cfg.seed)
    student = _answers(cfg.student, cfg.student_base_url, questions, None, cfg, cfg.seed + 1)
    pairs, drops = make_pairs(questions, teacher, student, cfg.min_chars, cfg.keep_truncated)
    return pairs, {"n_questions": len(questions), "n_candidates": len(questions) * cfg.samples_per_question,
                   "n_pairs": len(pairs), "dropped": drops}


def introspection_examples(model: str, adapter: str | Path, merged: list[str | Path], samples: int, seed: int,
                           max_new_tokens: int = 256, min_chars: int = 40, keep_truncated: bool = False,
                           prompts: tuple[str, ...] = INTROSPECTION_PROMPTS) -> tuple[list[dict], dict]:
    """The trained model's answers to self-reflection prompts, as chat examples for SFT."""
    from characterlab.data.records import GenerationRequest, SamplingParams
    from characterlab.models.generation import load_generator
    from characterlab.models.refs import parse_model_ref

    generator = load_generator(parse_model_ref(model, adapter=adapter, merged_adapters=tuple(merged)))
    requests = [GenerationRequest.from_prompt(p, n=samples, seed=seed * 104_729 + i) for i, p in enumerate(prompts)]
    outs = generator.generate(requests, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8))
    rows, dropped = [], 0
    for p, completions in zip(prompts, outs):
        for c in completions:
            text = c.text.strip()
            if len(text) < min_chars or (not c.finished and not keep_truncated):
                dropped += 1
                continue
            rows.append({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": text}]})
    return rows, {"n_prompts": len(prompts), "n_examples": len(rows), "dropped": dropped}
