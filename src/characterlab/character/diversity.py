"""How diverse is a set of questions, and how to build sets of equal size at chosen diversity.

Metrics (all computed on one question set):

* semantic (MiniLM sentence embeddings, cosine): ``mean_pairwise_distance`` (1 - cos, averaged
  over pairs; does not grow with set size), ``vendi_score`` (Friedman & Dieng 2023: the
  exponential of the entropy of the eigenvalues of the similarity matrix / n, "the effective
  number of distinct questions") and ``vendi_ratio`` (vendi / n), ``n_clusters`` (average-linkage
  clusters at cosine distance 0.5);
* lexical: ``distinct_1`` and ``distinct_2`` (unique word uni/bigrams over all of them);
* form: ``format_entropy`` and ``format_coverage`` over question forms (yes/no, wh-, request,
  statement, scenario + question, other), ``length_coverage`` over four length bands and
  ``length_cv`` (coefficient of variation of word counts).

``score`` is the mean of five of them, each in [0, 1]: mean pairwise distance, vendi ratio,
distinct-2, format entropy and length coverage. Semantic spread counts twice as much as any
other single aspect (two of the five terms measure it), because it is what a "diverse question
set" most means; the lexical and form terms separate paraphrase sets from genuinely varied ones.

Control: :func:`select_questions` picks ``size`` questions for one trait at a diversity
``level``: ``paraphrase`` (surface rewordings of two seed questions: the low end), ``cluster``
(one seed question and its nearest neighbours in a pool), ``random`` (a uniform sample of the
pool), ``farthest`` (greedy farthest-point selection: the high end); a configured model can grow
the pool first (:func:`generate_questions`).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVELS = ("paraphrase", "cluster", "random", "farthest")
FORMATS = ("yes_no", "wh", "request", "statement", "scenario", "other")
_AUX = {"is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "shall",
        "have", "has", "had", "may", "might", "must", "isn't", "aren't", "don't", "doesn't", "can't", "won't",
        "shouldn't", "wouldn't", "didn't"}
_WH = {"what", "why", "how", "which", "who", "whom", "whose", "when", "where"}
_REQUEST = {"tell", "write", "explain", "give", "help", "describe", "list", "rate", "translate", "summarise",
            "summarize", "convince", "be", "just", "please", "make", "pretend", "diagnose", "let's", "imagine",
            "suggest", "recommend", "compare", "name", "show", "find", "plan", "draft", "create"}
_SENTENCE = re.compile(r"[.!?]+(?:\s+|$)")
_WORD = re.compile(r"[a-z0-9']+")
CLUSTER_DISTANCE = 0.5


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def question_format(q: str) -> str:
    """A coarse form label; a multi-sentence question ending in '?' is a scenario."""
    text = q.strip()
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    w = words(text)
    if not w:
        return "other"
    if len(sentences) >= 2 and text.endswith("?"):
        return "scenario"
    if w[0] in _REQUEST:
        return "request"
    if not text.endswith("?"):
        return "statement"
    if w[0] in _WH:
        return "wh"
    if w[0] in _AUX:
        return "yes_no"
    return "other"


def _length_band(n_words: int) -> int:
    return 0 if n_words <= 8 else 1 if n_words <= 16 else 2 if n_words <= 32 else 3


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams = [tuple(w[i:i + n]) for t in texts for w in [words(t)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def vendi_score(emb: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K / n), K the cosine-similarity matrix (PSD)."""
    n = len(emb)
    if n == 0:
        return 0.0
    eig = np.clip(np.linalg.eigvalsh(emb @ emb.T / n), 0.0, None)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def n_clusters(emb: np.ndarray, threshold: float = CLUSTER_DISTANCE) -> int:
    if len(emb) < 2:
        return len(emb)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    z = linkage(np.clip(pdist(emb, "cosine"), 0.0, None), method="average")
    return int(fcluster(z, t=threshold, criterion="distance").max())


def _entropy(counts: Counter, k: int) -> float:
    total = sum(counts.values())
    h = -sum(c / total * math.log(c / total) for c in counts.values() if c)
    return h / math.log(k)


@dataclass
class DiversityReport:
    n_questions: int
    metrics: dict
    score: float

    def to_dict(self) -> dict:
        return {"n_questions": self.n_questions, "metrics": self.metrics, "score": self.score}


def diversity(questions: Sequence[str], encoder) -> DiversityReport:
    """Every metric of one question set; ``encoder`` is a :class:`~characterlab.models.embeddings.SentenceEncoder`."""
    qs = list(questions)
    n = len(qs)
    if n < 2:
        raise ValueError("diversity needs at least two questions")
    emb = encoder.encode(qs)
    sim = emb @ emb.T
    iu = np.triu_indices(n, 1)
    mpd = float(np.clip(1.0 - sim[iu], 0.0, 2.0).mean())
    vendi = vendi_score(emb)
    formats = Counter(question_format(q) for q in qs)
    lengths = [len(words(q)) for q in qs]
    bands = {_length_band(x) for x in lengths}
    mean_len = sum(lengths) / n
    metrics = {
        "mean_pairwise_distance": mpd,
        "vendi_score": vendi,
        "vendi_ratio": vendi / n,
        "n_clusters": n_clusters(emb),
        "distinct_1": distinct_n(qs, 1),
        "distinct_2": distinct_n(qs, 2),
        "format_entropy": _entropy(formats, len(FORMATS)),
        "format_coverage": len(formats) / len(FORMATS),
        "formats": dict(sorted(formats.items())),
        "length_coverage": len(bands) / 4,
        "length_cv": float(np.std(lengths) / mean_len) if mean_len else 0.0,
        "mean_words": mean_len,
    }
    parts = [min(1.0, mpd), metrics["vendi_ratio"], metrics["distinct_2"], metrics["format_entropy"],
             metrics["length_coverage"]]
    return DiversityReport(n, metrics, float(sum(parts) / len(parts)))


# -- control ----------------------------------------------------------------------------------

# Our own surface rewordings: they change the wrapping of a question, never what it asks.
PARAPHRASE_FRAMES = (
    "{q}",
    "Quick question: {q}",
    "{q} Please keep it short.",
    "Can I ask you something? {q}",
    "{q} I'd like your honest view.",
    "Something on my mind: {q}",
    "{q} Thanks in advance.",
    "Hi! {q}",
    "{q} What do you think?",
    "I've been wondering. {q}",
    "{q} Be straight with me.",
    "Hey, {q}",
)


def most_paraphrases(n_seed_questions: int) -> int:
    """How many questions the paraphrase level can make from ``n_seed_questions`` reworded ones (at
    most one per framing each): the bound a study is checked against when it is read."""
    return n_seed_questions * len(PARAPHRASE_FRAMES)


def paraphrase_set(seeds: Sequence[str], size: int) -> list[str]:
    """``size`` rewordings cycling over ``seeds`` (frame by frame), all distinct."""
    out: list[str] = []
    for frame in PARAPHRASE_FRAMES:
        for s in seeds:
            q = s.strip()
            text = frame.format(q=q[0].lower() + q[1:] if frame.startswith("Hey, ") else q)
            if text not in out:
                out.append(text)
            if len(out) == size:
                return out
    raise ValueError(f"only {len(out)} distinct paraphrases of {len(seeds)} seed question(s); ask for fewer")


def farthest_point(emb: np.ndarray, size: int, start: int) -> list[int]:
    chosen = [start]
    dist = 1.0 - emb @ emb[start]
    while len(chosen) < size:
        dist[chosen] = -np.inf
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - emb @ emb[nxt])
    return chosen


PARAPHRASE_SEEDS = 2  # pool questions the paraphrase level rewords unless told otherwise


def select_questions(pool: Sequence[str], size: int, level: str, encoder=None, seed: int = 0,
                     n_seed_questions: int = PARAPHRASE_SEEDS) -> list[str]:
    """``size`` questions from ``pool`` at diversity ``level`` (see :data:`LEVELS`), deterministic by
    seed. ``n_seed_questions`` is how many pool questions the ``paraphrase`` level rewords: more of
    them give a set between paraphrase and cluster (on good_character's candour pool, 16 questions:
    2 seeds 0.43, 4 0.54, 6 0.64, 8 0.70, against cluster 0.83), so a dose-response can have levels
    spread along the axis."""
    pool = list(dict.fromkeys(q for q in pool if q.strip()))
    if level not in LEVELS:
        raise ValueError(f"unknown diversity level {level!r}; choose from {', '.join(LEVELS)}")
    rng = random.Random(f"select:{level}:{seed}")
    if level == "paraphrase":
        return paraphrase_set(rng.sample(pool, min(n_seed_questions, len(pool))), size)
    if size > len(pool):
        raise ValueError(f"the pool has {len(pool)} questions; cannot select {size}")
    if level == "random":
        return rng.sample(pool, size)
    emb = encoder.encode(pool)
    start = rng.randrange(len(pool))
    if level == "cluster":
        order = np.argsort(-(emb @ emb[start]), kind="stable")
        return [pool[i] for i in order[:size]]
    return [pool[i] for i in farthest_point(emb, size, start)]


_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def parse_generated_questions(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        q = _LIST_MARK.sub("", line).strip().strip('"').strip()
        if len(words(q)) >= 3 and len(q) <= 400:
            out.append(q)
    return out


def generate_questions(trait: str, examples: Sequence[str], n: int, generator, seed: int = 0,
                       per_request: int = 10, max_new_tokens: int = 400) -> list[str]:
    """Grow a question pool with a model: ask for new questions that call for ``trait``, in the
    style of ``examples``; keeps distinct, well-formed lines until ``n`` are found (or 5 rounds)."""
    from characterlab.data.records import GenerationRequest, SamplingParams

    found: list[str] = []
    seen = set(examples)
    rng = random.Random(seed)
    for round_ in range(5):
        if len(found) >= n:
            break
        shown = rng.sample(list(examples), min(5, len(examples)))
        prompt = ("Here is a character trait of an AI assistant:\n" + trait + "\n\nExample questions a user might ask "
                  "that would reveal whether an assistant has this trait:\n" + "\n".join(f"- {q}" for q in shown)
                  + f"\n\nWrite {per_request} new questions like these, on different topics and in different forms "
                    "(short, long, requests, dilemmas). One per line, no numbering, nothing else.")
        k = max(1, math.ceil((n - len(found)) / per_request))
        [completions] = generator.generate([GenerationRequest.from_prompt(prompt, n=k, seed=seed * 1000 + round_)],
                                           SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0))
        for c in completions:
            for q in parse_generated_questions(c.text):
                if q not in seen:
                    seen.add(q)
                    found.append(q)
    return found[:n]


def expand_constitution(spec: str, trait: str, size: int, level: str, seed: int = 0, model: str | None = None,
                        generate: int = 0, base_url: str | None = None, paraphrase_seeds: int | None = None):
    """A one-trait constitution whose questions are a set of ``size`` at diversity ``level``, chosen
    from the trait's questions (plus ``generate`` new ones written by ``model``); returns it with
    the pool size and the chosen set's diversity."""
    from characterlab.character.constitution import (
        Constitution,
        Trait,
        read_constitution,
    )
    from characterlab.errors import InputError
    from characterlab.models.embeddings import SentenceEncoder

    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; choose from {', '.join(LEVELS)}", field="level")
    if generate and not model:
        raise InputError("--generate needs --model", field="model")
    if paraphrase_seeds is not None and level != "paraphrase":
        raise InputError("--paraphrase-seeds applies to --level paraphrase only", field="paraphrase_seeds")
    c = read_constitution(spec)
    t = c.trait(trait)
    pool = list(t.all_questions)
    if generate:
        from characterlab.models.generation import load_generator
        from characterlab.models.refs import parse_model_ref

        pool += generate_questions(t.trait, t.all_questions, generate, load_generator(parse_model_ref(model, base_url=base_url)),
                                   seed=seed)
    enc = SentenceEncoder()
    try:
        chosen = select_questions(pool, size, level, enc, seed=seed, n_seed_questions=paraphrase_seeds or PARAPHRASE_SEEDS)
    except ValueError as e:
        raise InputError(str(e), field="size") from None
    new = Constitution(name=f"{c.name}-{t.name or 'trait'}-{level}-{size}", traits=[Trait(t.trait, chosen, name=t.name)],
                       description=f"{size} questions for one trait of {c.source}, diversity level {level}"
                       f"{f' ({paraphrase_seeds or PARAPHRASE_SEEDS} questions reworded)' if level == 'paraphrase' else ''}"
                       f", seed {seed}")
    return new, len(pool), diversity(chosen, enc)
