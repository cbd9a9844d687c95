"""Class shares of a sample of micrographs (quantification), by five estimators, with bootstrap intervals.

Estimators (Forman 2008; Bella et al. 2010; Saerens, Latinne & Decaestecker 2002), each of a sample's (N, C)
calibrated probabilities:

- ``cc``: classify and count (the share of each most probable class);
- ``pcc``: probabilistic counting (the mean probability of each class);
- ``acc``: adjusted counting: solves M p = q for the shares p, M[i, j] the rate at which class j is counted as i
  (fitted on labelled out-of-fold predictions), q the counted shares; clipped to >= 0 and renormalised;
- ``pacc``: its probabilistic form (M of mean probabilities, q of pcc);
- ``em``: EM re-estimation of the priors: posteriors reweighted by (new / fitted) prior until the mean posterior is
  the prior.

Written here rather than through QuaPy: each estimator is a few lines of numpy, and the interval below needs them
vectorised over hundreds of bootstrap replicates at once (QuaPy fits and estimates one sample at a time, and brings
further dependencies).

Interval (:class:`ShareIntervals`): the error distribution of an estimator, simulated where the sample's own error
comes from. Replicate b resamples the *groups* (sources of micrographs) of the labelled predictions with replacement,
fits the estimator's quantities on those in the bag, draws a pseudo-sample of the sample's size from the groups out of
the bag (sources the fit never saw) with class counts ~ Multinomial(N, estimate), and records estimate_b - truth_b.
The 95% interval is estimate - the 97.5% and 2.5% error quantiles: it holds the sample's size, the uncertainty of the
fitted quantities and the variation of error rates between groups, and corrects the estimator's bias where known.
What it still misses shows on held-out folds; :func:`widening_factor` measures the stretch that makes up for it
(cntem.uncertainty fits it on the validation and applies it with :func:`widen`).
"""
from __future__ import annotations

import numpy as np

ESTIMATORS = ("cc", "pcc", "acc", "pacc", "em")
ESTIMATOR_NAMES = {"cc": "classify and count", "pcc": "probabilistic counting", "acc": "adjusted counting",
                   "pacc": "probabilistic adjusted counting", "em": "EM (Saerens et al. 2002)"}
EM_ITERATIONS, EM_TOLERANCE = 1000, 1e-4
REFERENCE = "pacc"  # the composition pseudo-samples are drawn at


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, None)
    total = p.sum(axis=-1, keepdims=True)
    uniform = np.full_like(p, 1.0 / p.shape[-1])
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), uniform)


def counted_shares(proba: np.ndarray) -> np.ndarray:
    """(..., N, C) -> (..., C): the share of each most probable class."""
    hard = np.eye(proba.shape[-1])[proba.argmax(axis=-1)]
    return hard.mean(axis=-2)


def rates(proba: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """What the corrections need, from labelled rows: hard and soft rate matrices M[i, j] (counted as i | class j,
    identity columns for a class without rows) and the class priors."""
    onehot = np.eye(n_classes)[y]
    per_class = onehot.sum(axis=0)
    seen = per_class > 0
    safe = np.where(seen, per_class, 1.0)
    hard = np.where(seen, (np.eye(n_classes)[proba.argmax(axis=1)].T @ onehot) / safe, np.eye(n_classes))
    soft = np.where(seen, (proba.T @ onehot) / safe, np.eye(n_classes))
    return {"hard": hard, "soft": soft, "priors": per_class / per_class.sum()}


def em_shares(proba: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Saerens et al. (2002): (..., N, C) posteriors fitted under `priors` (..., C) -> re-estimated priors (..., C).

    With r = new / fitted prior, a row's reweighted posterior is p * r / (p . r), so the new prior is
    r * mean(p / (p . r)): two products per iteration, no (..., N, C) temporaries."""
    priors = np.clip(priors, 1e-12, None)
    current = proba.mean(axis=-2)
    for _ in range(EM_ITERATIONS):
        ratio = current / priors
        row_sums = np.clip(proba @ ratio[..., None], 1e-300, None)  # (..., N, 1)
        updated = ratio * (np.swapaxes(1.0 / row_sums, -1, -2) @ proba)[..., 0, :] / proba.shape[-2]
        if np.max(np.abs(updated - current)) < EM_TOLERANCE:
            return updated
        current = updated
    return current


def _adjusted(rate_matrix: np.ndarray, observed: np.ndarray) -> np.ndarray:
    return _normalise((np.linalg.pinv(rate_matrix) @ observed[..., None])[..., 0])


def estimate(name: str, proba: np.ndarray, fitted: dict) -> np.ndarray:
    """Estimator `name`'s shares of samples (..., N, C), with fitted quantities `fitted` (rates(), possibly stacked
    along the same leading axes)."""
    if name == "cc":
        return counted_shares(proba)
    if name == "pcc":
        return proba.mean(axis=-2)
    if name == "acc":
        return _adjusted(fitted["hard"], counted_shares(proba))
    if name == "pacc":
        return _adjusted(fitted["soft"], proba.mean(axis=-2))
    if name == "em":
        return em_shares(proba, fitted["priors"])
    raise ValueError(f"unknown share estimator {name!r}; one of {ESTIMATORS}")


class ShareIntervals:
    """``fit(proba, y, groups)`` on labelled calibrated out-of-fold predictions; ``estimate(proba)`` -> per estimator
    (shares, lower, upper) of a sample; every estimator is fitted on all rows, the bootstrap draws are fixed by `seed`."""

    def __init__(self, n_classes: int, replicates: int = 200, level: float = 0.95, holdout: float = 0.2, seed: int = 0):
        self.n_classes, self.replicates, self.level, self.seed = n_classes, int(replicates), float(level), int(seed)
        self.holdout = float(holdout)

    def fit(self, proba: np.ndarray, y: np.ndarray, groups) -> "ShareIntervals":
        self.proba_, self.y_ = np.asarray(proba, float), np.asarray(y, int)
        self.groups_ = np.asarray([str(g) for g in groups])
        self.fitted_ = rates(self.proba_, self.y_, self.n_classes)
        names, group_index = np.unique(self.groups_, return_inverse=True)
        rng = np.random.default_rng(self.seed)
        # Replicate b holds out a random `holdout` of the groups (a pseudo-test source the size of a CV fold) and
        # resamples the others with replacement (the bag the quantities are fitted on).
        held = max(1, min(len(names) - 1, round(self.holdout * len(names))))
        in_bag, pseudo_test = np.zeros((self.replicates, len(names)), int), np.zeros((self.replicates, len(names)), bool)
        for b in range(self.replicates):
            order = rng.permutation(len(names))
            pseudo_test[b, order[:held]] = True
            np.add.at(in_bag[b], order[held:][rng.integers(0, len(names) - held, len(names) - held)], 1)
        weights = in_bag[:, group_index]  # (B, rows): how often a row is in replicate b's bag
        onehot = np.eye(self.n_classes)[self.y_]
        hard = np.eye(self.n_classes)[self.proba_.argmax(axis=1)]
        per_class = weights @ onehot  # (B, C)
        seen = per_class > 0
        safe = np.where(seen, per_class, 1.0)[:, None, :]
        identity = np.broadcast_to(np.eye(self.n_classes), (self.replicates, self.n_classes, self.n_classes))
        self.bag_rates_ = {
            "hard": np.where(seen[:, None, :], np.einsum("br,ri,rj->bij", weights, hard, onehot, optimize=True) / safe, identity),
            "soft": np.where(seen[:, None, :], np.einsum("br,ri,rj->bij", weights, self.proba_, onehot,
                                                                    optimize=True) / safe,
                             identity),
            "priors": per_class / per_class.sum(axis=1, keepdims=True)}
        # Pseudo-samples come from the held-out groups; a class with none there falls back to all its rows.
        # Stored as (B, C, longest pool) row indices with each pool's length, to draw every replicate at once.
        member = self.y_[None, :] == np.arange(self.n_classes)[:, None]  # (C, rows)
        pool = pseudo_test[:, group_index][:, None, :] & member[None]  # (B, C, rows)
        pool = np.where(pool.any(axis=2, keepdims=True), pool, member[None])
        self.pool_sizes_ = pool.sum(axis=2)
        order = np.argsort(~pool, axis=2, kind="stable")  # each pool's rows first
        self.pools_ = order[:, :, :max(int(self.pool_sizes_.max()), 1)]
        return self

    def point_estimates(self, proba: np.ndarray) -> dict[str, np.ndarray]:
        return {name: estimate(name, np.asarray(proba, float), self.fitted_) for name in ESTIMATORS}

    def simulate(self, composition: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """Per replicate, a pseudo-sample of `n` rows out of its bag with class counts ~ Multinomial(n, composition):
        (B, n) row indices and (B, C) true shares."""
        counts = rng.multinomial(n, _normalise(np.asarray(composition, float)), size=self.replicates)
        ends = counts.cumsum(axis=1)
        slot_class = (np.arange(n)[None, :, None] >= ends[:, None, :]).sum(axis=2)  # (B, n) class of each slot
        replicate = np.arange(self.replicates)[:, None]
        sizes = self.pool_sizes_[replicate, slot_class]
        picks = (rng.random((self.replicates, n)) * sizes).astype(int)
        return self.pools_[replicate, slot_class, picks], counts / n

    def estimate(self, proba: np.ndarray, seed: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Per estimator: ``shares``, ``lower``, ``upper`` (C,) of the sample `proba` (N, C)."""
        proba = np.asarray(proba, float)
        points = self.point_estimates(proba)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        # One simulation for every estimator, at the bias-corrected composition (pacc): a biased estimator's error
        # is simulated where the truth probably is, not at its own biased estimate.
        rows, truth = self.simulate(points[REFERENCE], len(proba), rng)
        pseudo = self.proba_[rows]
        tail = (1 - self.level) / 2
        out = {}
        for name, point in points.items():
            errors = estimate(name, pseudo, self.bag_rates_) - truth
            low_error, high_error = np.quantile(errors, [tail, 1 - tail], axis=0)
            out[name] = {"shares": point, "lower": np.clip(point - high_error, 0, 1),
                         "upper": np.clip(point - low_error, 0, 1)}
        return out

    def to_dict(self) -> dict:
        return {"replicates": self.replicates, "level": self.level, "holdout": self.holdout, "seed": self.seed,
                "proba": self.proba_.tolist(), "y": self.y_.tolist(), "groups": self.groups_.tolist()}

    @classmethod
    def from_dict(cls, d: dict, n_classes: int) -> "ShareIntervals":
        intervals = cls(n_classes, d["replicates"], d["level"], d["holdout"], d["seed"])
        return intervals.fit(np.asarray(d["proba"]), np.asarray(d["y"]), d["groups"])


MAX_WIDENING = 20.0  # beyond, an interval is [0, 1] anyway
# An interval's half-width counts as at least this when stretched: one every replicate puts at 0 (a class the
# adjusted estimators clip away) must still be able to widen.
MIN_HALF_WIDTH = 0.005


def widening_factor(lower, upper, truth, level: float) -> float:
    """The smallest factor (>= 1) by which intervals must be stretched about their centres to hold `truth` in a
    `level` share of the cases (split-conformal quantile of each case's needed factor): what the bootstrap misses
    of the error between sources, measured on held-out folds. (About the centre, not the estimate: a bias-corrected
    interval need not contain its estimate.)"""
    lower, upper, truth = (np.asarray(a, float) for a in (lower, upper, truth))
    centre, half = (lower + upper) / 2, np.maximum((upper - lower) / 2, MIN_HALF_WIDTH)
    needed = np.abs(truth - centre) / half
    rank = min(int(np.ceil((len(needed) + 1) * level)), len(needed))
    return float(np.clip(np.sort(needed)[rank - 1], 1.0, MAX_WIDENING))


def widen(lower, upper, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Intervals stretched by `factor` about their centres, clipped to [0, 1]."""
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    centre, half = (lower + upper) / 2, np.maximum((upper - lower) / 2, MIN_HALF_WIDTH)
    return np.clip(centre - factor * half, 0, 1), np.clip(centre + factor * half, 0, 1)
