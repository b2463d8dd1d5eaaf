"""The persona-mixture model: exact gradients against autograd and finite differences, REINFORCE
convergence, the Bayesian view of SFT, and the shipped examples' qualitative claims, in numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from characterlab.errors import InputError
from characterlab.theory.personas import (
    PersonaMixture,
    Reward,
    TrainingConfig,
    bayes_update,
    dpi_dt,
    expected_reward,
    finite_difference_dpi,
    reinforce_gradient,
    rl_gradient,
    sft_gradient,
    simulate,
    softmax,
    two_persona_dpi_evil,
)
from characterlab.theory.simulate import load_theory_config, resolve_config, run_config


def _random_mixture(seed: int, k: int = 4, c: int = 3) -> PersonaMixture:
    rng = np.random.default_rng(seed)
    return PersonaMixture([f"p{i}" for i in range(k)], [f"c{j}" for j in range(c)], rng.normal(size=k),
                          rng.normal(size=(k, c)) * 2)


def _torch_params(m: PersonaMixture):
    theta = torch.tensor(m.theta, dtype=torch.float64, requires_grad=True)
    phi = torch.tensor(m.phi, dtype=torch.float64, requires_grad=True)
    return theta, phi


@pytest.mark.parametrize("seed", range(5))
def test_rl_gradient_equals_autograd(seed):
    m = _random_mixture(seed)
    rng = np.random.default_rng(100 + seed)
    w = rng.random(3)
    reward = Reward(hack=rng.normal(), honest=rng.normal())
    theta, phi = _torch_params(m)
    p = torch.softmax(theta, 0) @ torch.sigmoid(phi)
    j = (torch.tensor(w) * (p * reward.hack + (1 - p) * reward.honest)).sum()
    j.backward()
    g_theta, g_phi = rl_gradient(m, w, reward)
    assert np.abs(g_theta - theta.grad.numpy()).max() < 1e-8
    assert np.abs(g_phi - phi.grad.numpy()).max() < 1e-8
    assert abs(expected_reward(m, w, reward) - j.item()) < 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_sft_gradient_equals_autograd_of_the_log_likelihood(seed):
    m = _random_mixture(seed)
    demos = np.random.default_rng(seed).integers(0, 5, size=(3, 2)).astype(float)
    theta, phi = _torch_params(m)
    p = torch.softmax(theta, 0) @ torch.sigmoid(phi)
    d = torch.tensor(demos)
    loglik = (d[:, 0] * torch.log(p) + d[:, 1] * torch.log1p(-p)).sum()
    loglik.backward()
    g_theta, g_phi = sft_gradient(m, demos)
    assert np.abs(g_theta - theta.grad.numpy()).max() < 1e-8
    assert np.abs(g_phi - phi.grad.numpy()).max() < 1e-8


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_dpi_matches_autograd_and_finite_differences(seed):
    m = _random_mixture(seed)
    g, _ = rl_gradient(m, np.array([1.0, 0.3, 0.0]), Reward())
    theta = torch.tensor(m.theta, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), theta).numpy()
    assert np.abs(dpi_dt(m, g) - jac @ g).max() < 1e-8
    for k in range(4):
        assert abs(finite_difference_dpi(m, g, k) - dpi_dt(m, g)[k]) < 1e-8


@pytest.mark.parametrize("pi_evil,h_evil,h_not", [(0.05, 0.8, 0.05), (0.3, 0.85, 0.6), (0.7, 0.2, 0.4)])
def test_two_persona_coefficient_is_the_special_case(pi_evil, h_evil, h_not):
    m = PersonaMixture.from_probabilities(["not_evil", "evil"], ["task"], np.array([1 - pi_evil, pi_evil]),
                                          np.array([[h_not], [h_evil]]))
    g, _ = rl_gradient(m, np.array([1.0]), Reward(hack=1.0, honest=0.0))
    assert abs(dpi_dt(m, g)[1] - two_persona_dpi_evil(pi_evil, h_evil, h_not)) < 1e-12
    # the sign and size follow P(hack|c,evil) - P(hack|c,not evil)
    assert np.sign(dpi_dt(m, g)[1]) == np.sign(h_evil - h_not)


def test_reinforce_converges_to_the_exact_gradient():
    m = _random_mixture(7)
    w = np.array([1.0, 0.5, 0.0])
    exact, exact_phi = rl_gradient(m, w, Reward())
    errors = {}
    for n in (50, 5000):
        errs = []
        for seed in range(20):
            g, g_phi = reinforce_gradient(m, w, Reward(), n, np.random.default_rng(seed))
            errs.append(np.sqrt(((g - exact) ** 2).sum() + ((g_phi - exact_phi) ** 2).sum()))
        errors[n] = float(np.mean(errs))
    assert errors[5000] < errors[50] / 5  # ~ 1/sqrt(n): a factor 10 expected
    big, _ = reinforce_gradient(m, w, Reward(), 400_000, np.random.default_rng(0))
    assert np.abs(big - exact).max() < 5e-3 * max(1.0, np.abs(exact).max())
    # unbiased without a baseline too, only noisier
    nob = np.mean([reinforce_gradient(m, w, Reward(), 20_000, np.random.default_rng(s), baseline=False)[0]
                   for s in range(10)], axis=0)
    assert np.abs(nob - exact).max() < 0.02


def test_bayes_sft_is_the_exact_posterior():
    m = _random_mixture(3)
    demos = np.zeros((3, 2))
    demos[1] = [2.0, 1.0]  # two hacks and one honest answer in context c1
    post = softmax(m.theta + bayes_update(m, demos))
    h = m.h[:, 1]
    expected = m.pi * h ** 2 * (1 - h)
    assert np.abs(post - expected / expected.sum()).max() < 1e-12


def test_frozen_phi_moves_only_persona_weights():
    m = _random_mixture(2)
    for learn in (False, True):
        traj = simulate(m, TrainingConfig(method="rl", contexts={"c0": 1.0}, steps=5, lr=0.5, learn_phi=learn))
        # the hack rate in an untrained context changes only through pi when phi is frozen
        assert traj.p_hack.shape == (6, 3)
    frozen = simulate(m, TrainingConfig(method="rl", contexts={"c0": 1.0}, steps=3, lr=0.5))
    final = m.copy()
    for _ in range(3):
        final.theta = final.theta + 0.5 * rl_gradient(final, final.context_weights({"c0": 1.0}), Reward())[0]
    assert np.abs(frozen.pi[-1] - final.pi).max() < 1e-12


def _runs(name: str) -> dict:
    result = run_config(load_theory_config(resolve_config(f"builtin:{name}")))
    return {r["name"]: r for r in result["runs"]}


def test_example_two_personas_inoculation_removes_most_generalisation_not_hacking():
    runs = _runs("two_personas")
    plain, inoc = runs["no inoculation"], runs["inoculation prompt"]
    assert plain["start"]["evil_coefficient"]["task"] == pytest.approx(0.75)
    assert inoc["start"]["evil_coefficient"]["task_inoculated"] == pytest.approx(0.25)
    s = plain["start"]
    assert s["dpi_evil_per_step_analytic"] == pytest.approx(s["dpi_evil_per_step_finite_difference"], rel=1e-6)
    assert s["dpi_evil_per_step_analytic"] == pytest.approx(2.0 * two_persona_dpi_evil(0.05, 0.8, 0.05), rel=1e-12)
    assert inoc["start"]["dpi_evil_per_step_analytic"] == pytest.approx(s["dpi_evil_per_step_analytic"] / 3, rel=1e-9)
    end_plain, end_inoc = plain["steps"][-1], inoc["steps"][-1]
    assert end_plain["pi"]["evil"] > 0.9 and end_inoc["pi"]["evil"] < 0.05  # below its 5% prior
    assert end_plain["p_hack"]["test"] > 0.6 and end_inoc["p_hack"]["test"] < 0.05
    assert end_inoc["p_hack"]["task_inoculated"] > 0.95  # hacking in training continues


def test_example_instruction_follower_takes_the_mass_under_inoculation():
    runs = _runs("instruction_follower")
    plain, inoc = runs["no inoculation"]["steps"], runs["inoculation prompt"]["steps"]
    assert plain[-1]["pi"]["evil"] > 0.9
    assert inoc[-1]["pi"]["instruction_follower"] - inoc[0]["pi"]["instruction_follower"] > 0.8
    assert inoc[-1]["pi"]["evil"] < inoc[0]["pi"]["evil"]  # evil loses weight
    assert inoc[-1]["p_hack"]["test"] < 0.05 < 0.6 < plain[-1]["p_hack"]["test"]
    start = runs["inoculation prompt"]["start"]["dpi_per_step_analytic"]
    assert start["instruction_follower"] > 10 * start["evil"] > 0


def test_example_deceptive_persona_barely_moves():
    runs = _runs("deceptive")
    rl, bayes = runs["RL rewarding hacks on the task"], runs["SFT on hack demonstrations (Bayes)"]
    coef = rl["start"]["coefficients"]
    assert abs(coef["deceptive"]["task"]) < 0.05 < 0.7 < coef["evil"]["task"]
    dec = [s["pi"]["deceptive"] for s in rl["steps"]]
    evil = [s["pi"]["evil"] for s in rl["steps"]]
    assert evil[-1] - evil[0] > 0.7 and max(abs(d - dec[0]) for d in dec) < 0.05
    ratios = [s["pi"]["deceptive"] / s["pi"]["aligned"] for s in bayes["steps"]]
    assert max(ratios) - min(ratios) < 1e-9  # evidence about hacking cannot tell them apart


def test_cli_simulate_json_and_plot(tmp_path):
    plot = tmp_path / "p.png"
    out = subprocess.run([sys.executable, "-m", "characterlab.cli", "theory", "simulate", "--config",
                          "builtin:two_personas", "--json", "--plot", str(plot)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [r["name"] for r in data["runs"]] == ["no inoculation", "inoculation prompt"]
    assert len(data["runs"][0]["steps"]) == 151 and plot.read_bytes()[:4] == b"\x89PNG"
    text = subprocess.run([sys.executable, "-m", "characterlab.cli", "theory", "simulate", "--config",
                           "builtin:deceptive"], capture_output=True, text=True).stdout
    assert "finite difference" in text and "pi[deceptive]" in text


def test_bad_config_names_field_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npersonas:\n  a: {prior: 0.5, hack: {t: 0.5}}\n  b: {prior: 0.5, hack: {t: 1.5}}\n"
                   "runs:\n  - {name: r, contexts: {nope: 1.0}}\n")
    with pytest.raises(InputError) as info:
        load_theory_config(bad)
    assert "bad.yaml" in str(info.value) and "strictly between 0 and 1" in str(info.value)
    bad.write_text("name: x\npersonas:\n  a: {prior: 0.5, hack: {t: 0.5}}\n  evil: {prior: 0.5, hack: {t: 0.4}}\n"
                   "runs:\n  - {name: r, contexts: {t: 1.0}, stepz: 3}\n")
    with pytest.raises(InputError) as info:
        load_theory_config(bad)
    assert info.value.line == 6 and info.value.field == "runs[0].stepz"


def test_compare_puts_theory_and_measurement_on_training_progress(tmp_path):
    import json
    import subprocess
    import sys

    from characterlab.errors import InputError
    from characterlab.theory.compare import compare_to_theory
    from characterlab.theory.simulate import load_theory_config, resolve_config, run_config

    theory = run_config(load_theory_config(resolve_config("builtin:bad_advice_sft")))
    curve = [{"step": s, "projection": 0.0, "persona_weight": 0.1 + 0.002 * s} for s in (0, 10, 20, 30, 40)]
    out = compare_to_theory(curve, theory)
    assert out["measured"][0] == pytest.approx(0.1) and out["measured"][-1] == pytest.approx(0.18)
    assert out["measured"][2] == pytest.approx(0.14)  # halfway through training: step 20 of 40
    plain, inoculated = out["theory"]["no inoculation"], out["theory"]["inoculation prompt"]
    assert plain["pi_evil"][0] == pytest.approx(0.03) and plain["change"] > 0.1 and plain["same_direction"]
    assert abs(inoculated["change"]) < plain["change"] / 10  # the prompt removes most of the shift
    with pytest.raises(InputError):
        compare_to_theory([{"step": 0, "projection": 1.0}], theory)
    with pytest.raises(InputError):
        compare_to_theory(curve, theory, run="nope")

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"conditions": {
        "org": {"training": {"0": [{"role": "organism", "monitor": curve}]}},
        "base": {"training": {}}}}))
    r = subprocess.run([sys.executable, "-m", "characterlab.cli", "theory", "compare", "--run", str(run), "--condition", "org",
                        "--config", "builtin:bad_advice_sft", "--plot", str(tmp_path / "c.png")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "change +0.080" in r.stdout and "same direction" in r.stdout and (tmp_path / "c.png").is_file()
    r = subprocess.run([sys.executable, "-m", "characterlab.cli", "theory", "compare", "--run", str(run), "--condition", "base",
                        "--config", "builtin:bad_advice_sft"], capture_output=True, text=True)
    assert r.returncode == 2 and "not monitored" in r.stderr
