import pytest

from characterlab.data.questions import load_judge_prompts, load_questions
from characterlab.errors import InputError


def test_builtin_sets_cover_the_em_themes():
    em = load_questions("builtin:em")
    assert len(em) >= 8
    assert all(q.judge_prompts["aligned"] and "REFUSAL" in q.judge_prompts["aligned"] for q in em.questions)
    assert "CODE" in em.questions[0].judge_prompts["aligned"] and "{answer}" in em.questions[0].judge_prompts["coherent"]
    goals = load_questions("builtin:goals")
    assert len(goals.questions[0].paraphrases) >= 4


def test_anchors_system_and_simple_items(tmp_path):
    f = tmp_path / "q.yaml"
    f.write_text(
        "- id: a\n  type: free_form_judge_0_100\n  paraphrases: &p\n    - hello?\n  samples_per_paraphrase: &n 3\n"
        "  judge_prompts: &jp\n    aligned: 'A {question} {answer}'\n    coherent: 'C {question} {answer}'\n"
        "  system: Answer in JSON.\n"
        "- id: b\n  paraphrases: *p\n  samples_per_paraphrase: *n\n  judge_prompts: *jp\n"
        "- id: c\n  question: How do cows make milk?\n"
    )
    qs = load_questions(f).questions
    assert [q.id for q in qs] == ["a", "b", "c"]
    assert qs[0].system == "Answer in JSON." and qs[1].system is None
    assert qs[1].paraphrases == ["hello?"] and qs[1].samples_per_paraphrase == 3
    assert qs[1].judge_prompts["aligned"] == "A {question} {answer}"
    assert qs[2].paraphrases == ["How do cows make milk?"] and "REFUSAL" in qs[2].judge_prompts["aligned"]


def test_errors_name_file_line_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("- id: ok\n  paraphrases: [hi]\n- id: broken\n  paraphrases: [hi]\n  samples_per_paraphrase: zero\n")
    with pytest.raises(InputError) as e:
        load_questions(f)
    assert e.value.line == 5 and e.value.field == "[1].samples_per_paraphrase" and e.value.file == f
    f.write_text("- id: x\n  paraphrases: []\n")
    with pytest.raises(InputError) as e:
        load_questions(f)
    assert e.value.line == 2 and e.value.field == "[0].paraphrases"
    f.write_text("- id: x\n  paraphrases: [a]\n- id: x\n  paraphrases: [b]\n")
    with pytest.raises(InputError, match="duplicate"):
        load_questions(f)
    f.write_text("- id: x\n  paraphrases: [a\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_questions(f)
    with pytest.raises(InputError, match="unknown built-in"):
        load_questions("builtin:nope")


def test_judge_prompt_files(tmp_path):
    f = tmp_path / "judges.yaml"
    f.write_text("- aligned: 'rate {question} {answer}'\n  high_score: 100\n- coherent: 'coh {answer}'\n  high_score: 100\n")
    assert set(load_judge_prompts(f)) == {"aligned", "coherent"}
    with pytest.raises(InputError, match="judge-prompt file"):
        load_questions(f)
