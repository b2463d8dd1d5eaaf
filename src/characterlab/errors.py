"""Errors a user can fix by changing their input.

Every problem with a file, a model reference or a flag is raised as an :class:`InputError` that
names where it is (file, line, field). The CLI turns it into one line on stderr and exit code 2,
so scripts can tell bad input (2) from a crash (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class InputError(Exception):
    """Bad user input, located as precisely as we can: file, 1-based line, field path."""

    message: str
    file: str | Path | None = None
    line: int | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"
