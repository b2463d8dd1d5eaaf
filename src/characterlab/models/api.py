"""Generation through any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ollama, APIs).

The ``openai`` client does the retries (exponential backoff on 429/5xx/timeouts) and timeouts;
we add concurrency and per-sample seeds (servers that honour ``seed`` then reproduce samples).

An endpoint that hangs costs its timeout on every attempt (120 s x 7 by default), so the timeout
is the caller's to set (:func:`endpoint_timeout`: an argument, else ``CHARACTERLAB_API_TIMEOUT``),
and while requests are outstanding :class:`WaitNotice` prints a line on stderr every 15 s saying
how many were answered and retried. The judge's API backend uses the same client and notice.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from characterlab.data.records import (
    Completion,
    GenerationRequest,
    SamplingParams,
    sample_seed,
)
from characterlab.errors import InputError
from characterlab.models.refs import ModelRef

T = TypeVar("T")
R = TypeVar("R")

TIMEOUT_ENV = "CHARACTERLAB_API_TIMEOUT"
GENERATE_TIMEOUT_S = 120.0  # a long answer from a slow server
NOTICE_EVERY_S = 15.0


def endpoint_timeout(value: float | str | None = None, default: float = GENERATE_TIMEOUT_S,
                     field: str = "timeout") -> float:
    """Seconds one attempt at a request may take: ``value`` (an option or a spec's ``timeout:``), else
    ``$CHARACTERLAB_API_TIMEOUT``, else ``default``; anything but a positive finite number is an
    input error naming ``field`` (or the variable)."""
    if value is None and os.environ.get(TIMEOUT_ENV):
        value, field = os.environ[TIMEOUT_ENV], TIMEOUT_ENV
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"must be a number of seconds, got {value!r}", field=field) from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"must be a positive number of seconds, got {value!r}", field=field)
    return seconds


class WaitNotice:
    """A progress line on stderr while requests to one endpoint are outstanding.

    Silent when a batch is answered within ``every_s``; otherwise, every ``every_s`` seconds, how
    many requests were answered and how many attempts were retries (counted by an httpx request
    hook: every attempt the ``openai`` client sends passes it), so a hanging endpoint is seen at
    once instead of after minutes of timeouts and retries."""

    def __init__(self, endpoint: str, timeout_s: float, max_retries: int, every_s: float = NOTICE_EVERY_S,
                 stream: TextIO | None = None):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.every_s = every_s
        self.stream = stream
        self._lock = threading.Lock()
        self._attempts = self._started = self._answered = self._total = 0

    def on_request(self, request: Any) -> None:
        """httpx ``request`` event hook: one more attempt sent."""
        with self._lock:
            self._attempts += 1

    def line(self, waited_s: float) -> str:
        with self._lock:
            retries = max(0, self._attempts - self._started)
            answered, total = self._answered, self._total
        return (f"waiting for {self.endpoint}: {answered} of {total} requests answered, {retries} retried, "
                f"{waited_s:.0f} s so far (timeout {self.timeout_s:g} s an attempt, up to {self.max_retries + 1} "
                f"attempts; {TIMEOUT_ENV} sets the timeout)")

    def map(self, fn: Callable[[T], R], jobs: Iterable[T], max_workers: int) -> list[R]:
        """``fn`` over ``jobs`` in a thread pool, in order, with the notice running meanwhile."""
        jobs = list(jobs)

        def one(job: T) -> R:
            with self._lock:
                self._started += 1
            result = fn(job)
            with self._lock:
                self._answered += 1
            return result

        with self.running(len(jobs)), ThreadPoolExecutor(max_workers=max_workers) as pool:
            return list(pool.map(one, jobs))

    @contextmanager
    def running(self, total: int) -> Iterator[None]:
        """Count a batch of ``total`` requests and print the line every ``every_s`` until it ends."""
        with self._lock:
            self._attempts = self._started = self._answered = 0
            self._total = total
        stop = threading.Event()
        began = time.monotonic()

        def report() -> None:
            while not stop.wait(self.every_s):
                print(self.line(time.monotonic() - began), file=self.stream or sys.stderr, flush=True)

        thread = threading.Thread(target=report, name="endpoint-wait-notice", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def openai_client(base_url: str | None, timeout_s: float, max_retries: int, notice: WaitNotice,
                  api_key: str | None = None):
    """An ``openai.OpenAI`` client whose every attempt passes ``notice``'s counter."""
    from openai import DefaultHttpxClient, OpenAI

    return OpenAI(base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
                  api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
                  timeout=timeout_s, max_retries=max_retries,
                  http_client=DefaultHttpxClient(event_hooks={"request": [notice.on_request]}))


class OpenAIGenerator:
    backend = "openai"

    def __init__(
        self,
        ref: ModelRef,
        *,
        max_workers: int = 8,
        timeout_s: float | None = None,
        max_retries: int = 6,
        client=None,
        notice_every_s: float = NOTICE_EVERY_S,
    ):
        """``timeout_s``: seconds an attempt may take (None: :func:`endpoint_timeout`'s default)."""
        if ref.kind != "openai":
            raise InputError(f"{ref} is not an openai: reference", field="model")
        self.ref = ref
        self.max_workers = max_workers
        timeout_s = endpoint_timeout(timeout_s)
        self.notice = WaitNotice(f"{ref} at {ref.base_url or os.environ.get('OPENAI_BASE_URL') or 'the default URL'}",
                                 timeout_s, max_retries, every_s=notice_every_s)
        self.client = client if client is not None else openai_client(ref.base_url, timeout_s, max_retries, self.notice)

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
        done = self.notice.map(lambda job: self._one(job[0], job[1], job[2], params), jobs, self.max_workers)
        out: list[list[Completion]] = [[] for _ in requests]
        for c in done:
            out[c.request_index].append(c)
        return out
