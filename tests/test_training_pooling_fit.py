"""Fitting a model's pooling settings (kikuchipy_cnn.training.pooling_fit)."""

import numpy as np
import pytest

from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training import pooling_fit as pf


def _data(probs, structure, grain, label):
    return {"probs": probs, "structure": structure, "grain": grain, "label": label,
            "classes": np.asarray(JOINT_CLASSES)}


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_tempering_is_zero_for_independent_views_and_one_for_repeated_ones():
    rng = np.random.default_rng(0)
    n_s, n_g, k = 60, 16, len(JOINT_CLASSES)
    structure, grain = np.repeat(np.arange(n_s), n_g), np.tile(np.arange(n_g), n_s)
    # independent views: each grain's probabilities are the exact posterior of
    # its own observation, so the product over grains is the exact posterior
    t = rng.integers(0, k, n_s)
    x = rng.normal(size=(n_s * n_g, k)) + 0.8 * np.eye(k)[t[structure]]
    beta, nll = pf.fit_tempering(_data(_softmax(0.8 * x), structure, grain, t[structure]), rng)
    assert beta <= 0.1 and nll.argmin() == np.flatnonzero(pf.TEMPERING_GRID == beta)[0]
    # one calibrated verdict repeated in every grain: pooling must add nothing
    p = rng.dirichlet(np.full(k, 0.3), n_s)
    t2 = np.array([rng.choice(k, p=q) for q in p])
    beta, _ = pf.fit_tempering(_data(p[structure], structure, grain, t2[structure]), rng)
    assert beta >= 0.9
    # pooling patterns instead of grains: two identical patterns per grain push beta up
    two = {k_: np.repeat(v, 2, axis=0) if k_ != "classes" else v
           for k_, v in _data(_softmax(0.8 * x), structure, grain, t[structure]).items()}
    assert pf.fit_tempering(two, rng, views=False)[0] > pf.fit_tempering(two, rng)[0]


def test_split_bar_is_a_least_squares_fit_to_the_quantiles():
    assert pf.fit_split_r2({3: 0.4 + 1.5 / 3, 8: 0.4 + 1.5 / 8, 16: 0.4 + 1.5 / 16}) == pytest.approx((0.4, 1.5))
    rng = np.random.default_rng(1)
    n_s, n_g = 30, 16
    structure, grain = np.repeat(np.arange(n_s), n_g), np.tile(np.arange(n_g), n_s)
    data = _data(rng.dirichlet(np.ones(23), n_s * n_g), structure, grain, np.zeros(n_s * n_g, int))
    data["spectra"] = rng.normal(size=(n_s * n_g, 16))
    q = pf.split_r2_quantiles(data, rng, draws=10)
    assert sorted(q) == list(pf.GROUP_SIZES)
    assert all(0 < v < 1 for v in q.values()) and q[3] > q[8] > q[16]
    # two tight clusters in every structure: every group splits with R² near 1
    data["spectra"] = np.where((grain % 2 == 0)[:, None], 5.0, -5.0) + 0.01 * data["spectra"]
    data["probs"] = np.full_like(data["probs"], 1 / 23)
    assert min(pf.split_r2_quantiles(data, rng, draws=5).values()) > 0.99
    # the bar of the signatures asked for: the d-spacings here are noise, so no group splits cleanly
    data["d_spacings"] = rng.normal(size=(n_s * n_g, 16))
    assert max(pf.split_r2_quantiles(data, rng, draws=5, signatures=("d_spacings",)).values()) < 0.9


def test_render_views_classifies_small_scans_through_classify_structure(tiny_model):
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet

    masters = MasterSet(DEFAULT_CACHE, "val", limit=2)
    d = pf.render_views(resolve_model(tiny_model), masters, 3, 2, np.random.default_rng(0), log=None)
    n = len(d["probs"])
    assert n <= 12 and d["spectra"].shape == (n, 16) and np.isfinite(d["spectra"]).all()
    np.testing.assert_allclose(d["probs"].sum(axis=1), 1, rtol=1e-5)
    assert set(d["structure"].tolist()) <= {0, 1} and set(d["grain"].tolist()) <= {0, 1, 2}
    assert (d["label"] == np.asarray(masters.labels)[d["structure"]]).all()
    assert d["d_spacings"].shape == (n, 16) and np.isnan(d["d_spacings"]).all()  # a pixel model: no bands


def test_render_views_records_the_d_spacings_classify_structure_reads(tiny_band_card_path):
    from kikuchipy_cnn.card import ModelCard
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet

    masters = MasterSet(DEFAULT_CACHE, "val", limit=2)
    card = ModelCard.from_file(tiny_band_card_path)
    d = pf.render_views(card, masters, 2, 2, np.random.default_rng(0), log=None)
    measured = np.isfinite(d["d_spacings"]).all(axis=1)
    assert measured.any()  # the rendered detectors (60-96 px) show bands wide enough to measure
    # rows of fractions where widths were measured, NaN rows where none (small detectors)
    np.testing.assert_allclose(d["d_spacings"][measured].sum(axis=1), 1, rtol=1e-6)
    assert (measured | np.isnan(d["d_spacings"]).all(axis=1)).all()


def test_render_refuses_an_existing_output(tmp_path):
    out = tmp_path / "x.npz"
    out.write_bytes(b"keep")
    with pytest.raises(SystemExit, match="exists"):
        pf.main(["render", "--model", "kcnn-resnet-s", "--out", str(out)])
    assert out.read_bytes() == b"keep"
