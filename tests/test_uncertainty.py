"""Calibration, conformal prediction sets, share estimators and their intervals, on synthetic inputs with known
answers."""
import json

import numpy as np
import pytest

from cntem.calibration import TemperatureScaling, reliability, softmax
from cntem.conformal import ConformalSets
from cntem.quantify import ESTIMATORS, ShareIntervals, estimate, rates, widen, widening_factor
from cntem.uncertainty import Uncertainty, UncertaintySettings, choose_default, coverage_rows


def synthetic(n, n_classes=3, prior=None, strength=1.5, sharpness=1.0, seed=0):
    """Probabilities whose true class gets `strength` more logit: (proba, y)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(n_classes, n, p=prior)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += strength
    return softmax(sharpness * logits), y


@pytest.mark.parametrize("class_conditional", [False, True])
def test_conformal_sets_cover_exchangeable_micrographs_at_the_nominal_rate(class_conditional):
    calibration, test = synthetic(3000, seed=1), synthetic(30000, seed=2)
    sets = ConformalSets(0.9, class_conditional).fit(*calibration)
    predicted = sets.predict(test[0])
    covered = predicted[np.arange(len(test[1])), test[1]]
    # split conformal: 0.9 <= expected coverage <= 0.9 + 1 / (n + 1); the test set's sampling error is ~0.002
    assert abs(covered.mean() - 0.9) < 0.01
    if class_conditional:
        for c in range(3):
            assert abs(covered[test[1] == c].mean() - 0.9) < 0.02
    # crepes' p-values and the textbook quantile agree: a class is in the set iff its score is <= the threshold
    thresholds = np.array(sets.thresholds()) if class_conditional else np.full(3, sets.thresholds()[0])
    assert np.array_equal(predicted, (1 - test[0]) <= thresholds)


def test_conformal_threshold_is_the_known_order_statistic():
    # scores 0.01 .. 0.20 (20 micrographs): at 90%, ceil(21 x 0.9) = 19 -> the 19th smallest score, 0.19
    proba = np.column_stack([1 - np.arange(1, 21) / 100, np.arange(1, 21) / 100])
    sets = ConformalSets(0.9).fit(proba, np.zeros(20, int))
    assert sets.thresholds() == pytest.approx([0.19])
    assert sets.predict(np.array([[0.81, 0.19], [0.80, 0.20]]))[:, 0].tolist() == [True, False]


def test_temperature_scaling_recovers_a_known_temperature_and_keeps_the_argmax():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4000, 4)) * 2
    y = np.array([rng.choice(4, p=p) for p in softmax(logits)])  # labels drawn from the calibrated probabilities
    overconfident = softmax(2.0 * logits)  # T = 2 undoes this
    scaling = TemperatureScaling().fit(overconfident, y)
    assert scaling.temperature == pytest.approx(2.0, rel=0.1)
    calibrated = scaling.transform(overconfident)
    assert np.array_equal(calibrated.argmax(axis=1), overconfident.argmax(axis=1))
    assert reliability(calibrated, y)["ece"] < reliability(overconfident, y)["ece"] / 2


def test_expected_calibration_error_of_known_reliability():
    proba = np.tile([0.8, 0.2], (10, 1))
    assert reliability(proba, np.array([0] * 8 + [1] * 2))["ece"] == pytest.approx(0.0)
    assert reliability(proba, np.zeros(10, int))["ece"] == pytest.approx(0.2)


def test_adjusted_counting_recovers_known_shares_from_a_known_confusion_matrix():
    # classes counted right 80 / 70 / 90 % of the time, the rest evenly as the other two
    m = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.05], [0.1, 0.15, 0.9]])  # m[i, j]: counted as i | class j
    onehot = np.eye(3)
    calibration_y = np.repeat(np.arange(3), 20)
    predicted = np.concatenate([np.repeat(np.arange(3), np.round(20 * m[:, j]).astype(int)) for j in range(3)])
    fitted = rates(onehot[predicted] * 0.9 + 0.1 / 3, calibration_y, 3)
    assert np.allclose(fitted["hard"], m)
    truth = np.array([0.5, 0.3, 0.2])
    counted = m @ truth  # what counting sees in a sample of these shares: 0.46, 0.27, 0.27 (200 micrographs)
    sample = np.repeat(np.arange(3), np.round(200 * counted).astype(int))
    sample_proba = onehot[sample] * 0.9 + 0.1 / 3
    assert np.allclose(estimate("cc", sample_proba, fitted), counted)
    assert np.allclose(estimate("acc", sample_proba, fitted), truth)


def gaussian_posteriors(n, prior, seed):
    """Exact posteriors (under equal priors) of 2-d Gaussian classes at the corners of a triangle: (proba, y)."""
    rng = np.random.default_rng(seed)
    means = 1.5 * np.array([[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]])
    y = rng.choice(3, n, p=prior)
    x = means[y] + rng.normal(size=(n, 2))
    return softmax(x @ means.T - 0.5 * (means**2).sum(axis=1)), y


def test_em_recovers_shifted_priors_of_calibrated_posteriors():
    calibration = gaussian_posteriors(6000, [1 / 3] * 3, seed=4)
    shifted = gaussian_posteriors(6000, [0.7, 0.2, 0.1], seed=5)
    fitted = rates(*calibration, 3)
    assert np.allclose(estimate("em", shifted[0], fitted), [0.7, 0.2, 0.1], atol=0.03)
    assert np.abs(estimate("cc", shifted[0], fitted) - [0.7, 0.2, 0.1]).max() > 0.05  # counting is biased here


def test_bootstrap_interval_widens_as_the_sample_shrinks():
    proba, y = synthetic(3000, seed=6)
    intervals = ShareIntervals(3, replicates=200, seed=0).fit(proba, y, np.arange(3000) // 5)
    small = synthetic(40, prior=[0.4, 0.35, 0.25], seed=7)[0]
    large = np.tile(small, (10, 1))  # the same micrographs ten times: every estimate is the same, only N differs
    narrow, wide = intervals.estimate(large), intervals.estimate(small)
    for name in ESTIMATORS:
        assert np.allclose(narrow[name]["shares"], wide[name]["shares"])
        assert (wide[name]["upper"] - wide[name]["lower"]).mean() > 1.3 * (narrow[name]["upper"]
                                                                           - narrow[name]["lower"]).mean()


def test_the_default_estimator_is_the_most_accurate_with_intervals_that_hold():
    summary = [{"estimator": e, "scenario": "all", "size": "all", "mae": mae, "interval_coverage": cov}
               for e, mae, cov in [("cc", 0.06, 0.95), ("pcc", 0.07, 0.96), ("acc", 0.05, 0.80), ("pacc", 0.055, 0.93),
                                   ("em", 0.04, 0.90)]]
    assert choose_default(summary, 0.92) == "pacc"
    assert choose_default(summary, 0.99) == "em"  # none holds: the most accurate


def test_uncertainty_survives_its_dict_and_flags_doubtful_micrographs():
    proba, y = synthetic(300, n_classes=4, seed=8)
    settings = UncertaintySettings(coverage=0.9, class_conditional=True, review_threshold=0.6, bootstrap=50)
    fitted = Uncertainty(list("abcd"), settings, default_estimator="pacc").fit(proba, y, np.arange(300) // 3)
    again = Uncertainty.from_dict(json.loads(json.dumps(fitted.to_dict())))
    new = synthetic(40, n_classes=4, seed=9)[0]
    first, second = fitted.assess(new), again.assess(new)
    for key in ("proba", "sets", "review", "doubt"):
        assert np.allclose(first[key], second[key])
    assert fitted.shares(new) == again.shares(new)
    assert [r["estimator"] for r in fitted.shares(new) if r["default"] == "yes"] == ["pacc"] * 4
    expected = (first["sets"].sum(axis=1) != 1) | (first["proba"].max(axis=1) < 0.6)
    assert np.array_equal(first["review"], expected) and 0 < expected.sum() < 40


def test_coverage_rows_count_hits_per_class():
    sets = np.array([[1, 0], [1, 1], [0, 1], [1, 0]], bool)
    rows = coverage_rows(sets, np.array([0, 1, 0, 1]), ["a", "b"])
    assert [(r["class"], r["coverage"], r["mean_set_size"]) for r in rows] == [("all", 0.5, 1.25), ("a", 0.5, 1.0),
                                                                              ("b", 0.5, 1.5)]


def test_widening_is_the_conformal_quantile_of_the_stretch_each_case_needs():
    lower, upper = np.full(9, 0.4), np.full(9, 0.6)  # centre 0.5, half-width 0.1
    truth = 0.5 + np.array([0.0, 0.05, -0.08, 0.1, -0.12, 0.15, 0.2, -0.25, 0.3])  # needed: 0, .5, .8, 1, 1.2, ...
    # level 0.7: ceil(10 x 0.7) = 7th smallest need = 2.0; an interval already wide enough is never narrowed
    assert widening_factor(lower, upper, truth, 0.7) == pytest.approx(2.0)
    assert widening_factor(lower, upper, truth, 0.3) == 1.0
    wide_lower, wide_upper = widen(lower, upper, 2.0)
    assert np.allclose(wide_lower, 0.3) and np.allclose(wide_upper, 0.7)
    assert np.mean((wide_lower <= truth) & (truth <= wide_upper)) == pytest.approx(7 / 9)
