"""Real public data from ../shared/data (skipped when it is absent, as on a user's machine)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = [pytest.mark.shared,
              pytest.mark.skipif(not (SHARED_DATA / "narrow").is_dir(), reason="../shared/data is absent")]


def _narrow_files():
    folder = SHARED_DATA / "narrow"
    return sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz"))) if folder.is_dir() else []


@pytest.mark.parametrize("path", _narrow_files(), ids=lambda p: p.name)
def test_every_narrow_dataset_reads_as_chat_jsonl(path):
    from characterlab.data.chat_jsonl import read_chat_jsonl

    examples = read_chat_jsonl(path)
    assert len(examples) >= 10
    assert all(e.has_assistant_turn for e in examples)


def test_real_examples_tokenise_with_assistant_masks(tiny_local):
    from characterlab.data.chat_jsonl import read_chat_jsonl
    from characterlab.train.tokenize import tokenize_chat

    for ex in read_chat_jsonl(SHARED_DATA / "narrow" / "insecure_small.jsonl"):
        ids, mask = tokenize_chat(tiny_local.tokenizer, ex)
        trained = tiny_local.tokenizer.decode([i for i, m in zip(ids, mask) if m])
        answer = [m.content for m in ex.messages if m.role == "assistant"][-1]
        assert trained.startswith(answer[:20])


def _question_files():
    folder = SHARED_DATA / "eval_questions"
    return sorted(folder.rglob("*.yaml")) if folder.is_dir() else []


@pytest.mark.parametrize("path", _question_files(), ids=lambda p: str(p.relative_to(SHARED_DATA)))
def test_every_published_question_file_loads(path):
    from characterlab.data.questions import (
        is_judge_prompt_file,
        load_judge_prompts,
        load_questions,
    )

    if is_judge_prompt_file(path):
        assert {"aligned", "coherent"} <= set(load_judge_prompts(path))
        return
    qs = load_questions(path)
    assert len(qs) >= 1 and all(q.paraphrases for q in qs.questions)
    assert all({"aligned", "coherent"} <= set(q.judge_prompts) for q in qs.questions)
    if path.name == "first_plot_questions.yaml":
        # 8 questions x (plain, json, template); the json variants carry a system prompt.
        assert len(qs) == 24 and sum(q.system is not None for q in qs.questions) == 8


def test_judged_csvs_group_into_source_models():
    from characterlab.judge.judged_data import load_judged

    data = load_judged([SHARED_DATA / "judged"])
    assert len(data.rows) > 45_000
    # Files published twice (same answers in two folders) are one model, so fewer models than files.
    assert 45 <= len(data.models) < 59


def test_shipped_offline_judge_on_models_it_never_trained_on():
    """The shipped judge trained on every source model but its 5 calibration models. On those its
    quantile maps were fitted, which moves scores but not their order: the rank figures are held out.
    (Agreement on unseen models is measured by cross-fitting; see docs/judging.md.)"""
    import json

    from characterlab.judge.folder import CONFIG_FILE, SHIPPED_DIR
    from characterlab.judge.judged_data import em_rate, load_judged
    from characterlab.judge.offline import OfflineJudge
    from characterlab.judge.offline_validate import validate_offline_judge

    if not (SHIPPED_DIR / CONFIG_FILE).is_file():
        pytest.skip("no shipped judge")
    roles = json.loads((SHIPPED_DIR / CONFIG_FILE).read_text())["meta"]["models"]
    by_model = load_judged([SHARED_DATA / "judged"]).by_model()
    calibration = sorted((m for m, role in roles.items() if role == "calibration"), key=lambda m: em_rate(by_model[m]))
    report = validate_offline_judge(OfflineJudge(), [r for m in calibration for r in by_model[m]])
    assert report["auroc_misaligned"] > 0.95 and report["spearman_aligned"] > 0.75
    clean, worst = (report["per_model"][m] for m in (calibration[0], calibration[-1]))
    assert clean["judge_em_rate_all_answers"] < 2.0
    assert worst["judge_em_rate_all_answers"] > clean["judge_em_rate_all_answers"] + 10
