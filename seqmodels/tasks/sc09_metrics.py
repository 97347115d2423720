"""Sample-quality metrics for unconditional SC09 generation (DiffWave, appendix; SaShiMi).

All four are computed from a digit classifier trained on SC09: its penultimate-layer features
``f(x)`` and its class probabilities ``p(y|x)``, for ``n`` generated clips and ``K = 10`` classes.

* FID: ``|mu_g - mu_t|^2 + tr(S_g + S_t - 2 (S_g S_t)^(1/2))``, the Frechet distance between
  Gaussians fitted to the features of generated clips (g) and of the training set (t). Lower
  is better.
* IS: ``exp(E_x KL(p(y|x) || p(y)))``, ``p(y) = E_x p(y|x)`` the marginal over the generated
  clips. In ``[1, K]``; higher is better (confident and diverse).
* mIS: ``exp(E_x E_x' KL(p(y|x) || p(y|x')))``, ``x, x'`` independent generated clips (pairs
  with ``x = x'`` included, since independent draws can coincide). Higher is better; it also
  rewards diversity within a class.
* AM: ``KL(p_train(y) || p(y)) + E_x H(p(y|x))``, ``p_train(y)`` the class distribution of the
  training data as the classifier sees it. Lower is better.

Estimators: this module evaluates the definitions exactly on all clips given. SaShiMi's
script (state-spaces/s4 ``models/sashimi/sc09_classifier/test_speech_commands.py``) estimates
IS with the marginal of a random half of the clips and mIS from 10,000 random pairs, and uses
as ``p_train`` the mean classifier probability over the training clips
(:func:`class_prior`); with a few thousand samples the differences are small but not zero.

Pure numpy/scipy on CPU (float64); inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from torch import Tensor

ArrayLike = np.ndarray | Tensor
_EPS = 1e-12  # keeps log(0) finite for probabilities a softmax rounded to zero


def _as_f64(x: ArrayLike, name: str, ndim: int) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_probs(probs: ArrayLike, name: str = "probs") -> np.ndarray:
    p = _as_f64(probs, name, 2)
    if p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"{name} must be [n >= 1, K >= 2] class probabilities, got shape {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{name} rows must be probability vectors (non-negative, summing to 1); pass softmax outputs")
    return p


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and covariance ``[F, F]`` (unbiased, as ``np.cov``) of features ``[n, F]``."""
    f = _as_f64(features, "features", 2)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (means ``[F]``,
    covariances ``[F, F]``).

    ``sqrtm`` of a product of nearly singular covariances can fail or pick up tiny imaginary
    parts from round-off: on failure, ``1e-6`` is added to both diagonals (as the reference FID
    code does); an imaginary part is dropped if negligible, else a ValueError is raised.
    """
    m1, m2 = _as_f64(mu1, "mu1", 1), _as_f64(mu2, "mu2", 1)
    s1, s2 = _as_f64(sigma1, "sigma1", 2), _as_f64(sigma2, "sigma2", 2)
    f = m1.shape[0]
    if m2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
        raise ValueError(f"shape mismatch: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}")
    with warnings.catch_warnings():
        # Singular products are expected (rank-deficient covariances) and handled below.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(f) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max(initial=0.0)
        scale = max(1.0, np.abs(np.diagonal(covmean).real).max(initial=0.0))
        if imag > 1e-3 * scale:
            raise ValueError(f"matrix square root has a large imaginary component ({imag:.3g}); covariances are not PSD")
        covmean = covmean.real
    diff = m1 - m2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)
    # Round-off can take an exact zero slightly negative.
    return float(max(value, 0.0))


def fid(features: ArrayLike, train_mean: ArrayLike, train_cov: ArrayLike) -> float:
    """FID of generated clips' classifier features ``[n, F]`` against the stored training-set
    feature mean ``[F]`` and covariance ``[F, F]``."""
    mu, sigma = feature_statistics(features)
    return frechet_distance(mu, sigma, train_mean, train_cov)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    # KL(p_i || q_i) per row; 0 log 0 = 0 by convention.
    p_safe = np.clip(p, _EPS, None)
    return np.where(p > 0, p * (np.log(p_safe) - np.log(np.clip(q, _EPS, None))), 0.0).sum(axis=-1)


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    return -np.where(p > 0, p * np.log(np.clip(p, _EPS, None)), 0.0).sum(axis=-1)


def inception_score(probs: ArrayLike) -> float:
    """IS ``= exp(E_x KL(p(y|x) || p(y)))`` from class probabilities ``[n, K]`` of generated clips."""
    p = _check_probs(probs)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(_kl_rows(p, marginal).mean()))


def modified_inception_score(probs: ArrayLike) -> float:
    """mIS ``= exp(E_x E_x' KL(p(y|x) || p(y|x')))`` over all ordered pairs of ``[n, K]`` rows.

    Uses ``KL(p_i || p_j) = -H(p_i) - sum_k p_ik log p_jk``, an ``[n, n]`` matrix product.
    """
    p = _check_probs(probs)
    neg_entropy = -_entropy_rows(p)  # [n]
    cross = p @ np.log(np.clip(p, _EPS, None)).T  # [n, n]: sum_k p_ik log p_jk
    return float(np.exp((neg_entropy[:, None] - cross).mean()))


def am_score(probs: ArrayLike, train_prior: ArrayLike) -> float:
    """AM ``= KL(p_train(y) || p(y)) + E_x H(p(y|x))`` from generated-clip probabilities ``[n, K]``
    and the training class distribution ``[K]`` (label frequencies, or :func:`class_prior` of the
    classifier's training-set probabilities as SaShiMi does)."""
    p = _check_probs(probs)
    prior = _as_f64(train_prior, "train_prior", 1)
    if prior.shape != (p.shape[1],) or (prior < 0).any() or not np.isclose(prior.sum(), 1.0, atol=1e-4):
        raise ValueError(f"train_prior must be a probability vector of length {p.shape[1]}, got {prior}")
    kl = _kl_rows(prior[None], p.mean(axis=0, keepdims=True))[0]
    return float(kl + _entropy_rows(p).mean())


def class_prior(probs_or_labels: ArrayLike, num_classes: int = 10) -> np.ndarray:
    """Training class distribution ``[K]``: mean of probabilities ``[n, K]``, or label
    frequencies of integer labels ``[n]``."""
    arr = probs_or_labels.detach().cpu().numpy() if isinstance(probs_or_labels, Tensor) else np.asarray(probs_or_labels)
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0 or arr.max(initial=0) >= num_classes:
            raise ValueError(f"labels must be integers in [0, {num_classes}), got dtype {arr.dtype}")
        return np.bincount(arr, minlength=num_classes).astype(np.float64) / max(arr.size, 1)
    return _check_probs(arr, "probs_or_labels").mean(axis=0)


def sc09_scores(
    features: ArrayLike,
    probs: ArrayLike,
    train_mean: ArrayLike,
    train_cov: ArrayLike,
    train_prior: ArrayLike,
) -> dict[str, float]:
    """All four scores of one set of generated clips.

    Args:
        features: classifier features of the generated clips, ``[n, F]``.
        probs: classifier class probabilities of the generated clips, ``[n, K]``.
        train_mean, train_cov: training-set feature statistics, ``[F]`` and ``[F, F]``.
        train_prior: training class distribution, ``[K]``.

    Returns:
        ``{"fid": float, "is": float, "mis": float, "am": float}``.
    """
    return {
        "fid": fid(features, train_mean, train_cov),
        "is": inception_score(probs),
        "mis": modified_inception_score(probs),
        "am": am_score(probs, train_prior),
    }
