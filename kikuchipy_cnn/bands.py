"""Kikuchi bands of a pattern as lattice-plane normals on the unit sphere.

With the detector geometry, every Kikuchi band is the trace of a lattice plane:
its centre line is the great circle of the plane's normal, and its angular full
width is twice the Bragg angle, ``2 arcsin(lambda / 2d)``. This module turns a
pattern and its pattern centre into that list: band normals, Radon peak
strengths and, where the resolution allows, widths measured from the band's
intensity profile (edges at the steepest rise and fall, as in CALM).

It is the one place that converts between detector pixels and directions on
the sphere. Directions are in kikuchipy's detector frame: ``x`` to the right on
the screen, ``y`` up, ``z`` from the source point to the screen, the pattern
centre at ``(0, 0, 1)``; the gnomonic coordinates of a pixel are those of
:class:`kikuchipy.detectors.EBSDDetector` (pattern centre in the Bruker
convention: PCx from the left / width, PCy from the top / height, PCz / height).
Band positions come from PyEBSDIndex's Radon transform and peak finding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "BandSet",
    "WIDTH_TO_BRAGG",
    "band_trace_distance",
    "bragg_angles",
    "d_spacing",
    "change_pc",
    "detect_bands",
    "electron_wavelength",
    "measure_band_profiles",
    "pc_map",
    "pixel_angle",
    "pixel_directions",
    "to_sample_frame",
]

#: Angular half-window (rad) of the profile taken across each band.
PROFILE_HALF_WINDOW = np.deg2rad(6.0)

#: Narrowest band (in pixels across) whose width is reported.
MIN_WIDTH_PX = 1.5

#: Patterns are binned for the Radon peak search to about this many pixels on
#: the shorter side (widths are still measured at full resolution): noise at
#: 480 px otherwise buries the peaks (EMsoft Fe 480 px at 7 dB: 3.3 deg median
#: error at full resolution, 1.9 deg on a 60 px copy).
DETECT_SIZE = 120

#: Median ratio of twice the Bragg angle to the measured width, over 61 356 bands
#: detected on rendered dynamical patterns (60-480 px) of the train-split masters
#: and matched to the reflection each one shows (test split, 21 686 bands: 1.143).
#: One factor for every band: factors by bin of measured width regress each band
#: to the training set's typical d (wide measured bands shrunk, narrow ones
#: widened) and made alpha-Fe at 480 px 75 % too long; by the true width the factor
#: runs from 0.61 (bands under 2 px, measured too wide) to 1.2-1.3 (over 6 px,
#: measured too narrow). Reproduce, with those logs:
#: ``models/experiments/2026-12-01-cell-lengths/`` (``width_calibration.py``).
WIDTH_TO_BRAGG = 1.107


class BandSet(NamedTuple):
    """Bands of ``n`` patterns, ``k`` per pattern (padded; see ``valid``).

    Attributes
    ----------
    normals
        ``(n, k, 3)`` unit plane normals in the detector frame (sign arbitrary).
    strength
        ``(n, k)`` Radon peak height of the band (PyEBSDIndex ``max``), relative
        within a pattern.
    width
        ``(n, k)`` angular full width in radians (about twice the Bragg angle),
        NaN where it could not be measured.
    contrast
        ``(n, k)`` band contrast of the profile (inside minus outside mean, in
        units of the pattern's standard deviation), NaN where not measured.
    valid
        ``(n, k)`` True where a band was found.
    """

    normals: np.ndarray
    strength: np.ndarray
    width: np.ndarray
    contrast: np.ndarray
    valid: np.ndarray


def electron_wavelength(energy_kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = energy_kv * 1e3
    return h / np.sqrt(2 * m * e * v * (1 + e * v / (2 * m * c**2))) * 1e10


def d_spacing(two_theta, wavelength) -> np.ndarray:
    """Lattice-plane spacing (Å) of bands of angular full width ``two_theta``
    (rad; twice the Bragg angle): ``d = lambda / (2 sin(two_theta / 2))``;
    ``wavelength`` in Å (:func:`electron_wavelength`). Any shape; NaN stays NaN."""
    return np.asarray(wavelength, dtype=np.float64) / (2 * np.sin(np.asarray(two_theta, dtype=np.float64) / 2))


def bragg_angles(widths) -> np.ndarray:
    """Twice the Bragg angle (rad) of bands estimated from their measured
    widths: the widths times :data:`WIDTH_TO_BRAGG` (NaN stays NaN).

    Use it for absolute lengths (``d = lambda / (2 sin(2 theta / 2))``); band
    models' features read the widths as measured.
    """
    return np.asarray(widths, dtype=np.float64) * WIDTH_TO_BRAGG


def _pc_array(pc, n: int) -> np.ndarray:
    pc = np.asarray(pc, dtype=np.float64).reshape(-1, 3)
    if pc.shape[0] == 1:
        pc = np.repeat(pc, n, axis=0)
    if pc.shape[0] != n:
        raise ValueError(f"got {pc.shape[0]} pattern centres for {n} patterns; give one or one per pattern")
    if np.any(pc[:, 2] <= 0) or not np.all(np.isfinite(pc)):
        raise ValueError(f"pattern centre must be finite with PCz > 0, got {pc[:3].tolist()}")
    return pc


def pixel_directions(shape: tuple[int, int], pc) -> np.ndarray:
    """Unit directions of the pixel centres in the detector frame.

    Parameters
    ----------
    shape
        Pattern shape ``(rows, columns)``.
    pc
        Pattern centre ``(PCx, PCy, PCz)`` in the Bruker convention (as on
        ``EBSD.detector``).

    Returns
    -------
    numpy.ndarray
        ``(rows, columns, 3)`` unit vectors, the same directions kikuchipy uses
        to project master patterns (before the sample-to-detector rotation).
    """
    nrows, ncols = shape
    pcx, pcy, pcz = (float(v) for v in np.asarray(pc, dtype=np.float64).ravel()[:3])
    aspect = ncols / nrows
    # kikuchipy's gnomonic bounds; pixel centres at half steps
    x = (-aspect * pcx / pcz) + (np.arange(ncols) + 0.5) * (aspect / pcz) / ncols
    y = (pcy / pcz) - (np.arange(nrows) + 0.5) * (1.0 / pcz) / nrows
    gx, gy = np.meshgrid(x, y)
    r = np.stack([gx, gy, np.ones_like(gx)], axis=-1)
    return r / np.linalg.norm(r, axis=-1, keepdims=True)


def band_trace_distance(shape: tuple[int, int], pc, normals: np.ndarray) -> np.ndarray:
    """Angular distance (rad) of every pixel centre from the trace of each band.

    A band's centre line on the detector is the gnomonic projection of the
    great circle of its plane normal ``n``; a pixel of direction ``r``
    (:func:`pixel_directions`) lies ``arcsin |r . n|`` from that plane, the
    same distance :func:`measure_band_profiles` bins a band's profile by. A
    band of angular full width ``w`` covers the pixels with distance
    ``<= w / 2``.

    Parameters
    ----------
    shape
        Pattern shape ``(rows, columns)``.
    pc
        Pattern centre ``(PCx, PCy, PCz)`` in the Bruker convention.
    normals
        ``(k, 3)`` (or ``(3,)``) plane normals in the detector frame (sign and
        length arbitrary, not zero).

    Returns
    -------
    numpy.ndarray
        ``(k, rows, columns)`` (or ``(rows, columns)``) float32 distances in
        ``[0, pi / 2]``.
    """
    nv = np.asarray(normals, dtype=np.float64)
    single = nv.ndim == 1
    nv = nv.reshape(-1, 3)
    norm = np.linalg.norm(nv, axis=1, keepdims=True)
    if not np.all(np.isfinite(nv)) or np.any(norm == 0):
        raise ValueError("band normals must be finite and non-zero")
    nv = nv / norm
    r = pixel_directions(shape, _pc_array(pc, 1)[0])
    d = np.arcsin(np.clip(np.abs(np.einsum("ijc,kc->kij", r, nv)), 0, 1)).astype(np.float32)
    return d[0] if single else d


def pixel_angle(shape, pc) -> np.ndarray:
    """Angular size (rad) of a pixel near the pattern centre, ``1 / (PCz * rows)``,
    for detector shape(s) ``(rows, columns)`` and pattern centre(s) (Bruker)."""
    shape = np.asarray(shape, np.float64).reshape(-1, 2)
    pc = np.asarray(pc, np.float64).reshape(-1, 3)
    return 1.0 / (pc[:, 2] * shape[:, 0])


def _gnomonic_matrix(shape, pc) -> np.ndarray:
    """3x3 M taking homogeneous (u, v, 1) screen fractions (u from the left,
    v from the top) to homogeneous gnomonic (x, y, 1) (bands.pixel_directions)."""
    rows, cols = shape
    pcx, pcy, pcz = (float(v) for v in pc)
    aspect = cols / rows
    return np.array([[aspect / pcz, 0, -aspect * pcx / pcz], [0, -1 / pcz, pcy / pcz], [0, 0, 1]])


def pc_map(shape, pc_from, pc_to) -> np.ndarray:
    """3x3 ``A`` taking a direction from the source point seen with
    ``pc_from`` to the direction of the same screen point seen with ``pc_to``
    (``d_to`` parallel to ``A d_from``): a wrong PC is a linear map."""
    return _gnomonic_matrix(shape, pc_to) @ np.linalg.inv(_gnomonic_matrix(shape, pc_from))


def change_pc(normals: np.ndarray, shape, pc_from, pc_to) -> np.ndarray:
    """Band normals (..., 3) seen with ``pc_from`` as they are seen with
    ``pc_to``: the same line on the screen, another source point."""
    A = pc_map(shape, pc_from, pc_to)  # x_from -> x_to
    out = np.asarray(normals, dtype=np.float64) @ np.linalg.inv(A)  # n_to = inv(A)^T n_from
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def to_sample_frame(normals: np.ndarray, detector) -> np.ndarray:
    """Rotate detector-frame vectors into the sample frame of ``detector``
    (its sample tilt, detector tilt, azimuthal and twist angles), as kikuchipy
    does for pixel directions."""
    m = (~detector.sample_to_detector).to_matrix().squeeze()
    return np.asarray(normals) @ m.T


def _import_band_detect():
    """PyEBSDIndex's ``BandDetect``, imported without letting PyEBSDIndex change
    the process environment: it sets ``NUMBA_CACHE_DIR`` to its own folder on
    import, which child processes (e.g. Jupyter kernels) inherit and which made
    them crash loading kikuchipy's cached numba functions."""
    import os

    had = "NUMBA_CACHE_DIR" in os.environ
    old = os.environ.get("NUMBA_CACHE_DIR")
    try:
        from pyebsdindex.band_detect import BandDetect
    finally:
        if had:
            os.environ["NUMBA_CACHE_DIR"] = old
        else:
            os.environ.pop("NUMBA_CACHE_DIR", None)
    return BandDetect


@lru_cache(maxsize=8)
def _band_detector(shape: tuple[int, int], n_bands: int):
    BandDetect = _import_band_detect()

    return BandDetect(
        patDim=shape, nTheta=180, nRho=90, tSigma=1.0, rSigma=1.2, rhoMaskFrac=0.1, nBands=n_bands
    )


def detect_bands(
    patterns: np.ndarray,
    pc,
    n_bands: int = 16,
    widths: bool = True,
) -> BandSet:
    """Find the Kikuchi bands of patterns and return them as plane normals.

    Parameters
    ----------
    patterns
        ``(n, rows, columns)`` or ``(rows, columns)`` patterns, background
        removed or raw (PyEBSDIndex's Radon filter suppresses smooth background).
        Patterns larger than twice :data:`DETECT_SIZE` are binned for the peak
        search; profiles are measured at full resolution.
    pc
        Pattern centre(s) in the Bruker convention: one ``(3,)`` or ``(n, 3)``.
    n_bands
        Bands to find per pattern (strongest Radon peaks).
    widths
        Measure widths and contrasts from the band profiles.

    Returns
    -------
    BandSet
    """
    pats = np.asarray(patterns, dtype=np.float32)
    if pats.ndim == 2:
        pats = pats[None]
    if pats.ndim != 3:
        raise ValueError(f"patterns must be (n, rows, columns), got shape {pats.shape}")
    n, nrows, ncols = pats.shape
    if min(nrows, ncols) < 16:
        raise ValueError(f"patterns of {nrows} x {ncols} px are too small to find bands in (need >= 16 px)")
    pcs = _pc_array(pc, n)
    f = max(1, min(nrows, ncols) // DETECT_SIZE)
    det_pats, det_pcs = pats, pcs
    if f > 1:
        # bin f x f (trimming the remainder; the PC fractions follow the trimmed size)
        r, c = (nrows // f) * f, (ncols // f) * f
        det_pats = pats[:, :r, :c].reshape(n, r // f, f, c // f, f).mean(axis=(2, 4))
        det_pcs = pcs * np.array([ncols / c, nrows / r, nrows / r])
    bd = _band_detector(det_pats.shape[1:], int(n_bands))
    data = bd.find_bands(np.ascontiguousarray(det_pats, dtype=np.float32))
    normals = bd.radonPlan.radon2pole(data, PC=det_pcs.astype(np.float32), vendor="BRUKER").astype(np.float64)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-12)
    strength = data["max"].astype(np.float64)
    valid = (data["valid"] > 0) & np.isfinite(normals).all(-1)
    width = np.full((n, n_bands), np.nan)
    contrast = np.full((n, n_bands), np.nan)
    if widths:
        for i in range(n):
            normals[i], width[i], contrast[i] = measure_band_profiles(pats[i], pcs[i], normals[i], valid[i])
    return BandSet(normals, strength, width, contrast, valid)


def _flat_field(pattern: np.ndarray) -> np.ndarray:
    p = pattern.astype(np.float64)
    p = p - p.min() + 1e-3 * (np.ptp(p) + 1e-12)
    q = p / ndimage.gaussian_filter(p, max(p.shape) / 8.0, mode="nearest")
    return (q - q.mean()) / (q.std() + 1e-12)


def _edge(x: np.ndarray, d: np.ndarray, i: int) -> float:
    """Sub-bin position of the extremum of ``d`` at index ``i`` (parabola)."""
    if 0 < i < len(d) - 1:
        a, b, c = d[i - 1], d[i], d[i + 1]
        den = a - 2 * b + c
        off = 0.5 * (a - c) / den if den != 0 else 0.0
        return float(x[i] + np.clip(off, -1, 1) * (x[1] - x[0]))
    return float(x[i])


def measure_band_profiles(
    pattern: np.ndarray, pc, normals: np.ndarray, valid: np.ndarray | None = None,
    min_width_px: float = MIN_WIDTH_PX,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measure each band's width from its intensity profile and re-centre it.

    The pattern is flat-fielded (divided by a heavy blur) and its pixels are
    binned by their signed angular distance from each band's plane. The band
    edges are the steepest rise and fall of that profile on either side of the
    centre; the width is their distance and the band normal is moved so that
    the plane passes midway between them.

    Returns
    -------
    normals, width, contrast
        Refined ``(k, 3)`` normals, ``(k,)`` full widths in radians and
        ``(k,)`` contrasts; NaN widths where the profile does not resolve the
        band (fewer than MIN_WIDTH_PX pixels across, or no clear edges).
    """
    k = len(normals)
    valid = np.ones(k, bool) if valid is None else np.asarray(valid, bool)
    r = pixel_directions(pattern.shape, pc).reshape(-1, 3)
    img = _flat_field(pattern).ravel()
    px = float(pixel_angle(pattern.shape, pc)[0])
    step = max(px / 2.0, np.deg2rad(0.05))
    edges = np.arange(-PROFILE_HALF_WINDOW, PROFILE_HALF_WINDOW + step / 2, step)
    centres = 0.5 * (edges[1:] + edges[:-1])
    out_n = np.array(normals, dtype=np.float64, copy=True)
    width = np.full(k, np.nan)
    contrast = np.full(k, np.nan)
    for j in range(k):
        if not valid[j]:
            continue
        n = out_n[j]
        a = np.arcsin(np.clip(r @ n, -1, 1))
        sel = np.abs(a) < PROFILE_HALF_WINDOW
        if sel.sum() < 20:
            continue
        idx = np.digitize(a[sel], edges) - 1
        cnt = np.bincount(idx, minlength=len(centres))[: len(centres)]
        tot = np.bincount(idx, weights=img[sel], minlength=len(centres))[: len(centres)]
        ok = cnt > 0
        if ok.sum() < len(centres) // 2:
            continue
        prof = np.interp(centres, centres[ok], tot[ok] / cnt[ok])
        prof = ndimage.gaussian_filter1d(prof, max(1.0, px / step / 2))
        d = np.gradient(prof, centres)
        # edges within the window, not at its borders: the band is at most
        # 2 x 5 deg wide at any EBSD voltage and d-spacing that gives bands
        neg = (centres < 0) & (centres > -PROFILE_HALF_WINDOW * 0.85)
        pos = (centres > 0) & (centres < PROFILE_HALF_WINDOW * 0.85)
        i_rise = np.flatnonzero(neg)[np.argmax(d[neg])]
        i_fall = np.flatnonzero(pos)[np.argmin(d[pos])]
        a_rise = _edge(centres, d, i_rise)
        a_fall = _edge(centres, d, i_fall)
        w = a_fall - a_rise
        if not (d[i_rise] > 0 and d[i_fall] < 0) or w < min_width_px * px:
            continue
        inside = np.abs(centres - 0.5 * (a_rise + a_fall)) < 0.5 * w
        outside = (np.abs(centres - 0.5 * (a_rise + a_fall)) > 0.5 * w) & (np.abs(centres) < 1.5 * w)
        if inside.any() and outside.any():
            contrast[j] = prof[inside].mean() - prof[outside].mean()
        width[j] = w
        c = 0.5 * (a_rise + a_fall)
        # move the plane by c towards its own side: n' = cos c n - sin c g, with g
        # the in-plane direction at the middle of the band's visible trace
        g = r[sel][np.abs(a[sel]) < 0.5 * w].mean(axis=0) if np.any(np.abs(a[sel]) < 0.5 * w) else r[sel].mean(0)
        g = g - (g @ n) * n
        gn = np.linalg.norm(g)
        if gn > 0:
            g /= gn
            n2 = np.cos(c) * n - np.sin(c) * g
            out_n[j] = n2 / np.linalg.norm(n2)
    return out_n, width, contrast
