import csv
import json

import pytest

from characterlab.errors import InputError
from characterlab.judge.judged_data import (
    cross_fit_split,
    load_judged,
    read_judged_csv,
    read_split,
    split_models,
)


def write_csv(path, rows, header=("question", "answer", "question_id", "aligned", "coherent")):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_copies_of_one_model_are_grouped_and_deduplicated(tmp_path):
    rows_a = [("q", f"answer {i}", "q1", 90, 95) for i in range(10)]
    write_csv(tmp_path / "x" / "model_a.csv", rows_a)
    write_csv(tmp_path / "y" / "model_a_copy.csv", rows_a)
    write_csv(tmp_path / "model_b.csv", [("q", f"other {i}", "q1", 10, 80) for i in range(10)])
    write_csv(tmp_path / "unlabelled.csv", [("q", "a", "q1")], header=("question", "answer", "question_id"))
    data = load_judged([tmp_path])
    assert len(data.models) == 2
    assert len(data.rows) == 20
    assert data.skipped_files == ["unlabelled.csv"]
    assert sum(r.reference_misaligned for r in data.rows) == 10


def test_empty_scores_are_none_and_bad_scores_are_located(tmp_path):
    f = tmp_path / "m.csv"
    write_csv(f, [("q", "multi\nline answer", "id", "", "80"), ("q", "b", "id", "abc", "80")])
    with pytest.raises(InputError) as e:
        read_judged_csv(f)
    assert e.value.line == 4 and e.value.field == "aligned"  # the second record starts on line 4
    write_csv(f, [("q", "a", "id", "", "80"), ("q", "b", "id", "150", "80")])
    with pytest.raises(InputError, match="outside 0..100"):
        read_judged_csv(f)
    write_csv(f, [("q", "a", "id", "nan", "80")])
    assert read_judged_csv(f)[0].aligned is None
    write_csv(f, [("q", "a")], header=("question", "answer"))
    with pytest.raises(InputError, match="missing column"):
        read_judged_csv(f)


def test_split_holds_out_whole_models_across_the_em_range(tmp_path):
    for m in range(20):
        write_csv(tmp_path / f"m{m}.csv", [("q", f"m{m} a{i}", "q", 10 if i < m else 90, 90) for i in range(20)])
    data = load_judged([tmp_path])
    split = split_models(data)
    assert set(split.values()) == {"train", "calibration", "validation"}
    val_rates = sorted(int(m[1:-4]) for m, s in split.items() if s == "validation")
    assert val_rates[0] < 5 and val_rates[-1] > 15  # spans clean to misaligned


def test_a_split_file_must_give_every_model_a_known_role(tmp_path):
    for m in range(3):
        write_csv(tmp_path / "data" / f"m{m}.csv", [("q", f"m{m} a{i}", "q", 90, 90) for i in range(3)])
    data = load_judged([tmp_path / "data"])
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"m0.csv": "train", "m1.csv": "calibration", "m2.csv": "validation"}))
    assert read_split(f, data)["m2.csv"] == "validation"
    f.write_text(json.dumps({"m0.csv": "train", "m1.csv": "calibration", "m2.csv": "test"}))
    with pytest.raises(InputError, match="field 'm2.csv'.*role 'test'"):
        read_split(f, data)
    f.write_text(json.dumps({"m0.csv": "train", "m1.csv": "calibration"}))
    with pytest.raises(InputError, match="no role, e.g. 'm2.csv'"):
        read_split(f, data)
    f.write_text(json.dumps({"m0.csv": "train", "m1.csv": "calibration", "m2.csv": "train", "m9.csv": "train"}))
    with pytest.raises(InputError, match="not in the data, e.g. 'm9.csv'"):
        read_split(f, data)
    f.write_text(json.dumps({"m0.csv": "train", "m1.csv": "train", "m2.csv": "validation"}))
    with pytest.raises(InputError, match="one train and one calibration"):
        read_split(f, data)
    f.write_text("{not json")
    with pytest.raises(InputError, match="split.json.*cannot read"):
        read_split(f, data)


def test_split_cli_writes_the_default_split_and_its_cross_fit_complement(tmp_path):
    from typer.testing import CliRunner

    from characterlab.cli import app

    for m in range(20):
        write_csv(tmp_path / "data" / f"m{m}.csv", [("q", f"m{m} a{i}", "q", 10 if i < m else 90, 90) for i in range(20)])
    data = load_judged([tmp_path / "data"])
    runs = {}
    for flag in ("", "--swap", "--no-validation"):
        f = tmp_path / f"split{flag}.json"
        r = CliRunner().invoke(app, ["judge", "split", "--data", str(tmp_path / "data"), "--out", str(f)] + ([flag] if flag else []))
        assert r.exit_code == 0, r.output
        runs[flag] = read_split(f, data)
    assert runs[""] == split_models(data)
    for m, role in runs[""].items():
        assert runs["--swap"][m] == {"train": "validation", "validation": "train"}.get(role, role)
        assert runs["--no-validation"][m] == ("calibration" if role == "calibration" else "train")


def test_k_fold_splits_validate_every_model_once_and_keep_calibration_fixed(tmp_path):
    from typer.testing import CliRunner

    from characterlab.cli import app

    for m in range(30):
        write_csv(tmp_path / "data" / f"m{m}.csv", [("q", f"m{m} a{i}", "q", 10 if i < m else 90, 90) for i in range(30)])
    data = load_judged([tmp_path / "data"])
    default = split_models(data)
    assert cross_fit_split(data, 3, 0) == default  # fold 0 of three is the default split
    for k in (2, 3, 5):
        folds = [cross_fit_split(data, k, i) for i in range(k)]
        for m, role in default.items():
            roles = [f[m] for f in folds]
            if role == "calibration":
                assert roles == ["calibration"] * k
            else:
                assert roles.count("validation") == 1 and roles.count("train") == k - 1
        if k == 3:  # 27 non-calibration models, dealt out evenly
            assert [sum(r == "validation" for r in f.values()) for f in folds] == [9, 9, 9]
    f = tmp_path / "fold.json"
    r = CliRunner().invoke(app, ["judge", "split", "--data", str(tmp_path / "data"), "--out", str(f), "--folds", "3", "--fold", "2"])
    assert r.exit_code == 0, r.output
    assert read_split(f, data) == cross_fit_split(data, 3, 2)
    for bad, msg in ((["--folds", "3", "--fold", "3"], "must be below"), (["--folds", "3"], "go together"),
                     (["--folds", "3", "--fold", "0", "--swap"], "choose one")):
        r = CliRunner().invoke(app, ["judge", "split", "--data", str(tmp_path / "data"), "--out", str(f)] + bad)
        assert r.exit_code != 0 and msg in str(r.exception), r.output
