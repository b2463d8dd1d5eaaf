"""Generation through any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ollama, APIs).

The ``openai`` client does the retries (exponential backoff on 429/5xx/timeouts) and timeouts;
we add concurrency and per-sample seeds (servers that honour ``seed`` then reproduce samples).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from characterlab.data.records import (
    Completion,
    GenerationRequest,
    SamplingParams,
    sample_seed,
)
from characterlab.errors import InputError
from characterlab.models.refs import ModelRef


class OpenAIGenerator:
    backend = "openai"

    def __init__(
        self,
        ref: ModelRef,
        *,
        max_workers: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        client=None,
    ):
        if ref.kind != "openai":
            raise InputError(f"{ref} is not an openai: reference", field="model")
        self.ref = ref
        self.max_workers = max_workers
        if client is None:
            from openai import OpenAI

            client = OpenAI(
                base_url=ref.base_url or os.environ.get("OPENAI_BASE_URL"),
                api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
                timeout=timeout_s,
                max_retries=max_retries,
            )
        self.client = client

    def _one(self, request_index: int, request: GenerationRequest, j: int, params: SamplingParams) -> Completion:
        seed = sample_seed(request.seed, j)
        resp = self.client.chat.completions.create(
            model=self.ref.name,
            messages=[m.to_dict() for m in request.messages],
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=seed % (2**31),
        )
        choice = resp.choices[0]
        usage = getattr(resp, "usage", None)
        return Completion(
            text=(choice.message.content or "").strip(),
            request_index=request_index,
            sample_index=j,
            seed=seed,
            n_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finished=choice.finish_reason == "stop",
        )

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        jobs = [(i, req, j) for i, req in enumerate(requests) for j in range(req.n)]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            done = list(pool.map(lambda job: self._one(job[0], job[1], job[2], params), jobs))
        out: list[list[Completion]] = [[] for _ in requests]
        for c in done:
            out[c.request_index].append(c)
        return out
