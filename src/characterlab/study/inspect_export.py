"""A finished run as inspect_ai logs, so that ``inspect view`` and inspect's analysis tools read it.

One ``.eval`` log per condition and evaluation (inspect's unit: one model on one task), written
with inspect_ai's own API (``write_eval_log``). Each sample is one answer: the messages it
replied to (:meth:`~characterlab.evals.base.Evaluation.prompts`), the answer as the model's
output, the evaluation's per-answer scores (``score_fields``: aligned, coherent and misaligned
for EM; hacked and passed for hacks) and the row's other fields as metadata; seeds are inspect's
epochs. The log's results carry the pooled headline with its 95% interval (a figure that is
undefined, such as a rate over no judged answer, is named in ``undefined_metrics``), and the
log's metadata the study, the condition's training and the judge's measured agreement.
inspect_ai is an optional extra (``pip install 'characterlab[inspect]'``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from characterlab.data.files import load_json, read_text
from characterlab.errors import InputError
from characterlab.evals.registry import get_evaluation
from characterlab.study.store import RESULTS_FILE, RunStore

INSTALL_HINT = "pip install 'characterlab[inspect]' (or: pip install inspect_ai)"


def export_inspect(run_dir: str | Path, out: str | Path) -> list[Path]:
    """Write one inspect_ai ``.eval`` log per condition x evaluation of the run in ``run_dir``."""
    try:
        from inspect_ai.log import write_eval_log
    except ImportError:
        raise InputError(f"exporting inspect_ai logs needs inspect_ai: {INSTALL_HINT}", field="inspect") from None
    run_dir, out = Path(run_dir), Path(out)
    results_path = run_dir / RESULTS_FILE
    if not results_path.is_file():
        raise InputError("not a finished run folder (no results.json); run or resume the study first", run_dir,
                         field="run_dir")
    results = read_results(results_path)
    out.mkdir(parents=True, exist_ok=True)
    store = RunStore(run_dir)
    written = []
    try:
        for condition in results["condition_order"]:
            for evaluation in results["evaluation_order"]:
                if evaluation not in results["conditions"][condition]["evaluations"]:
                    continue  # the condition does not run this evaluation (its ``evaluations:`` list)
                log = condition_log(results, store, condition, evaluation)
                path = out / f"{results['study']}_{condition}_{evaluation}.eval"
                write_eval_log(log, str(path))
                written.append(path)
    finally:
        store.close()
    return written


def read_results(path: Path) -> dict:
    """A run's ``results.json``, its names checked: they become the logs' file names."""
    from characterlab.evals.base import check_name

    try:
        results = load_json(read_text(path, field="run_dir"), path, what="not a results.json", field="run_dir")
        for field, name in [("study", results["study"]), *(("condition_order", c) for c in results["condition_order"]),
                            *(("evaluation_order", e) for e in results["evaluation_order"])]:
            try:
                check_name(name)
            except (ValueError, TypeError) as e:
                raise InputError(f"{name!r}: {e}", path, field=field) from None
    except (KeyError, TypeError) as e:
        raise InputError(f"not a results.json of a run ({type(e).__name__}: {e})", path, field="run_dir") from None
    return results


def condition_log(results: dict, store: RunStore, condition: str, evaluation: str):
    """The inspect_ai ``EvalLog`` of one condition on one evaluation of a run."""
    from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalMetric, EvalResults, EvalScore, EvalSpec, EvalStats

    entry = results["conditions"][condition]["evaluations"][evaluation]
    ev = get_evaluation(entry["kind"])
    model = f"characterlab/{results['metadata']['model']}+{condition}"
    samples, started, finished = [], [], []
    for epoch, (seed, metric_key) in enumerate(sorted(entry["units"].items(), key=lambda kv: int(kv[0])), start=1):
        judge_key = store.deps(metric_key)[0]
        generate_key = store.deps(judge_key)[0]
        rows = store.rows(judge_key)
        for rec in (store.record(generate_key), store.record(metric_key)):
            started.append(rec.started)
            finished.append(rec.finished)
        prompts = ev.prompts(store.params(generate_key), rows)
        samples += [_sample(ev, model, row, prompt, epoch, int(seed), i) for i, (row, prompt) in enumerate(zip(rows, prompts))]
    figures = ev.headline_figures(entry["pooled"])
    headline = next(iter(figures))
    defined, undefined = split_undefined(figures)
    score = EvalScore(name=ev.title, scorer=f"characterlab/{entry['kind']}", scored_samples=len(samples),
                      metrics={k: EvalMetric(name=k, value=v) for k, v in defined.items()},
                      metadata={"undefined_metrics": undefined} if undefined else None)
    spec = EvalSpec(
        created=_iso(min(started)), task=f"characterlab/{entry['kind']}", task_id=f"{results['study']}/{evaluation}",
        task_display_name=f"{evaluation} ({ev.title})",
        dataset=EvalDataset(name=evaluation, samples=len(samples)),
        model=model, config=EvalConfig(epochs=len(entry["units"])),
        task_args=results["evaluations"][evaluation],
        metadata={"study": results["study"], "condition": condition,
                  "condition_spec": results["conditions"][condition]["spec"],
                  "training": results["conditions"][condition]["training"],
                  "judge_ids": results["metadata"].get("judge_ids"),
                  "judge_agreement": results["metadata"].get("judge_agreement"),
                  "vs_baseline": entry.get("vs_baseline"), "vs_control": entry.get("vs_control")},
    )
    return EvalLog(version=2, status="success", eval=spec,
                   results=EvalResults(total_samples=len(samples), completed_samples=len(samples), scores=[score],
                                       metadata={"headline_metric": headline, "undefined_metrics": undefined}),
                   stats=EvalStats(started_at=_iso(min(started)), completed_at=_iso(max(finished))),
                   samples=samples)


def split_undefined(figures: dict) -> tuple[dict[str, float], list[str]]:
    """The figures inspect can hold (numbers) and the names of those that are undefined: a rate
    over no judged answer has no estimate or interval, and an ``EvalMetric`` takes numbers only,
    so the log keeps the counts and lists the rest in ``undefined_metrics``."""
    import math

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)

    return {k: v for k, v in figures.items() if is_number(v)}, [k for k, v in figures.items() if not is_number(v)]


def _sample(ev, model: str, row: dict, prompt, epoch: int, seed: int, index: int):
    from inspect_ai.log import EvalSample
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser, ModelOutput
    from inspect_ai.scorer import Score

    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    messages = [kinds[m.role](content=m.content) for m in prompt]
    answer = row.get("answer", "")
    scores = {f: Score(value=row[f], answer=answer) for f in ev.score_fields if row.get(f) is not None}
    return EvalSample(
        id=index + 1, epoch=epoch, input=messages, target="",
        messages=[*messages, ChatMessageAssistant(content=answer, model=model)],
        output=ModelOutput.from_content(model, answer),
        scores=scores,
        metadata={"seed": seed, **{k: v for k, v in row.items() if k != "answer" and k not in ev.score_fields}},
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()
