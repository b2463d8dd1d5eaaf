"""Best-of-n against a reward model: the cheap optimisation whose Goodhart curve needs no RL.

For every prompt (each task asked with the user's false belief, the setting where pleasing and
being right come apart) the policy samples ``max(ns)`` answers once; for each n the first n samples
are ranked by the reward model and the best is kept. As n grows the kept answers' reward rises by
construction; whether their *true* accuracy rises with it, or falls while agreement with the user
rises, is the Goodhart curve (Gao et al. 2023 measure reward-model overoptimisation the same way).
Each point carries the KL bound of best-of-n, ``log n - (n - 1) / n`` nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from characterlab.stats import wilson_interval
from characterlab.sycophancy.tasks import Task


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || policy) upper bound in nats (Stiennon et al. 2020)."""
    return math.log(n) - (n - 1) / n


def best_of_n_curve(generator, score: Callable[[list[list[dict]]], list[float]], tasks: Sequence[Task],
                    ns: Sequence[int] = (1, 2, 4, 8, 16), seed: int = 0, max_new_tokens: int = 96,
                    temperature: float = 1.0) -> list[dict]:
    """One point per n: mean reward of the kept answers, their true accuracy and agreement rate."""
    from characterlab.data.records import GenerationRequest, SamplingParams

    if sorted(ns) != list(ns) or ns[0] < 1:
        raise ValueError("ns must be increasing and start at 1 or more")
    top = ns[-1]
    prompts = [t.prompt(with_belief=True) for t in tasks]
    requests = [GenerationRequest.from_prompt(p, n=top, seed=seed * 1_000_003 + i) for i, p in enumerate(prompts)]
    samples = [[c.text for c in cs] for cs in generator.generate(requests, SamplingParams(max_new_tokens=max_new_tokens,
                                                                                            temperature=temperature))]
    rewards = score([[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
                     for p, answers in zip(prompts, samples) for a in answers])
    per_task = [rewards[i * top:(i + 1) * top] for i in range(len(tasks))]
    points = []
    for n in ns:
        kept = [max(range(n), key=lambda j, r=r: r[j]) for r in per_task]
        answers = [samples[i][j] for i, j in enumerate(kept)]
        correct = sum(t.correct(a) for t, a in zip(tasks, answers))
        agrees = sum(t.agrees(a) for t, a in zip(tasks, answers))
        points.append({"n": n, "kl_bound": best_of_n_kl(n),
                       "reward": sum(per_task[i][j] for i, j in enumerate(kept)) / len(tasks),
                       "accuracy": {"k": correct, "n": len(tasks), **wilson_interval(correct, len(tasks)).to_dict()},
                       "agreement": {"k": agrees, "n": len(tasks), **wilson_interval(agrees, len(tasks)).to_dict()}})
    return points
