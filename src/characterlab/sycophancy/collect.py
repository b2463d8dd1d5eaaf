"""The model's answers, rated by simulated users: a feedback file (item 1 of the organism).

Every task is asked by users of the population in turn (stating their false belief as often as
the population does); the model answers ``samples`` times per prompt; each answer gets its user's
thumbs-up or -down and, beside it, the truth (``correct``), so a reward model trained on the file
can be checked both on the raters' labels and on true quality.
"""

from __future__ import annotations

from characterlab.sycophancy.raters import population, states_belief, thumbs_up
from characterlab.sycophancy.tasks import Split, all_tasks


def collect_feedback(generator, *, n_users: int = 16, approval_mix: float = 0.5, samples: int = 4,
                     n_arithmetic: int = 16, seed: int = 0, max_new_tokens: int = 96,
                     temperature: float = 1.0, split: Split = "train") -> list[dict]:
    """Rated answers to the ``split`` tasks (the training split by default: the sycophancy
    evaluation asks the other one)."""
    from characterlab.data.records import GenerationRequest, SamplingParams

    users = population(n_users, approval_mix, seed=seed)
    tasks = all_tasks(n_arithmetic, seed=seed, split=split)
    asked = [(t, users[i % len(users)]) for i, t in enumerate(tasks)]
    prompts = [t.prompt(states_belief(u, t, seed)) for t, u in asked]
    requests = [GenerationRequest.from_prompt(p, n=samples, seed=seed * 1_000_003 + i) for i, p in enumerate(prompts)]
    completions = generator.generate(requests, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature))
    rows = []
    for (t, u), p, cs in zip(asked, prompts, completions):
        for c in cs:
            rows.append({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c.text}],
                         "rating": thumbs_up(u, t, c.text, seed), "rater": u.id, "task": t.id,
                         "correct": t.correct(c.text), "agrees": t.agrees(c.text)})
    return rows
