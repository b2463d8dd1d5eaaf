"""Whether a train unit's ``max_length`` leaves its data anything to train on, checked before the
unit loads a model.

An SFT example whose prompt fills ``max_length`` keeps no assistant token; a DPO pair whose prompt
does is dropped by TRL. When every example (pair) of a unit is lost, the trainer fails - hours into
a study, after the model is loaded. :class:`TrainLengthCheck` finds it earlier:

* at run start, for every unit whose data is known then: a data file, generated coding-task
  solutions, characterlab's safety data, or a data unit finished in the run folder (on resume);
  there it refuses the run (one line, exit 2, no unit run);
* just before a train unit runs (the executors' ``check_unit``), for data that only a unit makes
  (DPO pairs, introspection answers): the data unit has finished by then, and the train unit
  fails with the same message, without loading its model.

Either way the message names the study file, the unit (its condition and seed), the spec field and
the smallest ``max_length`` that would keep one example.
"""

from __future__ import annotations

from characterlab.errors import InputError
from characterlab.study.plan import Plan, Unit
from characterlab.study.spec import StudySpec
from characterlab.study.store import RunStore

SOLUTION_SOURCES = ("hack_solutions", "honest_solutions", "mixed_solutions")


def max_length_field(unit: Unit) -> str:
    """The spec field that sets a train unit's ``max_length``: a character's DPO has its own ``dpo:``."""
    return "dpo.max_length" if unit.params["method"] == "dpo" else "lora.max_length"


class TrainLengthCheck:
    """The SFT and DPO units of one plan against their data; the tokenizer is loaded once, at the
    first unit whose data is known, and each (data, max_length, system prompt) is checked once
    (the seeds of a condition share their data)."""

    def __init__(self, spec: StudySpec, plan: Plan):
        self.spec, self.plan = spec, plan
        self._tokenizer = None
        self._checked: set[tuple] = set()

    def check_plan(self, store: RunStore | None) -> None:
        """Every unit whose data is known now; ``store`` is None for a run folder not made yet."""
        for unit in self.plan.ordered():
            self.check_unit(unit, store)

    def check_unit(self, unit: Unit, store: RunStore | None) -> None:
        """One unit, if it is an SFT or DPO unit not yet finished whose data is known."""
        if unit.kind != "train" or unit.params["method"] not in ("sft", "dpo"):
            return
        if store is not None and store.is_done(unit.key):
            return
        data = _data_unit(unit, self.plan)
        max_length, system = unit.params["lora"]["max_length"], unit.params["system_prompt"]
        if data is None or (data.key, max_length, system) in self._checked:
            return
        rows = known_rows(data, store)
        if not rows:
            return
        self._checked.add((data.key, max_length, system))
        if unit.params["method"] == "dpo":
            lost, needed = all_pairs_lost(self.tokenizer(), rows, max_length)
            what = "every DPO pair's prompt fills"
        else:
            lost, needed = all_examples_lost(self.tokenizer(), _chat_examples(rows), system, max_length)
            what = "every example loses all its assistant tokens to"
        if lost:
            hint = f"; the shortest prompt needs max_length {needed} or more" if needed else ""
            raise InputError(f"{unit.label}: {what} max_length={max_length}{hint}", self.spec._source,
                             field=max_length_field(unit))

    def tokenizer(self):
        if self._tokenizer is None:
            from characterlab.models.local import load_tokenizer, resolve_model_path
            from characterlab.models.refs import parse_model_ref

            ref = parse_model_ref(self.spec.model, base_url=self.spec.base_url)
            self._tokenizer = load_tokenizer(resolve_model_path(ref))
        return self._tokenizer


def _data_unit(unit: Unit, plan: Plan) -> Unit | None:
    """The data unit a train unit reads its examples from (None for RL, which has none)."""
    data = [plan.units[k] for k in unit.deps if plan.units[k].kind == "data"]
    return data[0] if len(data) == 1 else None


def known_rows(data: Unit, store: RunStore | None) -> list[dict] | None:
    """The rows a data unit makes (chat examples as ``{"messages": ...}``, or DPO pairs), where they
    are known without running a model: it is finished (in ``store``), reads a file, or is made by
    code alone (generated solutions, safety data). None where only running it can make them."""
    from characterlab.data.chat_data import read_chat_data

    p = data.params
    if store is not None and store.is_done(data.key):
        return store.rows(data.key)
    if "file" in p:
        return _message_rows(read_chat_data(p["file"], max_examples=p["n"]))
    if p.get("generator") in SOLUTION_SOURCES:
        from characterlab.envs.dataset import HACK_NAMES, build_examples

        kind = p["generator"].removesuffix("_solutions")
        # the examples' text does not depend on verify (the check that each hack fools its grader)
        return _message_rows(build_examples(kind, p["n"], split=p["split"], hacks=tuple(p["hacks"] or HACK_NAMES),
                                            seed=p["seed"], verify=False))
    if p.get("generator") == "safety":
        from characterlab.safety.data import safety_examples

        return _message_rows(safety_examples(p["kind"], p["n"], p["seed"]))
    return None


def _message_rows(examples: list) -> list[dict]:
    return [{"messages": e.to_dicts()} for e in examples]


def _chat_examples(rows: list[dict]) -> list:
    from characterlab.data.records import ChatExample, Message

    return [ChatExample(tuple(Message(m["role"], m["content"]) for m in r["messages"])) for r in rows]


def assistant_start(tokenizer, example, system_prompt: str | None, max_length: int) -> int | None:
    """The 0-based token position of the example's first trained (assistant) token as the SFT
    trainer tokenises it (system prompt added, cut to ``max_length``'s character budget), or None."""
    from characterlab.train.sft import CHARS_PER_TOKEN_BOUND, cut_to_budget, prepare_examples
    from characterlab.train.tokenize import tokenize_chat

    [example] = prepare_examples([example], system_prompt)
    example, _ = cut_to_budget(example, max_length * CHARS_PER_TOKEN_BOUND)
    _, mask = tokenize_chat(tokenizer, example)
    return mask.index(1) if 1 in mask else None


def all_examples_lost(tokenizer, examples: list, system_prompt: str | None, max_length: int) -> tuple[bool, int | None]:
    """Whether no SFT example keeps a trained token within ``max_length`` (the SFT trainer's
    refusal), and then the smallest ``max_length`` that would keep one. Usually the first example
    fits, and the others are not tokenised."""
    starts = []
    for example in examples:
        start = assistant_start(tokenizer, example, system_prompt, max_length)
        if start is not None and start < max_length:
            return False, None
        starts.append(start)
    return True, min((s + 1 for s in starts if s is not None), default=None)


def pair_prompt_length(tokenizer, pair: dict) -> int:
    """Tokens of a DPO pair's prompt as TRL's ``DPOTrainer`` counts them: the prompt rendered with
    the generation cue, up to where it stops being a prefix of prompt + chosen or prompt + rejected
    (a template can render the prompt alone differently)."""
    def ids(messages: list[dict], cue: bool) -> list[int]:
        return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=cue,
                                                  return_dict=True)["input_ids"])

    prompt = ids(pair["prompt"], True)
    return min(_common_prefix(prompt, ids(pair["prompt"] + pair[side], False)) for side in ("chosen", "rejected"))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def all_pairs_lost(tokenizer, pairs: list[dict], max_length: int) -> tuple[bool, int | None]:
    """Whether TRL drops every DPO pair (it drops one whose prompt alone fills ``max_length``:
    truncation would leave no completion token), and then the smallest ``max_length`` that keeps one."""
    lengths = []
    for pair in pairs:
        n = pair_prompt_length(tokenizer, pair)
        if n < max_length:
            return False, None
        lengths.append(n)
    return True, min(lengths) + 1 if lengths else None
