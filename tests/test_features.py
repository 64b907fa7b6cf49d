"""Band features: fixed length, named, orientation-invariant, and carrying the
lattice the bands come from."""

from __future__ import annotations

import numpy as np
import pytest

from kikuchipy_cnn.bands import BandSet
from kikuchipy_cnn.features import FEATURE_VERSION, band_features, feature_names, pattern_features
from test_lattice import LAMBDA, band_set


def _bandset(n, w, d):
    k = len(n)
    return BandSet(n[None], d[None], w[None], np.full((1, k), np.nan), np.ones((1, k), bool))


def test_names_match_vector_and_version():
    rng = np.random.default_rng(0)
    n, w, d = band_set("cF", rng, n_bands=14)
    f = band_features(_bandset(n, w, d), LAMBDA, np.radians(0.5))
    assert f.shape == (1, len(feature_names())) and f.dtype == np.float32
    assert len(set(feature_names())) == len(feature_names())
    assert FEATURE_VERSION.startswith("bands-")


def test_features_do_not_depend_on_orientation():
    rng = np.random.default_rng(1)
    n, w, d = band_set("hP", rng, n_bands=14)
    f1 = pattern_features(n, w, d, LAMBDA, np.radians(0.5))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    f2 = pattern_features(n @ q.T, w, d, LAMBDA, np.radians(0.5))
    np.testing.assert_allclose(f1, f2, atol=1e-4)


def test_ladder_carries_the_lattice():
    names = feature_names()
    for name in ("cF", "hP", "tI"):
        rng = np.random.default_rng(2)
        n, w, d = band_set(name, rng, n_bands=18)
        f = pattern_features(n, w, d, LAMBDA, np.radians(0.3))
        assert f[names.index(f"ladder_0.005_{name}")] == 1.0
        assert f[names.index("fit_found")] == 1.0


def test_no_bands_gives_the_no_lattice_vector():
    f = pattern_features(np.zeros((0, 3)), np.zeros(0), np.zeros(0), LAMBDA, np.radians(1))
    names = feature_names()
    assert f[names.index("fit_found")] == 0 and np.isfinite(f).all()
    assert f[: names.index("cand_tol_aP")].sum() == 0


def test_pooled_features_count_each_view_once_and_summarise_the_views():
    import pytest

    from kikuchipy_cnn.features import MAX_VIEWS, pooled_feature_names, pooled_features

    rng = np.random.default_rng(3)
    f = rng.random((4, len(feature_names()))).astype(np.float32)
    p = pooled_features(f)
    assert p.shape == (len(pooled_feature_names()),) and p.dtype == np.float32
    nf = f.shape[1]
    np.testing.assert_allclose(p[:nf], f.mean(0), rtol=1e-6)
    np.testing.assert_allclose(p[nf : 2 * nf], f.std(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p[2 * nf : 3 * nf], np.quantile(f, 0.9, axis=0), rtol=1e-5)
    assert p[-1] == np.float32(np.log(4) / np.log(MAX_VIEWS))
    # the order of patterns does not matter; a grain of many patterns counts once
    np.testing.assert_allclose(pooled_features(f[::-1]), p, rtol=1e-6)
    many = np.concatenate([np.repeat(f[:1], 5, 0), f[1:]])
    np.testing.assert_allclose(pooled_features(many, views=[7] * 5 + [1, 2, 3]), p, rtol=1e-6)
    assert not np.allclose(pooled_features(many), p)  # without views, the grain weighs 5 times
    # a view is the mean of its patterns
    np.testing.assert_allclose(pooled_features(f[:2], views=[0, 0])[:nf], f[:2].mean(0), rtol=1e-6)
    assert pooled_features(np.repeat(f[:1], 40, 0))[-1] == 1.0  # saturates
    with pytest.raises(ValueError, match="features must be"):
        pooled_features(f[0])
    with pytest.raises(ValueError, match="views must be"):
        pooled_features(f, views=[0, 1])


def test_band_features_hand_out_the_direction_lattice_of_the_same_pass():
    from kikuchipy_cnn.lattice import cell_fingerprint, reconstruct_lattice

    rng = np.random.default_rng(4)
    n, w, d = band_set("cF", rng, n_bands=18)
    bs = _bandset(n, w, d)
    cells = np.zeros((1, 3, 3))
    f = band_features(bs, LAMBDA, np.radians(0.3), cells=cells)
    np.testing.assert_array_equal(f, band_features(bs, LAMBDA, np.radians(0.3)))  # features unchanged
    fit = reconstruct_lattice(n, w, d, LAMBDA, use_widths=False)
    np.testing.assert_allclose(cells[0], fit.direct)
    fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    np.testing.assert_allclose(cell_fingerprint(cells[0]), cell_fingerprint(fcc), rtol=1e-3)
    none = np.zeros((1, 3, 3))
    band_features(_bandset(n[:2], w[:2], d[:2]), LAMBDA, np.radians(0.3), cells=none)
    assert np.isnan(none).all()  # too few bands: no lattice
    with pytest.raises(ValueError, match="cells"):
        band_features(bs, LAMBDA, np.radians(0.3), cells=np.zeros((2, 3, 3)))
