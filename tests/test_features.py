"""Band features: fixed length, named, orientation-invariant, and carrying the
lattice the bands come from."""

from __future__ import annotations

import numpy as np

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
