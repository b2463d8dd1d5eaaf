"""The one YAML loader: every problem at once, each at its line and key path, for any model."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from characterlab.data.files import read_text
from characterlab.data.yaml_loader import InputErrors, load_yaml_model, read_yaml
from characterlab.errors import InputError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["a"]
    n: int = Field(ge=1)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    items: list[Inner]
    tagged: Inner | None = Field(default=None, discriminator="kind")


def test_every_problem_with_its_line_and_key_path():
    text = "name: x\nitems:\n  - {kind: a, n: 0}\n  - kind: a\n    n: 2\n    extra: 1\ntagged:\n  kind: a\n  n: -1\n"
    with pytest.raises(InputErrors) as info:
        load_yaml_model(Outer, text, "f.yaml")
    got = {(p.field, p.line) for p in info.value.problems}
    # the discriminated union's tag ('a') is not part of the path the user wrote
    assert got == {("items[0].n", 3), ("items[1].extra", 6), ("tagged.n", 9)}
    assert str(info.value).splitlines()[0].startswith("f.yaml:3: field 'items[0].n'")


def test_syntax_errors_non_mappings_and_bad_bytes(tmp_path):
    with pytest.raises(InputError, match="not valid YAML") as e:
        read_yaml("a: [1,\nb: 2\n", "f.yaml")
    assert e.value.line is not None
    with pytest.raises(InputError, match="expected a YAML mapping"):
        load_yaml_model(Outer, "- 1\n", "f.yaml")
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"name: ok\nitems: []\ndesc: caf\xe9\n")
    with pytest.raises(InputError, match="not UTF-8") as e:
        read_text(f)
    assert e.value.line == 3 and e.value.file == f
    with pytest.raises(InputError, match="is a folder"):
        read_text(tmp_path)
