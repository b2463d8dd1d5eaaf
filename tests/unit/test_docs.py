"""The README and docs/ as a reader finds them.

- Every relative link (and image) in README.md and docs/**/*.md points at a file that exists, and
  carries no anchor (headings get renamed; a link to a file survives that, one to an anchor does not).
- Every generated results block (``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``) is
  exactly what ``characterlab report RUN --markdown --into PAGE`` writes from its committed
  ``results.json`` under ``results/`` (several committed runs of one study: their ``characterlab
  merge``). A block whose results.json is not committed is a named exception below, and its
  copies, where there are several, agree.

Rendering needs ``results.json`` only: no model is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Blocks with no committed results.json: a run folder (runs/NAME) is not kept in git, and these
# runs' results.json were never copied into results/, so what they say can only be checked against
# their other copies. Do not invent a results.json for them; commit the real one when a run is
# repeated, and take its name off this list (test_exceptions_are_current says when).
NOT_COMMITTED = {
    # the organism sweep: its run folder was lost with the development machine
    "organisms": "run folder lost; results.json never committed",
    "vectors": "runs/vectors not kept; results.json not committed",
    "nem": "runs/nem not kept; results.json not committed",
    "mitigations": "runs/mitigations not kept; results.json not committed",
    "hack-penalty": "runs/hack_penalty not kept; results.json not committed",
    # one-condition studies of `characterlab eval mcq` and `characterlab eval nem`
    "eval-mcq": "the eval mcq run folder not kept; results.json not committed",
    "eval-nem": "the eval nem run folder not kept; results.json not committed",
}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.I)
EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")
# markers on lines of their own (a marker quoted in prose is not a block)
BLOCK = re.compile(r"^<!-- results:(\S+) -->\n(.*?)^<!-- /results:\1 -->$", re.S | re.M)
OPENER = re.compile(r"^<!-- results:(\S+) -->$", re.M)


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _links(text: str) -> list[str]:
    """Link and image targets outside code: inline, reference definitions and HTML."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m.group(1) for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_LINK) for m in pattern.finditer(prose)]


def _blocks() -> list[tuple[Path, str, str]]:
    return [(page, m.group(1), m.group(2)) for page in PAGES for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


def _committed_results() -> dict[str, list[Path]]:
    """Study name -> the committed run folders under results/ whose results.json is of that study."""
    runs: dict[str, list[Path]] = {}
    for f in sorted((ROOT / "results").rglob("results.json")):
        runs.setdefault(json.loads(f.read_text(encoding="utf-8"))["study"], []).append(f.parent)
    return runs


def _expected_block(folders: list[Path]) -> str:
    """What `characterlab report RUN --markdown` prints for one run, or for the merge of several."""
    from characterlab.study.tables import markdown

    if len(folders) == 1:
        return markdown(json.loads((folders[0] / "results.json").read_text(encoding="utf-8")))
    from characterlab.study.merge import merge_results

    return markdown(merge_results(folders))


def test_pages_found():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 1


def test_link_extraction():
    text = ("see [a](docs/a.md) and ![img](../x.png \"t\") and `[not](code.md)`\n"
            "```bash\n[nor](fenced.md)\n```\n[ref]: docs/b.md\n<img src=\"c.png\"> [web](https://x.org/#y)\n")
    assert sorted(_links(text)) == sorted(["docs/a.md", "../x.png", "docs/b.md", "c.png", "https://x.org/#y"])


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve_without_anchors(page):
    problems = []
    for target in _links(page.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        if "#" in target:
            problems.append(f"{target}: has an anchor (link to the file)")
            continue
        if not (page.parent / target).exists():
            problems.append(f"{target}: no such file")
    assert not problems, f"{_rel(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_results_markers_are_closed(page):
    text = page.read_text(encoding="utf-8")
    opened = OPENER.findall(text)
    closed = [m.group(1) for m in BLOCK.finditer(text)]
    assert opened == closed, f"{_rel(page)}: a '<!-- results:NAME -->' without its '<!-- /results:NAME -->'"
    assert len(set(closed)) == len(closed), f"{_rel(page)}: a results block appears twice"


def test_every_block_has_results_or_is_a_known_exception():
    committed = _committed_results()
    unknown = sorted({name for _, name, _ in _blocks()} - set(committed) - set(NOT_COMMITTED))
    assert not unknown, f"results blocks with no committed results.json and no entry in NOT_COMMITTED: {unknown}"


def test_exceptions_are_current():
    committed = _committed_results()
    names = {name for _, name, _ in _blocks()}
    assert not set(NOT_COMMITTED) & set(committed), "now committed; take off NOT_COMMITTED: " + ", ".join(
        sorted(set(NOT_COMMITTED) & set(committed)))
    assert set(NOT_COMMITTED) <= names, f"no such block any more: {sorted(set(NOT_COMMITTED) - names)}"


@pytest.mark.parametrize("page,name", [(p, n) for p, n, _ in _blocks()], ids=lambda x: _rel(x) if isinstance(x, Path) else x)
def test_block_is_the_generated_markdown(page, name):
    text = dict((n, b) for p, n, b in _blocks() if p == page)[name]
    # each block is a study's table: its footer names the study it was written for
    assert f"Study `{name}`, " in text, f"{_rel(page)}: block {name} is not the table of study {name}"
    committed = _committed_results()
    if name not in committed:
        assert name in NOT_COMMITTED
        copies = {_rel(p): b for p, n, b in _blocks() if n == name}
        assert len(set(copies.values())) == 1, f"the copies of block {name} differ: {sorted(copies)}"
        return
    expected = _expected_block(committed[name])
    assert text == expected, (
        f"{_rel(page)}: block {name} is not what `characterlab report --markdown` writes from "
        f"{', '.join(_rel(f) for f in committed[name])}; rewrite it with "
        f"`characterlab report RUN --markdown --into {_rel(page)}`")
