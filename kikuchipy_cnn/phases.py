"""Phases of a scan: pooling the evidence of many patterns of one phase.

A single pattern sees a cap of the Kikuchi sphere; the patterns of one phase
seen in many grains see other zones and other bands. This module holds the
pieces that combine per-pattern answers into one answer per phase (issue 14);
phase discovery comes later.

:func:`pool_probabilities` is the baseline: the per-pattern class
probabilities of the patterns of one group, combined as independent
evidence (sum of log-probabilities, each clipped), which the pooling pilot
found better than averaging (averaging favours crystal systems with many
classes). It pools verdicts only, so it keeps every error the model makes
systematically; ``benchmarks/pooling_curve.py`` measures how far it goes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["POOL_CLIP", "pool_probabilities"]

#: Smallest per-pattern probability used in the pooled log-likelihood: one
#: pattern that rules a class out cannot veto it against all the others
POOL_CLIP = 1e-6


def pool_probabilities(probs: np.ndarray, groups: np.ndarray, clip: float = POOL_CLIP,
                       tempering: float = 0.0):
    """Pool per-pattern class probabilities within groups of patterns.

    Parameters
    ----------
    probs
        ``(n, n_classes)`` probabilities per pattern; rows that are not
        finite (unusable, masked or rejected patterns) are left out.
    groups
        ``(n,)`` group label per pattern (e.g. a phase or structure id);
        negative labels are left out (not classified).
    clip
        Lower clip of each probability before its logarithm.
    tempering
        Exponent β: a group's summed log-probabilities are divided by
        ``n ** β`` for its ``n`` patterns. β = 0 treats the patterns as
        independent evidence (confidence grows with every pattern); β = 1
        is the normalised geometric mean (no more confident than one
        pattern). Errors of one model on patterns of one phase are
        correlated, so the calibrated value lies in between
        (``benchmarks/pooling_curve.py`` fits it on validation structures).
        It never changes the pooled argmax.

    Returns
    -------
    labels
        ``(g,)`` the sorted group labels that had at least one usable pattern.
    pooled
        ``(g, n_classes)`` pooled probabilities, proportional to the product
        of the clipped per-pattern probabilities (normalised per group).
    counts
        ``(g,)`` usable patterns per group.

    Examples
    --------
    >>> import numpy as np
    >>> from kikuchipy_cnn.phases import pool_probabilities
    >>> p = np.array([[0.6, 0.4], [0.6, 0.4], [0.2, 0.8]])
    >>> labels, pooled, counts = pool_probabilities(p, np.array([0, 0, 1]))
    >>> labels.tolist(), counts.tolist()
    ([0, 1], [2, 1])
    >>> np.round(pooled, 3).tolist()
    [[0.692, 0.308], [0.2, 0.8]]
    >>> np.round(pool_probabilities(p, np.array([0, 0, 1]), tempering=1)[1], 3).tolist()
    [[0.6, 0.4], [0.2, 0.8]]
    """
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.asarray(groups)
    if probs.ndim != 2 or groups.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (n, n_classes) and groups (n,), not {probs.shape} and {groups.shape}"
        )
    if not 0 < clip < 1:
        raise ValueError(f"clip must lie in (0, 1), not {clip}")
    if not (np.isfinite(tempering) and tempering >= 0):
        raise ValueError(f"tempering must be a finite number >= 0, not {tempering}")
    ok = np.isfinite(probs).all(axis=1) & (groups >= 0)
    labels, inverse = np.unique(groups[ok], return_inverse=True)
    logp = np.log(np.clip(probs[ok], clip, 1.0))
    total = np.zeros((labels.size, probs.shape[1]))
    np.add.at(total, inverse, logp)
    counts = np.bincount(inverse, minlength=labels.size)
    if tempering:
        total /= np.maximum(counts, 1)[:, None] ** float(tempering)
    total -= total.max(axis=1, keepdims=True)
    pooled = np.exp(total)
    pooled /= pooled.sum(axis=1, keepdims=True)
    return labels, pooled, counts
