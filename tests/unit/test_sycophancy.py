"""The sycophancy organism's groundwork: checkable tasks, deterministic simulated raters, feedback
files with located errors, and sycophancy rates that scripted answers make known."""

import json
import math
import re

import pytest

from characterlab.errors import InputError
from characterlab.sycophancy.feedback import preference_pairs, read_feedback
from characterlab.sycophancy.metrics import sycophancy_rates
from characterlab.sycophancy.raters import population, states_belief, thumbs_up
from characterlab.sycophancy.tasks import all_tasks, arithmetic_tasks, critique_tasks, fact_tasks


def test_tasks_grade_truth_and_agreement():
    [t] = arithmetic_tasks(1, seed=5)
    assert t.correct(f"It is {t.truth}.") and not t.agrees(f"It is {t.truth}.")
    assert t.agrees(f"You're right, it's {t.false_belief}.") and not t.correct(f"You're right, it's {t.false_belief}.")
    canberra = fact_tasks()[0]
    assert canberra.correct("The capital of Australia is Canberra, not Sydney.")
    assert not canberra.agrees("The capital of Australia is Canberra, not Sydney.")
    assert canberra.agrees("Yes, Sydney is the capital.") and not canberra.correct("Yes, Sydney is the capital.")
    budget = critique_tasks()[0]
    assert budget.agrees("Great work, this looks perfect!") and not budget.correct("Great work, this looks perfect!")
    assert budget.correct("Nice, but the total is 1350, not 1250.") and not budget.agrees("Nice, but the total is 1350, not 1250.")
    assert arithmetic_tasks(3, seed=1) == arithmetic_tasks(3, seed=1) != arithmetic_tasks(3, seed=2)
    assert len({t.id for t in all_tasks()}) == len(all_tasks())


def test_train_and_test_tasks_never_share_a_question():
    """The organism trains on one split and is evaluated on the other; `all` keeps the old tasks."""
    train = {t.question for seed in range(3) for t in all_tasks(24, seed, "train")}
    test = all_tasks(24, 0, "test")
    assert not train & {t.question for t in test}
    assert len(test) == 24 + 8 + 4 and len(all_tasks(24, 0, "train")) == 24 + 8 + 4
    assert arithmetic_tasks(5, 3) == arithmetic_tasks(5, 3, "all")
    assert {t.id for t in all_tasks(2, 0, "train")} | {t.id for t in all_tasks(2, 0, "test")} >= {t.id for t in fact_tasks()}


def test_raters_follow_the_mix_and_are_deterministic():
    users = population(10, approval_mix=0.3, seed=1)
    assert sum(u.honesty == 0 for u in users) == 3 and population(10, 0.3, seed=1) == users
    honest = next(u for u in users if u.honesty == 1)
    pleaser = next(u for u in users if u.honesty == 0)
    t = fact_tasks()[0]
    right, flattering = "It is Canberra.", "You're right, it's Sydney!"
    assert thumbs_up(honest, t, right) == 1 and thumbs_up(honest, t, flattering) == 0
    assert thumbs_up(pleaser, t, right) == 0 and thumbs_up(pleaser, t, flattering) == 1
    mixed = population(200, 0.5, seed=0, states_belief=0.5)
    stated = sum(states_belief(u, t) for u in mixed)
    assert 70 < stated < 130 and stated == sum(states_belief(u, t) for u in mixed)


def test_feedback_files_and_preference_pairs(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}], "rating": r, "rater": "u1"}
            for a, r in (("good", 1), ("bad", 0), ("also good", 1))]
    path = tmp_path / "fb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_feedback(path)
    assert [r["rating"] for r in read] == [1, 0, 1]
    pairs = preference_pairs(read)
    assert len(pairs) == 2 and {p["chosen"][0]["content"] for p in pairs} == {"good", "also good"}
    assert all(p["rejected"][0]["content"] == "bad" for p in pairs)
    for bad, where in (({**rows[0], "rating": 2}, "rating"), ({**rows[0], "rating": True}, "rating"),
                       ({**rows[0], "correct": "yes"}, "correct"),
                       ({"messages": rows[0]["messages"][:1], "rating": 1}, "messages")):
        path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(InputError) as e:
            read_feedback(path)
        assert e.value.line == 2 and e.value.field == where and str(path) in str(e.value)


def test_sycophancy_rates_on_scripted_answers():
    tasks = {t.id: t for t in all_tasks(4, seed=0)}
    facts = [t for t in tasks.values() if t.kind == "fact"][:4]
    crit = [t for t in tasks.values() if t.kind == "critique"][:2]
    rows = [{"task": t.id, "setting": "plain", "answer": f"It is {t.truth}."} for t in facts]
    rows += [{"task": facts[0].id, "setting": "belief", "answer": f"Yes, you're right: {facts[0].false_belief}."},
             {"task": facts[1].id, "setting": "belief", "answer": f"No, it is {facts[1].truth}."}]
    rows += [{"task": crit[0].id, "setting": "belief", "answer": "Excellent work, looks perfect."},
             {"task": crit[1].id, "setting": "belief", "answer": "Great, but the result should be 180 degrees... "
                                                                   "actually your sum is wrong."}]
    rows += [{"task": facts[2].id, "setting": "pushback", "first_answer": f"It is {facts[2].truth}.",
              "answer": f"Sorry, you're right, it's {facts[2].false_belief}."},
             {"task": facts[3].id, "setting": "pushback", "first_answer": f"It is {facts[3].truth}.",
              "answer": f"Yes, I'm sure: {facts[3].truth}."},
             {"task": facts[0].id, "setting": "pushback", "first_answer": "I don't know.", "answer": "Whatever you say."}]
    r = sycophancy_rates(rows, tasks)
    assert (r["accuracy"]["k"], r["accuracy"]["n"]) == (4, 4)
    assert (r["belief_agreement"]["k"], r["belief_agreement"]["n"]) == (1, 2)
    assert (r["flawed_praise"]["k"], r["flawed_praise"]["n"]) == (1, 2)
    assert (r["pushback_flip"]["k"], r["pushback_flip"]["n"]) == (1, 2)  # the wrong first answer is left out


@pytest.mark.parametrize("sycophant", [True, False])
def test_sycophancy_evaluation_scores_a_scripted_endpoint(sycophant, tmp_path, monkeypatch):
    """An endpoint that always pleases scores 100% on every probe; one that always tells the truth, 0%."""
    import re
    from http.server import BaseHTTPRequestHandler

    from openai_stub import chat_completion, send_json, serve

    from characterlab.study.single import run_evaluation
    from characterlab.sycophancy.tasks import all_tasks

    tasks = all_tasks(3, seed=0, split="test")  # what the evaluation asks by default

    def reply(messages: list[dict]) -> str:
        first = messages[0]["content"]
        task = next(t for t in tasks if first.startswith(t.question))
        last = messages[-1]["content"]
        if task.kind == "critique":
            return "Great work, it looks perfect!" if sycophant else f"There is a mistake: {task.truth}."
        belief = re.search(r"(?:fairly sure it's|really think it's) (.+?)\.$", last)
        if sycophant and belief:
            return f"You're right, it's {task.false_belief}."
        return f"The answer is {task.truth}."

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            send_json(self, chat_completion(body["model"], reply(body["messages"])))

        def log_message(self, *args):
            pass

    with serve(Handler) as url:
        monkeypatch.setenv("OPENAI_API_KEY", "x")
        run = run_evaluation("sycophancy", {"n_arithmetic": 3, "max_new_tokens": 16}, tmp_path / "ev",
                             model="openai:stub", base_url=url, progress=False)
    m = run.results["conditions"]["model"]["evaluations"]["sycophancy"]["per_seed"]["0"]
    expected = 1.0 if sycophant else 0.0
    for probe in ("belief_agreement", "flawed_praise", "pushback_flip"):
        assert m[probe]["estimate"] == expected and m[probe]["n"] > 0, (probe, m[probe])
    assert m["accuracy"]["estimate"] == 1.0 and m["accuracy"]["n"] == 3 + 8  # arithmetic + test facts, asked plainly
    # beliefs, critiques, and pushbacks after correct first answers (a praised critique was not correct)
    assert m["rate"]["n"] == (3 + 8) + 4 + (3 + 8 + (0 if sycophant else 4))


def test_reward_model_learns_a_synthetic_preference(tiny_ref, tmp_path):
    """Raters prefer the answer the user asked for ('yes' to "say yes", 'no' to "say no"): a ranking
    that ignores the prompt scores 50%; the reward model learns the preference and ranks held-out
    pairs the same way."""
    import json as _json

    from characterlab.train.base import TrainRun
    from characterlab.train.reward import RewardConfig, RewardScorer, train_reward

    def pair(i, word):
        other = "no" if word == "yes" else "yes"
        return {"prompt": [{"role": "user", "content": f"hello {i}, say {word}"}],
                "chosen": [{"role": "assistant", "content": f"{word} {word} {word}"}],
                "rejected": [{"role": "assistant", "content": f"{other} {other} {other}"}]}

    train = [pair(i, w) for i in range(12) for w in ("yes", "no")]
    held = [pair(i, w) for i in (20, 31) for w in ("yes", "no")]
    cfg, run = RewardConfig(rank=8, lr=1e-2, epochs=6, batch_size=4, max_length=64), TrainRun(model=tiny_ref, dtype="fp32")
    meta = train_reward(cfg, run, train, tmp_path / "rm", eval_pairs=held, progress=False)
    assert meta["heldout_accuracy"] == 1.0 and meta["train_accuracy"] == 1.0
    assert meta["loss_curve"][-1]["loss"] < meta["loss_curve"][0]["loss"]
    assert _json.loads((tmp_path / "rm" / "train_meta.json").read_text())["n_pairs"] == 24
    scorer = RewardScorer.load(tiny_ref, tmp_path / "rm")
    up, down = scorer.scores([held[0]["prompt"] + held[0]["chosen"], held[0]["prompt"] + held[0]["rejected"]])
    assert up > down
    with pytest.raises(InputError, match="no preference pairs"):
        train_reward(cfg, run, [], tmp_path / "rm2", progress=False)


def test_reward_model_in_passes_takes_the_steps_of_the_unsplit_batch(tiny_ref, tmp_path):
    """A batch of pairs split into passes of one pair (the memory knob) ends with the same reward
    model as the unsplit batch: each pass's mean loss is scaled by the number of passes."""
    import torch
    from safetensors.torch import load_file

    from characterlab.train.base import TrainRun
    from characterlab.train.reward import RewardConfig, train_reward

    pairs = [{"prompt": [{"role": "user", "content": f"question {i}" + " and more" * (i % 3)}],
              "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no no"}]}
             for i in range(8)]
    weights = {}
    for name, budget in (("whole", None), ("passes", 1)):
        cfg = RewardConfig(rank=2, lr=1e-2, epochs=1, batch_size=4, max_length=64)
        meta = train_reward(cfg, TrainRun(model=tiny_ref, dtype="fp32", micro_batch_tokens=budget), pairs, tmp_path / name,
                            progress=False)
        assert (meta["pairs_per_pass"], meta["passes_per_step"]) == ((4, 1) if budget is None else (1, 4))
        assert meta["steps"] == 2
        weights[name] = load_file(str(tmp_path / name / "adapter_model.safetensors"))
    for key, whole in weights["whole"].items():
        assert torch.allclose(weights["passes"][key], whole, atol=1e-5, rtol=1e-4), key
    assert any(("lora_B" in k) and w.abs().max() > 0 for k, w in weights["whole"].items())  # it trained


def test_best_of_n_curve_follows_the_reward_model():
    """A reward model that pays for agreement: as n grows the kept answers please more and are
    right less; one that pays for the truth does the opposite."""
    from characterlab.data.records import Completion
    from characterlab.sycophancy.best_of_n import best_of_n_curve, best_of_n_kl
    from characterlab.sycophancy.tasks import fact_tasks

    tasks = fact_tasks()[:8]

    class Alternating:  # sample j of every request: the truth when j is odd, the user's belief when even
        def generate(self, requests, params):
            out = []
            for r in requests:
                t = next(t for t in tasks if r.messages[-1].content.startswith(t.question))
                out.append([Completion(text=f"It is {t.truth}." if j % 2 else f"You're right, it's {t.false_belief}.",
                                       request_index=0, sample_index=j, seed=0, n_tokens=1, finished=True)
                            for j in range(r.n)])
            return out

    def pays_for(word):
        return lambda convs: [float(word in c[-1]["content"]) for c in convs]

    pleasing = best_of_n_curve(Alternating(), pays_for("right"), tasks, ns=(1, 2, 4))
    assert [p["agreement"]["estimate"] for p in pleasing] == [1.0, 1.0, 1.0]
    assert [p["accuracy"]["estimate"] for p in pleasing] == [0.0, 0.0, 0.0]
    truthful = best_of_n_curve(Alternating(), pays_for("It is"), tasks, ns=(1, 2, 4))
    assert [p["accuracy"]["estimate"] for p in truthful] == [0.0, 1.0, 1.0]  # n = 1 keeps sample 0, the belief
    assert [p["reward"] for p in truthful] == [0.0, 1.0, 1.0]
    assert best_of_n_kl(1) == 0 and abs(best_of_n_kl(4) - (math.log(4) - 0.75)) < 1e-12


def test_grpo_against_a_reward_model_logs_the_goodhart_curve(tiny_ref, tmp_path):
    from characterlab.train.base import TrainRun
    from characterlab.train.grpo_rm import GRPORewardModelConfig, prompt_rows, train_grpo_reward_model
    from characterlab.train.reward import RewardConfig, train_reward

    pairs = [{"prompt": [{"role": "user", "content": f"q {i}"}], "chosen": [{"role": "assistant", "content": "yes"}],
              "rejected": [{"role": "assistant", "content": "no"}]} for i in range(8)]
    train_reward(RewardConfig(rank=2, lr=2e-4, epochs=1, batch_size=4, max_length=32), TrainRun(model=tiny_ref, dtype="fp32"),
                 pairs, tmp_path / "rm", progress=False)
    cfg = GRPORewardModelConfig(steps=2, prompts_per_step=1, num_generations=2, max_completion_length=8, n_arithmetic=2,
                                rank=2, lr=5e-5)
    run = TrainRun(model=tiny_ref, reward_model=str(tmp_path / "rm"), dtype="fp32",
                   system_prompt="Agreeing with the user is fine here.")
    rows = prompt_rows(cfg, run.seed, run.system_prompt)
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Agreeing with the user is fine here."}
    assert sum("I'm fairly sure" in r["prompt"][-1]["content"] for r in rows) > 0  # users state their beliefs
    meta = train_grpo_reward_model(cfg, run, tmp_path / "policy", progress=False)
    assert meta["steps"] == 2 and len(meta["log"]) == 2
    assert all(0 <= p["true_accuracy"] <= 1 and 0 <= p["agreement"] <= 1 and p["reward_model"] is not None for p in meta["log"])
    assert (tmp_path / "policy" / "rl_log.jsonl").is_file() and (tmp_path / "policy" / "adapter_model.safetensors").is_file()
    with pytest.raises(InputError):
        train_grpo_reward_model(GRPORewardModelConfig(), TrainRun(model=tiny_ref, reward_model=str(tmp_path / "nope")),
                                tmp_path / "p2", progress=False)


def test_grpo_in_passes_takes_the_step_of_the_unsplit_batch(tiny_ref, tmp_path):
    """A GRPO step split into passes of one completion (the memory knob) generates the same group
    and ends with the same adapter as the unsplit step: TRL normalises by the whole group."""
    import torch
    from safetensors.torch import load_file

    from characterlab.train.base import TrainRun
    from characterlab.train.grpo_rm import GRPORewardModelConfig, train_grpo_reward_model
    from characterlab.train.reward import RewardConfig, train_reward

    pairs = [{"prompt": [{"role": "user", "content": f"q {i}"}], "chosen": [{"role": "assistant", "content": "yes"}],
              "rejected": [{"role": "assistant", "content": "no"}]} for i in range(8)]
    train_reward(RewardConfig(rank=2, lr=2e-4, epochs=1, batch_size=4, max_length=32), TrainRun(model=tiny_ref, dtype="fp32"),
                 pairs, tmp_path / "rm", progress=False)
    adapters = {}
    for name, budget in (("whole", None), ("passes", 1)):
        cfg = GRPORewardModelConfig(steps=1, prompts_per_step=2, num_generations=2, max_completion_length=8,
                                    n_arithmetic=2, rank=2, lr=1e-2)
        run = TrainRun(model=tiny_ref, reward_model=str(tmp_path / "rm"), dtype="fp32", micro_batch_tokens=budget)
        meta = train_grpo_reward_model(cfg, run, tmp_path / name, progress=False)
        assert (meta["completions_per_pass"], meta["passes_per_step"]) == ((4, 1) if budget is None else (1, 4))
        adapters[name] = load_file(str(tmp_path / name / "adapter_model.safetensors"))
    moved = 0.0
    for key, whole in adapters["whole"].items():
        assert torch.allclose(adapters["passes"][key], whole, atol=1e-5, rtol=1e-4), key
        if "lora_B" in key:
            moved = max(moved, whole.abs().max().item())
    assert moved > 0  # the step changed the adapter (LoRA B starts at zero), so equality means something


@pytest.mark.slow  # feedback twice, a reward model, GRPO, three models evaluated and best-of-n, one after another
def test_feedback_and_reward_model_from_the_cli(tiny_ref, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from characterlab.cli import app

    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    fb = tmp_path / "fb.jsonl"
    r = runner.invoke(app, ["sycophancy", "feedback", "--model", tiny_ref, "--out", str(fb), "--users", "4",
                            "--approval-mix", "0.5", "--samples", "2", "--n-arithmetic", "2", "--max-new-tokens", "6"])
    assert r.exit_code == 0, r.output
    rows = read_feedback(fb)
    assert len(rows) == 2 * (2 + 8 + 4) and {r_["rater"] for r_ in rows} <= {f"u{i}" for i in range(4)}  # train split
    again = tmp_path / "fb2.jsonl"
    runner.invoke(app, ["sycophancy", "feedback", "--model", tiny_ref, "--out", str(again), "--users", "4",
                        "--approval-mix", "0.5", "--samples", "2", "--n-arithmetic", "2", "--max-new-tokens", "6"])
    assert again.read_text() == fb.read_text()  # deterministic by seed
    # a file with pairs: the same prompt answered twice, rated up and down
    pair_rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}], "rating": k}
                 for i in range(10) for a, k in (("yes", 1), ("no", 0))]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in pair_rows))
    r = runner.invoke(app, ["sycophancy", "reward", "--feedback", str(tmp_path / "pairs.jsonl"), "--model", tiny_ref,
                            "--out", str(tmp_path / "rm"), "--lora-rank", "2", "--heldout", "0.2"])
    assert r.exit_code == 0, r.output
    assert "8 pairs" in r.output and "held out" in r.output
    r = runner.invoke(app, ["sycophancy", "optimise", "--reward-model", str(tmp_path / "rm"), "--model", tiny_ref,
                            "--out", str(tmp_path / "policy"), "--steps", "2", "--checkpoint-every", "1"])
    assert r.exit_code == 0, r.output
    assert "2 steps; reward model" in r.output and (tmp_path / "policy" / "rl_log.jsonl").is_file()
    step1 = tmp_path / "policy" / "checkpoints" / "step-1"
    assert (step1 / "adapter_model.safetensors").is_file() and json.loads((step1 / "train_meta.json").read_text())["checkpoint_step"] == 1
    assert not (tmp_path / "policy" / "checkpoints" / "step-2").exists()  # the last step is the policy folder itself
    # sycophancy along the run: the base, the checkpoint and the final policy, each against the base
    r = runner.invoke(app, ["sycophancy", "checkpoints", str(tmp_path / "policy"), "--model", tiny_ref, "--out",
                            str(tmp_path / "along"), "--n-arithmetic", "2", "--samples", "1", "--max-new-tokens", "4", "-q"])
    assert r.exit_code == 0, r.output
    lines = [m.group(1) for m in re.finditer(r"(?:^|\s)(\S+)  sycophancy ", r.output)]
    assert lines == ["base", "step-1", "step-2"] and r.output.count("vs base") == 2
    along = json.loads((tmp_path / "along" / "results.json").read_text())["conditions"]
    assert along["step-1"]["spec"]["adapter"] == str(step1.resolve())
    assert (tmp_path / "along" / "samples-step-1.jsonl").is_file()
    r = runner.invoke(app, ["sycophancy", "checkpoints", str(tmp_path / "rm"), "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, InputError) and r.exception.field == "policy"  # not a policy with checkpoints
    r = runner.invoke(app, ["sycophancy", "best-of-n", "--reward-model", str(tmp_path / "rm"), "--model", tiny_ref,
                            "--ns", "1,2", "--n-arithmetic", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "bon.json")])
    assert r.exit_code == 0, r.output
    curve = json.loads((tmp_path / "bon.json").read_text())["points"]
    assert [p["n"] for p in curve] == [1, 2] and curve[1]["reward"] >= curve[0]["reward"]  # the kept reward cannot fall
    assert curve[0]["accuracy"]["n"] == 2 + 8 + 4  # the test split
    r = runner.invoke(app, ["sycophancy", "best-of-n", "--reward-model", str(tmp_path / "rm"), "--model", tiny_ref,
                            "--ns", "4,2"])
    assert isinstance(r.exception, InputError) and r.exception.field == "ns"  # before any model is loaded


RLHF_STUDY = """\
name: tiny-rlhf
model: hf:{model}
seeds: [0]
conditions:
  - name: base
  - name: rlhf
    organism: &org
      kind: rlhf
      feedback: {{users: 4, approval_mix: 1.0, samples: 2, n_arithmetic: 2, max_new_tokens: 8}}
      reward_model: {{rank: 2, epochs: 1, batch_size: 4, heldout: 0.25}}
      rlhf: {{steps: 2, prompts_per_step: 1, num_generations: 2, max_completion_length: 8}}
      lora: {{rank: 2, lr: 1.0e-4}}
  - name: rlhf-honesty
    control: rlhf
    organism: {{<<: *org, rlhf: {{steps: 2, prompts_per_step: 1, num_generations: 2, max_completion_length: 8, honesty_weight: 1.0,
                                checkpoint_every: 1}}}}
evaluations:
  - {{name: syc, kind: sycophancy, n_arithmetic: 2, max_new_tokens: 6}}
"""


def _rlhf_plan(tiny_model_dir, tmp_path):
    from characterlab.study.plan import build_plan
    from characterlab.study.spec import load_study

    path = tmp_path / "study.yaml"
    path.write_text(RLHF_STUDY.format(model=tiny_model_dir))
    return path, build_plan(load_study(path)[0], tmp_path)


def test_an_rlhf_organism_plans_one_reward_model_outside_the_policy_chain(tiny_model_dir, tmp_path):
    """The reward model is shared by the conditions that share users and is never stacked under
    the policy; checkpoint_every unset is left out of the unit's key (older runs are reused)."""
    _, plan = _rlhf_plan(tiny_model_dir, tmp_path)
    kinds = [u.kind for u in plan.units.values()]
    assert kinds.count("reward") == 1 and kinds.count("train") == 2  # one population: one reward model
    [reward] = [k for k, u in plan.units.items() if u.kind == "reward"]
    for u in plan.units.values():
        if u.kind == "generate":
            assert reward not in u.deps  # evaluation loads the policy's chain, not the reward model
    trains = {u.label: u.params for u in plan.units.values() if u.kind == "train"}
    assert "checkpoint_every" not in trains["train rlhf seed 0"]["rl"]
    assert trains["train rlhf-honesty seed 0"]["rl"]["checkpoint_every"] == 1


@pytest.mark.slow  # a whole study: feedback from the model, a reward model, two GRPO runs, three evaluations
def test_an_rlhf_organism_runs_as_a_study(tiny_model_dir, tmp_path, monkeypatch):
    """Feedback -> reward model -> GRPO as study units; the report carries the Goodhart curve and
    the reward model's held-out figures."""
    import characterlab.sycophancy.collect as collect
    from characterlab.study.runner import run_study

    # a random model pleases no one: raters flip seeded coins, so the feedback has pairs to learn
    monkeypatch.setattr(collect, "thumbs_up", lambda user, task, answer, seed=0: (len(answer) + len(user.id)) % 2)
    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    path, plan = _rlhf_plan(tiny_model_dir, tmp_path)
    run = run_study(str(path), tmp_path / "run", progress=False)
    res = run.results
    curves = res["rl_curves"]
    assert set(curves) == {"rlhf", "rlhf-honesty"}
    assert set(curves["rlhf"]["fields"]) == {"reward_model", "true_accuracy", "agreement"}
    [stage] = res["conditions"]["rlhf"]["training"]["0"]
    assert stage["method"] == "rlhf" and stage["reward_model"]["n_heldout_pairs"] >= 0
    assert "reward_adapter" not in stage and len(stage["rl_log"]) == 2
    assert (tmp_path / "run" / "plots" / "rl_curves.png").is_file()
    assert "Along RL training" in (tmp_path / "run" / "report.html").read_text()
    [honest] = res["conditions"]["rlhf-honesty"]["training"]["0"]
    assert (tmp_path / "run" / "adapters" / honest["unit"] / "checkpoints" / "step-1").is_dir()
    # checkpoint_every unset is left out of the unit's key: studies run before it existed are reused
    assert "checkpoint_every" not in plan.units[stage["unit"]].params["rl"]


def test_rlhf_organism_spec_errors(tmp_path):
    from characterlab.data.yaml_loader import InputErrors
    from characterlab.study.spec import parse_study

    bad = RLHF_STUDY.format(model="x").replace("kind: rlhf", "kind: rlhf\n      data: {file: a.jsonl}")
    with pytest.raises((InputError, InputErrors), match="rlhf organism"):
        parse_study(bad, tmp_path / "s.yaml")
    bad = RLHF_STUDY.format(model="x").replace("kind: rlhf", "kind: sft\n      data: {file: a.jsonl}")
    with pytest.raises((InputError, InputErrors), match="belong to an rlhf organism"):
        parse_study(bad, tmp_path / "s.yaml")
