"""Fusing sources with a discrete Bayesian network, and completing tables by imputation.

Nodes: every covariate, discretized (a numeric column into ``bins`` quantile bins of its observed training values;
a categorical one by its levels), and the outcome O = 1[T ≤ τ] ("event by τ"). O is known for a patient with an
event by τ (O = 1) or followed past τ (t > τ: O = 0); for a patient censored at t ≤ τ it is unknown, and not missing
at random (whether it is hidden depends on T). So the fit weighs the patients by inverse probability of censoring
(IPCW, Ĝ the Kaplan–Meier of the censorings): w = 1/Ĝ(t−) for an event by τ, 1/Ĝ(τ) past τ, 0 for a censoring
by τ — their weight is carried by the patients still followed, which is unbiased when censoring is independent of
the covariates. The columns a patient's source lacks are missing at random (the split is by patients): EM
(:class:`~ddspec.components.survival.bayes_net.BayesNet`) fits the network on the stacked sources with them
latent, with the weights. Cross-source dependencies are not
identifiable from the sources: the network's structure is the assumption that fixes them (with the default
structure, every covariate's only parent is O, so covariates of different sources are independent given O).

EM imputation (:func:`em_complete`): for each missing covariate of a patient, a bin is drawn from the network's
posterior given the patient's observed covariates and outcome, then a value uniformly among the training values
observed in that bin. MICE (:func:`mice_complete`): scikit-learn's ``IterativeImputer`` (posterior sampling, the
log time and the event as predictors), categorical columns rounded to their nearest level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ddspec.components.survival.bayes_net import BayesNet
from ddspec.components.survival.data import SurvivalDataset, Table
from ddspec.components.survival.kaplan_meier import ipcw_weights


@dataclass(frozen=True)
class Discretizer:
    """Bin edges of the numeric columns (None for categorical ones) and the outcome's horizon τ."""

    edges: tuple[np.ndarray | None, ...]
    cards: tuple[int, ...]
    tau: float

    @classmethod
    def of(cls, data: SurvivalDataset, bins: int, tau: float | None) -> Discretizer:
        """Quantile bins of each numeric column's observed training values; τ (None: the median event time)."""
        table = data.train_table()
        edges, cards = [], []
        for j, levels in enumerate(data.levels):
            if levels is None:
                values = table.x[:, j][np.isfinite(table.x[:, j])]
                inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
                edges.append(inner)
                cards.append(len(inner) + 1)
            else:
                edges.append(None)
                cards.append(len(levels))
        tau = float(np.median(table.time[table.event])) if tau is None else float(tau)
        return cls(tuple(edges), (*cards, 2), tau)

    def covariates(self, x: np.ndarray) -> np.ndarray:
        """Bin codes of the covariates (−1 where NaN)."""
        codes = np.full(x.shape, -1, dtype=np.int64)
        for j, edges in enumerate(self.edges):
            seen = np.isfinite(x[:, j])
            values = x[seen, j]
            codes[seen, j] = (np.searchsorted(edges, values, side="right") if edges is not None
                              else np.clip(np.rint(values), 0, self.cards[j] - 1))
        return codes

    def outcome(self, time: np.ndarray, event: np.ndarray) -> np.ndarray:
        """O = 1[T ≤ τ]: 1 for an event by τ, 0 past τ, −1 (unknown) for a censoring at or before τ."""
        return np.where(time > self.tau, 0, np.where(event, 1, -1))

    def codes(self, table: Table) -> np.ndarray:
        """The network's rows: covariate codes, then O."""
        return np.column_stack([self.covariates(table.x), self.outcome(table.time, table.event)])


def naive_structure(covariates: int) -> list[list[int]]:
    """Every covariate's only parent is the outcome (the last node)."""
    return [[covariates] for _ in range(covariates)] + [[]]


def structure_of(columns: Sequence[str], edges: dict[str, list[str]] | None) -> list[list[int]]:
    """Parents per node from ``{node: [parents]}`` (names: covariates and ``outcome``); None: the naive one."""
    if edges is None:
        return naive_structure(len(columns))
    names = [*columns, "outcome"]
    return [[names.index(p) for p in edges.get(name, [])] for name in names]


def fit_network(table: Table, disc: Discretizer, parents: list[list[int]], ess: float,
                groups: np.ndarray | None = None) -> BayesNet:
    """The network fitted on the table's rows with IPCW weights normalized to mean 1 (EM over the missing
    covariates); ``groups``: the study of each row, whose own censoring distribution weighs it."""
    codes = disc.codes(table)
    codes[codes[:, -1] < 0, -1] = 0  # weight 0: the value is never read
    weights = ipcw_weights(table.time, table.event, disc.tau, groups)
    return BayesNet(disc.cards, parents, ess).fit(codes, weights=weights * len(weights) / max(weights.sum(), 1e-12))


def fit_fused_network(data: SurvivalDataset, disc: Discretizer, parents: list[list[int]], ess: float) -> BayesNet:
    """The EM fusion of the sources: :func:`fit_network` on the stacked training patients, each weighted by the
    censoring distribution of its own study (table)."""
    return fit_network(data.train_table(), disc, parents, ess, data.groups_train.numpy())


def em_complete(table: Table, data: SurvivalDataset, disc: Discretizer, net: BayesNet,
                rng: np.random.Generator) -> np.ndarray:
    """The covariates with every missing value imputed (see the module docstring)."""
    x = table.x.copy()
    codes = disc.codes(table)
    pool = data.train_table().x
    pool_codes = disc.covariates(pool)
    for i, post in zip(np.flatnonzero(np.isnan(x).any(1)), net.posterior(codes[np.isnan(x).any(1)])):
        missing = np.flatnonzero(codes[i] < 0)
        config = np.unravel_index(rng.choice(len(post), p=post), [disc.cards[m] for m in missing])
        for m, state in zip(missing, config):
            if m == len(data.columns):
                continue  # the outcome: not a covariate
            same = np.flatnonzero(pool_codes[:, m] == state)
            x[i, m] = pool[rng.choice(same), m] if len(same) else np.nanmedian(pool[:, m])
    return x


def mice_complete(table: Table, data: SurvivalDataset, seed: int) -> np.ndarray:
    """MICE: ``IterativeImputer`` with posterior sampling on (covariates, log time, event); levels rounded."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    full = np.column_stack([table.x, np.log(table.time), table.event.astype(float)])
    imputer = IterativeImputer(sample_posterior=True, random_state=seed, max_iter=10)
    x = imputer.fit_transform(full)[:, : table.x.shape[1]]
    return snap(x, data)


def snap(x: np.ndarray, data: SurvivalDataset) -> np.ndarray:
    """Categorical columns rounded to their nearest level, numeric ones clipped to the training range."""
    x = x.copy()
    train = data.train_table().x
    for j, levels in enumerate(data.levels):
        if levels is None:
            x[:, j] = np.clip(x[:, j], np.nanmin(train[:, j]), np.nanmax(train[:, j]))
        else:
            x[:, j] = np.clip(np.rint(x[:, j]), 0, len(levels) - 1)
    return x
