"""SC09 metrics on inputs with known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqmodels.tasks.sc09_metrics import (
    am_score,
    class_prior,
    feature_statistics,
    fid,
    frechet_distance,
    inception_score,
    modified_inception_score,
    sc09_scores,
)


def test_fid_of_training_statistics_against_themselves_is_zero():
    feats = np.random.default_rng(0).standard_normal((500, 16)) @ np.diag(np.linspace(0.1, 3, 16))
    mu, cov = feature_statistics(feats)
    assert fid(feats, mu, cov) == pytest.approx(0.0, abs=1e-6)
    assert fid(torch.from_numpy(feats), mu, cov) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_closed_form():
    # Diagonal Gaussians: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # Rank-deficient covariances (sqrtm round-off) still give a finite, real value.
    low = np.zeros((3, 3))
    low[0, 0] = 1.0
    assert frechet_distance(mu1, low, mu1, low) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(mu1, np.eye(3), np.zeros(2), np.eye(2))


def test_is_of_balanced_one_hot_predictions_is_the_class_count():
    probs = np.eye(10)[np.repeat(np.arange(10), 7)]
    assert inception_score(probs) == pytest.approx(10.0, rel=1e-9)
    assert inception_score(np.full((5, 10), 0.1)) == pytest.approx(1.0)  # no confidence: 1


def test_mis_hand_computed():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    kl12 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl21 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    # Mean over the four ordered pairs, the two with x = x' contributing 0.
    assert modified_inception_score(p) == pytest.approx(math.exp((kl12 + kl21) / 4), rel=1e-9)
    assert modified_inception_score(np.full((3, 4), 0.25)) == pytest.approx(1.0)


def test_am_hand_computed():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    prior = np.array([0.5, 0.5])
    marginal = np.array([0.7, 0.3])  # the mean of the rows of p
    kl = float(np.sum(prior * np.log(prior / marginal)))  # 0.5 log(0.5 / 0.7) + 0.5 log(0.5 / 0.3)
    ent = (math.log(2) + -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))) / 2
    assert am_score(p, prior) == pytest.approx(kl + ent, rel=1e-9)
    # Confident predictions matching the prior score 0, the best possible.
    assert am_score(np.eye(10)[np.arange(10)], np.full(10, 0.1)) == pytest.approx(0.0, abs=1e-9)


def test_class_prior_and_input_checks():
    assert class_prior(np.array([0, 0, 1, 3]), num_classes=4).tolist() == [0.5, 0.25, 0.0, 0.25]
    assert np.allclose(class_prior(np.array([[0.2, 0.8], [0.6, 0.4]])), [0.4, 0.6])
    with pytest.raises(ValueError, match="probability"):
        inception_score(np.array([[2.0, -1.0]]))
    with pytest.raises(ValueError, match="train_prior"):
        am_score(np.eye(3), np.array([0.5, 0.5]))


def test_sc09_scores_keys():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((40, 5))
    logits = rng.standard_normal((40, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mu, cov = feature_statistics(feats)
    scores = sc09_scores(feats, probs, mu, cov, class_prior(probs))
    assert set(scores) == {"fid", "is", "mis", "am"}
    assert scores["fid"] == pytest.approx(0.0, abs=1e-6) and 1.0 <= scores["is"] <= 10.0
    assert scores["mis"] >= 1.0 and scores["am"] > 0
