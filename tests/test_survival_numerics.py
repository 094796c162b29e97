"""Numerics of the survival case study against ground truth: a simulated Bayesian network with exponential event
and censoring times (EM over two sources), analytic survival, scikit-survival's and lifelines' estimators, finite
differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddspec.components.survival.bayes_net import BayesNet, total_variation
from ddspec.components.survival.cox import fit_cox, harrell_c, partial_log_likelihood, score_and_information
from ddspec.components.survival.data import Table
from ddspec.components.survival.fusion import Discretizer, fit_network
from ddspec.components.survival.kaplan_meier import ipcw_event_by, ipcw_weights, kaplan_meier

TAU = 1.0
RATES = np.array([0.4, 1.2])  # hazard of T given S
P_S = np.array([0.45, 0.55])
#: P(A | S, O) and P(B | S, O): A and B are independent given (S, O) (the fusion's assumption holds).
P_A = np.array([[[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]], [[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]]])
P_B = np.array([[[0.7, 0.3], [0.3, 0.7]], [[0.6, 0.4], [0.2, 0.8]]])


def true_network() -> BayesNet:
    """Nodes S, A, B, O (O = 1[T ≤ τ], T ~ Exp(RATES[S])): S → O, (S, O) → A, (S, O) → B."""
    net = BayesNet([2, 3, 2, 2], [[], [0, 3], [0, 3], [0]])
    p_o = 1 - np.exp(-RATES * TAU)
    net.cpts = [P_S, P_A, P_B, np.stack([1 - p_o, p_o], 1)]
    return net


def simulate(n: int, censor_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covariates (S, A, B) drawn from the network given O, with T exponential and independent Exp censoring."""
    rng = np.random.default_rng(seed)
    s = rng.choice(2, n, p=P_S)
    t = rng.exponential(1 / RATES[s])
    o = (t <= TAU).astype(int)
    a = np.array([rng.choice(3, p=P_A[si, oi]) for si, oi in zip(s, o)])
    b = np.array([rng.choice(2, p=P_B[si, oi]) for si, oi in zip(s, o)])
    c = rng.exponential(1 / censor_rate, n)
    return np.column_stack([s, a, b]).astype(float), np.minimum(t, c), t <= c


def test_em_recovers_the_tables_and_the_fused_query_from_two_censored_sources():
    x, time, event = simulate(20_000, 0.3, 0)
    x[:10_000, 2] = np.nan  # source 1 lacks B
    x[10_000:, 1] = np.nan  # source 2 lacks A
    disc = Discretizer((None, None, None), (2, 3, 2, 2), TAU)
    truth = true_network()
    fitted = fit_network(Table(x, time, event), disc, truth.parents, ess=1.0)
    for cpt, true in zip(fitted.cpts, truth.cpts):
        assert total_variation(cpt, true).max() < 0.03
    # the cross-source query P(O | A, B), which no source can estimate alone
    fused, _ = fitted.conditional(3, [1, 2])
    exact, _ = truth.conditional(3, [1, 2])
    assert total_variation(fused, exact).max() < 0.03
    # ignoring the censoring (treating the unknown outcomes as missing at random) is measurably biased
    biased = BayesNet(disc.cards, truth.parents).fit(disc.codes(Table(x, time, event)))
    assert total_variation(biased.cpts[3], truth.cpts[3]).max() > 0.03


def test_em_matches_enumeration_on_a_hand_sized_case():
    """One EM step's expected counts against brute-force enumeration of the two missing values."""
    net = true_network()
    row = np.array([[1, -1, -1, 0]])
    counts, loglik = net.expected_counts(row)
    joint = net.joint()
    brute = np.zeros_like(joint)
    brute[1, :, :, 0] = joint[1, :, :, 0] / joint[1, :, :, 0].sum()
    np.testing.assert_allclose(counts, brute, atol=1e-15)
    assert loglik == pytest.approx(np.log(joint[1, :, :, 0].sum()))


def test_kaplan_meier_and_ipcw_match_the_exponential_survival():
    rng = np.random.default_rng(1)
    n, rate = 40_000, 0.7
    t, c = rng.exponential(1 / rate, n), rng.exponential(1 / 0.5, n)
    time, event = np.minimum(t, c), t <= c
    for tau in (0.5, 1.0, 2.0):
        exact = np.exp(-rate * tau)
        assert kaplan_meier(time, event, np.array([tau]))[0] == pytest.approx(exact, abs=0.01)
        assert ipcw_event_by(time, event, tau) == pytest.approx(1 - exact, abs=0.01)


def test_ipcw_within_studies_is_unbiased_where_the_pooled_censoring_curve_is_not():
    """Two studies: A (T ~ Exp(1), censored early: C ~ Exp(2)) and B (T ~ Exp(0.2), never censored). Pooled,
    censoring depends on T through the study; Ĝ within each study gives F(τ) = ½(1 − e^−τ) + ½(1 − e^−0.2τ)."""
    rng = np.random.default_rng(2)
    n = 40_000
    t = np.concatenate([rng.exponential(1.0, n), rng.exponential(5.0, n)])
    c = np.concatenate([rng.exponential(0.5, n), np.full(n, np.inf)])
    time, event, study = np.minimum(t, c), t <= c, np.repeat([0, 1], n)
    tau = 1.0
    exact = 0.5 * (1 - np.exp(-tau)) + 0.5 * (1 - np.exp(-0.2 * tau))
    assert ipcw_event_by(time, event, tau, study) == pytest.approx(exact, abs=0.01)
    assert abs(ipcw_event_by(time, event, tau) - exact) > 0.05  # the pooled Ĝ weighs A's events too little
    np.testing.assert_array_equal(ipcw_weights(time, event, tau, np.zeros(2 * n)), ipcw_weights(time, event, tau))


def test_kaplan_meier_by_hand():
    time, event = np.array([1.0, 2.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 1, 0], bool)
    # at 1: 1 − 1/5; at 2: × (1 − 1/4); at 3: × (1 − 1/2)
    expected = [1.0, 0.8, 0.8 * 0.75, 0.8 * 0.75 * 0.5, 0.8 * 0.75 * 0.5]
    np.testing.assert_allclose(kaplan_meier(time, event, np.array([0.5, 1.0, 2.5, 3.0, 10.0])), expected)


def test_c_index_agrees_with_scikit_survival_and_lifelines():
    from lifelines.utils import concordance_index
    from sksurv.metrics import concordance_index_censored

    rng = np.random.default_rng(2)
    # times on a coarse grid and rounded risks: tied times (an event and a censoring at the same time are
    # comparable) and tied risks (½) both occur
    time, event, risk = np.ceil(4 * rng.exponential(1, 300)), rng.random(300) < 0.6, np.round(rng.normal(size=300), 1)
    assert np.any((time[:, None] == time[None, :]) & event[:, None] & ~event[None, :])
    ours = harrell_c(time, event, risk)
    assert ours == pytest.approx(concordance_index_censored(event, time, risk)[0], abs=1e-12)
    assert ours == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)


def test_stratified_c_index_is_the_pair_weighted_mean_of_the_groups():
    """With groups, only pairs within a group count: the pooled C is Σ_g C_g·pairs_g / Σ_g pairs_g."""
    rng = np.random.default_rng(5)
    time, event, risk = rng.exponential(1, 200), rng.random(200) < 0.7, rng.normal(size=200)
    groups = np.arange(200) % 2
    pairs = [np.sum(event[g == groups][:, None] & (time[g == groups][:, None] < time[g == groups][None, :]))
             for g in (0, 1)]
    within = [harrell_c(time[groups == g], event[groups == g], risk[groups == g]) for g in (0, 1)]
    expected = np.dot(within, pairs) / np.sum(pairs)
    assert harrell_c(time, event, risk, groups) == pytest.approx(expected, abs=1e-12)
    assert harrell_c(time, event, risk, groups) != pytest.approx(harrell_c(time, event, risk), abs=1e-4)


def cox_sample(n: int = 300, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t = rng.exponential(1 / np.exp(x @ np.array([0.8, -0.5, 0.0])))
    c = rng.exponential(2.0, n)
    return x, np.minimum(t, c), t <= c


def test_cox_fit_matches_lifelines():
    import pandas as pd
    from lifelines import CoxPHFitter

    x, time, event = cox_sample()
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event.astype(int))
    reference = CoxPHFitter(penalizer=0.0).fit(frame, "T", "E").params_.to_numpy()
    np.testing.assert_allclose(fit_cox(x, time, event), reference, atol=1e-4)


def test_partial_likelihood_gradient_matches_autograd_and_finite_differences():
    x, time, event = cox_sample(60, 4)
    beta = np.array([0.3, -0.2, 0.1])
    xt, tt, et = (torch.as_tensor(a, dtype=torch.float64) for a in (x, time, event))
    b = torch.tensor(beta, requires_grad=True)
    value = partial_log_likelihood(b, xt, tt, et)
    (autograd,) = torch.autograd.grad(value, b)
    loglik, score, information = score_and_information(beta, x, time, event)
    assert loglik == pytest.approx(float(value.detach()), rel=1e-12)
    np.testing.assert_allclose(score, autograd.numpy(), rtol=1e-10)
    h = 1e-6
    fd = [(float(partial_log_likelihood(torch.tensor(beta + h * e), xt, tt, et))
           - float(partial_log_likelihood(torch.tensor(beta - h * e), xt, tt, et))) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(score, fd, rtol=1e-6)
    hessian = torch.autograd.functional.hessian(lambda q: partial_log_likelihood(q, xt, tt, et), b.detach())
    np.testing.assert_allclose(information, -hessian.numpy(), rtol=1e-9)


def test_breslow_ties_by_brute_force():
    """On times with ties, ℓ(β) (torch and closed form) equals the sum over events written out with explicit risk
    sets {j : t_j ≥ t_i}, and the closed-form score and information equal torch's autograd."""
    x, time, event = cox_sample(80, 6)
    time = np.ceil(4 * time)  # a handful of distinct times: many ties among events and censorings
    beta = np.array([0.4, -0.3, 0.2])
    eta = x @ beta
    brute = sum(eta[i] - np.log(np.sum(np.exp(eta[time >= time[i]]))) for i in np.flatnonzero(event))
    xt, tt, et = (torch.as_tensor(a, dtype=torch.float64) for a in (x, time, event))
    b = torch.tensor(beta, requires_grad=True)
    value = partial_log_likelihood(b, xt, tt, et)
    loglik, score, information = score_and_information(beta, x, time, event)
    assert float(value.detach()) == pytest.approx(brute, rel=1e-12)
    assert loglik == pytest.approx(brute, rel=1e-12)
    np.testing.assert_allclose(score, torch.autograd.grad(value, b)[0].numpy(), rtol=1e-10)
    hessian = torch.autograd.functional.hessian(lambda q: partial_log_likelihood(q, xt, tt, et), b.detach())
    np.testing.assert_allclose(information, -hessian.numpy(), rtol=1e-9)


def test_breslow_survival_functions_match_lifelines():
    """S(t | x) = exp(−Ĥ₀(t) exp(xᵀβ)) with Breslow's Ĥ₀ equals lifelines' predicted survival at the same β."""
    import pandas as pd
    from lifelines import CoxPHFitter

    from ddspec.components.survival.cox import survival_functions

    x, time, event = cox_sample()
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event.astype(int))
    fitted = CoxPHFitter(penalizer=0.0).fit(frame, "T", "E")
    at = np.sort(time[event])[[5, 50, 100, 150]]  # event times: lifelines interpolates linearly between them
    expected = fitted.predict_survival_function(frame[["a", "b", "c"]].iloc[:20], times=at).to_numpy().T
    ours = survival_functions(fitted.params_.to_numpy(), x, time, event, x[:20], at)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
