"""Model inputs from a pattern's bands and its reconstructed lattice.

ONE function, :func:`band_features`, turns the bands of patterns
(:class:`kikuchipy_cnn.bands.BandSet`) into the fixed-length, orientation-
invariant vectors that band models read; training and inference both call it.
:data:`FEATURE_VERSION` names the recipe; a model card states the version its
model was trained on, and inference refuses a mismatch.

Groups (see :func:`feature_names`):

- ``ladder``: one-hot Bravais lattice of the reconstructed cell's metric at each
  tolerance of :data:`kikuchipy_cnn.lattice.METRIC_TOLERANCES`;
- ``candidate``: per Bravais lattice, the tolerance at which it appears and how
  much worse its idealised cell fits the bands than the free cell;
- ``fit``: lattice found, bands indexed, residuals, reduced-cell shape;
- ``directions``: the same ladder, candidates (without lengths) and fit for
  the lattice rebuilt from band directions alone (``use_widths=False``;
  widths of small and real patterns mislead the first);
- ``geometry``: histogram of angles between the strongest bands, zone
  multiplicities, relative widths;
- ``detector``: angular pixel size and whether widths were measurable.
"""

from __future__ import annotations

import numpy as np

from kikuchipy_cnn.bands import bragg_angles
from kikuchipy_cnn.lattice import METRIC_TOLERANCES, length_scale, reconstruct_lattice
from kikuchipy_cnn.symmetry import BRAVAIS_LATTICES

__all__ = [
    "FEATURE_VERSION",
    "MAX_VIEWS",
    "POOLED_VERSION",
    "band_features",
    "feature_names",
    "pattern_features",
    "pooled_feature_names",
    "pooled_features",
    "width_sigma",
]

#: Version of the feature recipe (bump on any change of meaning or order).
FEATURE_VERSION = "bands-2"

#: Version of the pooled recipe (:func:`pooled_features`) over :data:`FEATURE_VERSION`
POOLED_VERSION = FEATURE_VERSION + "-views-1"

#: Views beyond which the view-count entry of :func:`pooled_features` saturates
#: (the largest bags the pooled models are trained on)
MAX_VIEWS = 12

_N_ANGLE_BINS = 18  # 0-90 deg in 5 deg bins
_N_TOP = 12  # strongest bands used for the geometry group
_N_ZONES = 5
_N_WIDTHS = 10
_ABSENT = 3.0  # log-ratio stand-in for a lattice not on the ladder


def feature_names() -> list[str]:
    """Names of the feature vector's entries, in order."""
    names = [f"ladder_{t:g}_{b}" for t in METRIC_TOLERANCES for b in BRAVAIS_LATTICES]
    names += [f"cand_tol_{b}" for b in BRAVAIS_LATTICES]
    names += [f"cand_angle_{b}" for b in BRAVAIS_LATTICES]
    names += [f"cand_length_{b}" for b in BRAVAIS_LATTICES]
    names += [
        "fit_found", "fit_indexed_fraction", "fit_rms_angle_deg", "fit_rms_log_length",
        "fit_b_over_a", "fit_c_over_a", "fit_cos_alpha", "fit_cos_beta", "fit_cos_gamma",
        "fit_max_index",
    ]  # fmt: skip
    names += [f"dir_ladder_{t:g}_{b}" for t in METRIC_TOLERANCES for b in BRAVAIS_LATTICES]
    names += [f"dir_cand_tol_{b}" for b in BRAVAIS_LATTICES]
    names += [f"dir_cand_angle_{b}" for b in BRAVAIS_LATTICES]
    names += [
        "dir_fit_found", "dir_fit_indexed_fraction", "dir_fit_rms_angle_deg", "dir_fit_b_over_a",
        "dir_fit_c_over_a", "dir_fit_cos_alpha", "dir_fit_cos_beta", "dir_fit_cos_gamma", "dir_fit_max_index",
    ]  # fmt: skip
    names += [f"geom_angle_{5 * i}_{5 * i + 5}" for i in range(_N_ANGLE_BINS)]
    names += [f"geom_zone_{i}" for i in range(_N_ZONES)]
    names += [f"geom_width_{i}" for i in range(_N_WIDTHS)]
    names += ["geom_n_bands", "geom_width_fraction", "det_pixel_deg"]
    return names


def _geometry(normals, widths, strength) -> np.ndarray:
    order = np.argsort(-strength)[:_N_TOP]
    n = normals[order]
    k = len(n)
    out = np.zeros(_N_ANGLE_BINS + _N_ZONES + _N_WIDTHS)
    if k >= 2:
        cos = np.abs(n @ n.T)[np.triu_indices(k, 1)]
        ang = np.degrees(np.arccos(np.clip(cos, 0, 1)))
        h = np.histogram(ang, bins=_N_ANGLE_BINS, range=(0, 90))[0]
        out[:_N_ANGLE_BINS] = h / max(h.sum(), 1)
    if k >= 3:
        # zone axes: pair cross products; bands through a zone are ~ perpendicular to it
        i, j = np.triu_indices(k, 1)
        z = np.cross(n[i], n[j])
        zn = np.linalg.norm(z, axis=1)
        z = z[zn > 0.1] / zn[zn > 0.1, None]
        mult = (np.abs(z @ n.T) < np.sin(np.radians(1.5))).sum(1)
        # a zone of m bands appears m(m-1)/2 times: count each once
        zs = []
        for zz, m in sorted(zip(z, mult), key=lambda t: -t[1]):
            if all(abs(zz @ y) < 0.9998 for y in zs):
                zs.append(zz)
                out[_N_ANGLE_BINS + len(zs) - 1] = m / _N_TOP
            if len(zs) == _N_ZONES:
                break
    w = widths[order]
    w = np.sort(w[np.isfinite(w)])[::-1][:_N_WIDTHS]
    if w.size:
        out[_N_ANGLE_BINS + _N_ZONES : _N_ANGLE_BINS + _N_ZONES + w.size] = w / w[0]
    return out


def width_sigma(widths, pixel_angle: float) -> np.ndarray:
    """Expected error of each measured log width: a profile edge is good to about
    0.3 px, so ``0.6 / (width in px)``, between 0.06 and 0.4 (measured on
    dynamical simulations: width / 2 theta_B quartiles 0.79-1.17 for bands 2-4 px
    wide, 0.75-0.94 at 4-8 px, 0.76-0.92 at 8-16 px)."""
    w_px = np.asarray(widths, np.float64) / float(pixel_angle)
    return np.clip(0.6 / np.where(np.isfinite(w_px) & (w_px > 0), w_px, 1.0), 0.06, 0.4)


def _lattice_block(fit, n_bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ladder one-hots ``(T, B)``, candidates ``(3, B)`` (tolerance reached,
    log angle and log length residual against the free cell) and fit summary
    ``(10,)`` of a :class:`~kikuchipy_cnn.lattice.LatticeFit` (or None)."""
    nb = len(BRAVAIS_LATTICES)
    ladder = np.zeros((len(METRIC_TOLERANCES), nb))
    cand = np.full((3, nb), _ABSENT)
    cand[0] = 1.0  # "appears" at tolerance 1 = never
    fitf = np.zeros(10)
    if fit is None:
        return ladder, cand, fitf
    idx = {b: i for i, b in enumerate(BRAVAIS_LATTICES)}
    for t, (_, b) in enumerate(fit.symmetry):
        ladder[t, idx[b]] = 1.0
    free_a = max(fit.rms_angle, np.radians(0.05))
    free_l = max(fit.rms_log_length, 0.01) if np.isfinite(fit.rms_log_length) else 0.01
    for b, (tol, ra, rl, _) in fit.candidates.items():
        cand[0, idx[b]] = tol
        cand[1, idx[b]] = np.log(max(ra, 1e-6) / free_a)
        cand[2, idx[b]] = np.log(max(rl, 1e-6) / free_l) if np.isfinite(rl) else 0.0
    p = fit.parameters
    a, b_, c = np.sort(p[:3])
    fitf[:] = [
        1.0, fit.n_indexed / n_bands, np.degrees(fit.rms_angle),
        fit.rms_log_length if np.isfinite(fit.rms_log_length) else 0.0,
        b_ / a, c / a, *np.abs(np.cos(np.radians(p[3:]))), np.abs(fit.hkl).max() / 4.0,
    ]  # fmt: skip
    return ladder, cand, fitf


def pattern_features(normals, widths, strength, wavelength: float, pixel_angle: float,
                     sigma_length: float | None = None, cell: np.ndarray | None = None,
                     cell_scale: np.ndarray | None = None) -> np.ndarray:
    """Feature vector of one pattern's valid bands (see :func:`band_features`);
    ``cell``, a ``(3, 3)`` array if given, receives the Niggli cell of the
    lattice rebuilt from the band directions (NaN when none), and
    ``cell_scale``, a ``(1,)`` array if given, the factor that takes that cell
    to Å (:func:`~kikuchipy_cnn.lattice.length_scale` from the calibrated
    widths, :func:`~kikuchipy_cnn.bands.bragg_angles`; NaN when none)."""
    normals = np.asarray(normals, np.float64)
    widths = np.asarray(widths, np.float64)
    strength = np.asarray(strength, np.float64)
    if sigma_length is None:
        sigma_length = width_sigma(widths, pixel_angle)
    fit = fit_dir = None
    if len(normals):
        fit = reconstruct_lattice(normals, widths, strength, wavelength, sigma_length=sigma_length)
        fit_dir = reconstruct_lattice(normals, widths, strength, wavelength, use_widths=False)
    if cell is not None:
        cell[...] = np.nan if fit_dir is None else fit_dir.direct
    if cell_scale is not None:
        cell_scale[...] = np.nan if fit_dir is None else length_scale(
            fit_dir, bragg_angles(widths), wavelength)
    ladder, cand, fitf = _lattice_block(fit, max(len(normals), 1))
    dladder, dcand, dfit = _lattice_block(fit_dir, max(len(normals), 1))
    dfit = np.delete(dfit, 3)  # no length residual without widths
    geom = _geometry(normals, widths, strength)
    tail = [len(normals) / 24.0, float(np.isfinite(widths).mean()) if len(widths) else 0.0, np.degrees(pixel_angle)]
    return np.concatenate([ladder.ravel(), cand.ravel(), fitf, dladder.ravel(), dcand[:2].ravel(), dfit,
                           geom, tail]).astype(np.float32)


def band_features(bands, wavelength, pixel_angle, cells: np.ndarray | None = None,
                  cell_scales: np.ndarray | None = None) -> np.ndarray:
    """Feature vectors ``(n, F)`` float32 of patterns' bands.

    Parameters
    ----------
    bands
        :class:`kikuchipy_cnn.bands.BandSet` of ``n`` patterns.
    wavelength
        Electron wavelength(s) in Å: scalar or ``(n,)``.
    pixel_angle
        Angular size of a pixel near the pattern centre (rad): ``1 / (PCz *
        rows)``; scalar or ``(n,)``.
    cells
        ``(n, 3, 3)`` float array or None: if given, receives each pattern's
        lattice rebuilt from its band directions alone (Niggli cell, rows the
        basis vectors; its scale is arbitrary, its shape is not; NaN where
        none was found), made in the same pass as the features.
    cell_scales
        ``(n,)`` float array or None: if given, receives the factor that takes
        each of those cells to Å (``cells[i] * cell_scales[i]``), from the
        pattern's calibrated band widths and ``wavelength``
        (:func:`~kikuchipy_cnn.lattice.length_scale`); NaN where no cell or
        fewer than three of its indexed bands have a width.
    """
    n = bands.normals.shape[0]
    if cells is not None and np.shape(cells) != (n, 3, 3):
        raise ValueError(f"cells must be ({n}, 3, 3), not {np.shape(cells)}")
    if cell_scales is not None and np.shape(cell_scales) != (n,):
        raise ValueError(f"cell_scales must be ({n},), not {np.shape(cell_scales)}")
    lam = np.broadcast_to(np.asarray(wavelength, np.float64), (n,))
    pa = np.broadcast_to(np.asarray(pixel_angle, np.float64), (n,))
    out = np.empty((n, len(feature_names())), np.float32)
    for i in range(n):
        v = bands.valid[i]
        out[i] = pattern_features(bands.normals[i][v], bands.width[i][v], bands.strength[i][v], lam[i], pa[i],
                                  cell=None if cells is None else cells[i],
                                  cell_scale=None if cell_scales is None else cell_scales[i : i + 1])
    return out


def pooled_feature_names() -> list[str]:
    """Names of the entries of :func:`pooled_features`, in order."""
    base = feature_names()
    return ([f"mean_{n}" for n in base] + [f"sd_{n}" for n in base] + [f"q90_{n}" for n in base]
            + ["log_views"])


def pooled_features(features, views=None) -> np.ndarray:
    """One orientation-invariant vector from the band features of many
    patterns of one phase, seen in several *views* (grains: orientations).

    Each view's patterns are averaged first (patterns of one grain show the
    same bands, so a grain counts once, however many patterns it has);
    then, over the views, the mean (e.g. the fraction of views whose
    lattice reaches each Bravais lattice at each tolerance), the standard
    deviation and the 90th percentile of every feature, and the log of the
    number of views (saturating at :data:`MAX_VIEWS`). Training (bags of
    band sets of one structure at random orientations, one view each) and
    inference (a discovered phase's patterns and grains) both call this.

    Parameters
    ----------
    features
        ``(n, F)`` :func:`band_features` of the patterns.
    views
        ``(n,)`` view (grain) label per pattern; default: each pattern its
        own view.

    Returns
    -------
    np.ndarray
        ``(3 F + 1,)`` float32 (see :func:`pooled_feature_names`).
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features must be (n, F) with n >= 1, not {x.shape}")
    if views is None:
        per_view = x
    else:
        views = np.asarray(views)
        if views.shape != x.shape[:1]:
            raise ValueError(f"views must be (n,) = {x.shape[:1]}, not {views.shape}")
        _, inv = np.unique(views, return_inverse=True)
        count = np.bincount(inv)
        per_view = np.zeros((count.size, x.shape[1]))
        np.add.at(per_view, inv, x)
        per_view /= count[:, None]
    m = len(per_view)
    return np.concatenate([
        per_view.mean(0), per_view.std(0), np.quantile(per_view, 0.9, axis=0),
        [np.log(min(m, MAX_VIEWS)) / np.log(MAX_VIEWS)],
    ]).astype(np.float32)  # fmt: skip
