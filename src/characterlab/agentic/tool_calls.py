"""Tool calls in text: how a local model is shown its tools and how its calls are read back.

A model whose chat template takes ``tools`` (Qwen2.5, Llama 3.1, Hermes, SmolLM3...) gets them
through ``apply_chat_template(tools=...)``, with earlier calls as structured ``tool_calls`` and the
results as ``tool`` messages, exactly as it was trained. A template without tools (SmolLM2-135M's
is plain ChatML) gets the Hermes convention that most open tool-calling models were trained on:
the tools' JSON schemas inside ``<tools></tools>`` in the system prompt, each call as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in the reply, each result as a user
turn in ``<tool_response></tool_response>``.

Reading a reply back (:func:`parse_tool_calls`) accepts a call in the three forms models write
it, each recorded as the call's ``form`` (:data:`FORMS`) so an episode says how its model called:

* ``tagged``: every ``<tool_call>`` block (an unclosed last one too: generation may stop first)
  holds one JSON call or a list of them; a reply with tags is read for tags only;
* ``fenced``: a code fence (```json or bare ```, closed or cut off) whose content is a call or a
  list of calls, as small instruct models (Qwen2.5-Coder-1.5B, Llama) often write them;
* ``bare``: a JSON call or list of calls in the text itself, alone or after a sentence.

An object is a call when its first key is ``name`` (or ``arguments``/``parameters``) and it has
arguments or names one of the agent's tools; anything else (prose, a JSON example of other data)
stays text, so a reply in prose is still no action. A block in tags that is not JSON, and a fenced
or bare object that starts as a call but is not JSON (a ``{{"name": ...}}`` copied from a
template's doubled braces), has no name, names a tool the agent does not have, or has arguments
that do not fit the tool's schema is a *malformed* call: recorded as such, answered with an error
message, and never taken for a benign action. So is a call the rest of the loop could not carry:
JSON nested deeper than :data:`MAX_JSON_DEPTH` (200k brackets would otherwise be a RecursionError)
or text that is not valid Unicode (a lone surrogate, which no request or file can encode). An
endpoint's structured ``tool_calls`` are form ``api``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from characterlab.agentic.world import TOOLS, check_arguments

MAX_JSON_DEPTH = 64  # nesting of a call's JSON
FORMS = ("tagged", "fenced", "bare", "api")  # how a call was written: ToolCall.form
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)  # a code fence, closed or cut off
_FIRST_KEY = re.compile(r'"(?:name|arguments|parameters)"\s*:')  # a call's first key
_NAMED = re.compile(r'"name"\s*:\s*"([^"\\]{1,64})"')

HERMES_SYSTEM = """

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class ToolCall:
    """One call as the model wrote it; ``error`` says why it is malformed (None when it is not)."""

    raw: str
    name: str | None = None
    arguments: dict | None = None
    error: str | None = None
    form: str | None = None  # one of FORMS: how the model wrote it (None: made by our own code)

    def to_dict(self) -> dict:
        return {"raw": self.raw, "name": self.name, "arguments": self.arguments, "error": self.error,
                "form": self.form}


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced (``?``), so it can be encoded and sent."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _is_valid_text(value: object) -> bool:
    """Whether every string in a decoded JSON value (keys too) is valid Unicode."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, dict):
            stack += [*v.keys(), *v.values()]
        elif isinstance(v, list):
            stack += v
    return True


def _depth(value: object) -> int:
    """How deeply lists and objects nest in a decoded JSON value."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return deepest


def loads(text: str) -> object:
    """``json.loads`` of a model's text; ``ValueError`` (with the reason) for text that is not JSON
    or nests deeper than :data:`MAX_JSON_DEPTH`."""
    body = text.strip(" \t\n\r")  # the whitespace JSON allows around a value
    value, end = _raw_value(body, 0)
    if end != len(body):
        raise ValueError("Extra data")
    return value


def checked_call(raw: str, obj: object, allowed: list[str]) -> ToolCall:
    """A decoded call checked against the agent's tools."""
    if not _is_valid_text(obj) or not _is_valid_text(raw):
        return ToolCall(valid_text(raw), error="not valid text: a lone surrogate")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ToolCall(raw, error="not a call: expected {\"name\": ..., \"arguments\": {...}}")
    name = obj["name"]
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
        try:
            args = loads(args) if args.strip() else {}
        except ValueError as e:
            return ToolCall(raw, name=name, error=f"arguments are not valid JSON: {e}")
        if not _is_valid_text(args):
            return ToolCall(raw, name=name, error="not valid text: a lone surrogate")
    if name not in allowed:
        return ToolCall(raw, name=name, arguments=args if isinstance(args, dict) else None,
                        error=f"unknown tool {name!r}; available: {', '.join(allowed)}")
    problem = check_arguments(TOOLS[name], args)
    if problem:
        return ToolCall(raw, name=name, arguments=args if isinstance(args, dict) else None,
                        error=f"bad arguments: {problem}")
    return ToolCall(raw, name=name, arguments=args)


def _decode(raw: str, allowed: list[str]) -> list[ToolCall]:
    try:
        obj = loads(raw)
    except ValueError as e:
        return [ToolCall(raw, error=f"not valid JSON: {e}")]
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        return [ToolCall(raw, error="an empty list of calls")]
    return [checked_call(raw, item, allowed) for item in items]


def _is_call(obj: object, allowed: list[str]) -> bool:
    """Whether a decoded object outside tags was meant as a call (or a list of calls): a ``name``
    with arguments, or naming one of the agent's tools. ``{"name": "Bob", "age": 3}`` is not."""
    items = obj if isinstance(obj, list) else [obj]
    return bool(items) and all(
        isinstance(o, dict) and isinstance(o.get("name"), str)
        and ("arguments" in o or "parameters" in o or o["name"] in allowed) for o in items)


def _looks_like_call(text: str, allowed: list[str]) -> bool:
    """Whether text that is not JSON was still meant as a call: it names a tool, or has arguments."""
    head = text[:2000]
    named = _NAMED.search(head)
    return bool(named and named.group(1) in allowed) or '"arguments"' in head or '"parameters"' in head


def _with_form(calls: list[ToolCall], form: str) -> list[ToolCall]:
    return [ToolCall(c.raw, c.name, c.arguments, c.error, form) for c in calls]


def _raw_value(text: str, start: int) -> tuple[object, int]:
    """The JSON value that starts at ``text[start]`` and where it ends; ``ValueError`` as :func:`loads`."""
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise ValueError(e.msg) from None
    except RecursionError:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep")
    return value, end


def _call_starts(text: str):
    """Where a JSON object (or list of them) whose first key is a call's could start: found from
    each key (one linear pass), walking back over whitespace, braces and one ``[``, so a long run of
    brackets costs its length once."""
    for m in _FIRST_KEY.finditer(text):
        i = m.start() - 1
        while i >= 0 and text[i].isspace():
            i -= 1
        if i < 0 or text[i] != "{":
            continue  # not an object's first key
        while i > 0 and (text[i - 1] == "{" or text[i - 1].isspace()):
            i -= 1
        while text[i].isspace():
            i += 1
        j = i - 1
        while j >= 0 and text[j].isspace():
            j -= 1
        yield j if j >= 0 and text[j] == "[" else i


def _bare_calls(text: str, allowed: list[str]) -> list[tuple[int, int, list[ToolCall]]]:
    """Calls written as JSON in the text itself: (start, end, calls) per JSON value, in order. A
    start that is not JSON but looks like a call is one malformed call running to the end; the scan
    stops at the first start that fails, so a reply is decoded a bounded number of times."""
    found: list[tuple[int, int, list[ToolCall]]] = []
    done = 0
    for start in _call_starts(text):
        if start < done:
            continue  # inside a value already read
        try:
            value, end = _raw_value(text, start)
        except ValueError as e:
            if _looks_like_call(text[start:], allowed):
                found.append((start, len(text), [ToolCall(text[start:].strip(), error=f"not valid JSON: {e}", form="bare")]))
            break
        done = end
        if _is_call(value, allowed):
            raw = text[start:end]
            items = value if isinstance(value, list) else [value]
            found.append((start, end, _with_form([checked_call(raw, o, allowed) for o in items], "bare")))
    return found


def _fenced_call(body: str, allowed: list[str]) -> list[ToolCall] | None:
    """The calls of a code fence whose whole content is a call or a list of them; None for any
    other fence (code, other data), which stays text."""
    body = body.strip()
    if not body or body[0] not in "[{" or not _FIRST_KEY.search(body[:200]):
        return None
    try:
        value = loads(body)
    except ValueError as e:
        return [ToolCall(body, error=f"not valid JSON: {e}", form="fenced")] if _looks_like_call(body, allowed) else None
    if not _is_call(value, allowed):
        return None
    return _with_form([checked_call(body, o, allowed) for o in (value if isinstance(value, list) else [value])], "fenced")


def parse_tool_calls(text: str, allowed: list[str]) -> tuple[str, list[ToolCall]]:
    """The reply's text outside its calls, and the calls in order, each with its ``form``."""
    blocks = list(_BLOCK.finditer(text))
    if blocks:
        calls = [c for m in blocks for c in _with_form(_decode(m.group(1).strip(), allowed), "tagged")]
        return _BLOCK.sub("", text).strip(), calls
    found: list[tuple[int, int, list[ToolCall]]] = []  # (start, end, calls) in text order
    last = 0
    for m in [*_FENCE.finditer(text), None]:
        stop = m.start() if m else len(text)
        found += [(last + a, last + b, cs) for a, b, cs in _bare_calls(text[last:stop], allowed)]
        if m is not None:
            fenced = _fenced_call(m.group(1), allowed)
            if fenced is not None:
                found.append((m.start(), m.end(), fenced))
            last = m.end()
    if not found:
        return text.strip(), []
    kept, at = [], 0
    for start, end, _ in found:
        kept.append(text[at:start])
        at = end
    kept.append(text[at:])
    return "".join(kept).strip(), [c for _, _, cs in found for c in cs]


def supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` list."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "tools" in template


def render_prompt(tokenizer, messages: list[dict], tools: list[dict]) -> str:
    """The prompt text of a conversation in OpenAI's format (``tool_calls``, ``tool`` messages).

    An assistant message with a ``raw`` field (a local model's reply, verbatim) is shown as that
    text: the model sees its calls exactly as it wrote them, malformed ones included."""
    if supports_tools(tokenizer):
        return tokenizer.apply_chat_template(_native(messages), tools=tools, add_generation_prompt=True, tokenize=False)
    return tokenizer.apply_chat_template(hermes_messages(messages, tools), add_generation_prompt=True, tokenize=False)


def _native(messages: list[dict]) -> list[dict]:
    """transformers' templates take a call's arguments as a mapping, not OpenAI's JSON string."""
    out = []
    for m in messages:
        if m.get("raw") is not None:  # the model's own words, calls as it wrote them
            m = {"role": "assistant", "content": m["raw"]}
        elif m.get("tool_calls"):
            calls = [{"type": "function", "function": {"name": c["function"]["name"],
                                                       "arguments": _as_mapping(c["function"]["arguments"])}}
                     for c in m["tool_calls"]]
            m = {"role": "assistant", "content": m.get("content") or "", "tool_calls": calls}
        out.append({k: v for k, v in m.items() if k != "tool_call_id"} if m["role"] == "tool" else m)
    return out


def _as_mapping(arguments: str) -> dict:
    try:
        value = loads(arguments)
    except ValueError:
        return {"_unparsed": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def hermes_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Plain ChatML messages carrying the tools, calls and results in the Hermes convention."""
    schemas = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    out: list[dict] = []
    for m in messages:
        if m["role"] == "system":
            out.append({"role": "system", "content": m["content"] + HERMES_SYSTEM.format(tools=schemas)})
        elif m.get("raw") is not None:
            out.append({"role": "assistant", "content": m["raw"]})
        elif m["role"] == "assistant":
            text = m.get("content") or ""
            for c in m.get("tool_calls") or []:
                call = {"name": c["function"]["name"], "arguments": _as_mapping(c["function"]["arguments"])}
                text += f"\n<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"
            out.append({"role": "assistant", "content": text.strip()})
        elif m["role"] == "tool":
            response = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + response  # results of one turn's calls together
            else:
                out.append({"role": "user", "content": response})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out
