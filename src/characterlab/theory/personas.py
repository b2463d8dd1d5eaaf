"""The persona-mixture model of why rewarding a hack moves a model's character.

A policy is a mixture over personas k with weights ``pi = softmax(theta)``, shared by every
context (this sharing is the generalisation channel), and per-persona, per-context hack
probabilities ``h[k, c] = sigmoid(phi[k, c])``. In context c::

    P(hack | c) = sum_k pi_k h[k, c]

Training acts on a weighted set of *training contexts* (``w_c``):

* **RL** maximises the expected reward ``J = sum_c w_c E[r | c]`` with ``r = r_hack`` for a hack
  and ``r_honest`` otherwise. Exact gradients (``delta_r = r_hack - r_honest``)::

      dJ/dtheta_j   = sum_c w_c delta_r pi_j (h[j, c] - P(hack | c))
      dJ/dphi[k, c] = w_c delta_r pi_k h[k, c] (1 - h[k, c])

  so a persona's logit grows in proportion to how much more than average it hacks where the
  reward is given. Under gradient flow on theta::

      d pi_e / dt = pi_e (g_e - sum_j pi_j g_j),   g = dJ/dtheta

  and with two personas (evil e, not-evil n) this is
  ``2 pi_e^2 (1 - pi_e)^2 delta_r (h[e, c] - h[n, c])``: the classic coefficient
  ``P(hack | c, evil) - P(hack | c, not evil)`` times a positive factor. An inoculation prompt
  raises ``h[not evil, c]`` in the training context and so shrinks the coefficient.
* **SFT** on demonstrations (hack or not, per context) is log-likelihood ascent:
  ``d log P(a | c) / d theta_j = pi_j (P(a | c, j) - P(a | c)) / P(a | c)``. The ``bayes`` variant
  applies the exact posterior update ``pi' ∝ pi * P(a | c, k)`` per demonstration (on logits:
  ``theta += log P(a | c, k)``): SFT as a Bayesian update on the persona weights.
* **REINFORCE** estimates the RL gradient by sampling actions from the mixture:
  ``(r - b) grad log P(a | c)``; its average over samples converges to the exact gradient.

``learn_phi=False`` freezes the per-persona hack rates (only the persona weights move: pure
persona shift); ``True`` also learns them (narrow learning, which competes with the shift).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def softmax(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max())
    return z / z.sum()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


@dataclass
class PersonaMixture:
    """Persona logits ``theta`` (K,) and hack logits ``phi`` (K, C), with names for both axes."""

    personas: list[str]
    contexts: list[str]
    theta: np.ndarray
    phi: np.ndarray

    @classmethod
    def from_probabilities(cls, personas: list[str], contexts: list[str], prior: np.ndarray,
                           hack: np.ndarray) -> PersonaMixture:
        prior = np.asarray(prior, dtype=np.float64)
        hack = np.asarray(hack, dtype=np.float64)
        if prior.shape != (len(personas),) or hack.shape != (len(personas), len(contexts)):
            raise ValueError("prior must be (K,) and hack (K, C)")
        if np.any(prior <= 0) or not np.isclose(prior.sum(), 1.0):
            raise ValueError("prior must be positive and sum to 1")
        if np.any(hack <= 0) or np.any(hack >= 1):
            raise ValueError("hack probabilities must lie strictly between 0 and 1")
        return cls(list(personas), list(contexts), np.log(prior), logit(hack))

    def copy(self) -> PersonaMixture:
        return PersonaMixture(list(self.personas), list(self.contexts), self.theta.copy(), self.phi.copy())

    @property
    def pi(self) -> np.ndarray:
        return softmax(self.theta)

    @property
    def h(self) -> np.ndarray:
        return sigmoid(self.phi)

    def p_hack(self) -> np.ndarray:
        """P(hack | c) for every context, shape (C,)."""
        return self.pi @ self.h

    def index(self, persona: str) -> int:
        return self.personas.index(persona)

    def context_weights(self, weights: dict[str, float]) -> np.ndarray:
        w = np.zeros(len(self.contexts))
        for c, v in weights.items():
            w[self.contexts.index(c)] = v
        return w


@dataclass(frozen=True)
class Reward:
    hack: float = 1.0
    honest: float = 0.0

    @property
    def delta(self) -> float:
        return self.hack - self.honest


def expected_reward(m: PersonaMixture, w: np.ndarray, reward: Reward) -> float:
    p = m.p_hack()
    return float(np.sum(w * (p * reward.hack + (1 - p) * reward.honest)))


def rl_gradient(m: PersonaMixture, w: np.ndarray, reward: Reward) -> tuple[np.ndarray, np.ndarray]:
    """Exact (dJ/dtheta, dJ/dphi) of the expected reward over the training contexts ``w``."""
    pi, h, p = m.pi, m.h, m.p_hack()
    g_theta = reward.delta * pi * ((h - p[None, :]) @ w)
    g_phi = reward.delta * pi[:, None] * h * (1 - h) * w[None, :]
    return g_theta, g_phi


def sft_gradient(m: PersonaMixture, demos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact gradient of the log-likelihood of demonstrations.

    ``demos`` is (C, 2): for each context, the weight of hack demonstrations and of honest ones.
    """
    pi, h, p = m.pi, m.h, m.p_hack()
    g_theta = np.zeros_like(m.theta)
    g_phi = np.zeros_like(m.phi)
    for c in range(len(m.contexts)):
        n_hack, n_honest = demos[c]
        if n_hack:
            g_theta += n_hack * pi * (h[:, c] - p[c]) / p[c]
            g_phi[:, c] += n_hack * pi * h[:, c] * (1 - h[:, c]) / p[c]
        if n_honest:
            g_theta += n_honest * pi * (p[c] - h[:, c]) / (1 - p[c])
            g_phi[:, c] -= n_honest * pi * h[:, c] * (1 - h[:, c]) / (1 - p[c])
    return g_theta, g_phi


def bayes_update(m: PersonaMixture, demos: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Logit change of the exact posterior after ``scale`` x the demonstrations: log-likelihoods add."""
    h = m.h
    return scale * (np.log(h) @ demos[:, 0] + np.log1p(-h) @ demos[:, 1])


def reinforce_gradient(m: PersonaMixture, w: np.ndarray, reward: Reward, samples: int,
                       rng: np.random.Generator, baseline: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo REINFORCE estimate of the RL gradient: ``samples`` episodes per unit weight of
    context, actions drawn from the mixture, ``(r - b) grad log P(a | c)``.

    The baseline ``b`` is the exact expected reward of the context (a constant: no bias).
    """
    pi, h, p = m.pi, m.h, m.p_hack()
    g_theta = np.zeros_like(m.theta)
    g_phi = np.zeros_like(m.phi)
    for c in np.nonzero(w)[0]:
        hacks = rng.random(samples) < p[c]
        r = np.where(hacks, reward.hack, reward.honest)
        b = p[c] * reward.hack + (1 - p[c]) * reward.honest if baseline else 0.0
        adv = r - b
        # grad log P(a|c): hack -> pi (h - p)/p ; honest -> -pi (h - p)/(1 - p)
        coef_hack = adv[hacks].sum() / p[c]
        coef_honest = -adv[~hacks].sum() / (1 - p[c])
        g_theta += w[c] * (coef_hack + coef_honest) * pi * (h[:, c] - p[c]) / samples
        g_phi[:, c] += w[c] * (coef_hack + coef_honest) * pi * h[:, c] * (1 - h[:, c]) / samples
    return g_theta, g_phi


def dpi_dt(m: PersonaMixture, g_theta: np.ndarray) -> np.ndarray:
    """Closed form d pi / dt under gradient flow ``d theta / dt = g_theta``: ``pi * (g - pi . g)``."""
    pi = m.pi
    return pi * (g_theta - pi @ g_theta)


def two_persona_dpi_evil(pi_evil: float, h_evil: float, h_not_evil: float, delta_r: float = 1.0) -> float:
    """The two-persona special case of :func:`dpi_dt` in one training context:
    ``2 pi^2 (1 - pi)^2 delta_r (P(hack|c,evil) - P(hack|c,not evil))``."""
    return 2.0 * pi_evil ** 2 * (1 - pi_evil) ** 2 * delta_r * (h_evil - h_not_evil)


def finite_difference_dpi(m: PersonaMixture, g_theta: np.ndarray, persona: int, eps: float = 1e-6) -> float:
    """Central difference of ``pi[persona]`` along the flow direction ``g_theta``."""
    plus = softmax(m.theta + eps * g_theta)[persona]
    minus = softmax(m.theta - eps * g_theta)[persona]
    return float((plus - minus) / (2 * eps))


@dataclass
class TrainingConfig:
    method: str = "rl"  # rl | sft | sft_bayes
    contexts: dict[str, float] = field(default_factory=dict)  # rl: training-context weights
    demos: dict[str, dict[str, float]] = field(default_factory=dict)  # sft: {context: {hack: n, honest: n}}
    steps: int = 100
    lr: float = 1.0
    learn_phi: bool = False
    reward: Reward = field(default_factory=Reward)
    estimator: str = "exact"  # rl: exact | reinforce
    samples: int = 64
    seed: int = 0


@dataclass
class Trajectory:
    pi: np.ndarray  # (steps + 1, K)
    p_hack: np.ndarray  # (steps + 1, C)
    analytic_dpi: np.ndarray  # (K,) d pi / d step at the start, closed form
    finite_difference_dpi: np.ndarray  # (K,) the same by central differences
    first_step_dpi: np.ndarray  # (K,) what the first actual step changed


def _demo_matrix(m: PersonaMixture, demos: dict[str, dict[str, float]]) -> np.ndarray:
    d = np.zeros((len(m.contexts), 2))
    for c, v in demos.items():
        d[m.contexts.index(c)] = [v.get("hack", 0.0), v.get("honest", 0.0)]
    return d


def step_direction(m: PersonaMixture, cfg: TrainingConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The update of (theta, phi) per unit learning rate for one step of ``cfg.method``."""
    if cfg.method == "rl":
        w = m.context_weights(cfg.contexts)
        if cfg.estimator == "reinforce":
            return reinforce_gradient(m, w, cfg.reward, cfg.samples, rng)
        return rl_gradient(m, w, cfg.reward)
    demos = _demo_matrix(m, cfg.demos)
    if cfg.method == "sft":
        return sft_gradient(m, demos)
    if cfg.method == "sft_bayes":
        g_theta = bayes_update(m, demos)
        # phi under the Bayes view is not a posterior quantity: learn it by likelihood ascent if asked
        return g_theta, sft_gradient(m, demos)[1]
    raise ValueError(f"unknown method {cfg.method!r}; use rl, sft or sft_bayes")


def simulate(m0: PersonaMixture, cfg: TrainingConfig) -> Trajectory:
    """Run ``cfg.steps`` updates from ``m0`` (not modified); record pi and P(hack | c) per step."""
    rng = np.random.default_rng(cfg.seed)
    m = m0.copy()
    exact_cfg = TrainingConfig(**{**cfg.__dict__, "estimator": "exact"})
    g0, _ = step_direction(m, exact_cfg, np.random.default_rng(0))
    analytic = cfg.lr * dpi_dt(m, g0)
    fd = np.array([cfg.lr * finite_difference_dpi(m, g0, k) for k in range(len(m.personas))])
    pis, ps = [m.pi], [m.p_hack()]
    for _ in range(cfg.steps):
        g_theta, g_phi = step_direction(m, cfg, rng)
        m.theta = m.theta + cfg.lr * g_theta
        if cfg.learn_phi:
            m.phi = m.phi + cfg.lr * g_phi
        pis.append(m.pi)
        ps.append(m.p_hack())
    pis_a = np.array(pis)
    first = pis_a[1] - pis_a[0] if cfg.steps else np.zeros(len(m.personas))
    return Trajectory(pis_a, np.array(ps), analytic, fd, first)
