import hyperspy.api as hs
import kikuchipy as kp
import matplotlib
import numpy as np
import pytest

import kikuchipy_cnn
from kikuchipy_cnn.signals import EBSDSaliency, LazyEBSDSaliency

matplotlib.use("Agg")


@pytest.fixture
def ni():
    return kp.data.nickel_ebsd_small()


def test_cam_eager_and_lazy(ni, tiny_model):
    sal = ni.get_saliency(model=tiny_model, show_progressbar=False)
    assert isinstance(sal, EBSDSaliency)
    assert sal.axes_manager.navigation_shape == (3, 3)
    assert sal.axes_manager.signal_shape == (60, 60)
    assert sal.axes_manager.navigation_axes[0].scale == ni.axes_manager.navigation_axes[0].scale
    assert sal.data.min() >= 0 and np.allclose(sal.data.max(axis=(2, 3)), 1)
    md = sal.metadata.Saliency
    assert (md.model, md.method, md.target) == (tiny_model, "cam", "predicted")
    lazy = ni.as_lazy().get_saliency(model=tiny_model)
    assert isinstance(lazy, LazyEBSDSaliency)
    lazy.compute()
    np.testing.assert_allclose(lazy.data, sal.data, atol=1e-5)


def test_default_model_on_bundled_ni_eager_and_lazy(ni):
    """The bundled default model's CAM on kikuchipy's nine Ni patterns, eager
    and lazy (through ``classify_structure(return_saliency=True)``)."""
    sal = ni.get_saliency(show_progressbar=False)
    assert sal.metadata.Saliency.model == kikuchipy_cnn.DEFAULT_MODEL == "kcnn-resnet-s"
    assert sal.data.shape == ni.data.shape and np.isfinite(sal.data).all()
    assert np.allclose(sal.data.max(axis=(2, 3)), 1)
    xmap, sal2 = ni.as_lazy().classify_structure(return_saliency=True, show_progressbar=False)
    assert isinstance(sal2, LazyEBSDSaliency) and xmap.size == 9
    sal2.compute()
    np.testing.assert_allclose(sal2.data, sal.data, atol=1e-5)


def test_signal_type_registered_with_hyperspy(ni, tiny_model):
    s = hs.signals.Signal2D(np.zeros((2, 10, 10)))
    s.set_signal_type("EBSDSaliency")
    assert isinstance(s, EBSDSaliency)
    # Never a second "EBSD" type
    e = hs.signals.Signal2D(np.zeros((2, 10, 10)))
    e.set_signal_type("EBSD")
    assert type(e) is kp.signals.EBSD


def test_target_class_and_predicted_match_cam(ni, tiny_model):
    xmap = ni.classify_structure(model=tiny_model, min_score=0, verbose=0, show_progressbar=False)
    pred = xmap.phases[int(xmap.phase_id[0])].name
    a = ni.get_saliency(model=tiny_model, target=pred, show_progressbar=False)
    b = ni.get_saliency(model=tiny_model, show_progressbar=False)
    np.testing.assert_allclose(a.data[0, 0], b.data[0, 0], atol=1e-6)
    xmap2, sal = ni.classify_structure(model=tiny_model, return_saliency=True, verbose=0,
                                       show_progressbar=False)
    np.testing.assert_allclose(sal.data, b.data, atol=1e-6)


def test_occlusion(tiny_model):
    rng = np.random.default_rng(0)
    s = kp.signals.EBSD(rng.random((2, 48, 64)).astype(np.float32))
    sal = s.get_saliency(model=tiny_model, method="occlusion", target="cF m-3m",
                         show_progressbar=False)
    assert sal.data.shape == (2, 48, 64)
    # Outside the centred 48 x 48 square the model sees nothing
    assert (sal.data[:, :, :8] == 0).all() and (sal.data[:, :, -8:] == 0).all()
    assert (sal.data <= 1).all() and (sal.data >= 0).all()


def test_bad_saliency_input(ni, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="Unknown saliency method"):
        ni.get_saliency(model=tiny_model, method="gradcam++")
    with pytest.raises(ValueError, match="Unknown target"):
        ni.get_saliency(model=tiny_model, target="cF 6/mmm")
    with pytest.raises(ValueError, match="navigation mask shape"):
        ni.get_saliency(model=tiny_model, navigation_mask=np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match="EBSD"):
        kikuchipy_cnn.get_saliency(np.zeros((60, 60)), model=tiny_model)


def test_model_without_cam_supports_occlusion_only(tmp_path, register_plugin):
    from conftest import make_model_dir

    card = make_model_dir(tmp_path / "nocam", name="no-cam", with_cam=False)
    register_plugin([card], name="nocam-plugin")
    s = kp.signals.EBSD(np.random.default_rng(0).random((1, 60, 60)))
    with pytest.raises(ValueError, match="does not support saliency method 'cam'"):
        s.get_saliency(model="no-cam", method="cam")
    sal = s.get_saliency(model="no-cam", method="occlusion", show_progressbar=False)
    assert sal.data.shape == (1, 60, 60)
    # method=None: the card's first method
    default = s.get_saliency(model="no-cam", show_progressbar=False)
    assert default.metadata.Saliency.method == "occlusion"
    np.testing.assert_array_equal(default.data, sal.data)


def _colourfulness(rgba: np.ndarray, fig, ax) -> float:
    """Mean (max - min) over RGB of the pixels inside ``ax`` of a figure
    rendered at ``fig.dpi``: 0 for a grey pattern, high where a colour
    heatmap shows."""
    x0, y0, x1, y1 = ax.get_window_extent().extents
    h = rgba.shape[0]
    crop = rgba[int(h - y1) + 2 : int(h - y0) - 2, int(x0) + 2 : int(x1) - 2, :3].astype(float)
    if crop.max() <= 1:
        crop = crop * 255
    return float((crop.max(axis=2) - crop.min(axis=2)).mean())


def test_plot_overlay_heatmap_visible_in_saved_png(ni, tiny_model, tmp_path):
    """Saved with Agg, the overlay shows the heatmap above the pattern (before,
    hyperspy drew the pattern last and the PNG showed the pattern only), with
    a colour bar of the heatmap and the class and score in the title."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    sal = ni.get_saliency(model=tiny_model, show_progressbar=False)
    fig = sal.plot_overlay(ni, alpha=0.5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    pattern, heat = ax.images[0], fig.saliency_image
    assert heat in ax.images and heat.get_zorder() > pattern.get_zorder()
    assert heat.get_animated() == pattern.get_animated()
    np.testing.assert_allclose(heat.get_array(), sal.data[0, 0])
    path = tmp_path / "overlay.png"
    fig.savefig(path, dpi=fig.dpi)
    overlay = _colourfulness(plt.imread(path), fig, ax)

    # The same pattern plotted alone is grey
    ni.plot(colorbar=False)
    plain_fig = plt.gcf()
    plain_path = tmp_path / "pattern.png"
    plain_fig.savefig(plain_path, dpi=plain_fig.dpi)
    plain = _colourfulness(plt.imread(plain_path), plain_fig, plain_fig.axes[0])
    assert plain < 2, plain
    assert overlay > 20 * max(plain, 1), (overlay, plain)

    # One colour bar, of the heatmap (0 to 1), none of the pattern's intensity
    assert heat.colorbar is not None
    assert heat.colorbar.mappable.norm.vmin == 0 and heat.colorbar.mappable.norm.vmax == 1
    assert pattern.colorbar is None
    assert "saliency" in heat.colorbar.ax.get_ylabel()

    # Title: the predicted class and its score, from the same model
    xmap = ni.classify_structure(model=tiny_model, min_score=0, verbose=0,
                                 show_progressbar=False)
    probs, names = kikuchipy_cnn.probabilities(xmap)
    i = int(np.argmax(probs[0]))
    title = ax.get_title()
    assert names[i] in title and f"{probs[0, i]:.2f}" in title and "predicted" in title
    plt.close("all")


def test_plot_overlay_follows_navigation_interactively(ni, tiny_model):
    """On navigation the heatmap and the title change, and the canvas shown
    (no savefig) has the heatmap above the pattern."""
    import matplotlib.pyplot as plt

    sal = ni.get_saliency(model=tiny_model, show_progressbar=False)
    fig = sal.plot_overlay(ni, alpha=0.5)
    ax = fig.axes[0]
    fig.canvas.draw()
    xmap = ni.classify_structure(model=tiny_model, min_score=0, verbose=0,
                                 show_progressbar=False)
    probs, names = kikuchipy_cnn.probabilities(xmap)
    ni.axes_manager.indices = (2, 1)
    np.testing.assert_allclose(fig.saliency_image.get_array(), sal.data[1, 2])
    k = 1 * 3 + 2
    i = int(np.argmax(probs[k]))
    assert names[i] in ax.get_title() and f"{probs[k, i]:.2f}" in ax.get_title()
    shown = np.asarray(fig.canvas.buffer_rgba())
    assert _colourfulness(shown, fig, ax) > 20
    # A given target class is named as the target, with its probability
    j = names.index("cF m-3m")
    sal_t = ni.get_saliency(model=tiny_model, target="cF m-3m", show_progressbar=False)
    fig_t = sal_t.plot_overlay(ni, colorbar=False)
    assert fig_t.saliency_image.colorbar is None
    title = fig_t.axes[0].get_title()
    assert "cF m-3m (target" in title and f"{probs[k, j]:.2f}" in title
    with pytest.raises(ValueError, match="same shape"):
        sal.plot_overlay(ni.inav[:2])
    with pytest.raises(ValueError, match="alpha"):
        sal.plot_overlay(ni, alpha=2)
    plt.close("all")


def test_zone_axis_factor_of_the_default_model():
    """The default model's CAM favours the zone axes of dynamical Ni patterns
    (mean saliency near zone axes / mean saliency over the pattern), clearly:
    the mean factor is above 1.1 and its lower 2-standard-error bound above 1.

    Measured (20 seeded orientations): kcnn-resnet-s 0.2.0 1.15 ± 0.03, 90 % of
    patterns above 1; 0.1.0 gave 1.02 ± 0.03 and would fail.
    ``benchmarks/zone_axis_factor.py`` prints the factor with references
    (pattern intensity as a heatmap: 1.37; the 8 × 8 CAM grid's ceiling: 2.9).
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from zone_axis_factor import dynamical_ni_with_zone_axes

    from kikuchipy_cnn.saliency import zone_axis_factor

    s, za = dynamical_ni_with_zone_axes(20)
    sal = s.get_saliency(show_progressbar=False)
    f = zone_axis_factor(sal.data, za, radius=3)
    f = f[np.isfinite(f)]
    assert len(f) >= 18
    mean, se = f.mean(), f.std(ddof=1) / np.sqrt(len(f))
    assert mean > 1.1, f"zone-axis factor {mean:.3f}"
    assert mean - 2 * se > 1, f"zone-axis factor {mean:.3f} ± {se:.3f}"
    # A heatmap that ignores the pattern gives a factor of 1
    flat = np.where(sal.data > 0, 1.0, 0.0)
    np.testing.assert_allclose(np.nanmean(zone_axis_factor(flat, za)), 1, atol=0.05)
    # The benchmark's orientations are seeded: the same patterns every run
    s2, _ = dynamical_ni_with_zone_axes(20)
    np.testing.assert_array_equal(s.data, s2.data)


def test_zone_axis_factor_errors_and_nan():
    from kikuchipy_cnn.saliency import zone_axis_factor

    sal = np.zeros((2, 20, 20))
    sal[:, 8:12, 8:12] = 1
    f = zone_axis_factor(sal, [np.array([[10, 10]]), np.zeros((0, 2))], radius=2)
    assert f[0] > 5 and np.isnan(f[1])
