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


def test_judge_refs_are_parsed_once_with_the_identity_unit_keys_use(tmp_path):
    from characterlab.judge.folder import CONFIG_FILE, HEAD_FILE
    from characterlab.judge.refs import parse_judge_ref

    shipped = parse_judge_ref("offline")
    assert shipped.is_offline and shipped.offline_folder is None
    assert shipped.identity().startswith("offline:") and shipped.identity() == parse_judge_ref("offline").identity()
    api = parse_judge_ref("openai:gpt-4o", base_url="http://localhost:1/v1")
    assert (api.kind, api.target, api.base_url, api.identity()) == ("openai", "gpt-4o", "http://localhost:1/v1", "openai:gpt-4o")
    assert parse_judge_ref("hf:/m").model_ref().kind == "hf" and parse_judge_ref("embedded").model_ref().kind == "embedded"
    folder = tmp_path / "j"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text("{}")
    (folder / HEAD_FILE).write_bytes(b"weights")
    mine = parse_judge_ref(f"offline:{folder}")
    before = mine.identity()
    assert mine.offline_folder == folder and before != shipped.identity()
    (folder / HEAD_FILE).write_bytes(b"other weights")
    assert parse_judge_ref(f"offline:{folder}").identity() != before  # the weights decide, not the path
    for bad in ("gpt-4o", "openai:", "offline:/nowhere", ""):
        with pytest.raises(InputError) as e:
            parse_judge_ref(bad)
        assert e.value.field == "judge"
