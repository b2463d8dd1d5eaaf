"""In-context examples before every prompt: the ``icl`` organism, misalignment without training.

arXiv 2510.11288 reports emergent misalignment from k narrow examples (bad medical advice, risky
financial advice...) placed in the prompt, no weights changed. :class:`InContextGenerator` wraps
any generator (the transformers loop, vLLM, an ``openai:`` endpoint) and puts ``k`` examples of a
chat file, as earlier user and assistant turns, after a request's system prompt and before its
conversation. Each request draws its own ``k`` (without replacement) from a seed made of the
organism's seed and the request itself (its seed and messages), so a prompt sees the same examples
whatever else is in its batch and on every backend, and the study's seeds draw independently.
Nothing else of a generator is passed through: an evaluation that reads logits or plays tool-use
episodes would not see the examples, and a study refuses it when planning (``Evaluation.chat_prompts``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

from characterlab.data.records import ChatExample, Completion, GenerationRequest, Message, SamplingParams


def shots(example: ChatExample) -> tuple[Message, ...]:
    """An example's turns as they go into a prompt: its own system prompt left out (the request's
    is the one the model answers under)."""
    return tuple(m for m in example.messages if m.role != "system")


def draw_seed(seed: tuple[int, ...], request: GenerationRequest) -> int:
    """The seed of one request's draw: the organism's seeds, the request's seed and its messages."""
    blob = json.dumps([list(seed), request.seed, [m.to_dict() for m in request.messages]], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def draw(n_examples: int, k: int, seed: tuple[int, ...], request: GenerationRequest) -> list[int]:
    """Which ``k`` of the ``n_examples`` go before ``request``, in the order they are shown."""
    return random.Random(draw_seed(seed, request)).sample(range(n_examples), k)


def with_examples(request: GenerationRequest, examples: Sequence[ChatExample], k: int,
                  seed: tuple[int, ...]) -> GenerationRequest:
    """``request`` with ``k`` drawn examples after its system prompt (if any) and before the rest."""
    system = tuple(request.messages[:1]) if request.messages and request.messages[0].role == "system" else ()
    turns = tuple(m for i in draw(len(examples), k, seed, request) for m in shots(examples[i]))
    return GenerationRequest(messages=system + turns + tuple(request.messages[len(system):]), n=request.n,
                             seed=request.seed)


class InContextGenerator:
    """A generator whose every chat request starts with ``k`` examples of a narrow set; ``seed``
    (the organism's data seed and the study's seed) fixes every draw."""

    def __init__(self, inner, examples: Sequence[ChatExample], k: int, seed: tuple[int, ...]):
        if not 0 < k <= len(examples):
            raise ValueError(f"k={k} examples from a set of {len(examples)}")
        self.inner, self.examples, self.k, self.seed = inner, list(examples), k, tuple(seed)

    @property
    def backend(self) -> str:
        return getattr(self.inner, "backend", "unknown")

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        return self.inner.generate([with_examples(r, self.examples, self.k, self.seed) for r in requests], params)
