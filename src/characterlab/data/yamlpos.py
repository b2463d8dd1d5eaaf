"""Where things are in a YAML (or JSON) document, for error messages that name a line.

PyYAML's composed node tree keeps the start line of every node; :func:`key_lines` flattens it
into ``{key path: line}`` so a validation error's location (a pydantic ``loc`` tuple, say) can be
turned into "file:line: field 'a.b[2]'". JSON is YAML, so this works for JSON files too.
"""

from __future__ import annotations

import yaml


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
