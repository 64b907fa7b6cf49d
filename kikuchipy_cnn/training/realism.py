"""Realistic degradation of clean projected patterns (the pilot's variant B,
with noise no harsher than real binned patterns), and :func:`make_batch`,
which turns cached master patterns into model input on the fly.

Every pattern goes through :func:`kikuchipy_cnn.preprocessing.preprocess`;
this module never reimplements any of it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

import kikuchipy_cnn.preprocessing as _preprocessing
from kikuchipy_cnn.training.projection import (
    detector_directions,
    project,
    random_geometry,
    random_quaternions,
)

__all__ = ["degrade", "make_batch", "random_realism"]


def random_realism(rng: np.random.Generator) -> dict:
    """Draw degradation parameters for one pattern (native pixel units)."""
    return {
        "contrast": float(np.exp(rng.uniform(np.log(0.08), np.log(0.8)))),
        "gamma": float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        "blur": float(rng.uniform(0, 1.3)),
        # mean counts per native pixel; binned real patterns are fairly clean
        "counts": float(np.exp(rng.uniform(np.log(50), np.log(5000)))),
        "read_noise": float(rng.uniform(0, 0.01)),
        "bg_sigma": float(rng.uniform(0.25, 0.7)),
        "bg_center": (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.4, 0.2))),
        "bg_gradient": (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5))),
        "bg_floor": float(rng.uniform(0.05, 0.5)),
        "vignetting": float(rng.uniform(0, 0.5)),
        "circular_mask": bool(rng.random() < 0.3),
        "mask_radius": float(rng.uniform(0.45, 0.6)),
        "hot_pixels": int(rng.poisson(2)) if rng.random() < 0.2 else 0,
        "dead_pixels": int(rng.poisson(2)) if rng.random() < 0.1 else 0,
    }


def degrade(
    patterns: np.ndarray, params: list, rng: np.random.Generator, binning: float = 1.0
) -> np.ndarray:
    """Degrade clean patterns (n, rows, cols) of one detector, float, each
    with its own parameters from :func:`random_realism`.

    ``binning`` is the number of native detector pixels per rendered pixel
    along one axis: blur is divided by it and counts are multiplied by its
    square, so a coarse rendering has the noise of the native detector after
    binning.
    """
    patterns = np.asarray(patterns, dtype=np.float32)
    if patterns.ndim == 2:
        patterns = patterns[None]
    if isinstance(params, dict):
        params = [params]
    n, rows, cols = patterns.shape
    col = lambda key: np.array([p[key] for p in params], np.float32)[:, None, None]  # noqa: E731
    p = np.clip(patterns, 0, None)
    p /= np.maximum(p.mean(axis=(1, 2), keepdims=True), 1e-12)
    p **= col("gamma")
    for i, prm in enumerate(params):
        if prm["blur"] / binning > 0.2:
            p[i] = gaussian_filter(p[i], prm["blur"] / binning, mode="nearest", truncate=3.0)
    p /= np.maximum(p.mean(axis=(1, 2), keepdims=True), 1e-12)
    # smooth background: wide Gaussian + gradient + vignetting
    y = ((np.arange(rows) - (rows - 1) / 2) / max(rows, cols)).astype(np.float32)
    x = ((np.arange(cols) - (cols - 1) / 2) / max(rows, cols)).astype(np.float32)
    yy, xx = y[None, :, None], x[None, None, :]
    cx = np.array([q["bg_center"][0] for q in params], np.float32)[:, None, None]
    cy = np.array([q["bg_center"][1] for q in params], np.float32)[:, None, None]
    gx = np.array([q["bg_gradient"][0] for q in params], np.float32)[:, None, None]
    gy = np.array([q["bg_gradient"][1] for q in params], np.float32)[:, None, None]
    s = col("bg_sigma")
    bg = col("bg_floor") + np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2))
    bg *= np.clip(1 + gx * xx + gy * yy, 0.1, None)
    r2 = xx**2 + yy**2
    bg *= 1 - col("vignetting") * r2 / 0.5
    np.clip(bg, 1e-3, None, out=bg)
    bg /= bg.max(axis=(1, 2), keepdims=True)
    # Kikuchi contrast laid multiplicatively on the background
    img = np.clip(bg * (1 + col("contrast") * (p - 1)), 0, None)
    # Poisson noise at the native counts, summed over binned pixels
    counts = col("counts") * binning**2
    img = rng.poisson(img * counts).astype(np.float32) / counts
    img += rng.standard_normal(img.shape, dtype=np.float32) * col("read_noise")
    for i, prm in enumerate(params):
        for key, value in (("hot_pixels", 1.0), ("dead_pixels", 0.0)):
            k = prm[key]
            if k:
                img[i, rng.integers(0, rows, k), rng.integers(0, cols, k)] = value
        if prm["circular_mask"]:
            rmax = prm["mask_radius"] * min(rows, cols) / max(rows, cols)
            img[i][(r2 > rmax**2)[0]] = 0
    return img


def make_batch(
    masters,
    n: int,
    rng: np.random.Generator,
    recipe=None,
    per_detector: int = 32,
    return_raw: bool = False,
):
    """Make a batch of degraded, preprocessed patterns from cached masters.

    Parameters
    ----------
    masters
        A :class:`~kikuchipy_cnn.training.projection.MasterSet`.
    n
        Batch size.
    rng
        Random number generator; the batch is deterministic given its state.
    recipe
        :class:`kikuchipy_cnn.preprocessing.Preprocessing`; default recipe if
        not given.
    per_detector
        Patterns sharing one random detector geometry (amortises the
        detector's direction cosines).
    return_raw
        Also return the degraded patterns before preprocessing (in
        ``meta["raw"]``, a list).

    Returns
    -------
    x
        float32 (n, 1, size, size), output of
        :func:`kikuchipy_cnn.preprocessing.preprocess`.
    y
        int64 (n,), joint class index into
        :data:`kikuchipy_cnn.symmetry.JOINT_CLASSES`.
    meta
        Dictionary of per-pattern lists: ``master`` (index), ``id``,
        ``geometry``, ``quaternion``, ``realism``, ``valid``.
    """
    idx = masters.sample_indices(n, rng)
    quats = random_quaternions(n, rng)
    xs, geoms, realism, raws = [], [], [], []
    for start in range(0, n, per_detector):
        stop = min(start + per_detector, n)
        geom = random_geometry(rng)
        shape = geom.render_shape
        dc = detector_directions(geom, shape)
        clean = np.empty((stop - start, *shape), dtype=np.float32)
        for i in range(start, stop):
            clean[i - start] = project(masters.masters[idx[i]], quats[i : i + 1], dc, shape)[0]
        params = [random_realism(rng) for _ in range(stop - start)]
        raw = degrade(clean, params, rng, binning=geom.binning)
        realism.extend(params)
        geoms.extend([geom.to_dict()] * (stop - start))
        x, valid = _preprocessing.preprocess(raw, recipe)
        xs.append((x, valid))
        if return_raw:
            raws.extend(list(raw))
    x = np.concatenate([a for a, _ in xs])
    valid = np.concatenate([v for _, v in xs])
    y = masters.labels[idx].astype(np.int64)
    meta = {
        "master": idx,
        "id": [masters.meta[i].get("id") for i in idx],
        "geometry": geoms,
        "quaternion": quats,
        "realism": realism,
        "valid": valid,
    }
    if return_raw:
        meta["raw"] = raws
    return x.astype(np.float32, copy=False), y, meta
