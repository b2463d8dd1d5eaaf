import gzip
import json

import pytest

from characterlab.data.chat_jsonl import (
    hash_examples,
    read_chat_jsonl,
    write_chat_jsonl,
)
from characterlab.errors import InputError


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def test_reads_plain_and_gz_with_same_content_hash(tmp_path):
    plain = _write(tmp_path / "a.jsonl", [GOOD, "", GOOD])
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(plain.read_text())
    a, b = read_chat_jsonl(plain), read_chat_jsonl(gz)
    assert len(a) == 2 and a == b
    assert hash_examples(a) == hash_examples(b)


def test_round_trip(tmp_path):
    ex = read_chat_jsonl(_write(tmp_path / "a.jsonl", [GOOD]))
    write_chat_jsonl(tmp_path / "b.jsonl.gz", ex)
    assert read_chat_jsonl(tmp_path / "b.jsonl.gz") == ex


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [GOOD, GOOD, '{"messages": [}'])
    with pytest.raises(InputError) as e:
        read_chat_jsonl(path)
    assert e.value.line == 3 and e.value.file == path
    assert "bad.jsonl:3" in str(e.value)


def test_missing_assistant_turn_names_field(tmp_path):
    only_user = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    path = _write(tmp_path / "x.jsonl", [GOOD, only_user])
    with pytest.raises(InputError) as e:
        read_chat_jsonl(path)
    assert (e.value.line, e.value.field) == (2, "messages")
    assert "assistant" in e.value.message


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"msgs": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": 3}]}, "messages[1].content"),
        ({"messages": ["hi"]}, "messages[0]"),
    ],
)
def test_field_errors(tmp_path, obj, field):
    path = _write(tmp_path / "x.jsonl", [json.dumps(obj)])
    with pytest.raises(InputError) as e:
        read_chat_jsonl(path)
    assert e.value.field == field and e.value.line == 1


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_chat_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="no examples"):
        read_chat_jsonl(_write(tmp_path / "empty.jsonl", [""]))


def test_max_examples(tmp_path):
    assert len(read_chat_jsonl(_write(tmp_path / "a.jsonl", [GOOD] * 5), max_examples=2)) == 2
