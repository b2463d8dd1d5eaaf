"""The GPU path, checked on one CUDA machine in a few minutes; prints one JSON object.

    python bench/gpu_check.py [--model embedded] [--out gpu_check.json]

What it measures (each part says "skipped" with the reason when it cannot run):

1. ``cuda``: the device, torch and vLLM versions, bf16 support.
2. ``hf_vs_vllm``: greedy replies of the same weights in fp32 from the transformers loop on CUDA and
   from vLLM, to 8 chat prompts, 48 new tokens: the share of replies that are equal, and the mean
   share of tokens before the first difference.
3. ``hf_vs_vllm_lora``: the same with a random rank-8 LoRA on the attention projections, served by
   vLLM as a LoRA and by PEFT on the transformers side (the adapter path studies use).
4. ``sft_cuda_vs_cpu``: 6 steps of LoRA SFT in fp32 on CUDA and on the CPU (a subprocess with no
   visible GPU): both loss curves and their largest difference.
5. ``bf16_generation``: tokens/s of the transformers loop and of vLLM on 64 sampled replies.

Greedy decoding can part where two tokens' logits are within rounding of each other, so equal
weights need not give equal text on different kernels; fp32 keeps such ties rare, and the prefix
share says how far the two agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "How do I boil an egg?",
           "Name three prime numbers.", "What should I do if I feel bored?", "Explain gravity to a child.",
           "Give me one tip for learning to code.", "If you ruled the world, what would you do?"]


def _requests(n: int = 1):
    from characterlab.data.records import GenerationRequest, Message

    return [GenerationRequest((Message("user", p),), n=n, seed=i) for i, p in enumerate(PROMPTS)]


def _agreement(a: list[str], b: list[str], tokenizer) -> dict:
    prefix = []
    for x, y in zip(a, b):
        tx, ty = tokenizer(x)["input_ids"], tokenizer(y)["input_ids"]
        k = next((i for i, (p, q) in enumerate(zip(tx, ty)) if p != q), min(len(tx), len(ty)))
        prefix.append(k / max(len(tx), len(ty), 1))
    return {"equal": sum(x == y for x, y in zip(a, b)) / len(a), "mean_prefix_share": sum(prefix) / len(prefix),
            "examples": [{"hf": x, "vllm": y} for x, y in list(zip(a, b))[:2]]}


def _parity(ref, dtype) -> dict:
    import torch

    from characterlab.data.records import SamplingParams
    from characterlab.models.generation import LocalGenerator
    from characterlab.models.local import load_local_model
    from characterlab.models.vllm_generator import VLLMGenerator

    params = SamplingParams(max_new_tokens=48, temperature=0.0)
    hf = LocalGenerator(load_local_model(ref, dtype=torch.float32, device="cuda"))
    hf_text = [per[0].text for per in hf.generate(_requests(), params)]
    tokenizer = hf.tokenizer
    del hf
    torch.cuda.empty_cache()
    vllm = VLLMGenerator(ref, dtype=dtype, gpu_memory_utilization=0.3)
    vllm_text = [per[0].text for per in vllm.generate(_requests(), params)]
    del vllm
    return _agreement(hf_text, vllm_text, tokenizer)


def _random_lora(ref, folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from characterlab.models.local import load_local_model

    torch.manual_seed(0)
    base = load_local_model(ref, dtype=torch.float32, device="cpu").model
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights="gaussian"))
    with torch.no_grad():  # a visible but modest change: B drawn small instead of zero
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    lora.save_pretrained(folder)
    return folder


def _sft_losses(model: str, data: Path, out: Path) -> list[float]:
    from characterlab.train.base import TrainRun
    from characterlab.train.sft import SFTConfig, train_sft

    cfg = SFTConfig(epochs=1, batch_size=4, max_length=256)
    meta = train_sft(cfg, TrainRun(model=model, dtype="fp32", seed=0), str(data), out, progress=False).meta
    return [round(float(p["loss"]), 5) for p in meta["loss_curve"]]


def _throughput(ref) -> dict:
    import torch

    from characterlab.data.records import SamplingParams
    from characterlab.models.generation import LocalGenerator
    from characterlab.models.local import load_local_model
    from characterlab.models.vllm_generator import VLLMGenerator

    params = SamplingParams(max_new_tokens=128, temperature=1.0)
    out = {}
    for name, make in (("hf", lambda: LocalGenerator(load_local_model(ref, device="cuda"))),
                       ("vllm", lambda: VLLMGenerator(ref, gpu_memory_utilization=0.3))):
        try:
            gen = make()
        except Exception as e:  # noqa: BLE001 - report and go on
            out[name] = f"skipped: {type(e).__name__}: {e}"
            continue
        t0 = time.time()
        done = gen.generate(_requests(8), params)
        seconds = time.time() - t0
        out[name] = {"tokens_per_s": round(sum(c.n_tokens for per in done for c in per) / seconds, 1),
                     "seconds": round(seconds, 2)}
        del gen
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sft-data", type=Path, default=None, help="chat JSONL (default: 24 written examples)")
    parser.add_argument("--cpu-sft", action="store_true", help=argparse.SUPPRESS)  # the CPU half of part 4
    args = parser.parse_args()
    if args.cpu_sft:
        with tempfile.TemporaryDirectory() as wd:
            print(json.dumps(_sft_losses(args.model, args.sft_data, Path(wd) / "a")))
        return

    import torch

    from characterlab.models.backend import vllm_installed
    from characterlab.models.refs import ModelRef, parse_model_ref

    report: dict = {"model": args.model}
    if not torch.cuda.is_available():
        report["cuda"] = "skipped: no CUDA device"
        print(json.dumps(report, indent=2))
        return
    report["cuda"] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                      "bf16": torch.cuda.is_bf16_supported()}
    ref = parse_model_ref(args.model)
    with tempfile.TemporaryDirectory() as wd:
        wd = Path(wd)
        if vllm_installed():
            import vllm

            report["cuda"]["vllm"] = vllm.__version__
            for key, make_ref in (("hf_vs_vllm", lambda: ref),
                                  ("hf_vs_vllm_lora", lambda: ModelRef(ref.kind, ref.name, _random_lora(ref, wd / "lora")))):
                try:
                    report[key] = _parity(make_ref(), "float32")
                except Exception as e:  # noqa: BLE001
                    report[key] = f"failed: {type(e).__name__}: {e}"
        else:
            report["hf_vs_vllm"] = report["hf_vs_vllm_lora"] = "skipped: vLLM not installed (pip install '.[gpu]')"
        data = args.sft_data
        if data is None:
            data = wd / "sft.jsonl"
            data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} times 3?"},
                                                             {"role": "assistant", "content": f"{i} times 3 is {3 * i}."}]}) + "\n"
                                    for i in range(24)))
        gpu = _sft_losses(args.model, data, wd / "gpu-adapter")
        cpu_run = subprocess.run([sys.executable, __file__, "--cpu-sft", "--model", args.model, "--sft-data", str(data)],
                                 capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        if cpu_run.returncode == 0:
            cpu = json.loads(cpu_run.stdout.strip().splitlines()[-1])
            report["sft_cuda_vs_cpu"] = {"cuda": gpu, "cpu": cpu,
                                         "max_abs_difference": max(abs(a - b) for a, b in zip(gpu, cpu))}
        else:
            report["sft_cuda_vs_cpu"] = {"cuda": gpu, "cpu": f"failed: {cpu_run.stderr[-2000:]}"}
        report["bf16_generation"] = _throughput(ref)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
