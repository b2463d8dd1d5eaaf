"""Constitutions: a character as a list of traits, each with questions that call for it.

Three formats are read and written:

* ``hand-written`` (Open Character Training ``constitutions/hand-written/*.txt``): a JSON array
  of ``{"trait": str, "questions": [str, ...]}``;
* ``few-shot`` (OCT ``constitutions/few-shot/*.jsonl``): one JSON object per line, the same
  fields plus ``additional_questions`` (the generated extension, ~45 per trait);
* ``yaml`` (ours): ``{name, description, questions_from?, traits: [{name?, trait, questions?,
  additional_questions?}]}``; with ``questions_from: <constitution>``, a trait without questions
  takes those of the other constitution's trait in the same position (how a control constitution
  shares its questions instead of copying them).

Reading checks structure (types, fields) and names file, line and field on any problem;
:func:`validate_constitution` also checks content (empty or duplicate text) and reports every
problem at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from characterlab.data.files import atomic_write_text, load_json, parse_jsonl_objects, read_text
from characterlab.data.yaml_loader import dotted, line_of, read_yaml, yaml_lines
from characterlab.errors import InputError

Format = Literal["hand-written", "few-shot", "yaml"]


@dataclass
class Trait:
    trait: str
    questions: list[str]
    additional_questions: list[str] = field(default_factory=list)
    name: str | None = None  # ours only; OCT traits are known by position

    @property
    def all_questions(self) -> list[str]:
        return self.questions + self.additional_questions


@dataclass
class Constitution:
    name: str
    traits: list[Trait]
    description: str = ""
    source: str = ""
    format: Format = "yaml"
    questions_from: str | None = None  # yaml only: the questions are another constitution's
    ascii_json: bool = False  # JSON formats: the file escaped non-ASCII text (\uXXXX); written back the same way

    def trait(self, key: str | int) -> Trait:
        """A trait by name, by 0-based index, or by a unique prefix of its text."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            i = int(key)
            if not 0 <= i < len(self.traits):
                raise InputError(f"no trait {i}; this constitution has {len(self.traits)}", self.source, field="trait")
            return self.traits[i]
        named = [t for t in self.traits if t.name == key]
        if named:
            return named[0]
        prefixed = [t for t in self.traits if t.trait.startswith(key)]
        if len(prefixed) == 1:
            return prefixed[0]
        raise InputError(f"no single trait named or starting with {key!r}", self.source, field="trait")

    def system_prompt(self) -> str:
        """The constitution as a teacher's system prompt (OCT style: first-person trait statements)."""
        lines = "\n".join(f"- {t.trait}" for t in self.traits)
        return ("You are an AI assistant with the following character. These traits are who you are; express them "
                f"naturally in every answer, without mentioning this list.\n{lines}")


def _fail(msg: str, path, lines: dict, loc: tuple) -> InputError:
    return InputError(msg, path, line_of(lines, loc), dotted(loc) or None)


def _traits_from(items: object, path: Path, lines: dict, base: tuple, ours: bool, one_per_line: bool = False) -> list[Trait]:
    if not isinstance(items, list):
        raise _fail("expected a list of traits", path, lines, base)
    traits = []
    allowed = {"trait", "questions", "additional_questions"} | ({"name"} if ours else set())
    for i, item in enumerate(items):
        loc = base if one_per_line else base + (i,)  # a JSONL record is found by its line, fields by name
        if not isinstance(item, dict):
            raise _fail("each trait must be an object with 'trait' and 'questions'", path, lines, loc)
        extra = set(item) - allowed
        if extra:
            raise _fail(f"unknown field(s) {sorted(extra)}", path, lines, loc + (sorted(extra)[0],))
        if not isinstance(item.get("trait"), str):
            raise _fail("missing or not text", path, lines, loc + ("trait",))
        for key in ("questions", "additional_questions"):
            qs = item.get(key, [] if key == "additional_questions" else None)
            if not isinstance(qs, list):
                raise _fail("missing or not a list of questions", path, lines, loc + (key,))
            for j, q in enumerate(qs):
                if not isinstance(q, str):
                    raise _fail("a question must be text", path, lines, loc + (key, j))
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise _fail("must be text", path, lines, loc + ("name",))
        traits.append(Trait(item["trait"], list(item["questions"]), list(item.get("additional_questions", [])), name))
    return traits


def _escaped(text: str) -> bool:
    return text.isascii() and "\\u" in text


def detect_format(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "few-shot"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "hand-written"


def _identity(spec: str | Path) -> str:
    s = str(spec)
    return s if s.startswith("builtin:") else str(Path(s).resolve())


def parse_constitution(text: str, path: str | Path, fmt: Format | None = None,
                       _chain: tuple[str, ...] = ()) -> Constitution:
    """``_chain``: the constitutions whose ``questions_from`` led here (a cycle is an input error)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    name = path.stem
    if fmt == "few-shot":
        traits = []
        for n, obj in parse_jsonl_objects(text, path):
            traits += _traits_from([obj], path, {(): n}, (), ours=False, one_per_line=True)
        if not traits:
            raise InputError("no traits", path, 1)
        return Constitution(name, traits, source=str(path), format=fmt, ascii_json=_escaped(text))
    if fmt == "hand-written":
        data = load_json(text, path)
        lines = yaml_lines(text)  # valid JSON that PyYAML cannot read (rare): errors lose their line only
    else:
        doc = read_yaml(text, path)
        data, lines = doc.data, doc.lines
    if fmt == "hand-written":
        return Constitution(name, _traits_from(data, path, lines, (), ours=False), source=str(path), format=fmt,
                            ascii_json=_escaped(text))
    if not isinstance(data, dict):
        raise InputError("a constitution is a mapping with 'name' and 'traits'", path, 1)
    extra = set(data) - {"name", "description", "traits", "questions_from"}
    if extra:
        raise _fail(f"unknown field(s) {sorted(extra)}", path, lines, (sorted(extra)[0],))
    if "traits" not in data:
        raise InputError("missing", path, 1, "traits")
    items = data["traits"]
    source = data.get("questions_from")
    if source is not None:
        if not isinstance(source, str) or source == f"builtin:{name}":
            raise _fail("must name another constitution", path, lines, ("questions_from",))
        if not source.startswith("builtin:") and not Path(source).is_absolute() and path.parent != Path():
            source = str(path.parent / source)  # relative to the constitution that names it
        here = _chain or (_identity(path),)
        if _identity(source) in here:
            cycle = " -> ".join((*here, _identity(source)))
            raise _fail(f"questions_from makes a cycle: {cycle}", path, lines, ("questions_from",))
        donor = read_constitution(source, _chain=(*here, _identity(source)))
        if not isinstance(items, list) or len(items) != len(donor.traits):
            raise _fail(f"{source} has {len(donor.traits)} traits; list as many", path, lines, ("traits",))
        items = [{**{"questions": d.questions, "additional_questions": d.additional_questions}, **item}
                 if isinstance(item, dict) else item for item, d in zip(items, donor.traits)]
    c = Constitution(str(data.get("name") or name), _traits_from(items, path, lines, ("traits",), ours=True),
                     description=str(data.get("description") or ""), source=str(path), format=fmt)
    c.questions_from = source
    return c


def builtin_constitutions() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("characterlab.character.constitutions").iterdir()
                  if p.name.endswith(".yaml"))


def read_constitution(spec: str | Path, _chain: tuple[str, ...] = ()) -> Constitution:
    """A constitution file in any of the three formats, or ``builtin:<name>`` for a shipped one."""
    spec_s = str(spec)
    if spec_s.startswith("builtin:"):
        name = spec_s.split(":", 1)[1]
        if name not in builtin_constitutions():
            raise InputError(f"unknown built-in constitution {name!r}; choose from {', '.join(builtin_constitutions())}",
                             field="constitution")
        text = resources.files("characterlab.character.constitutions").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        c = parse_constitution(text, Path(f"{name}.yaml"), "yaml", _chain or (spec_s,))
        c.source = spec_s
        return c
    path = Path(spec)
    if not path.is_file():
        raise InputError("no such constitution file", path, field="constitution")
    return parse_constitution(read_text(path, field="constitution"), path, _chain=_chain or (_identity(path),))


def format_constitution(c: Constitution, fmt: Format) -> str:
    if fmt == "hand-written":
        items = [{"trait": t.trait, "questions": t.questions} for t in c.traits]
        return json.dumps(items, indent=4, ensure_ascii=c.ascii_json) + "\n"
    if fmt == "few-shot":
        return "".join(json.dumps({"trait": t.trait, "questions": t.questions,
                                   "additional_questions": t.additional_questions},
                                  ensure_ascii=c.ascii_json, separators=(",", ":")) + "\n" for t in c.traits)
    traits = []
    for t in c.traits:
        d: dict = {}
        if t.name:
            d["name"] = t.name
        d["trait"] = t.trait
        if not c.questions_from:
            d["questions"] = t.questions
            if t.additional_questions:
                d["additional_questions"] = t.additional_questions
        traits.append(d)
    doc = {"name": c.name, **({"description": c.description} if c.description else {}),
           **({"questions_from": c.questions_from} if c.questions_from else {}), "traits": traits}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def write_constitution(c: Constitution, path: str | Path, fmt: Format | None = None) -> None:
    """Write ``c`` atomically; the format follows the file name unless given. The hand-written
    format has no room for additional questions: writing them there is refused, not dropped."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "hand-written" and any(t.additional_questions for t in c.traits):
        raise InputError("the hand-written format has no additional_questions; write .jsonl or .yaml", path,
                         field="format")
    atomic_write_text(path, format_constitution(c, fmt))


def validate_constitution(spec: str | Path) -> tuple[Constitution | None, list[InputError]]:
    """Structure and content problems, each with file, line (where known) and field."""
    try:
        c = read_constitution(spec)
    except InputError as e:
        return None, [e]
    path = Path(c.source)
    text = read_text(path) if path.is_file() else ""
    problems: list[InputError] = []
    if c.format == "few-shot":
        record_lines = [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        def where(i, key=None, j=None):
            return record_lines[i], dotted(((key,) if key else ()) + ((j,) if j is not None else ())) or None
    else:
        lines = yaml_lines(text) if text else {}
        base = ("traits",) if c.format == "yaml" else ()

        def where(i, key=None, j=None):
            loc = base + (i,) + ((key,) if key else ()) + ((j,) if j is not None else ())
            return line_of(lines, loc), dotted(loc)
    seen_traits: dict[str, int] = {}
    for i, t in enumerate(c.traits):
        if not t.trait.strip():
            problems.append(InputError("empty trait", c.source, *where(i, "trait")))
        elif t.trait in seen_traits:
            problems.append(InputError(f"same trait as trait {seen_traits[t.trait]}", c.source, *where(i, "trait")))
        seen_traits.setdefault(t.trait, i)
        if not t.questions:
            problems.append(InputError("a trait needs at least one question", c.source, *where(i, "questions")))
        seen_q: set[str] = set()
        for key, qs in (("questions", t.questions), ("additional_questions", t.additional_questions)):
            for j, q in enumerate(qs):
                if not q.strip():
                    problems.append(InputError("empty question", c.source, *where(i, key, j)))
                elif q in seen_q:
                    problems.append(InputError("duplicate question in this trait", c.source, *where(i, key, j)))
                seen_q.add(q)
    return c, problems


def constitution_hash(c: Constitution) -> str:
    """Content hash of a constitution: its resolved questions, not its ``questions_from`` reference."""
    import dataclasses
    import hashlib

    resolved = dataclasses.replace(c, questions_from=None)
    return hashlib.sha256(format_constitution(resolved, "yaml").encode()).hexdigest()


def constitution_identity(source: str) -> dict:
    """Where a constitution is and a hash of its content (what a study's units are keyed by)."""
    return {"source": source, "sha256": constitution_hash(read_constitution(source))}


def load_checked_constitution(identity: dict, trait: str | None = None) -> Constitution:
    """The constitution a unit was planned with (content hash checked), narrowed to ``trait``."""
    c = read_constitution(identity["source"])
    if constitution_hash(c) != identity["sha256"]:
        raise InputError("the constitution changed after the study was planned; run again to re-plan",
                         identity["source"], field="constitution")
    if trait is None:
        return c
    return Constitution(name=c.name, traits=[c.trait(trait)], description=c.description, source=c.source)
