"""Batched sampling from local models, reproducible per sample, with a decode loop of our own.

Why not ``model.generate``: it samples every row from one global generator, so a sample's text
would depend on what else shares its batch, and on a CPU its per-step work on the full
vocabulary (fp32 copies of the logits, a logits-processor pipeline, argmax over processed
scores) cost more than the model itself at batch 128. The loop here is the standard one for a
decoder-only model: a prefill of the left-padded prompts with explicit position ids, then one
token per step through a :class:`~characterlab.models.kv_cache.GrowingCache`. Each row draws
from its own random stream (:class:`SeededSampler`), so sample ``j`` of a request with seed ``s``
gives the same text alone or in any batch (up to floating-point differences between batch
shapes). Greedy decoding matches ``generate`` token for token (a test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from characterlab.data.records import (
    Completion,
    GenerationRequest,
    SamplingParams,
    sample_seed,
)
from characterlab.models.kv_cache import GrowingCache
from characterlab.models.local import LocalModel, load_local_model, render_chat, unwrap_adapter

DEFAULT_BATCH_TOKENS = 128 * 320  # KV-cache slots per batch: 128 rows of 320 tokens


class Generator(Protocol):
    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        """For each request, its ``n`` completions in sample order."""
        ...


class SeededSampler:
    """Picks each row's next token from its own random stream (temperature, top-p).

    Each row draws all its uniforms up front, one per step, from a generator seeded with the
    row's seed, and picks its token by inverting the cumulative distribution at that uniform:
    one random number per row and step, vectorised over the batch. (``torch.multinomial`` with a
    generator per row, which this replaced, draws an exponential per vocabulary entry: 49k per
    row and step, a quarter of the decode time at batch 64.) The weights are computed in place
    on one fp32 copy of the logits, because on this kind of machine each fresh full-vocabulary
    tensor costs more in page faults than in arithmetic.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, max_new_tokens: int = 1024):
        self.uniforms = torch.stack([
            torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in seeds
        ])
        self.temperature = temperature
        self.top_p = top_p
        self.step = 0
        self._weights: torch.Tensor | None = None

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of every row, ``(rows,)``, from that row's ``(rows, vocab)`` logits."""
        if self.step >= self.uniforms.shape[1]:
            raise RuntimeError(f"SeededSampler was built for {self.uniforms.shape[1]} steps")
        if self._weights is None or self._weights.shape != logits.shape:
            self._weights = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        weights = self._weights.copy_(logits)  # one buffer for every step
        weights.div_(self.temperature)
        order = None
        if self.top_p < 1.0:
            weights, order = torch.sort(weights, dim=-1, descending=True)
        weights.sub_(weights.amax(dim=-1, keepdim=True)).exp_()
        if order is not None:
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            mass = weights.cumsum(dim=-1)
            weights.masked_fill_(mass - weights >= self.top_p * mass[:, -1:], 0.0)
        u = self.uniforms[:, self.step].to(weights.device)
        self.step += 1
        picks = inverse_cdf(weights, u)
        if order is not None:
            picks = order.gather(1, picks)
        return picks[:, 0]


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Index ``i`` per row with ``cdf[i-1] <= u * total < cdf[i]`` (``weights`` need not sum to 1).

    Returns a ``(rows, 1)`` tensor. Two levels, so no full-vocabulary cumulative sum is needed (a
    float64 cumsum over 128 x 49k took 68 ms a step): the row's weight is summed per block of
    ``block`` entries, the block that holds the point is found on the cumulative block sums (in
    float64), and only that block is accumulated.
    """
    rows, vocab = weights.shape
    n_blocks = -(-vocab // block)
    if vocab % block:
        weights = torch.nn.functional.pad(weights, (0, n_blocks * block - vocab))
    padded = weights.view(rows, n_blocks, block)
    block_cdf = padded.sum(dim=-1).double().cumsum(dim=-1)
    target = (u.double() * block_cdf[:, -1])[:, None]
    b = torch.searchsorted(block_cdf, target, right=True).clamp_(max=n_blocks - 1)
    before = torch.where(b > 0, block_cdf.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
    inner_cdf = padded[torch.arange(rows), b[:, 0]].double().cumsum(dim=-1) + before
    i = torch.searchsorted(inner_cdf, target, right=True).clamp_(max=block - 1)
    return (b * block + i).clamp_(max=vocab - 1)


class LocalGenerator:
    """Batched generation for a :class:`LocalModel`.

    Rows are sorted by prompt length before batching so padding stays small, then put back in
    request order. A batch holds at most ``batch_size`` rows and at most ``max_batch_tokens``
    cache slots (rows x (prompt + new tokens)): large batches keep the CPU's matmuls efficient
    (batch 128 decodes ~1.2x faster per token than 48), and the slot budget keeps the KV cache
    of long prompts (coding tasks) within a fixed memory (~1 GB for SmolLM2-135M).
    """

    def __init__(self, local: LocalModel, batch_size: int = 128, progress: bool = False,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS):
        self.local = local
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.progress = progress
        tok = local.tokenizer
        gen_cfg = local.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        use_decode_attention(local.model)

    backend = "hf"

    @property
    def tokenizer(self):
        return self.local.tokenizer

    def render(self, request: GenerationRequest) -> str:
        return render_chat(self.local.tokenizer, request)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        tok = self.local.tokenizer
        rows: list[tuple[int, int, int, list[int]]] = []  # (request, sample, seed, prompt ids)
        for i, req in enumerate(requests):
            ids = tok(self.render(req), add_special_tokens=False)["input_ids"]
            for j in range(req.n):
                rows.append((i, j, sample_seed(req.seed, j), ids))
        return self._run(rows, [req.n for req in requests], params)

    def complete(self, prompts: Sequence[str], seeds: Sequence[int], params: SamplingParams) -> list[Completion]:
        """One completion of each prompt text, already rendered (an agent's conversation with its
        tools), sampled with its own seed."""
        tok = self.local.tokenizer
        rows = [(i, 0, seed, tok(p, add_special_tokens=False)["input_ids"]) for i, (p, seed) in enumerate(zip(prompts, seeds))]
        return [per[0] for per in self._run(rows, [1] * len(rows), params)]

    def _run(self, rows: list[tuple[int, int, int, list[int]]], n: list[int], params: SamplingParams) -> list[list[Completion]]:
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][3]))
        results: list[list[Completion | None]] = [[None] * k for k in n]
        batches = self._batches([len(rows[r][3]) for r in order], params.max_new_tokens)
        batches = [[order[k] for k in b] for b in batches]
        for batch in self._progress(batches):
            for r, completion in zip(batch, self._generate_batch([rows[r] for r in batch], params)):
                results[rows[r][0]][rows[r][1]] = completion
        return [[c for c in per if c is not None] for per in results]

    def _batches(self, lengths: list[int], max_new_tokens: int) -> list[list[int]]:
        """Consecutive index ranges over ``lengths`` (longest first) within both batch limits."""
        batches: list[list[int]] = []
        for k in range(len(lengths)):
            if batches and len(batches[-1]) < self.batch_size and \
                    (len(batches[-1]) + 1) * (lengths[batches[-1][0]] + max_new_tokens) <= self.max_batch_tokens:
                batches[-1].append(k)
            else:
                batches.append([k])
        return batches

    def _progress(self, batches: list[list[int]]):
        if not self.progress or len(batches) < 2:
            yield from batches
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("generating", total=sum(len(b) for b in batches))
            for b in batches:
                yield b
                bar.advance(task, len(b))

    @torch.inference_mode()
    def _generate_batch(self, rows, params: SamplingParams) -> list[Completion]:
        tok = self.local.tokenizer
        new = decode(self.local.model, [r[3] for r in rows], [r[2] for r in rows], params,
                     pad_id=tok.pad_token_id, eos_ids=self.eos_ids, device=self.local.device)
        completions = []
        for (i, j, seed, _), ids in zip(rows, new):
            finished = bool(ids) and ids[-1] in self.eos_ids  # decode stops each row at its first end token
            completions.append(
                Completion(
                    text=tok.decode(ids[:-1] if finished else ids, skip_special_tokens=True).strip(),
                    request_index=i,
                    sample_index=j,
                    seed=seed,
                    n_tokens=len(ids),
                    finished=finished,
                )
            )
        return completions


@torch.inference_mode()
def decode(model, prompts: Sequence[Sequence[int]], seeds: Sequence[int], params: SamplingParams, *, pad_id: int,
           eos_ids: set[int], device=None, cache=None) -> list[list[int]]:
    """New token ids of every prompt (up to and including its first end token), decoded as one batch.

    Prompts are left-padded; position ids count real tokens only, so a row decodes as it would
    alone. The prompt's last token goes through the whole model like every later one, so the
    model's own head (and any scaling or soft-capping it applies) makes every logit. ``cache``
    defaults to a :class:`GrowingCache` (tests pass a plain ``DynamicCache``).
    """
    input_ids, attention = left_pad(prompts, pad_id, device)
    width = input_ids.shape[1]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = cache if cache is not None else GrowingCache(reserve=params.max_new_tokens)
    sampler = (SeededSampler(seeds, params.temperature, params.top_p, params.max_new_tokens)
               if params.temperature > 0 else None)
    eos = torch.tensor(sorted(eos_ids), device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    if width > 1:  # every prompt token but the last fills the cache; no logits are needed for them
        _decoder(model)(input_ids=input_ids[:, :-1], attention_mask=attention[:, :-1], position_ids=positions[:, :-1],
                        past_key_values=cache, use_cache=True)
    logits = model(input_ids=input_ids[:, -1:], attention_mask=attention, position_ids=positions[:, -1:],
                   past_key_values=cache, use_cache=True).logits[:, -1, :]
    for step in range(params.max_new_tokens):
        nxt = sampler.pick(logits) if sampler is not None else logits.argmax(dim=-1)
        nxt = nxt.masked_fill(finished, pad_id)
        steps.append(nxt)
        finished |= torch.isin(nxt, eos)
        if step == params.max_new_tokens - 1 or bool(finished.all()):
            break
        attention = torch.cat([attention, attention.new_ones((len(prompts), 1))], dim=1)
        positions = positions[:, -1:] + 1
        logits = model(input_ids=nxt[:, None], attention_mask=attention, position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
    out = torch.stack(steps, dim=1).tolist()
    return [through_first_end(ids, eos_ids) for ids in out]


def use_decode_attention(model) -> None:
    """Switch an SDPA model to :mod:`characterlab.models.attention` (same results, faster decode steps)."""
    from characterlab.models.attention import NAME

    base = unwrap_adapter(model)
    if getattr(base.config, "_attn_implementation", None) == "sdpa":
        base.set_attn_implementation(NAME)


def _decoder(model):
    """The model's decoder stack (adapters included), without the LM head.

    The prefill runs through it so that no logits are computed for prompt tokens. Asking the
    whole model for the last position's logits (``logits_to_keep=1``) slices the hidden states
    into a non-contiguous ``[batch, 1, hidden]``; with a frozen head (any PEFT model) PyTorch's
    ``linear`` then expands the head's weight to ``[batch, hidden, vocab]`` for a batched matmul:
    6 GB for 108 prompts on SmolLM2, the peak memory of a whole study.
    """
    return unwrap_adapter(model).get_decoder()


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``prompts``, padded on the left to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


def through_first_end(ids: list[int], eos_ids: set[int]) -> list[int]:
    end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
    return ids if end is None else ids[: end + 1]


def load_generator(ref, *, batch_size: int = 128, progress: bool = False, dtype=None, device=None,
                   backend: str = "auto", needs_internals: bool = False, timeout: float | None = None) -> Generator:
    """A :class:`Generator` for any model reference, on the backend
    :func:`~characterlab.models.backend.choose_backend` picks (``needs_internals``: the caller
    reads hooks or logits, which only the transformers loop gives). ``timeout``: seconds one
    attempt at an endpoint's request may take (an ``openai:`` model only; None:
    :func:`~characterlab.models.api.endpoint_timeout`'s default)."""
    from characterlab.models.backend import choose_backend

    choice = choose_backend(ref, backend, needs_internals=needs_internals)
    if choice.name == "openai":
        from characterlab.models.api import OpenAIGenerator

        return OpenAIGenerator(ref, timeout_s=timeout)
    if choice.name == "vllm":
        from characterlab.models.vllm_generator import VLLMGenerator

        return VLLMGenerator(ref, progress=progress)
    return LocalGenerator(load_local_model(ref, dtype=dtype, device=device), batch_size=batch_size, progress=progress)
