"""classify_structure with a band model: the signal's detector and beam energy
reach the features; eager == lazy; masks; geometry warnings and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kikuchipy as kp

from kikuchipy_cnn.bands import detect_bands, electron_wavelength
from kikuchipy_cnn.card import ModelCard
from kikuchipy_cnn.features import band_features


@pytest.fixture(scope="module")
def ni():
    return kp.data.nickel_ebsd_small()


def test_band_model_card(tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    assert card.input_kind == "bands" and card.band_settings["n_bands"] == 16
    assert "band features" in card.summary()


def test_probabilities_are_those_of_the_features_with_the_signals_geometry(ni, tiny_band_card_path):
    import onnxruntime as ort

    card = ModelCard.from_file(tiny_band_card_path)
    xmap = ni.classify_structure(model=card, verbose=0, min_score=0)
    assert xmap.size == 9
    # the same features by hand: static background divided out, per-pattern PCs, 20 kV
    x = ni.data.reshape(9, 60, 60).astype(np.float32)
    bg = ni.static_background.astype(np.float32)
    x = x / np.maximum(bg / bg.mean(), 0.01)
    pcs = ni.detector.pc.reshape(-1, 3)
    f = band_features(detect_bands(x, pcs, n_bands=16), electron_wavelength(20), 1 / (pcs[:, 2] * 60))
    sess = ort.InferenceSession(str(card.weights_path), providers=["CPUExecutionProvider"])
    p = sess.run(["probabilities"], {"features": f})[0]
    np.testing.assert_allclose(xmap.scores, p.max(1), atol=1e-5)
    assert [xmap.phases[int(i)].name for i in xmap.phase_id] == [card.classes[j] for j in p.argmax(1)]


def test_lazy_equals_eager_and_masks(ni, tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    eager = ni.classify_structure(model=card, verbose=0, min_score=0)
    lazy = ni.as_lazy().classify_structure(model=card, verbose=0, min_score=0)
    np.testing.assert_allclose(eager.scores, lazy.scores, atol=1e-6)
    mask = np.zeros((3, 3), bool)
    mask[1, 2] = True
    masked = ni.classify_structure(model=card, verbose=0, min_score=0, navigation_mask=mask)
    keep = ~mask.ravel()
    assert masked.scores.size == 8  # the masked point is not in the data
    np.testing.assert_allclose(masked.scores, eager.scores[keep], atol=1e-6)


def test_default_geometry_and_missing_energy_warn(tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    s = kp.signals.EBSD(kp.data.nickel_ebsd_small().data.astype(np.float32))  # no detector, no energy
    with pytest.warns(UserWarning) as rec:
        s.classify_structure(model=card, verbose=0, min_score=0, static_background=None)
    text = " ".join(str(r.message) for r in rec)
    assert "default pattern centre" in text and "beam energy" in text


def test_saliency_of_a_band_model_is_refused_before_the_work(ni, tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    with pytest.raises(ValueError, match="gives no saliency maps"):
        ni.classify_structure(model=card, verbose=0, return_saliency=True)
    with pytest.raises(ValueError, match="does not support saliency"):
        ni.get_saliency(model=card, show_progressbar=False)
