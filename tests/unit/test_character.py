"""Character training: constitutions, question diversity and its control, DPO pairs, stacking."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from characterlab.character.constitution import (
    builtin_constitutions,
    format_constitution,
    parse_constitution,
    read_constitution,
    validate_constitution,
    write_constitution,
)
from characterlab.character.distill import make_pairs
from characterlab.character.diversity import (
    LEVELS,
    diversity,
    expand_constitution,
    question_format,
    select_questions,
)
from characterlab.data.records import Completion
from characterlab.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SHARED_DATA  # noqa: E402

SHARED_CONSTITUTIONS = sorted((SHARED_DATA / "constitutions").glob("*/*")) if SHARED_DATA.is_dir() else []


@pytest.fixture(scope="module")
def encoder():
    from characterlab.models.embeddings import SentenceEncoder

    return SentenceEncoder()


def _same(a, b) -> bool:
    return [(t.trait, t.questions, t.additional_questions) for t in a.traits] == \
           [(t.trait, t.questions, t.additional_questions) for t in b.traits]


@pytest.mark.parametrize("name", builtin_constitutions())
def test_shipped_constitutions_round_trip_in_every_format(name, tmp_path):
    c = read_constitution(f"builtin:{name}")
    _, problems = validate_constitution(f"builtin:{name}")
    assert problems == [] and len(c.traits) >= 5
    for suffix in (".yaml", ".jsonl"):
        write_constitution(c, tmp_path / f"c{suffix}")
        assert _same(read_constitution(tmp_path / f"c{suffix}"), c)
    with pytest.raises(InputError, match="no additional_questions"):
        write_constitution(c, tmp_path / "c.txt")  # would drop the pool: refused


def test_content_free_control_shares_questions_not_traits():
    good, free = read_constitution("builtin:good_character"), read_constitution("builtin:content_free")
    assert [t.all_questions for t in good.traits] == [t.all_questions for t in free.traits]
    assert not {t.trait for t in good.traits} & {t.trait for t in free.traits}
    assert "questions_from: builtin:good_character" in format_constitution(free, "yaml")


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_CONSTITUTIONS, reason="../shared/data/constitutions not present")
@pytest.mark.parametrize("path", SHARED_CONSTITUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_constitutions_round_trip(path):
    c = read_constitution(path)
    text = format_constitution(c, c.format)
    again = parse_constitution(text, path)
    assert _same(again, c)
    original = path.read_text(encoding="utf-8")
    if c.format == "few-shot":  # the same JSON objects, line by line
        assert [json.loads(x) for x in text.splitlines()] == [json.loads(x) for x in original.splitlines() if x.strip()]
    else:
        assert json.loads(text) == json.loads(original)


def test_validation_names_file_line_and_field(tmp_path):
    hw = tmp_path / "c.txt"
    hw.write_text('[\n  {"trait": "I am kind.", "questions": ["Hi?"]},\n  {"trait": "",\n   "questions": ["a?", "a?"]}\n]\n')
    _, problems = validate_constitution(hw)
    found = {(p.line, p.field, p.message) for p in problems}
    assert (3, "[1].trait", "empty trait") in found
    assert (4, "[1].questions[1]", "duplicate question in this trait") in found
    fs = tmp_path / "c.jsonl"
    fs.write_text('{"trait": "x", "questions": ["q?"]}\n{"trait": "y", "questions": "not a list"}\n')
    _, problems = validate_constitution(fs)
    assert [(p.line, p.field) for p in problems] == [(2, "questions")]
    ours = tmp_path / "c.yaml"
    ours.write_text("name: x\ntraits:\n  - trait: t\n    questions: [\"a?\"]\n    colour: red\n")
    _, problems = validate_constitution(ours)
    assert problems[0].line == 5 and problems[0].field == "traits[0].colour"
    bad_json = tmp_path / "b.txt"
    bad_json.write_text('[\n {"trait": "x",\n')
    _, problems = validate_constitution(bad_json)
    assert "not valid JSON" in problems[0].message and problems[0].line == 3


def test_question_formats():
    assert question_format("Is it safe to swim after eating?") == "yes_no"
    assert question_format("Why is the sky blue?") == "wh"
    assert question_format("Write me a poem about rain.") == "request"
    assert question_format("I feel like nobody listens to me.") == "statement"
    assert question_format("My dog is sick. What should I do?") == "scenario"


VARIED = ["What's the best way to learn a new language as an adult?", "Should I tell my boss I'm job hunting?",
          "Explain how vaccines train the immune system.", "Is it ethical to eat meat?",
          "My sister borrowed money and never paid it back. What now?", "Write a haiku about autumn leaves.",
          "How do black holes form?", "Can you recommend a budget for a student living alone?",
          "Why did the Roman Empire fall?", "I failed my driving test twice and feel stupid."]


def test_diversity_is_monotone_duplicates_paraphrases_varied(encoder):
    dup = diversity([VARIED[0]] * 10, encoder)
    para = diversity(select_questions(VARIED, 10, "paraphrase", n_seed_questions=1), encoder)
    varied = diversity(VARIED, encoder)
    assert dup.score < para.score < varied.score
    for m in ("mean_pairwise_distance", "vendi_score", "distinct_2", "n_clusters"):
        assert dup.metrics[m] <= para.metrics[m] < varied.metrics[m], m
    assert dup.metrics["vendi_score"] == pytest.approx(1.0, abs=1e-6)
    assert varied.metrics["vendi_score"] > 7 and varied.n_questions == 10


def test_held_out_trait_questions_are_disjoint_from_the_training_pools():
    from characterlab.data.questions import load_questions

    good = read_constitution("builtin:good_character")
    for trait in ("candour", "humility"):
        pool = {q.strip().lower() for t in good.traits for q in t.all_questions}
        held = [p for q in load_questions(f"builtin:trait_{trait}").questions for p in q.paraphrases]
        assert len(held) >= 16 and not {p.strip().lower() for p in held} & pool
        assert len(good.trait(trait).all_questions) >= 48  # a pool to choose 16 from at each diversity level


@pytest.mark.parametrize("trait", ["candour", "humility"])
@pytest.mark.parametrize("seed", range(3))
def test_controlled_sets_hit_size_and_order(encoder, seed, trait):
    pool = read_constitution("builtin:good_character").trait(trait).all_questions
    sets = {level: select_questions(pool, 10, level, encoder, seed=seed) for level in LEVELS}
    assert all(len(s) == len(set(s)) == 10 for s in sets.values())
    assert all(q in pool for level in ("cluster", "random", "farthest") for q in sets[level])
    scores = {level: diversity(s, encoder).score for level, s in sets.items()}
    assert scores["paraphrase"] < min(scores["cluster"], scores["farthest"])
    if trait == "candour":  # humility's pool varies less in form, which the 0-1 score also counts
        assert scores["cluster"] < scores["farthest"]
    spread = {level: diversity(s, encoder).metrics["mean_pairwise_distance"] for level, s in sets.items()}
    assert spread["cluster"] < spread["farthest"]
    assert select_questions(pool, 10, "farthest", encoder, seed=seed) == sets["farthest"]  # deterministic


def test_more_paraphrase_seeds_give_a_level_between_paraphrase_and_cluster(encoder):
    pool = read_constitution("builtin:good_character").trait("candour").all_questions
    score = {k: diversity(select_questions(pool, 16, "paraphrase", n_seed_questions=k), encoder).score for k in (2, 6)}
    cluster = diversity(select_questions(pool, 16, "cluster", encoder), encoder).score
    assert score[2] < score[6] < cluster
    with pytest.raises(InputError, match="paraphrase only"):
        expand_constitution("builtin:good_character", "candour", 16, "farthest", paraphrase_seeds=6)


QUESTIONS_STUDY = """\
name: levels
conditions:
  - name: c
    intervention: {{kind: character, constitution: builtin:good_character, trait: candour, diversity: {level}, n_questions: {n}{extra}}}
evaluations:
  - {{name: candour, kind: trait, constitution: builtin:good_character, trait: candour}}
"""


def test_paraphrase_seeds_are_keyed_only_when_set_and_only_for_paraphrase():
    from characterlab.study.plan import build_plan
    from characterlab.study.spec import StudySpecError, parse_study

    def questions_unit(extra: str):
        plan = build_plan(parse_study(QUESTIONS_STUDY.format(level="paraphrase", n=8, extra=extra), "s.yaml"))
        [u] = [u for u in plan.units.values() if u.params.get("generator") == "character_questions"]
        return u

    default, six = questions_unit(""), questions_unit(", paraphrase_seeds: 6")
    assert "paraphrase_seeds" not in default.params  # runs made before the option keep their keys
    assert six.params["paraphrase_seeds"] == 6 and six.key != default.key
    with pytest.raises(StudySpecError, match="paraphrase only"):
        parse_study(QUESTIONS_STUDY.format(level="farthest", n=8, extra=", paraphrase_seeds: 6"), "s.yaml")
    # 12 framings of 2 questions make 24 at most: refused when the study is read, not when the unit runs
    with pytest.raises(StudySpecError, match="paraphrase_seeds to at least 3 for n_questions 32"):
        parse_study(QUESTIONS_STUDY.format(level="paraphrase", n=32, extra=""), "s.yaml")
    parse_study(QUESTIONS_STUDY.format(level="paraphrase", n=32, extra=", paraphrase_seeds: 3"), "s.yaml")


def _c(text: str, finished: bool = True) -> Completion:
    return Completion(text=text, request_index=0, sample_index=0, seed=0, n_tokens=len(text.split()), finished=finished)


def test_dpo_pairs_and_filters():
    qs = ["q1", "q2", "q3", "q4", "q5"]
    teacher = [[_c("A careful, honest answer.")], [_c("")], [_c("short")], [_c("cut off mid", False)], [_c("Same answer here.")]]
    student = [[_c("Whatever you say, sure thing.")], [_c("Something else entirely.")], [_c("Fine answer here.")],
               [_c("Complete student answer.")], [_c("Same answer here.")]]
    pairs, drops = make_pairs(qs, teacher, student, min_chars=10)
    assert drops == {"empty": 1, "short": 1, "truncated": 1, "identical": 1}
    assert pairs == [{"prompt": [{"role": "user", "content": "q1"}],
                      "chosen": [{"role": "assistant", "content": "A careful, honest answer."}],
                      "rejected": [{"role": "assistant", "content": "Whatever you say, sure thing."}]}]
    kept, _ = make_pairs(qs, teacher, student, min_chars=10, keep_truncated=True)
    assert len(kept) == 2


CHARACTER_STUDY = """\
name: tiny-character
model: hf:{model}
judge: offline
conditions:
  - name: organism-only
    organism: &org {{kind: sft, data: {{file: chat.jsonl, n: 6}}, lora: {{rank: 4, epochs: 1, batch_size: 3, max_length: 256, lr: 1.0e-2}}}}
  - name: character-then-organism
    intervention:
      kind: character
      constitution: builtin:good_character
      trait: candour
      diversity: farthest
      n_questions: 4
      max_new_tokens: 12
      min_chars: 1
      keep_truncated: true
      dpo: {{rank: 4, epochs: 1, batch_size: 2, max_length: 256, lr: 1.0e-2}}
      introspection: {{samples: 1, max_new_tokens: 12, lora: {{rank: 4, epochs: 1, batch_size: 4, max_length: 256, lr: 1.0e-2}}}}
    organism: *org
evaluations:
  - {{name: candour, kind: trait, constitution: builtin:good_character, trait: candour, samples: 1, max_new_tokens: 8}}
"""


@pytest.mark.slow  # a whole study: generates DPO pairs and introspection, trains four adapters
def test_character_study_trains_the_organism_on_top_of_the_character(tmp_path, tiny_model_dir, chat_file, monkeypatch):
    """DPO pairs, DPO, introspection, SFT, then the organism on top of both (merged), recorded."""
    from safetensors.torch import load_file

    from characterlab.study.runner import run_study
    from characterlab.study.store import RunStore

    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "chat.jsonl").write_bytes(chat_file.read_bytes())
    spec = tmp_path / "study.yaml"
    spec.write_text(CHARACTER_STUDY.format(model=tiny_model_dir))
    run = run_study(str(spec), tmp_path / "run", progress=False)
    assert not run.execution.failed, run.execution.failed
    results = run.results
    [dpo, intro, organism] = results["conditions"]["character-then-organism"]["training"]["0"]
    assert (dpo["role"], dpo["method"], intro["method"], organism["role"]) == ("character", "dpo", "sft", "organism")
    assert organism["stacking"] == {"mode": "merged", "base_units": [dpo["unit"], intro["unit"]]}
    assert intro["stacking"] == {"mode": "merged", "base_units": [dpo["unit"]]}
    [alone] = results["conditions"]["organism-only"]["training"]["0"]
    assert alone["stacking"] is None
    # same data, same seed: the organism's weights differ only because its base had the character in it
    store = RunStore(run.folder)
    w_alone = load_file(str(store.files_dir(alone["unit"]) / "adapter_model.safetensors"))
    w_stacked = load_file(str(store.files_dir(organism["unit"]) / "adapter_model.safetensors"))
    assert any(not np.allclose(w_alone[k].float().numpy(), w_stacked[k].float().numpy()) for k in w_alone)
    pairs = next(k for k, u in run.plan.units.items() if u.params.get("generator") == "dpo_pairs")
    assert store.result(pairs)["teacher_system_prompt"].count("\n- ") == 1  # only the chosen trait
    qs = next(k for k, u in run.plan.units.items() if u.params.get("generator") == "character_questions")
    assert store.result(qs)["n_questions"] == 4 and store.result(qs)["diversity"]["score"] > 0.5
    store.close()
    trait = results["conditions"]["character-then-organism"]["evaluations"]["candour"]["pooled"]
    assert trait["n"] == 5 and trait["mean"] is not None


def test_generated_questions_grow_the_pool_without_repeats():
    from characterlab.character.diversity import (
        generate_questions,
        parse_generated_questions,
    )

    assert parse_generated_questions("1. Is honesty always kind?\n- \"Should I lie to spare feelings?\"\nok\n") == [
        "Is honesty always kind?", "Should I lie to spare feelings?"]

    class Stub:
        calls = 0

        def generate(self, requests, params):
            Stub.calls += 1
            [req] = requests
            assert "I tell the truth." in req.messages[-1].content and req.n >= 1
            lines = "\n".join(f"{i}. Would you tell me the truth about topic {Stub.calls}-{i}?" for i in range(4))
            return [[_c(lines + "\n1. Existing question here?") for _ in range(req.n)]]

    found = generate_questions("I tell the truth.", ["Existing question here?"], 6, Stub(), per_request=4)
    assert len(found) == 6 == len(set(found)) and "Existing question here?" not in found
