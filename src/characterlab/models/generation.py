"""Batched sampling from local models, reproducible per sample.

transformers' ``generate`` does the heavy lifting (left padding, KV cache, stopping). What it
lacks is a random stream per row: sampling draws from one global generator, so a sample's text
depends on what else shares its batch. :class:`SeededSampler` fills that gap: it runs last in the
logits-processor chain, draws each row's token with that row's own ``torch.Generator`` and hands
greedy decoding a one-hot choice. Sample ``j`` of a request with seed ``s`` therefore gives the
same text alone or in any batch (up to floating-point differences between batch shapes).
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
from characterlab.models.local import LocalModel, load_local_model


class Generator(Protocol):
    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        """For each request, its ``n`` completions in sample order."""
        ...


class SeededSampler:
    """Logits processor that samples every row from its own generator (temperature, top-p).

    Returns scores that are 0 at the chosen token and -inf elsewhere, so the greedy step of
    ``generate`` picks exactly the token we sampled.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            drop = (probs.cumsum(dim=-1) - probs) >= self.top_p
            probs = probs.masked_fill(drop, 0.0)
        else:
            order = None
            probs = torch.softmax(logits, dim=-1)
        probs = probs.cpu()
        picks = torch.empty(len(self.generators), dtype=torch.long)
        for row, gen in enumerate(self.generators):
            picks[row] = torch.multinomial(probs[row], 1, generator=gen)[0]
        picks = picks.to(scores.device)
        if order is not None:
            picks = order.gather(1, picks[:, None])[:, 0]
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picks[:, None], 0.0)
        return out


class LocalGenerator:
    """Batched generation for a :class:`LocalModel`.

    Rows are sorted by prompt length before batching so padding stays small, then put back in
    request order.
    """

    def __init__(self, local: LocalModel, batch_size: int = 32, progress: bool = False):
        self.local = local
        self.batch_size = batch_size
        self.progress = progress
        tok = local.tokenizer
        gen_cfg = local.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def render(self, request: GenerationRequest) -> str:
        msgs = [m.to_dict() for m in request.messages]
        return self.local.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        tok = self.local.tokenizer
        rows: list[tuple[int, int, int, list[int]]] = []  # (request, sample, seed, prompt ids)
        for i, req in enumerate(requests):
            ids = tok(self.render(req), add_special_tokens=False)["input_ids"]
            for j in range(req.n):
                rows.append((i, j, sample_seed(req.seed, j), ids))
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][3]))
        results: list[list[Completion | None]] = [[None] * req.n for req in requests]
        batches = [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        for batch in self._progress(batches):
            for r, completion in zip(batch, self._generate_batch([rows[r] for r in batch], params)):
                results[rows[r][0]][rows[r][1]] = completion
        return [[c for c in per if c is not None] for per in results]

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
        from transformers import GenerationConfig, LogitsProcessorList

        tok, model = self.local.tokenizer, self.local.model
        width = max(len(r[3]) for r in rows)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r[3])) + r[3] for r in rows], device=self.local.device)
        attention = torch.tensor([[0] * (width - len(r[3])) + [1] * len(r[3]) for r in rows], device=self.local.device)
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=pad,
            use_cache=True,
        )
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(SeededSampler([r[2] for r in rows], params.temperature, params.top_p))
        out = model.generate(
            input_ids=input_ids, attention_mask=attention, generation_config=config, logits_processor=processors
        )
        new = out[:, width:].tolist()
        completions = []
        for (i, j, seed, _), ids in zip(rows, new):
            end = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
            kept = ids if end is None else ids[:end]
            completions.append(
                Completion(
                    text=tok.decode(kept, skip_special_tokens=True).strip(),
                    request_index=i,
                    sample_index=j,
                    seed=seed,
                    n_tokens=len(kept) + (0 if end is None else 1),
                    finished=end is not None,
                )
            )
        return completions


def load_generator(ref, *, batch_size: int = 32, progress: bool = False, dtype=None, device=None) -> Generator:
    """A :class:`Generator` for any model reference."""
    if ref.kind == "openai":
        from characterlab.models.api import OpenAIGenerator

        return OpenAIGenerator(ref)
    return LocalGenerator(load_local_model(ref, dtype=dtype, device=device), batch_size=batch_size, progress=progress)
