import json

import pytest

from characterlab.errors import InputError
from characterlab.models.refs import parse_model_ref


def test_kinds(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert parse_model_ref("embedded").kind == "embedded"
    ref = parse_model_ref("hf:/some/path")
    assert (ref.kind, ref.name) == ("hf", "/some/path")
    ref = parse_model_ref("openai:gpt-4o")
    assert (ref.kind, ref.name, ref.base_url) == ("openai", "gpt-4o", "http://127.0.0.1:9/v1")
    assert parse_model_ref("openai:m", base_url="http://x/v1").base_url == "http://x/v1"


@pytest.mark.parametrize("text", ["", "gpt2", "hf:", "openai:", "local:foo"])
def test_unknown_ref(text):
    with pytest.raises(InputError) as e:
        parse_model_ref(text)
    assert e.value.field == "model"


def test_adapter_checks(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        parse_model_ref("embedded", adapter=tmp_path / "missing")
    with pytest.raises(InputError, match="adapter_config.json"):
        parse_model_ref("embedded", adapter=tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        parse_model_ref("embedded", adapter=tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(InputError, match="adapter_model"):
        parse_model_ref("embedded", adapter=tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    assert parse_model_ref("embedded", adapter=tmp_path).adapter == tmp_path
    with pytest.raises(InputError, match="local model"):
        parse_model_ref("openai:m", adapter=tmp_path)
