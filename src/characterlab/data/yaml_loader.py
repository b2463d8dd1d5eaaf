"""The one YAML loader: parse, validate with pydantic, and report every problem as ``file:line: key.path``.

Every YAML format of characterlab (studies, question sets, constitutions, theory configs) goes
through :func:`read_yaml` and, where a pydantic model describes it, :func:`validate_yaml`. PyYAML's
composed node tree keeps the start line of every node; :class:`YamlDocument` keeps it as
``{key path: line}`` so a validation error's location (a pydantic ``loc`` tuple) becomes "file:line:
field 'a.b[2]'". JSON is YAML, so this works for JSON files too.

Files are untrusted: before a document is built, its size, its depth and how far its aliases expand
are capped (:func:`check_structure`), so an alias bomb or ``[[[[...`` is one error line, not a hang
or a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from characterlab.errors import InputError

M = TypeVar("M", bound=BaseModel)


def key_lines(node: yaml.Node | None, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """1-based line of every key path in a composed YAML document (list items by index)."""
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[path + (str(key.value),)] = key.start_mark.line + 1
            key_lines(value, path + (str(key.value),), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            key_lines(item, path + (i,), out)
    return out


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of ``loc``, or of its nearest ancestor that has one."""
    return next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)


def dotted(loc: tuple) -> str:
    """``('a', 0, 'b')`` -> ``a[0].b``."""
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def yaml_lines(text: str) -> dict[tuple, int]:
    """Best-effort key lines of ``text`` (empty when PyYAML cannot compose it, e.g. odd JSON)."""
    try:
        check_structure(text, "")
        return key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except (yaml.YAMLError, InputError):
        return {}


@dataclass(frozen=True)
class YamlDocument:
    """A parsed document and where each of its keys is."""

    data: Any
    source: str | Path
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, loc: tuple) -> int | None:
        return line_of(self.lines, tuple(loc))

    def error(self, message: str, loc: tuple = ()) -> InputError:
        return InputError(message, self.source, self.line(loc), dotted(tuple(loc)) or None)


class InputErrors(InputError):
    """Every problem of one document, one per line, each with its file, line and key path."""

    def __init__(self, problems: list[InputError]):
        self.problems = problems
        first = problems[0]
        super().__init__(first.message, first.file, first.line, first.field)

    def __str__(self) -> str:
        return "\n".join(InputError.__str__(p) for p in self.problems)


MAX_YAML_CHARS = 8 << 20  # a spec, a question set or a constitution; far larger is a wrong file, not a spec
MAX_ALIAS_NODES = 1_000_000  # nodes that aliases add when expanded; a "billion laughs" document adds 10^9
MAX_DEPTH = 100  # collections inside each other; libyaml's composer crashes the process near 10^5
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: same result, faster


def check_size(size: int, source: str | Path) -> None:
    """A YAML file of characterlab is at most :data:`MAX_YAML_CHARS` long."""
    if size > MAX_YAML_CHARS:
        raise InputError(f"too large for a YAML file of characterlab ({size >> 20} MB; at most "
                         f"{MAX_YAML_CHARS >> 20} MB)", source)


def check_structure(text: str, source: str | Path) -> None:
    """Refuse, from PyYAML's event stream and before anything is composed, a document whose tree
    would not fit in memory or in a stack once built.

    Composing is cheap even for a "billion laughs" document (an alias is the anchored node again),
    but everything that walks the result - the key lines, pydantic, our own code - walks the
    expanded tree. So each alias is charged the expanded size of its anchor, and the document is
    refused at the alias where those charges pass :data:`MAX_ALIAS_NODES`; an alias inside its own
    anchor (a cycle) and nesting deeper than :data:`MAX_DEPTH` are refused at their line too.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded nodes of the node it names (itself included)
    open_nodes: list[tuple[str | None, int]] = []  # collections being read: (anchor, count when it began)
    count = alias_nodes = aliases = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise InputError(f"alias *{event.anchor} is inside its own anchor (a structure that "
                                 "contains itself)", source, line)
            aliases += 1
            alias_nodes += sizes.get(event.anchor, 1)
            count += sizes.get(event.anchor, 1)
            if alias_nodes > MAX_ALIAS_NODES:
                raise InputError(f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes ({aliases:,} aliases "
                                 "so far; an alias bomb?)", source, line)
        elif isinstance(event, yaml.ScalarEvent):
            count += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= MAX_DEPTH:
                raise InputError(f"nested more than {MAX_DEPTH} levels deep", source, line)
            count += 1
            open_nodes.append((event.anchor, count - 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, began = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = count - began


def read_yaml(text: str, source: str | Path) -> YamlDocument:
    """Parse ``text``; a syntax error, a file too large and a document too large or too deep once
    its aliases are expanded (:func:`check_structure`) become an :class:`InputError` with its line."""
    check_size(len(text), source)
    try:
        check_structure(text, source)
        loader = _LOADER(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(e, 'problem', e)}", source, mark.line + 1 if mark else None) from None
    return YamlDocument(data, source, key_lines(root))


def read_yaml_file(path: str | Path, field: str | None = None) -> YamlDocument:
    """:func:`read_yaml` of a file; a file far too large is refused before it is read into memory."""
    from characterlab.data.files import read_text

    # UTF-8 takes at most 4 bytes a character: a larger file is too long before it is read
    return read_yaml(read_text(path, field=field, max_bytes=4 * MAX_YAML_CHARS), path)


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """A pydantic ``loc`` as a path into ``data``: without pydantic's validator markers and without
    the tag a discriminated union inserts (``intervention.character.n_questions`` ->
    ``intervention.n_questions``)."""
    out: list = []
    node = data
    for part in loc:
        if isinstance(part, str) and part.startswith(("function-", "tagged-")):
            continue
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def validation_problems(error: ValidationError, doc: YamlDocument, prefix: tuple = ()) -> list[InputError]:
    """One located :class:`InputError` per pydantic error; ``prefix`` is where the validated part sits."""
    problems = []
    for err in error.errors():
        loc = prefix + _clean_loc(tuple(err["loc"]), _at(doc.data, prefix))
        problems.append(doc.error(err["msg"].removeprefix("Value error, "), loc))
    return problems


def _at(data: Any, prefix: tuple) -> Any:
    for part in prefix:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def validate_yaml(model: type[M], doc: YamlDocument, data: Any = None, prefix: tuple = ()) -> M:
    """``model`` validated from the document (or from ``data``, the part of it at ``prefix``);
    every problem is reported at once as :class:`InputErrors`."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as e:
        raise InputErrors(validation_problems(e, doc, prefix)) from None


def load_yaml_model(model: type[M], text: str, source: str | Path, what: str = "a YAML mapping") -> M:
    """Parse and validate a document that is one mapping described by ``model``."""
    doc = read_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise InputError(f"expected {what}", source, 1)
    return validate_yaml(model, doc)
