"""Pooling the per-pattern evidence of one phase (kikuchipy_cnn.phases)."""

import numpy as np
import pytest

from kikuchipy_cnn.phases import POOL_CLIP, pool_probabilities


def _random_probs(rng, n, k):
    p = rng.dirichlet(np.ones(k) * 0.5, size=n)
    return p


def test_pooled_is_the_normalised_product_of_clipped_probabilities():
    rng = np.random.default_rng(0)
    p = _random_probs(rng, 12, 23)
    p[3, 5] = 0.0  # one pattern rules class 5 out: clipped, not a veto
    g = rng.integers(0, 3, 12)
    labels, pooled, counts = pool_probabilities(p, g)
    assert labels.tolist() == sorted(set(g.tolist())) and counts.sum() == 12
    for lab, row in zip(labels, pooled):
        prod = np.prod(np.clip(p[g == lab], POOL_CLIP, 1), axis=0)
        np.testing.assert_allclose(row, prod / prod.sum(), rtol=1e-9)
    np.testing.assert_allclose(pooled.sum(axis=1), 1)


def test_tempering_keeps_the_argmax_and_lowers_confidence():
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = _random_probs(rng, 20, 23)
        g = np.zeros(20, int)
        _, plain, _ = pool_probabilities(p, g)
        _, half, _ = pool_probabilities(p, g, tempering=0.5)
        _, geo, _ = pool_probabilities(p, g, tempering=1.0)
        assert plain.argmax() == half.argmax() == geo.argmax()
        assert plain.max() >= half.max() >= geo.max()
    # one pattern: tempering does nothing
    _, one, _ = pool_probabilities(p[:1], np.zeros(1, int), tempering=0.7)
    q = np.clip(p[0], POOL_CLIP, 1)
    np.testing.assert_allclose(one[0], q / q.sum())


def test_unusable_and_unclassified_patterns_are_left_out():
    p = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8], [0.5, 0.5]])
    labels, pooled, counts = pool_probabilities(p, np.array([0, 0, -1, 1]))
    assert labels.tolist() == [0, 1] and counts.tolist() == [1, 1]
    np.testing.assert_allclose(pooled[0], [0.9, 0.1])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="groups"):
        pool_probabilities(np.ones((3, 2)) / 2, np.zeros(2, int))
    with pytest.raises(ValueError, match="clip"):
        pool_probabilities(np.ones((3, 2)) / 2, np.zeros(3, int), clip=0)
    for bad in (np.nan, -0.5):
        with pytest.raises(ValueError, match="tempering"):
            pool_probabilities(np.ones((3, 2)) / 2, np.zeros(3, int), tempering=bad)
