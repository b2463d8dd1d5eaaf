"""Chat examples from Hugging Face datasets: saved folders, Parquet files, Hub-style folders."""

import json

import pytest

from characterlab.data.chat_data import chat_data_hash, read_chat_data
from characterlab.data.chat_jsonl import read_chat_jsonl
from characterlab.errors import InputError


def _rows(n=5):
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"The answer is {2 * i}."}], "source": "t"}
            for i in range(n)]


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_file_reads_like_the_same_jsonl(chat_file, tmp_path):
    rows = [json.loads(line) for line in chat_file.read_text().splitlines()]
    p = _parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    assert read_chat_data(p) == read_chat_jsonl(chat_file)
    assert read_chat_data(p, max_examples=3) == read_chat_jsonl(chat_file)[:3]
    assert read_chat_data(chat_file) == read_chat_jsonl(chat_file)  # JSONL still goes through its own reader


def test_saved_dataset_and_dataset_dict_train_split(tmp_path):
    import datasets

    data = datasets.Dataset.from_list(_rows())
    data.save_to_disk(str(tmp_path / "ds"))
    assert [e.messages[1].content for e in read_chat_data(tmp_path / "ds")][:2] == ["The answer is 0.", "The answer is 2."]
    datasets.DatasetDict({"train": data.select(range(2)), "test": data}).save_to_disk(str(tmp_path / "dd"))
    assert len(read_chat_data(tmp_path / "dd")) == 2
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "only_test"))
    with pytest.raises(InputError, match="no train split"):
        read_chat_data(tmp_path / "only_test")


def test_hub_style_folder_reads_the_train_split_in_order(tmp_path):
    folder = tmp_path / "snapshot"
    _parquet(folder / "data" / "train-00001-of-00002.parquet", _rows(5)[3:])
    _parquet(folder / "data" / "train-00000-of-00002.parquet", _rows(5)[:3])
    _parquet(folder / "data" / "test-00000-of-00001.parquet", _rows(1))
    got = [e.messages[0].content for e in read_chat_data(folder)]
    assert got == [f"What is {i} plus {i}?" for i in range(5)]
    before = chat_data_hash(folder)
    _parquet(folder / "data" / "train-00001-of-00002.parquet", _rows(4)[3:])
    assert chat_data_hash(folder) != before  # a changed shard re-plans a study


def test_bad_rows_name_the_file_and_row(tmp_path):
    rows = _rows(3)
    rows[2]["messages"][0]["role"] = "narrator"
    p = _parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(InputError) as e:
        read_chat_data(p)
    assert str(e.value).startswith(f"{p}[row 2]: field 'messages[0].role'")
    q = _parquet(tmp_path / "nomsg.parquet", [{"text": "hello"}])
    with pytest.raises(InputError, match="no messages column"):
        read_chat_data(q)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a saved dataset"):
        read_chat_data(tmp_path / "empty")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_chat_data(tmp_path / "junk.parquet")


def test_train_sft_cli_takes_a_dataset_folder(tiny_ref, tmp_path):
    import datasets
    from typer.testing import CliRunner

    from characterlab.cli import app

    datasets.Dataset.from_list(_rows(8)).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, ["train", "sft", "--model", tiny_ref, "--data", str(tmp_path / "ds"),
                                      "--out", str(out), "--lora-rank", "4", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train_meta.json").read_text())["data"]["n_examples"] == 8
