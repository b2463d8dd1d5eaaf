"""Hugging Face hub models: when an ``hf:`` id downloads, and the check made before any work.

An ``hf:<org>/<name>`` that is not a folder downloads on first use, as transformers does, into the
Hugging Face cache (``$HF_HOME/hub``; ``~/.cache/huggingface/hub`` by default), unless the run is
offline: ``HF_HUB_OFFLINE=1`` (huggingface_hub's own switch, read when asked rather than once at
import, so a test or a shell that sets it later is obeyed) or ``--offline`` on the command line.

A command checks every hub model it will load before any unit runs (:func:`check_hub_models`):
offline, a model missing from the cache is one line naming it and how to fetch it, not a failure
hours into a study. Loads then read the cache first (:func:`load_pretrained`): a model found
there is loaded without asking the hub anything. That is what lets ``--offline`` hold without a
switch threaded into every load, since the check is its only gate, and it keeps every unit of a
study on the copy the study started with. ``embedded`` (converted from a pip package) and
folders are never looked up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from characterlab.errors import InputError

T = TypeVar("T")

OFFLINE_ENV = "HF_HUB_OFFLINE"
TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})  # how huggingface_hub reads its switches
CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def env_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, but now: its own constant is fixed at import."""
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in TRUE_VALUES


def is_offline(offline: bool = False) -> bool:
    """Whether a download is refused: ``--offline`` (``offline``), or ``HF_HUB_OFFLINE`` set."""
    return offline or env_offline()


def hub_cache() -> str:
    """The folder hub models are cached in (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_id(name: str) -> str | None:
    """The hub repo id that the ``hf:`` name ``name`` means, or None for a folder (never looked up).
    A name that is neither (``./models/missing``) is an input error naming it."""
    if Path(name).expanduser().exists():
        return None
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except ValueError:
        raise InputError(f"model 'hf:{name}' is neither a folder that exists nor a Hugging Face hub id "
                         "(org/name)", field="model") from None
    return name


def hub_ids(refs: Iterable[str]) -> list[str]:
    """The hub ids among model references as written (``hf:org/name``), each once, in order;
    ``embedded``, ``openai:`` models and folders are left out."""
    out: list[str] = []
    for ref in refs:
        if ref.startswith("hf:") and (repo := hub_id(ref[3:])) is not None and repo not in out:
            out.append(repo)
    return out


def _weights_present(folder: Path) -> bool:
    """A weights file, and for a sharded checkpoint every shard its index lists."""
    for name in WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return True
        try:
            shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        return all((folder / s).is_file() for s in shards)
    return False


def is_complete(folder: Path) -> bool:
    """What a load reads is there: the config, the weights and a tokenizer. (A cache that only a
    tokenizer or a config was read into holds a snapshot too.)"""
    return ((folder / CONFIG).is_file() and _weights_present(folder)
            and any((folder / name).is_file() for name in TOKENIZER_FILES))


def cached_folder(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id`` when it holds a whole model, else None; never asks the hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError, EntryNotFoundError):
        return None
    return folder if is_complete(folder) else None


def local_copy(path: str) -> str:
    """``path`` as a folder where that needs no request: the cached snapshot of a hub id cached
    whole, else ``path`` unchanged. For an engine that, given a hub id, asks the hub about it even
    when it is cached (vLLM)."""
    if Path(path).expanduser().exists():
        return path
    folder = cached_folder(path)
    return str(folder) if folder is not None else path


def offline_message(repo_id: str, offline: bool = False) -> str:
    """One line: which model is missing, why it is not downloaded, and how to fetch it."""
    why = " and ".join(w for w, on in (("--offline", offline), (f"{OFFLINE_ENV}=1", env_offline())) if on)
    undo = " and ".join(w for w, on in (("drop --offline", offline), (f"unset {OFFLINE_ENV}", env_offline())) if on)
    return (f"model 'hf:{repo_id}' is not in the Hugging Face cache ({hub_cache()}) and {why} forbids downloading "
            f"it: {undo} to download it on first use, or fetch it first with `hf download {repo_id}` "
            f"({OFFLINE_ENV} unset)")


def fetch_config(repo_id: str) -> None:
    """Download ``repo_id``'s config now, so that a wrong id, a gated model or no network fails
    before any work; the rest downloads when the model is first loaded, as transformers does."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(repo_id, CONFIG)
    except (OSError, ValueError, EntryNotFoundError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"model 'hf:{repo_id}' could not be fetched from the Hugging Face hub ({first}); check "
                         f"the id and your network, or `hf auth login` for a gated model", field="model") from None


def check_hub_models(refs: Iterable[str], offline: bool = False) -> None:
    """Before any work: every hub model among ``refs`` (model references as written) is cached, or
    may be fetched. Offline (``offline``: ``--offline``; or ``HF_HUB_OFFLINE``) the first one
    missing is an input error, one line naming it and how to fetch it (the CLI exits 2). Online a
    missing one's config is fetched now; its weights come when it is first loaded."""
    for repo_id in hub_ids(refs):
        if cached_folder(repo_id) is not None:
            continue
        if is_offline(offline):
            raise InputError(offline_message(repo_id, offline), field="model")
        fetch_config(repo_id)


def load_pretrained(load: Callable[..., T], path: str, offline: bool = False, **kwargs) -> T:
    """``load(path, **kwargs)`` (a transformers ``from_pretrained``) from local files first: a
    folder, or a hub model already cached, loads without a request to the hub. Only a hub model
    missing from the cache (or part of it missing) is downloaded, and only when not offline; an
    error of the local attempt is raised as it is otherwise."""
    try:
        return load(path, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        if is_offline(offline) or Path(path).expanduser().exists():
            raise
    return load(path, local_files_only=False, **kwargs)
