"""Saliency: where a model looks to decide on a class.

``cam``: the exact class-activation map of a global-average-pooling + linear
head (equal to Grad-CAM for such a head), from the model's ``cam`` output.
``occlusion``: model-agnostic; the drop of the target probability when a
patch of the input is blanked out.
"""

from __future__ import annotations

import numpy as np

from kikuchipy_cnn._chunks import compute
from kikuchipy_cnn.card import ModelCard
from kikuchipy_cnn.classify import _card, _prepare, map_model
from kikuchipy_cnn.engine import get_session
from kikuchipy_cnn.preprocessing import circular_mask, preprocess, resize

__all__ = ["get_saliency", "zone_axis_factor"]

METHODS = ("cam", "occlusion")


def _to_pattern_frame(heat: np.ndarray, sig_shape: tuple[int, int], circular: bool) -> np.ndarray:
    """Map ``(m, h, w)`` heatmaps on the model input back to the patterns'
    frame: the centred square the preprocessing crops, zero elsewhere,
    normalised to [0, 1] per pattern."""
    rows, cols = sig_shape
    n = min(rows, cols)
    r0, c0 = (rows - n) // 2, (cols - n) // 2
    up = resize(heat.astype(np.float32), n)
    if circular:
        up *= circular_mask(n)
    lo = up.min(axis=(1, 2), keepdims=True)
    hi = up.max(axis=(1, 2), keepdims=True)
    up = (up - lo) / np.where(hi > lo, hi - lo, 1)
    if circular:
        up *= circular_mask(n)
    out = np.zeros((heat.shape[0], rows, cols), dtype=np.float32)
    out[:, r0 : r0 + n, c0 : c0 + n] = up
    return out


def _occlusion(session, x: np.ndarray, target: np.ndarray, batch_size: int) -> np.ndarray:
    """Drop in target probability with each 1/8-side patch blanked, on an
    8 × 8 grid."""
    m, _, size, _ = x.shape
    k = size // 8
    heat = np.zeros((m, 8, 8), dtype=np.float32)
    p0 = session.run(x, batch_size=batch_size)["probabilities"][np.arange(m), target]
    for i in range(8):
        for j in range(8):
            xo = x.copy()
            xo[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k] = 0
            p = session.run(xo, batch_size=batch_size)["probabilities"][np.arange(m), target]
            heat[:, i, j] = np.maximum(p0 - p, 0)
    return heat


def _saliency_chunk(patterns, excluded, card_path, providers, batch_size, static_background,
                    method, target):
    card = _card(card_path)
    n, rows, cols = patterns.shape
    out = np.zeros((n, rows, cols), dtype=np.float32)
    keep = np.flatnonzero(~excluded)
    if keep.size:  # no heatmap for what is not a Kikuchi pattern (all zeros)
        from kikuchipy_cnn.pattern_check import check_patterns

        keep = keep[check_patterns(patterns[keep], static_background)[0] == 0]
    if keep.size == 0:
        return out
    recipe = card.preprocessing
    x, valid = preprocess(patterns[keep], recipe, static_background)
    good = keep[valid]
    if good.size == 0:
        return out
    x = x[valid]
    session = get_session(card, providers)
    if method == "cam":
        res = session.run(x, ("probabilities", "cam"), batch_size)
        idx = np.argmax(res["probabilities"], axis=1) if target < 0 else np.full(len(x), target)
        heat = res["cam"][np.arange(len(x)), idx]
    else:
        if target < 0:
            probs = session.run(x, batch_size=batch_size)["probabilities"]
            idx = np.argmax(probs, axis=1)
        else:
            idx = np.full(len(x), target)
        heat = _occlusion(session, x, idx, batch_size)
    out[good] = _to_pattern_frame(heat, (rows, cols), recipe.circular_mask)
    return out


def get_saliency(
    signal,
    model: str | ModelCard | None = None,
    target: str = "predicted",
    method: str = "cam",
    navigation_mask: np.ndarray | None = None,
    batch_size: int | None = None,
    providers: list[str] | None = None,
    static_background: np.ndarray | str | None = "auto",
    show_progressbar: bool | None = None,
):
    """Return saliency heatmaps: where the model looks to decide on a class.

    Parameters
    ----------
    signal
        EBSD or LazyEBSD signal; see
        :func:`~kikuchipy_cnn.classify_structure`. Not modified.
    model
        Name of a registered model or a model card. If not given, the
        default model.
    target
        ``"predicted"`` (default) for each pattern's most probable class, or
        a class name such as ``"cF m-3m"``.
    method
        ``"cam"`` (default; class-activation map, for models that export
        one) or ``"occlusion"`` (any model; 65 inferences per pattern).
    navigation_mask
        Boolean array of the navigation shape; True means excluded (heatmap
        all zeros).
    batch_size, providers, static_background, show_progressbar
        As in :func:`~kikuchipy_cnn.classify_structure`.

    Returns
    -------
    saliency
        :class:`~kikuchipy_cnn.signals.EBSDSaliency` (lazy,
        ``LazyEBSDSaliency``, if the signal is lazy) with the signal's
        navigation axes and pattern shape, values in [0, 1] per pattern,
        zero outside the region the model sees and for patterns that fail
        the pattern check (:func:`~kikuchipy_cnn.pattern_check.check_patterns`:
        not Kikuchi patterns), and ``metadata.Saliency``
        naming the model, method and target.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown saliency method {method!r}; choose from {list(METHODS)}")
    nav_shape, _, _, mask, card, bg, show_progressbar, session, batch_size = _prepare(
        signal, model, navigation_mask, batch_size, providers, static_background,
        show_progressbar,
    )
    if method not in card.saliency_methods or (method == "cam" and "cam" not in card.outputs):
        raise ValueError(
            f"Model {card.name!r} does not support saliency method {method!r}; it "
            f"supports {list(card.saliency_methods)}"
        )
    if target == "predicted":
        target_index = -1
    elif target in card.classes:
        target_index = card.classes.index(target)
    else:
        raise ValueError(
            f"Unknown target {target!r}: use 'predicted' or one of the model's "
            f"classes {list(card.classes)}"
        )
    sig_shape = tuple(signal.axes_manager.signal_shape[::-1])
    arr = map_model(
        signal, nav_shape, mask, card, session, batch_size, bg, _saliency_chunk, sig_shape,
        method=method, target=target_index,
    ).reshape(nav_shape + sig_shape)
    from kikuchipy_cnn.signals import EBSDSaliency, LazyEBSDSaliency

    axes = signal.axes_manager._get_axes_dicts()
    if signal._lazy:
        out = LazyEBSDSaliency(arr, axes=axes)
    else:
        out = EBSDSaliency(compute(arr, show_progressbar), axes=axes)
    out.metadata.General.title = f"Saliency ({method}, {target}) of {signal.metadata.General.title}"
    out.metadata.set_item("Saliency.model", card.name)
    out.metadata.set_item("Saliency.model_version", card.version)
    out.metadata.set_item("Saliency.method", method)
    out.metadata.set_item("Saliency.target", target)
    return out


def zone_axis_factor(
    saliency: np.ndarray, zone_axes: list[np.ndarray], radius: float = 3.0
) -> np.ndarray:
    """Mean saliency within ``radius`` pixels of the zone axes divided by the
    mean saliency over the region the model sees, per pattern.

    A factor clearly above 1 means the model looks at the zone axes, as a
    crystallographer would; about 1 means it looks everywhere alike.

    Parameters
    ----------
    saliency
        Heatmaps ``(n, rows, cols)`` (e.g. ``EBSDSaliency.data`` flattened
        over the navigation axes).
    zone_axes
        Per pattern, an array ``(k, 2)`` of zone-axis pixel coordinates
        ``(x, y)`` (e.g. from kikuchipy's
        ``GeometricalKikuchiPatternSimulation.zone_axes_coordinates()``).
    radius
        Radius around each zone axis in pixels.

    Returns
    -------
    factor
        Array ``(n,)``; NaN where a pattern has no zone axis in the seen
        region.
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    n, rows, cols = saliency.shape
    m = min(rows, cols)
    r0, c0 = (rows - m) // 2, (cols - m) // 2
    yy, xx = np.mgrid[:rows, :cols]
    seen = np.hypot(yy - r0 - (m - 1) / 2, xx - c0 - (m - 1) / 2) <= m / 2
    out = np.full(n, np.nan)
    for i in range(n):
        za = np.asarray(zone_axes[i], dtype=float).reshape(-1, 2)
        near = np.zeros((rows, cols), bool)
        for x, y in za:
            near |= np.hypot(xx - x, yy - y) <= radius
        near &= seen
        mean_all = saliency[i][seen].mean()
        if near.any() and mean_all > 0:
            out[i] = saliency[i][near].mean() / mean_all
    return out
