"""Calibration of class probabilities: temperature scaling, and how to measure calibration.

Temperature scaling (Guo et al. 2017) divides the log-probabilities by one fitted temperature T and renormalises.
One parameter, fitted by minimising the negative log-likelihood of out-of-fold predictions: it cannot overfit the few
hundred micrographs of a typical dataset, and it leaves every micrograph's most probable class (so the accuracy)
unchanged. Per-class calibrators (isotonic, Platt one-vs-rest) fit C curves on the same few rows and change the argmax.
"""
from __future__ import annotations

import numpy as np

TINY = 1e-12  # probabilities are clipped here before the log: boosted trees give exact zeros


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, TINY, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class TemperatureScaling:
    """``fit(proba, y)`` (y: class indices) finds T; ``transform(proba)`` returns softmax(log(proba) / T)."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def fit(self, proba: np.ndarray, y: np.ndarray) -> "TemperatureScaling":
        from scipy.optimize import minimize_scalar

        logp = _log(proba)
        rows = np.arange(len(y))

        def nll(log_t):
            z = logp / np.exp(log_t)
            z -= z.max(axis=1, keepdims=True)
            return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))

        # T in [0.05, 20]: beyond, the probabilities are already 0/1 or uniform to 3 decimals
        self.temperature = float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)),
                                                        method="bounded", options={"xatol": 1e-6}).x))
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return softmax(_log(proba) / self.temperature)

    def to_dict(self) -> dict:
        return {"method": "temperature_scaling", "temperature": self.temperature}

    @classmethod
    def from_dict(cls, d: dict) -> "TemperatureScaling":
        return cls(d["temperature"])


def reliability(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> dict:
    """Top-label reliability: per equal-width confidence bin, its rows, mean confidence and accuracy; and the expected
    calibration error (the rows-weighted mean |accuracy - confidence| over bins, Guo et al. 2017)."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        accuracy = np.bincount(index, correct, bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_confidence), 0.0)
    return {"edges": np.linspace(0, 1, bins + 1), "counts": counts, "confidence": mean_confidence,
            "accuracy": accuracy, "ece": float((counts * gaps).sum() / max(len(y), 1))}
