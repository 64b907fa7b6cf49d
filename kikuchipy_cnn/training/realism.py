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
    pattern: np.ndarray, params: dict, rng: np.random.Generator, binning: float = 1.0
) -> np.ndarray:
    """Degrade one clean pattern (rows, cols), float, mean about 1.

    ``binning`` is the number of native detector pixels per rendered pixel
    along one axis: blur is divided by it and counts are multiplied by its
    square, so a coarse rendering has the noise of the native detector after
    binning.
    """
    rows, cols = pattern.shape
    p = np.clip(pattern / max(float(pattern.mean()), 1e-12), 0, None)
    p = p ** params["gamma"]
    if params["blur"] > 0.05:
        p = gaussian_filter(p, params["blur"] / binning, mode="nearest")
    p = p / max(float(p.mean()), 1e-12)
    # smooth background: wide Gaussian + gradient (+ vignetting)
    y = (np.arange(rows) - (rows - 1) / 2) / max(rows, cols)
    x = (np.arange(cols) - (cols - 1) / 2) / max(rows, cols)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    cy, cx = params["bg_center"]
    s = params["bg_sigma"]
    bg = params["bg_floor"] + np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2))
    gx, gy = params["bg_gradient"]
    bg = bg * np.clip(1 + gx * xx + gy * yy, 0.1, None)
    r2 = xx**2 + yy**2
    bg = bg * (1 - params["vignetting"] * r2 / 0.5)
    bg = np.clip(bg, 1e-3, None)
    bg /= bg.max()
    # Kikuchi contrast laid multiplicatively on the background
    img = bg * (1 + params["contrast"] * (p - 1))
    img = np.clip(img, 0, None)
    # Poisson noise at the native counts, summed over binned pixels
    lam = img * params["counts"] * binning**2
    img = rng.poisson(lam).astype(np.float32) / (params["counts"] * binning**2)
    img += rng.normal(0, params["read_noise"], img.shape).astype(np.float32)
    for key, value in (("hot_pixels", 1.0), ("dead_pixels", 0.0)):
        k = params[key]
        if k:
            img[rng.integers(0, rows, k), rng.integers(0, cols, k)] = value
    if params["circular_mask"]:
        outside = r2 > params["mask_radius"] ** 2 * (min(rows, cols) / max(rows, cols)) ** 2
        img[outside] = 0
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
        raw = np.empty((stop - start, *shape), dtype=np.float32)
        for i in range(start, stop):
            clean = project(masters.masters[idx[i]], quats[i : i + 1], dc, shape)[0]
            params = random_realism(rng)
            raw[i - start] = degrade(clean, params, rng, binning=geom.binning)
            realism.append(params)
            geoms.append(geom.to_dict())
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
