"""Saliency: where a model looks to decide on a class.

``cam``: the exact class-activation map of a global-average-pooling + linear
head (equal to Grad-CAM for such a head), from the model's ``cam`` output.
``occlusion``: model-agnostic; the drop of the target probability when a
patch of the input is blanked out.
``bands``: for band models (card ``input.kind: bands``); occlusion over the
detected bands: the drop of the target probability when each band is removed
from the pattern's band set (the features recomputed with
:func:`kikuchipy_cnn.features.band_features`), drawn on the band's trace.
"""

from __future__ import annotations

import numpy as np

from kikuchipy_cnn._chunks import compute
from kikuchipy_cnn.card import ModelCard
from kikuchipy_cnn.classify import (
    _card,
    _pc_for_band_model,
    _prepare,
    detector_geometry,
    map_model,
    validate_pc,
)
from kikuchipy_cnn.engine import get_session
from kikuchipy_cnn.preprocessing import circular_mask, preprocess, resize
from kikuchipy_cnn._warnings import user_stacklevel

__all__ = ["band_heatmap", "get_saliency", "zone_axis_factor"]

METHODS = ("cam", "occlusion", "bands")

#: Methods for band models (card ``input.kind: bands``)
BAND_METHODS = ("bands",)

#: Angular full width (rad) drawn for a band whose width was not measured
#: (about twice the Bragg angle of a low-index band at 20 kV)
UNKNOWN_BAND_WIDTH = float(np.deg2rad(2.5))


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


def _band_occlusion(bands, wavelength: float, pixel_angle: float, session, batch_size: int,
                    target: int = -1) -> tuple[np.ndarray, int, np.ndarray]:
    """Occlusion over the bands of one pattern.

    Parameters
    ----------
    bands
        :class:`~kikuchipy_cnn.bands.BandSet` of one pattern (``n = 1``).
    wavelength, pixel_angle
        As in :func:`~kikuchipy_cnn.features.band_features`.
    session, batch_size
        The model's session and batch size.
    target
        Class index; -1 for the class most probable with all bands.

    Returns
    -------
    probabilities
        ``(k + 1, n_classes)``: with all valid bands (row 0), then without
        the ``i``-th valid band (row ``i + 1``); one model run.
    target
        The class index attributed.
    drops
        ``(n_bands,)`` probability of ``target`` with all bands minus without
        the band (positive: the band supports the class); NaN for bands that
        were not found.
    """
    from kikuchipy_cnn.bands import BandSet
    from kikuchipy_cnn.features import band_features

    valid = np.asarray(bands.valid[0], bool)
    idx = np.flatnonzero(valid)
    k = idx.size
    masks = np.repeat(valid[None], k + 1, axis=0)
    masks[np.arange(1, k + 1), idx] = False
    rep = BandSet(*(np.repeat(a[:1], k + 1, axis=0) for a in bands[:4]), masks)
    x = band_features(rep, wavelength, pixel_angle)
    probs = session.run(x, ("probabilities",), batch_size)["probabilities"]
    t = int(np.argmax(probs[0])) if target < 0 else int(target)
    drops = np.full(valid.shape, np.nan)
    drops[idx] = probs[0, t] - probs[1:, t]
    return probs, t, drops


def band_heatmap(shape: tuple[int, int], pc, bands, drops: np.ndarray) -> np.ndarray:
    """Draw per-band attributions on the pattern: each band's trace (its
    great circle projected with the pattern centre, as wide as the band's
    measured angular width, :data:`UNKNOWN_BAND_WIDTH` where not measured,
    and at least one pixel) filled with its attribution clipped at 0, summed
    where bands overlap (so band crossings, the zone axes, add up), and
    divided by the maximum: values in [0, 1], zero away from all bands and
    everywhere when no band supports the class.

    Parameters
    ----------
    shape
        Pattern shape ``(rows, columns)``.
    pc
        The pattern's centre ``(PCx, PCy, PCz)`` (Bruker convention).
    bands
        :class:`~kikuchipy_cnn.bands.BandSet` of the pattern (``n = 1``).
    drops
        ``(n_bands,)`` attributions (see :func:`get_saliency`); NaN or
        negative ones are not drawn.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` float32 heatmap.
    """
    from kikuchipy_cnn.bands import band_trace_distance, pixel_angle

    heat = np.zeros(shape, dtype=np.float64)
    drops = np.asarray(drops, np.float64)
    draw = np.flatnonzero(np.asarray(bands.valid[0], bool) & np.isfinite(drops) & (drops > 0))
    if draw.size == 0:
        return heat.astype(np.float32)
    px = float(pixel_angle(shape, pc)[0])
    width = np.asarray(bands.width[0], np.float64)
    dist = band_trace_distance(shape, pc, bands.normals[0, draw])  # one per drawn band
    for j, d in zip(draw, dist):
        w = width[j] if np.isfinite(width[j]) and width[j] > 0 else UNKNOWN_BAND_WIDTH
        heat[d <= max(w / 2, px / 2)] += drops[j]
    hi = heat.max()
    return (heat / hi if hi > 0 else heat).astype(np.float32)


def _band_saliency_chunk(patterns, excluded, card_path, providers, batch_size, static_background,
                         per_pattern, wavelength, target):
    """Per-chunk work of ``method="bands"``: the band input of
    :func:`kikuchipy_cnn.classify._band_input` (static background divided
    out, bands detected with each pattern's PC), then one model run per
    pattern over its band set and the set without each band."""
    from kikuchipy_cnn.classify import band_sets
    from kikuchipy_cnn.pattern_check import check_patterns

    card = _card(card_path)
    n, rows, cols = patterns.shape
    out = np.zeros((n, rows, cols), dtype=np.float32)
    keep = np.flatnonzero(~excluded)
    if keep.size:  # no heatmap for what is not a Kikuchi pattern
        keep = keep[check_patterns(patterns[keep], static_background)[0] == 0]
    if keep.size == 0:
        return out
    bands, valid, pa = band_sets(patterns[keep], np.asarray(per_pattern, np.float64)[keep], card,
                                 static_background)
    if bands is None:
        return out
    good = keep[valid]
    pcs = np.asarray(per_pattern, np.float64)[good]
    session = get_session(card, providers)
    for i, g in enumerate(good):
        one = type(bands)(*(a[i : i + 1] for a in bands))
        _, _, drops = _band_occlusion(one, wavelength, pa[i], session, batch_size, target)
        out[g] = band_heatmap((rows, cols), pcs[i], one, drops)
    return out


def get_saliency(
    signal,
    model: str | ModelCard | None = None,
    target: str = "predicted",
    method: str | None = None,
    navigation_mask: np.ndarray | None = None,
    batch_size: int | None = None,
    providers: list[str] | None = None,
    static_background: np.ndarray | str | None = "auto",
    show_progressbar: bool | None = None,
    pc: "str | tuple[float, float, float] | np.ndarray | None" = None,
):
    """Return saliency heatmaps: where the model looks to decide on a class.

    Parameters
    ----------
    signal
        EBSD or LazyEBSD signal; see
        :func:`~kikuchipy_cnn.classify_structure`. Not modified.
    model
        Name of a registered model, the path of a model card file
        (``card.yaml``) or a model card. If not given, the default model.
    target
        ``"predicted"`` (default) for each pattern's most probable class, or
        a class name such as ``"cF m-3m"``.
    method
        If not given, the first method the model's card lists (``"cam"``
        for the bundled pixel model, ``"bands"`` for the band model).
        Pixel models: ``"cam"`` (class-activation map, for models that
        export one) or ``"occlusion"`` (any pixel model; 65 inferences per
        pattern). Band models (e.g. ``"kcnn-bands-mlp"``): ``"bands"``,
        occlusion over the detected bands: each band's attribution is the
        probability of the target class with all bands minus that without
        the band (the features recomputed by the same
        :func:`~kikuchipy_cnn.features.band_features`; one run of
        ``n_bands + 1`` rows per pattern), drawn on the band's trace on the
        detector (its measured width, or
        :data:`UNKNOWN_BAND_WIDTH`), negative attributions not drawn and
        overlapping bands summed, so band crossings (zone axes) are the sum
        of their bands, not an attribution of their own
        (see :func:`band_heatmap`).
    navigation_mask
        Boolean array of the navigation shape; True means excluded (heatmap
        all zeros).
    batch_size, providers, static_background, show_progressbar
        As in :func:`~kikuchipy_cnn.classify_structure`.
    pc
        Pattern centre for band models, as in
        :func:`~kikuchipy_cnn.classify_structure` (None: the signal's
        ``s.detector.pc``; ``(PCx, PCy, PCz)`` or one per pattern;
        ``"estimate"`` or ``"check"``); ignored with a warning for pixel
        models.

    Returns
    -------
    saliency
        :class:`~kikuchipy_cnn.signals.EBSDSaliency` (lazy,
        ``LazyEBSDSaliency``, if the signal is lazy) with the signal's
        navigation axes and pattern shape, values in [0, 1] per pattern,
        zero outside the region the model sees (pixel models) or away from
        the bands that support the class (``"bands"``) and for patterns that
        fail the pattern check (:func:`~kikuchipy_cnn.pattern_check.check_patterns`:
        not Kikuchi patterns), and ``metadata.Saliency``
        naming the model, method and target (band models: also the pattern
        centres ``pc`` and electron ``wavelength`` used).
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"Unknown saliency method {method!r}; choose from {list(METHODS)}")
    nav_shape, _, _, mask, card, bg, show_progressbar, session, batch_size = _prepare(
        signal, model, navigation_mask, batch_size, providers, static_background,
        show_progressbar,
    )
    supported = list(card.saliency_methods)
    bands_model = card.input_kind == "bands"
    if method is None:
        if not supported:
            raise ValueError(
                f"Model {card.name!r} does not support saliency: its card lists no saliency "
                "method (card field 'saliency')"
            )
        method = supported[0]
    if bands_model and method not in BAND_METHODS:
        raise ValueError(
            f"Saliency method {method!r} is for pixel models, but model {card.name!r} reads "
            f"band features: use method='bands' (or method=None for the card's first method)"
        )
    if not bands_model and method in BAND_METHODS:
        raise ValueError(
            f"Saliency method {method!r} is for band models, but model {card.name!r} reads "
            f"pixels: use method='cam' or 'occlusion' (its card lists {supported}), or a band "
            "model such as model='kcnn-bands-mlp'"
        )
    if method not in supported or (method == "cam" and "cam" not in card.outputs):
        raise ValueError(
            f"Model {card.name!r} does not support saliency method {method!r}; it "
            f"supports {supported}"
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
    pc = validate_pc(pc, nav_shape)
    sig_shape = tuple(signal.axes_manager.signal_shape[::-1])
    if bands_model:
        # the pattern centres exactly as classify_structure() takes them
        pc, _ = _pc_for_band_model(signal, pc, bg, 0)
        pcs, wavelength = detector_geometry(signal, nav_shape, pc)
        arr = map_model(
            signal, nav_shape, mask, card, session, batch_size, bg, _band_saliency_chunk,
            sig_shape, per_pattern=pcs, wavelength=float(wavelength), target=target_index,
        )
    else:
        if pc is not None:
            import warnings

            warnings.warn(
                f"pc is ignored: model {card.name!r} classifies the pixels and does not use the "
                "pattern centre (only band models, e.g. 'kcnn-bands-mlp', do); leave pc=None",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        arr = map_model(
            signal, nav_shape, mask, card, session, batch_size, bg, _saliency_chunk, sig_shape,
            method=method, target=target_index,
        )
    arr = arr.reshape(nav_shape + sig_shape)
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
    if bands_model:
        out.metadata.set_item("Saliency.pc", np.asarray(pcs).reshape(nav_shape + (3,)))
        out.metadata.set_item("Saliency.wavelength", float(wavelength))
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
