"""Split-conformal prediction sets of classes, on precomputed probabilities.

The nonconformity score of a micrograph and a class is 1 - its probability of that class (LAC, Sadinle et al. 2019:
the smallest sets on average). crepes' ConformalClassifier turns the calibration scores (one per micrograph, of its
true class) into p-values, and a class enters a micrograph's set when its p-value is at least 1 - coverage: the set
holds the true class for at least `coverage` of exchangeable micrographs. Class-conditional (Mondrian by the candidate
class): one ConformalClassifier per class, on the scores of that class's micrographs only, so the guarantee holds
for every class, not only on average. p-values are unsmoothed: deterministic, and conservative by at most 1 / (n + 1).
"""
from __future__ import annotations

import numpy as np


class ConformalSets:
    """``fit(proba, y)`` on calibration micrographs (y: class indices); ``predict(proba)`` -> (N, C) bool sets."""

    def __init__(self, coverage: float = 0.9, class_conditional: bool = False):
        if not 0 < coverage < 1:
            raise ValueError(f"coverage {coverage}: must lie strictly between 0 and 1")
        self.coverage, self.class_conditional = float(coverage), bool(class_conditional)
        self.scores_: list[np.ndarray] = []  # per class (class-conditional) or one array of every class

    def fit(self, proba: np.ndarray, y: np.ndarray) -> "ConformalSets":
        scores = 1.0 - proba[np.arange(len(y)), y]
        if self.class_conditional:
            self.scores_ = [scores[y == c] for c in range(proba.shape[1])]
        else:
            self.scores_ = [scores]
        return self

    def _classifier(self, scores: np.ndarray):
        from crepes import ConformalClassifier

        return ConformalClassifier().fit(scores)

    def predict(self, proba: np.ndarray) -> np.ndarray:
        alphas = 1.0 - proba
        if not self.class_conditional:
            sets = self._classifier(self.scores_[0]).predict_set(alphas, confidence=self.coverage, smoothing=False)
            return sets.astype(bool)
        sets = np.zeros(proba.shape, bool)
        for c, scores in enumerate(self.scores_):
            if len(scores) == 0:  # a class no calibration micrograph has: no guarantee possible, always in the set
                sets[:, c] = True
                continue
            column = self._classifier(scores).predict_set(alphas[:, [c]], confidence=self.coverage, smoothing=False)
            sets[:, c] = column[:, 0].astype(bool)
        return sets

    def thresholds(self) -> list[float]:
        """The largest score (1 - probability) a class may have and still enter a set: per class, or one for all.
        For reading only (predict goes through crepes): the ceil((n + 1) coverage)-th smallest calibration score,
        inf when n is too small for the coverage."""
        out = []
        for scores in self.scores_:
            rank = int(np.ceil((len(scores) + 1) * self.coverage))
            out.append(float(np.sort(scores)[rank - 1]) if rank <= len(scores) else float("inf"))
        return out

    def to_dict(self) -> dict:
        return {"coverage": self.coverage, "class_conditional": self.class_conditional,
                "thresholds": self.thresholds(), "scores": [s.tolist() for s in self.scores_]}

    @classmethod
    def from_dict(cls, d: dict) -> "ConformalSets":
        sets = cls(d["coverage"], d["class_conditional"])
        sets.scores_ = [np.asarray(s, float) for s in d["scores"]]
        return sets
