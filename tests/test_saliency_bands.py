"""Saliency of band models: occlusion over the detected bands (method 'bands')."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import kikuchipy as kp
import matplotlib
import numpy as np
import pytest
import yaml

from kikuchipy_cnn.bands import BandSet, band_trace_distance, detect_bands, pixel_angle
from kikuchipy_cnn.card import ModelCard, sha256_of
from kikuchipy_cnn.classify import _band_input
from kikuchipy_cnn.features import band_features, feature_names
from kikuchipy_cnn.preprocessing import static_background_divisor
from kikuchipy_cnn.saliency import UNKNOWN_BAND_WIDTH, _band_occlusion, band_heatmap
from kikuchipy_cnn.signals import EBSDSaliency, LazyEBSDSaliency

matplotlib.use("Agg")


def _band_card(directory: Path, n_bands: int, weights: np.ndarray | None = None,
               saliency=("bands",), seed: int = 0) -> ModelCard:
    """The tiny band model of conftest, listing ``saliency``, reading
    ``n_bands`` bands and, if given, with these ``(features, classes)``
    weights."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from conftest import make_band_model_dir

    path = make_band_model_dir(directory, name=directory.name, seed=seed)
    if weights is not None:
        m = onnx.load(str(directory / "model.onnx"))
        for init in m.graph.initializer:
            if init.name == "w":
                init.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), "w"))
        onnx.save(m, str(directory / "model.onnx"))
        sess = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
        x = np.load(directory / "test_input.npy")
        np.save(directory / "test_output.npy", sess.run(["probabilities"], {"features": x})[0])
    card = yaml.safe_load(path.read_text())
    card["saliency"] = list(saliency)
    card["preprocessing"]["n_bands"] = n_bands
    card["weights"]["sha256"] = sha256_of(directory / "model.onnx")
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return ModelCard.from_file(path)


@pytest.fixture(scope="module")
def band_card(tmp_path_factory):
    return _band_card(tmp_path_factory.mktemp("models") / "tiny-bands-saliency", n_bands=8)


@pytest.fixture
def ni():
    return kp.data.nickel_ebsd_small()


def _session(card):
    import onnxruntime as ort

    return ort.InferenceSession(str(card.weights_path), providers=["CPUExecutionProvider"])


def _bands_of(s, n_bands):
    """Bands of a one-pattern signal, as classify_structure's band input finds them."""
    x = np.asarray(s.data, np.float32)[None] / static_background_divisor(s.static_background, (60, 60))
    pc = np.asarray(s.detector.pc, np.float64).reshape(1, 3)
    return detect_bands(x, pc, n_bands=n_bands), pc[0]


def test_attributions_are_the_probability_drops(ni, band_card):
    s = ni.inav[0, 0]
    pc = np.asarray(s.detector.pc, np.float64).reshape(1, 3)
    lam = 0.0858851184477148  # 20 kV (the signal's beam energy)
    bands, _ = _bands_of(s, 8)
    pa = pixel_angle((60, 60), pc)[0]
    sess = _session(band_card)

    def prob(features):
        return sess.run(["probabilities"], {"features": features.astype(np.float32)})[0][0]

    # the full band set gives classify_structure's input and probabilities
    x_full, ok, *_ = _band_input(np.asarray(s.data)[None], pc, lam, band_card, s.static_background)
    assert ok.all()
    np.testing.assert_allclose(band_features(bands, lam, pa), x_full)
    p_full = prob(x_full)
    xmap = s.classify_structure(model=band_card, pool="none", verbose=0, show_progressbar=False)
    assert np.isclose(xmap.prop["scores"][0], p_full.max(), atol=1e-6)
    t = int(np.argmax(p_full))
    # each band deleted from the set (not just flagged): the drop of p(t)
    valid = np.flatnonzero(bands.valid[0])
    assert len(valid) >= 6
    direct = np.full(8, np.nan)
    for j in valid:
        keep = np.setdiff1d(valid, [j])
        one = BandSet(bands.normals[:, keep], bands.strength[:, keep], bands.width[:, keep],
                      bands.contrast[:, keep], bands.valid[:, keep])
        direct[j] = p_full[t] - prob(band_features(one, lam, pa))[t]
    from kikuchipy_cnn.engine import get_session

    probs, target, drops = _band_occlusion(bands, lam, pa, get_session(band_card), 64)
    assert target == t
    assert probs.shape == (len(valid) + 1, 23)
    np.testing.assert_allclose(probs[0], p_full, atol=1e-6)
    np.testing.assert_allclose(drops, direct, atol=1e-6)
    assert np.nanmax(np.abs(drops)) > 1e-3  # the bands matter to this model
    # get_saliency draws exactly these drops
    sal = s.get_saliency(model=band_card, show_progressbar=False)
    assert sal.metadata.Saliency.method == "bands"
    np.testing.assert_allclose(sal.data, band_heatmap((60, 60), pc[0], bands, direct), atol=1e-6)


def test_a_band_that_does_not_change_the_features_gets_zero(ni, tmp_path):
    # a model that reads only the geometry of the 12 strongest bands: removing
    # any weaker band leaves every feature it reads unchanged
    names = feature_names()
    geom = np.array([re.fullmatch(r"geom_(angle|zone|width)_[\d_]+", n) is not None for n in names])
    assert geom.sum() == 33
    w = np.random.default_rng(1).normal(0, 3.0, (len(names), 23))
    w[~geom] = 0
    card = _band_card(tmp_path / "geom-only", n_bands=16, weights=w)
    s = ni.inav[1, 1]
    bands, pc = _bands_of(s, 16)
    lam, pa = 0.0858851184477148, pixel_angle((60, 60), pc)[0]
    from kikuchipy_cnn.engine import get_session

    probs, _, drops = _band_occlusion(bands, lam, pa, get_session(card), 64)
    valid = np.flatnonzero(bands.valid[0])
    assert len(valid) > 12
    rank = np.argsort(np.argsort(-bands.strength[0, valid]))
    weak, strong = valid[rank >= 12], valid[rank < 12]
    x = band_features(BandSet(*(np.repeat(a, len(valid) + 1, 0) for a in bands[:4]),
                              np.repeat(bands.valid, len(valid) + 1, 0)), lam, pa)
    for j in weak:  # the features the model reads are unchanged ...
        v = bands.valid.copy()
        v[0, j] = False
        xj = band_features(BandSet(*bands[:4], v), lam, pa)
        np.testing.assert_array_equal(xj[0, geom], x[0, geom])
    np.testing.assert_allclose(drops[weak], 0, atol=1e-7)  # ... so is the probability
    assert np.abs(drops[strong]).max() > 1e-3
    # and a band with zero attribution is not drawn
    heat = band_heatmap((60, 60), pc, bands, drops)
    assert heat.max() == 1
    only_weak = np.full(16, np.nan)
    only_weak[weak] = drops[weak]
    assert not band_heatmap((60, 60), pc, bands, only_weak).any()


def test_band_heatmap_on_the_traces_summed_and_zero_elsewhere():
    shape, pc = (60, 80), (0.5, 0.4, 0.6)
    # two bands crossing near the pattern centre, one against the class, one not found
    normals = np.array([[[1, 0, 0], [0, 1, 0.05], [0.7, 0.7, 0], [0, 0, 1]]], float)
    bands = BandSet(normals, np.ones((1, 4)), np.array([[np.deg2rad(4), np.nan, np.deg2rad(3), 0.1]]),
                    np.ones((1, 4)), np.array([[True, True, True, False]]))
    drops = np.array([0.3, 0.1, -0.2, 0.5])
    heat = band_heatmap(shape, pc, bands, drops)
    assert heat.shape == shape and heat.dtype == np.float32
    d = band_trace_distance(shape, pc, normals[0, :2])
    on0 = d[0] <= np.deg2rad(2)
    on1 = d[1] <= UNKNOWN_BAND_WIDTH / 2  # width not measured: the fixed width
    np.testing.assert_allclose(heat[on0 & ~on1], 0.3 / 0.4, atol=1e-6)
    np.testing.assert_allclose(heat[on1 & ~on0], 0.1 / 0.4, atol=1e-6)
    np.testing.assert_allclose(heat[on0 & on1], 1.0, atol=1e-6)  # the crossing: the sum
    assert (on0 & on1).any() and (on0 & ~on1).any() and (on1 & ~on0).any()
    assert not heat[~on0 & ~on1].any()  # zero away from the bands, and the negative band not drawn
    # no band supports the class: all zeros
    assert not band_heatmap(shape, pc, bands, -np.abs(drops)).any()


def test_heatmap_of_ni_is_high_on_the_band_traces(ni, band_card):
    s = ni.inav[2, 0]
    sal = s.get_saliency(model=band_card, show_progressbar=False)
    bands, pc = _bands_of(s, 8)
    from kikuchipy_cnn.engine import get_session

    lam, pa = 0.0858851184477148, pixel_angle((60, 60), pc)[0]
    probs, _, drops = _band_occlusion(bands, lam, pa, get_session(band_card), 64)
    heat = sal.data
    assert heat.max() == pytest.approx(1)
    np.testing.assert_allclose(heat, band_heatmap((60, 60), pc, bands, drops), atol=1e-6)
    # a target class: the drops of that class
    t = (int(np.argmax(probs[0])) + 1) % 23
    _, t2, drops2 = _band_occlusion(bands, lam, pa, get_session(band_card), 64, target=t)
    assert t2 == t
    sal2 = s.get_saliency(model=band_card, target=band_card.classes[t], show_progressbar=False)
    assert sal2.metadata.Saliency.target == band_card.classes[t]
    np.testing.assert_allclose(sal2.data, band_heatmap((60, 60), pc, bands, drops2), atol=1e-6)
    d = band_trace_distance((60, 60), pc, bands.normals[0][bands.valid[0]])
    w = np.where(np.isfinite(bands.width[0]), bands.width[0], UNKNOWN_BAND_WIDTH)[bands.valid[0]]
    near_any = (d <= np.maximum(w, 2 * pixel_angle((60, 60), pc)[0])[:, None, None] / 2 + 1e-6).any(0)
    assert not heat[~near_any].any()  # zero away from every band
    top = int(np.nanargmax(drops))
    core = band_trace_distance((60, 60), pc, bands.normals[0, top]) < pixel_angle((60, 60), pc)[0] / 2
    assert core.sum() > 20
    assert heat[core].min() >= np.nanmax(drops) / np.nansum(np.clip(drops, 0, None)) - 1e-6
    assert heat[core].mean() > 2 * heat.mean()


def test_lazy_eager_mask_and_signal_unchanged(ni, band_card):
    s = ni.inav[:2, :1]  # 1 x 2
    before = s.data.copy()
    pc_before = np.array(s.detector.pc, copy=True)
    eager = s.get_saliency(model=band_card, show_progressbar=False)
    assert isinstance(eager, EBSDSaliency) and eager.data.shape == (1, 2, 60, 60)
    assert eager.data.max(axis=(2, 3)).tolist() == [[1.0, 1.0]]
    lazy = s.as_lazy().get_saliency(model=band_card, show_progressbar=False)
    assert isinstance(lazy, LazyEBSDSaliency)
    np.testing.assert_allclose(np.asarray(lazy.data.compute()), eager.data, atol=1e-6)
    mask = np.array([[True, False]])
    masked = s.as_lazy().get_saliency(model=band_card, navigation_mask=mask, show_progressbar=False)
    masked.compute()
    assert not masked.data[0, 0].any()
    np.testing.assert_allclose(masked.data[0, 1], eager.data[0, 1], atol=1e-6)
    np.testing.assert_array_equal(s.data, before)
    np.testing.assert_array_equal(s.detector.pc, pc_before)
    np.testing.assert_allclose(eager.metadata.Saliency.pc, np.asarray(s.detector.pc).reshape(1, 2, 3))
    assert eager.axes_manager.navigation_shape == s.axes_manager.navigation_shape


def test_pc_argument_as_in_classify_structure(ni, band_card):
    s = ni.inav[0, 0]
    pc = np.asarray(s.detector.pc, np.float64).ravel()
    same = s.get_saliency(model=band_card, pc=tuple(pc), show_progressbar=False)
    default = s.get_saliency(model=band_card, show_progressbar=False)
    np.testing.assert_array_equal(same.data, default.data)
    other = s.get_saliency(model=band_card, pc=tuple(pc + [0.04, -0.03, 0.05]), show_progressbar=False)
    np.testing.assert_allclose(other.metadata.Saliency.pc, pc + [0.04, -0.03, 0.05])
    assert not np.allclose(other.data, default.data)
    np.testing.assert_array_equal(s.detector.pc.ravel(), pc)  # the signal is not changed
    with pytest.raises(ValueError, match="PCz > 0"):
        s.get_saliency(model=band_card, pc=(0.5, 0.5, -1))
    with pytest.raises(ValueError, match="pc must be None, 'estimate', 'check'"):
        s.get_saliency(model=band_card, pc="guess")
    s2 = kp.signals.EBSD(np.asarray(s.data)[None])  # kikuchipy's default detector
    s2.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    with pytest.warns(UserWarning, match="default pattern centre"):
        s2.get_saliency(model=band_card, show_progressbar=False)


def test_bad_methods_are_refused_with_the_fix(ni, band_card, tiny_model, tmp_path):
    s = ni.inav[0, 0]
    with pytest.raises(ValueError, match=r"for band models.*method='cam' or 'occlusion'.*kcnn-bands-mlp"):
        s.get_saliency(model=tiny_model, method="bands")
    with pytest.raises(ValueError, match=r"for pixel models.*use method='bands'"):
        s.get_saliency(model=band_card, method="cam")
    with pytest.raises(ValueError, match=r"for pixel models.*use method='bands'"):
        s.get_saliency(model=band_card, method="occlusion")
    with pytest.raises(ValueError, match="Unknown saliency method 'grad'"):
        s.get_saliency(model=band_card, method="grad")
    with pytest.raises(ValueError, match="Unknown target"):
        s.get_saliency(model=band_card, target="xX 1")
    none = _band_card(tmp_path / "no-saliency", n_bands=8, saliency=())
    with pytest.raises(ValueError, match="does not support saliency: its card lists no saliency method"):
        s.get_saliency(model=none)
    with pytest.warns(UserWarning, match="pc is ignored"):
        s.get_saliency(model=tiny_model, pc=(0.5, 0.5, 0.5), show_progressbar=False)


def test_bundled_band_model_default_method_and_overlay(ni, tmp_path):
    import matplotlib.pyplot as plt

    card = ModelCard.from_file(Path(__file__).resolve().parent.parent / "models" / "kcnn-bands-mlp" / "card.yaml")
    card.validate()
    assert card.saliency_methods[0] == "bands"
    s = ni.inav[0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the detector's PC and beam energy are used, no warning
        sal = s.get_saliency(model="kcnn-bands-mlp", show_progressbar=False)
    assert sal.metadata.Saliency.method == "bands"
    assert sal.data.max() == pytest.approx(1) and 0.05 < (sal.data > 0).mean() < 0.9
    fig = sal.plot_overlay(s)
    xmap = s.classify_structure(model="kcnn-bands-mlp", pool="none", verbose=0, show_progressbar=False)
    title = fig.axes[0].get_title()
    assert title.startswith(f"{xmap.phases_in_data.names[0]} (predicted, score {xmap.prop['scores'][0]:.2f})")
    assert "bands saliency" in title
    fig.savefig(tmp_path / "overlay.png")
    plt.close("all")


def test_classify_returns_band_saliency_with_the_pc_it_used():
    # return_saliency=True draws the heatmaps with the PC the map was made with
    import kikuchipy as kp

    import kikuchipy_cnn

    s = kp.data.nickel_ebsd_small().inav[:2, :1]
    pc = np.array([0.43, 0.21, 0.49])
    xmap, sal = s.classify_structure(model="kcnn-bands-mlp", pc=tuple(pc), pool="none", verbose=0,
                                     min_score=0, return_saliency=True, show_progressbar=False)
    direct = kikuchipy_cnn.get_saliency(s, model="kcnn-bands-mlp", pc=tuple(pc), show_progressbar=False)
    np.testing.assert_allclose(sal.data, direct.data, atol=1e-6)
    default = kikuchipy_cnn.get_saliency(s, model="kcnn-bands-mlp", show_progressbar=False)
    assert not np.allclose(sal.data, default.data)


def test_sliced_band_saliency_title_names_no_class_it_cannot_recompute():
    # per-pattern PCs are stored in metadata, which hyperspy does not slice
    import kikuchipy as kp

    from kikuchipy_cnn.signals import _ClassLabel

    s = kp.data.nickel_ebsd_small().inav[:2, :1]
    pcs = np.array([[[0.42, 0.21, 0.50], [0.44, 0.20, 0.49]]])
    sal = s.get_saliency(model="kcnn-bands-mlp", pc=pcs, show_progressbar=False)
    full = _ClassLabel(sal, s)((1, 0))
    assert "score" in full
    sliced = _ClassLabel(sal.inav[1:, :], s.inav[1:, :])((0, 0))
    assert "not recomputed" in sliced and "score" not in sliced


def test_classify_with_saliency_warns_once_about_a_missing_beam_energy():
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small().inav[:1, :1]
    s.metadata.Acquisition_instrument.SEM.beam_energy = None  # not given
    if s.metadata.get_item("Acquisition_instrument.SEM.beam_energy") is not None:
        pytest.skip("cannot remove the beam energy from kikuchipy's metadata")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.classify_structure(model="kcnn-bands-mlp", pool="none", verbose=0, return_saliency=True,
                             show_progressbar=False)
    beam = [w for w in caught if "give no beam energy" in str(w.message)]
    assert len(beam) == 1, [str(w.message) for w in beam]
