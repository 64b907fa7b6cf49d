"""The reciprocal lattice of a pattern from its bands, reduced and classified.

A Kikuchi band of plane (hkl) is the trace of the reciprocal-lattice vector
``g_hkl``: its normal gives the direction and its angular width, twice the Bragg
angle, the length ``|g| = 1/d = 2 sin(w/2) / lambda``. A band set is therefore a
noisy sample of the reciprocal lattice, and the lattice can be rebuilt from it:

1. :func:`reciprocal_vectors`: bands to vectors (lengths where widths exist).
2. :func:`candidate_bases`: bases from non-coplanar triples of strong bands, also
   divided by small integers (the primitive cell can be finer than any triple);
   without widths, :func:`direction_bases`: the triple's length ratios voted
   for by the other bands.
3. :func:`index_bands`: each band's integer indices in a basis, with a cost.
4. :func:`refine_basis`: least squares of directions and log-lengths.
5. :func:`generated_sublattice`: the lattice the indexed bands generate (Hermite
   normal form), so a too-fine basis collapses onto the observed lattice.
6. :func:`niggli_cell` (spglib) and :func:`lattice_symmetry`: the reduced direct
   cell and the Bravais lattice its metric has at a ladder of tolerances, like
   cctbx's ``lattice_symmetry`` or DIALS' metric-symmetry analysis.

:func:`reconstruct_lattice` runs the whole chain and returns a
:class:`LatticeFit`. Directions are in any fixed frame (the detector frame of
:mod:`kikuchipy_cnn.bands`); cells are returned with basis vectors as rows,
lengths in Å, no factor 2 pi. Widths measured from profiles are not 2 theta_B:
over all bands they are about 10 % narrow (:data:`kikuchipy_cnn.bands.WIDTH_TO_BRAGG`),
bands truly under 2 px wide come out too wide and the wider ones too narrow, so
cells fitted to raw widths carry that error in their lengths; angles and ratios do not.
:func:`length_scale` gives a cell rebuilt from directions its size in Å from
calibrated widths (:func:`kikuchipy_cnn.bands.bragg_angles`).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

import numpy as np

from kikuchipy_cnn.bands import d_spacing

__all__ = [
    "LatticeFit",
    "METRIC_TOLERANCES",
    "MAX_RATIO",
    "RATIO_BIN",
    "CELL_AGREEMENT",
    "FINGERPRINT_VECTORS",
    "candidate_bases",
    "CONSENSUS_HYPOTHESES",
    "cell_fingerprint",
    "cell_fingerprints",
    "cell_parameters",
    "cell_shape",
    "consensus_cell",
    "direction_bases",
    "generated_sublattice",
    "conventional_cell",
    "index_bands",
    "lattice_matrix",
    "lattice_symmetry",
    "lattice_vector_lengths",
    "length_scale",
    "metric_candidates",
    "niggli_cell",
    "reciprocal_vectors",
    "reconstruct_lattice",
    "refine_basis",
]

#: Relative metric tolerances of :func:`lattice_symmetry` (spglib ``symprec`` on
#: a cell scaled to unit volume; angle tolerance in degrees = 100 x this).
METRIC_TOLERANCES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08)

#: Bin (in log length ratio) and largest ratio of the length votes of
#: :func:`direction_bases` (bases from band directions alone).
RATIO_BIN = 0.04
MAX_RATIO = 4.0

#: Space group of a one-atom cell per Bravais lattice (its holohedry).
_HOLOHEDRY_SG = {
    "aP": 2, "mP": 10, "mC": 12, "oP": 47, "oC": 65, "oF": 69, "oI": 71,
    "tP": 123, "tI": 139, "hR": 166, "hP": 191, "cP": 221, "cF": 225, "cI": 229,
}  # fmt: skip


def reciprocal_vectors(normals, widths, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-lattice vectors of bands.

    Parameters
    ----------
    normals
        ``(k, 3)`` unit plane normals.
    widths
        ``(k,)`` angular full widths (2 theta) in radians; NaN where unknown.
    wavelength
        Electron wavelength in Å.

    Returns
    -------
    g
        ``(k, 3)`` vectors in 1/Å (``|g| = 1/d``); unit length where the width
        is unknown.
    has_length
        ``(k,)`` True where the length is measured.
    """
    n = np.asarray(normals, dtype=np.float64)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    w = np.asarray(widths, dtype=np.float64)
    has = np.isfinite(w) & (w > 0)
    length = np.where(has, 2 * np.sin(np.where(has, w, 0) / 2) / wavelength, 1.0)
    return n * length[:, None], has


def lattice_matrix(a, b, c, alpha, beta, gamma) -> np.ndarray:
    """Direct lattice vectors as rows (units of ``a``, ``b``, ``c``), a along x,
    b in the xy plane, from cell parameters (angles in degrees); the inverse of
    :func:`cell_parameters`."""
    al, be, ga = np.radians([alpha, beta, gamma])
    ax = np.array([a, 0, 0])
    bx = np.array([b * np.cos(ga), b * np.sin(ga), 0])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz = np.sqrt(max(c**2 - cx**2 - cy**2, 0.0))
    return np.array([ax, bx, [cx, cy, cz]])


def cell_parameters(basis: np.ndarray) -> np.ndarray:
    """``(a, b, c, alpha, beta, gamma)`` (degrees) of a cell with rows as basis vectors."""
    a = np.asarray(basis, dtype=np.float64)
    L = np.linalg.norm(a, axis=1)

    def ang(i, j):
        return np.degrees(np.arccos(np.clip(a[i] @ a[j] / (L[i] * L[j]), -1, 1)))

    return np.array([L[0], L[1], L[2], ang(1, 2), ang(0, 2), ang(0, 1)])


#: Lattice vectors (one of each ±v pair) in :func:`cell_fingerprint`
FINGERPRINT_VECTORS = 12

#: Two lattices have one shape when their fingerprints agree to this
#: (largest ``|log|`` ratio of corresponding entries; :func:`consensus_cell`)
CELL_AGREEMENT = 0.05

_FP_RANGE = 4  # coefficients -4..4 reach the shortest vectors of reduced cells


def _half_space_coefficients(m: int) -> np.ndarray:
    c = np.stack(np.meshgrid(*[np.arange(-m, m + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    first = np.where(c[:, 0] != 0, c[:, 0], np.where(c[:, 1] != 0, c[:, 1], c[:, 2]))
    return c[first > 0]  # one of each ±v pair, no zero vector


_FP_COEFF = _half_space_coefficients(_FP_RANGE)


def cell_fingerprints(cells: np.ndarray, n: int = FINGERPRINT_VECTORS) -> np.ndarray:
    """:func:`cell_fingerprint` of many cells ``(m, 3, 3)`` at once: ``(m, n)``
    (in blocks, a few MB at a time). The cells must be finite and
    non-degenerate."""
    length = lattice_vector_lengths(cells, n)
    return length / length[:, :1]


def lattice_vector_lengths(cells: np.ndarray, n: int = FINGERPRINT_VECTORS) -> np.ndarray:
    """``(m, n)`` lengths of the ``n`` shortest lattice vectors (one of each ±v
    pair, ascending; in the cells' units) of cells ``(m, 3, 3)`` (rows the basis
    vectors; reduced, finite, non-degenerate), in blocks of a few MB. The
    first column is the shortest vector (a Niggli cell's ``a``)."""
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3)
    out = np.empty((len(cells), n))
    for start in range(0, len(cells), 1024):
        block = cells[start : start + 1024]
        out[start : start + 1024] = np.sort(
            np.linalg.norm(np.einsum("kj,mji->mki", _FP_COEFF, block), axis=2), axis=1)[:, :n]
    return out


def cell_fingerprint(direct: np.ndarray, n: int = FINGERPRINT_VECTORS) -> np.ndarray:
    """Basis-free, scale-free shape of a lattice: the lengths of its ``n``
    shortest vectors (one of each ±v pair), divided by the shortest.

    Any two (reduced) bases of one lattice give the same fingerprint, e.g. the
    fcc primitive cells with angles 60, 60, 60 and 90, 120, 120 degrees, so
    cells from different patterns of one phase can be compared.

    Parameters
    ----------
    direct
        ``(3, 3)`` cell, rows the basis vectors (reduced: the shortest vectors
        have coefficients within ±4).

    Returns
    -------
    np.ndarray
        ``(n,)`` ascending, the first entry 1.
    """
    a = np.asarray(direct, dtype=np.float64)
    if a.shape != (3, 3) or not np.isfinite(a).all() or not _non_degenerate(a[None])[0]:
        raise ValueError(f"direct must be a finite non-degenerate (3, 3) cell, not {a!r}")
    return cell_fingerprints(a[None], n)[0]


def _non_degenerate(cells: np.ndarray) -> np.ndarray:
    """Cells whose volume is not negligible against their edge lengths (scale-free)."""
    vol = np.abs(np.linalg.det(cells))
    edges = np.prod(np.linalg.norm(cells, axis=2), axis=1)
    return vol > 1e-9 * edges


def cell_shape(cells: np.ndarray) -> np.ndarray:
    """``(..., 6)`` shape ``(1, b/a, c/a, alpha, beta, gamma)`` (degrees) of
    cells ``(..., 3, 3)`` (rows the basis vectors a, b, c); NaN where a cell
    is not finite."""
    c = np.asarray(cells, dtype=np.float64)
    length = np.linalg.norm(c, axis=-1)

    def angle(i, j):
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.einsum("...k,...k->...", c[..., i, :], c[..., j, :]) / (length[..., i] * length[..., j])
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([length[..., 0] / length[..., 0], length[..., 1] / length[..., 0],
                        length[..., 2] / length[..., 0], angle(1, 2), angle(0, 2), angle(0, 1)], axis=-1)
    return out


#: At most this many cells (the heaviest) are tried as the consensus by
#: :func:`consensus_cell`; every cell still counts in their support
CONSENSUS_HYPOTHESES = 512


def consensus_cell(cells: np.ndarray, weights: np.ndarray | None = None,
                   tolerance: float = CELL_AGREEMENT) -> tuple[int, float]:
    """The cell most of a set of cells agree with (e.g. the reduced cells of
    the grains of one phase).

    Each cell's *support* is the summed weight of the cells whose
    :func:`cell_fingerprint` agrees with its own to ``tolerance`` (largest
    ``|log|`` ratio); the consensus is the cell with the most support (ties:
    the smallest weighted sum of fingerprint distances), i.e. a weighted
    medoid, among the :data:`CONSENSUS_HYPOTHESES` heaviest cells (all of
    them count in the support). Cells are compared by shape only, not size.
    Time and memory grow as ``min(m, 512) * m`` for ``m`` cells.

    Parameters
    ----------
    cells
        ``(m, 3, 3)`` cells (rows basis vectors); cells with non-finite
        entries or no volume are left out.
    weights
        ``(m,)`` non-negative weights; default 1.
    tolerance
        Agreement of fingerprints.

    Returns
    -------
    index, support
        Index into ``cells`` of the consensus cell (-1 when no cell is
        usable) and its support as a fraction of the total weight of the
        usable cells.
    """
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3)
    w = np.ones(len(cells)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(cells),) or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be (m,) = ({len(cells)},) finite and >= 0")
    finite = np.isfinite(cells).all(axis=(1, 2))
    ok = np.flatnonzero(finite)
    ok = ok[_non_degenerate(cells[ok])]
    if ok.size == 0 or w[ok].sum() <= 0:
        return -1, 0.0
    fp = np.log(cell_fingerprints(cells[ok]))
    wk = w[ok]
    hyp = np.argsort(-wk, kind="stable")[:CONSENSUS_HYPOTHESES]
    support = np.empty(len(hyp))
    spread = np.empty(len(hyp))
    step = max(1, 4_000_000 // (len(ok) * fp.shape[1]))
    for start in range(0, len(hyp), step):
        h = hyp[start : start + step]
        dist = np.abs(fp[h][:, None, :] - fp[None, :, :]).max(axis=2)
        support[start : start + step] = (dist <= tolerance) @ wk
        spread[start : start + step] = dist @ wk
    best = np.lexsort((spread, -support))[0]
    return int(ok[hyp[best]]), float(support[best] / wk.sum())


@contextmanager
def _quiet_spglib():
    """spglib's C code prints "No centring was found." and the like for loose
    tolerances on nearly degenerate cells, and a deprecation notice from Python:
    neither is for our users' consoles. ``SPGLIB_WARNING=OFF`` only while spglib
    runs; the environment is restored."""
    had = "SPGLIB_WARNING" in os.environ
    old = os.environ.get("SPGLIB_WARNING")
    os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if had:
            os.environ["SPGLIB_WARNING"] = old
        else:
            os.environ.pop("SPGLIB_WARNING", None)


def niggli_cell(direct: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Niggli-reduced direct cell (rows), via :func:`spglib.niggli_reduce`.

    ``eps`` is relative to the cell's size (the cell is scaled to unit volume
    for the reduction and scaled back)."""
    import spglib

    a = np.asarray(direct, dtype=np.float64)
    s = abs(np.linalg.det(a)) ** (1 / 3)
    with _quiet_spglib():
        red = spglib.niggli_reduce(a / s, eps=eps)
    if red is None:
        raise ValueError("spglib could not Niggli-reduce the cell (degenerate basis)")
    return np.asarray(red) * s


def _spglib_metric(a: np.ndarray, s: float, tol: float) -> tuple[float, str, np.ndarray]:
    import spglib

    from kikuchipy_cnn.symmetry import space_group_class

    with _quiet_spglib():
        ds = spglib.get_symmetry_dataset(
            (a, [[0.0, 0.0, 0.0]], [1]), symprec=float(tol), angle_tolerance=100.0 * float(tol)
        )
    if ds is None:
        return float(tol), "aP", a * s
    cell = np.asarray(ds.std_lattice) @ np.asarray(ds.std_rotation_matrix) * s
    return float(tol), space_group_class(int(ds.number)).bravais_lattice, cell


def _ladder(direct: np.ndarray, tolerances) -> list[tuple[float, str, np.ndarray]]:
    """spglib on a one-atom cell along the tolerance ladder: (tolerance, Bravais
    lattice, idealised conventional cell in the orientation of ``direct``).

    Metric symmetry only rises with the tolerance, so the ladder is bisected:
    where two tolerances give the same lattice, the ones between are given it
    without asking spglib (loose tolerances cost it ~45 ms each)."""
    a = np.asarray(direct, dtype=np.float64)
    s = abs(np.linalg.det(a)) ** (1 / 3)
    a = a / s
    tols = sorted(float(t) for t in tolerances)
    res: dict[int, tuple[float, str, np.ndarray]] = {}

    def fill(lo: int, hi: int) -> None:
        for i in (lo, hi):
            if i not in res:
                res[i] = _spglib_metric(a, s, tols[i])
        if hi - lo <= 1:
            return
        if res[lo][1] == res[hi][1]:
            for i in range(lo + 1, hi):
                res[i] = (tols[i], res[lo][1], res[lo][2])
            return
        mid = (lo + hi) // 2
        fill(lo, mid)
        fill(mid, hi)

    fill(0, len(tols) - 1)
    return [res[i] for i in range(len(tols))]


def lattice_symmetry(direct: np.ndarray, tolerances=METRIC_TOLERANCES) -> list[tuple[float, str]]:
    """Bravais lattice of a cell's metric at each tolerance.

    The metric is classified by spglib on a one-atom cell (its space group is the
    lattice's holohedry), with the cell scaled to unit volume so that
    ``symprec`` is relative; the angle tolerance is ``100 x tol`` degrees.

    Returns
    -------
    list of (tolerance, Bravais lattice symbol), from the tightest tolerance.
    The symmetry can only rise with the tolerance.
    """
    return [(t, b) for t, b, _ in _ladder(direct, tolerances)]


def metric_candidates(direct: np.ndarray, g: np.ndarray, has_length: np.ndarray,
                      tolerances=METRIC_TOLERANCES, sigma_angle: float = np.deg2rad(0.5),
                      sigma_length: float = 0.08, ladder=None) -> dict[str, tuple[float, float, float, int]]:
    """How well each Bravais lattice of the metric ladder explains the bands.

    For every distinct lattice that the spglib ladder finds along the
    tolerance ladder, the bands are indexed in its idealised conventional cell
    (overall scale refitted) and the residuals measured: a lattice that needs
    a large tolerance but still fits the bands about as well as the free cell
    is a real candidate; one whose ideal metric misfits the bands is not.

    ``ladder`` reuses a ladder already computed for ``direct`` (spglib is the
    costly step).

    Returns
    -------
    dict
        Bravais symbol -> ``(tolerance first reached, rms angle (rad), rms
        log-length, bands indexed)``, unindexed bands counted at 2 degrees.
    """
    out: dict[str, tuple[float, float, float, int]] = {}
    max_angle = np.deg2rad(2.0)
    for tol, bravais, cell in ladder if ladder is not None else _ladder(direct, tolerances):
        if bravais in out:
            continue
        b = np.linalg.inv(cell).T
        kw = dict(hmax=5, sigma_angle=sigma_angle, sigma_length=sigma_length, max_angle=max_angle, max_length=0.3)
        hkl, _, ok = index_bands(b, g, has_length, **kw)
        if ok.any() and has_length[ok].any():
            lp = np.linalg.norm(hkl[ok] @ b, axis=1)
            scale = np.exp(np.median(np.log(np.linalg.norm(g[ok], axis=1) / lp)[has_length[ok]]))
            b = b * scale
            hkl, _, ok = index_bands(b, g, has_length, **kw)
        gp = hkl @ b
        up = gp / np.linalg.norm(gp, axis=1, keepdims=True)
        ug = g / np.linalg.norm(g, axis=1, keepdims=True)
        ang = np.where(ok, np.arccos(np.clip(np.abs(np.sum(up * ug, 1)), -1, 1)), max_angle)
        dl = np.log(np.linalg.norm(gp, axis=1) / np.linalg.norm(g, axis=1))[ok & has_length]
        out[bravais] = (float(tol), float(np.sqrt(np.mean(ang**2))),
                        float(np.sqrt(np.mean(dl**2))) if dl.size else float("nan"), int(ok.sum()))
    return out


#: Fewest indexed bands with a width that give :func:`length_scale` a scale
MIN_SCALE_BANDS = 3


def length_scale(fit: "LatticeFit", two_theta, wavelength: float,
                 min_bands: int = MIN_SCALE_BANDS) -> float:
    """Factor that takes a lattice rebuilt from band directions to Å.

    A fit from directions alone (``reconstruct_lattice(use_widths=False)``)
    has the right shape at an arbitrary scale. Each of its indexed bands with a
    Bragg angle says how large the cell is: its reflection ``hkl`` has
    ``|hkl @ reciprocal| = s / d`` with ``d = lambda / (2 sin(2 theta / 2))``;
    the scale ``s`` is the median over the bands (in log), so the cell in Å is
    ``s * fit.direct`` (and the reciprocal basis ``fit.reciprocal / s``).
    A band that shows a higher order ``n hkl`` of its plane pulls ``s``
    down by ``n``: the median keeps a minority of those from mattering.

    Parameters
    ----------
    fit
        :class:`LatticeFit` of the bands (any scale).
    two_theta
        ``(k,)`` twice the Bragg angle (rad) of the same bands, NaN where
        unknown: calibrated widths (:func:`kikuchipy_cnn.bands.bragg_angles`).
    wavelength
        Electron wavelength in Å.
    min_bands
        Fewest indexed bands with a finite ``two_theta`` for a scale.

    Returns
    -------
    float
        The scale, NaN with fewer than ``min_bands`` such bands.
    """
    two_theta = np.asarray(two_theta, dtype=np.float64)
    if two_theta.shape != (len(fit.indexed),):
        raise ValueError(f"two_theta must be one per band ({len(fit.indexed)},), not {two_theta.shape}")
    if not (np.isfinite(wavelength) and wavelength > 0):
        raise ValueError(f"wavelength must be a positive number of Å, not {wavelength!r}")
    use = fit.indexed & np.isfinite(two_theta) & (two_theta > 0) & (two_theta < np.pi)
    if use.sum() < min_bands:
        return float("nan")
    d = d_spacing(two_theta[use], wavelength)
    g = np.linalg.norm(fit.hkl[use] @ fit.reciprocal, axis=1)
    return float(np.exp(np.median(np.log(g * d))))


def conventional_cell(direct: np.ndarray, bravais: str,
                      tolerances=METRIC_TOLERANCES) -> tuple[float, np.ndarray] | None:
    """The conventional cell of a Bravais lattice that a reduced cell's metric
    reaches, idealised (spglib on a one-atom cell, as in :func:`lattice_symmetry`).

    Parameters
    ----------
    direct
        ``(3, 3)`` cell (rows the basis vectors; any basis of the lattice).
    bravais
        Bravais lattice symbol, e.g. ``"cF"`` (R lattices come in hexagonal axes).
    tolerances
        The ladder: the cell is the one at the smallest tolerance whose metric
        symmetry is ``bravais``.

    Returns
    -------
    (tolerance, cell) or None
        ``cell`` ``(3, 3)`` rows in the standard setting of the lattice, same
        units as ``direct``; None when no tolerance of the ladder gives
        ``bravais`` (the metric does not have that symmetry: e.g. a cell of
        cubic shape never gives ``"tP"``, nor one of triclinic shape ``"cF"``).
    """
    from kikuchipy_cnn.symmetry import BRAVAIS_LATTICES

    if bravais not in BRAVAIS_LATTICES:
        raise ValueError(f"bravais must be one of {BRAVAIS_LATTICES}, not {bravais!r}")
    a = np.asarray(direct, dtype=np.float64)
    if a.shape != (3, 3) or not np.isfinite(a).all() or not _non_degenerate(a[None])[0]:
        raise ValueError(f"direct must be a finite non-degenerate (3, 3) cell, not {a!r}")
    for tol, b, cell in _ladder(niggli_cell(a), tolerances):
        if b == bravais:
            return tol, cell
    return None


def generated_sublattice(hkl: np.ndarray) -> np.ndarray:
    """Integer basis (3 x 3, rows, Hermite normal form) of the lattice spanned by
    integer vectors ``hkl``; raises ``ValueError`` when they span fewer than 3
    dimensions."""
    m = [[int(v) for v in h] for h in np.asarray(hkl, dtype=np.int64).reshape(-1, 3) if np.any(h)]
    basis: list[list[int]] = []
    for col in range(3):
        # Euclid on this column with integer row operations (echelon form)
        while True:
            nz = sorted((r for r in m if r[col] != 0), key=lambda r: abs(r[col]))
            if len(nz) <= 1:
                break
            piv = nz[0]
            for r in nz[1:]:
                q = r[col] // piv[col]
                for c in range(3):
                    r[c] -= q * piv[c]
        nz = [r for r in m if r[col] != 0]
        if not nz:
            raise ValueError("the indexed bands do not span three dimensions")
        piv = nz[0]
        if piv[col] < 0:
            piv = [-v for v in piv]
        basis.append(piv)
        m = [r for r in m if r[col] == 0 and any(r)]
    return np.array(basis, dtype=np.int64)


def candidate_bases(g: np.ndarray, has_length: np.ndarray, order: np.ndarray, n_top: int = 10,
                    divisors=(1, 2, 3), min_det: float = 0.12) -> np.ndarray:
    """Reciprocal bases ``(m, 3, 3)`` (rows) from non-coplanar triples of the
    ``n_top`` strongest bands with lengths, each also divided by ``divisors``."""
    idx = [i for i in order if has_length[i]][:n_top]
    out = []
    for tri in combinations(idx, 3):
        b = g[list(tri)]
        u = b / np.linalg.norm(b, axis=1, keepdims=True)
        if abs(np.linalg.det(u)) < min_det:
            continue
        for d in divisors:
            out.append(b / d)
    return np.array(out).reshape(-1, 3, 3)


def direction_bases(normals: np.ndarray, order: np.ndarray, n_top: int = 6, hmax: int = 3,
                    n_peaks: int = 6, divisors=(1, 2), min_det: float = 0.12,
                    zero_tolerance: float = 0.05) -> np.ndarray:
    """Reciprocal bases ``(m, 3, 3)`` (rows) from band directions alone.

    Without widths the lengths of a basis triple are unknown. Each
    non-coplanar triple ``E`` of the ``n_top`` strongest bands (``order``)
    is taken with lengths ``(1, r2, r3)``: another band with coefficients
    ``c = n @ inv(E)`` has indices ``h`` (``|h|_inf <= hmax``) only if
    ``c / h`` is proportional to the lengths. So every (band, ``h``) pair
    votes (Hough-like, bins of :data:`RATIO_BIN` in ``(log r2, log r3)``,
    weight ``1 / |h|_inf``, each band counted once per bin and its
    neighbours, with its largest weight there): ``h`` without a zero
    for one point, ``h`` with one zero (the band lies in the plane of two
    basis bands, ``|c_i| <= zero_tolerance |c|``) for the line of the one
    ratio it fixes. The ``n_peaks`` bins most bands agree on give the
    candidate bases, also divided by ``divisors``. The overall scale stays
    arbitrary."""
    u = np.asarray(normals, np.float64)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    table = _hkl_table(hmax).astype(np.float64)
    half = int(np.ceil(np.log(MAX_RATIO) / RATIO_BIN))
    nbin = 2 * half + 1
    centres = RATIO_BIN * (np.arange(nbin) - half)  # log ratios; the middle bin is ratio 1
    full = table[np.all(table != 0, axis=1)]
    # one zero at position z: the ratio of the other two, (log r2, log r3, or log r3 - log r2)
    lines = [(z, table[(table[:, z] == 0) & (np.count_nonzero(table, axis=1) == 2)]) for z in range(3)]
    out = []
    for tri in combinations(list(order)[:n_top], 3):
        e = u[list(tri)]
        if abs(np.linalg.det(e)) < min_det:
            continue
        others = np.setdiff1d(np.arange(len(u)), tri)
        c = u[others] @ np.linalg.inv(e)  # (k, 3): n = c @ E
        votes = np.zeros((len(others), nbin + 2, nbin + 2))  # a margin of one bin
        with np.errstate(divide="ignore", invalid="ignore"):
            q = c[:, None, :] / full[None]  # (k, T, 3) proportional to the lengths
            ok = (q[..., 0] * q[..., 1] > 0) & (q[..., 0] * q[..., 2] > 0)
            idx = np.rint(np.log(np.abs(q[..., 1:] / q[..., :1])) / RATIO_BIN) + half
        ok &= np.all((idx >= 0) & (idx < nbin), axis=2)
        band, j = np.nonzero(ok)
        i2, i3 = idx[ok][:, 0].astype(int) + 1, idx[ok][:, 1].astype(int) + 1
        w = 1.0 / np.abs(full[j]).max(1)
        for d2 in (-1, 0, 1):
            for d3 in (-1, 0, 1):
                np.maximum.at(votes, (band, i2 + d2, i3 + d3), w)
        in_plane = np.abs(c) <= zero_tolerance * np.linalg.norm(c, axis=1, keepdims=True)
        for z, tz in lines:
            a, b = [i for i in range(3) if i != z]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = (c[:, None, b] / tz[None, :, b]) / (c[:, None, a] / tz[None, :, a])  # (k, T)
                shift = np.rint(np.log(ratio) / RATIO_BIN)
            good = in_plane[:, z, None] & (ratio > 0) & (np.abs(shift) < nbin)
            for k, j in zip(*np.nonzero(good)):
                s, w = int(shift[k, j]), 1.0 / np.abs(tz[j]).max()
                for d in (-1, 0, 1):
                    if z == 2:  # log r2 fixed: a row
                        row = s + half + d + 1
                        if 1 <= row <= nbin:
                            votes[k, row, 1:-1] = np.maximum(votes[k, row, 1:-1], w)
                    elif z == 1:  # log r3 fixed: a column
                        col = s + half + d + 1
                        if 1 <= col <= nbin:
                            votes[k, 1:-1, col] = np.maximum(votes[k, 1:-1, col], w)
                    else:  # log r3 - log r2 fixed: a diagonal
                        j2 = np.arange(1, nbin + 1)
                        j3 = j2 + s + d
                        keep = (j3 >= 1) & (j3 <= nbin)
                        votes[k, j2[keep], j3[keep]] = np.maximum(votes[k, j2[keep], j3[keep]], w)
        count = votes[:, 1:-1, 1:-1].sum(0)
        for flat in np.argsort(count, axis=None, kind="stable")[::-1][:n_peaks]:
            if count.flat[flat] < 1:
                break
            j2, j3 = np.unravel_index(flat, count.shape)
            lengths = np.exp([0.0, centres[j2], centres[j3]])
            for dv in divisors:
                out.append(lengths[:, None] * e / dv)
    return np.array(out).reshape(-1, 3, 3)


@lru_cache(maxsize=8)
def _hkl_table(hmax: int) -> np.ndarray:
    r = np.arange(-hmax, hmax + 1)
    h = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    first = np.where(h[:, 0] != 0, h[:, 0], np.where(h[:, 1] != 0, h[:, 1], h[:, 2]))
    return h[first > 0]


def _index_many(bases, g, has_length, hmax, sigma_angle, sigma_length, max_angle, max_length,
                h_penalty, dtype=np.float64):
    """Index bands ``g`` in each of ``bases`` ``(m, 3, 3)``: the one indexing rule
    of :func:`index_bands` and the basis scoring. Angles are compared through
    ``2 (1 - |cos|)`` (= angle^2 for the small angles that matter).

    Returns ``(m, k)`` table rows, signs, costs and the indexed mask."""
    table = _hkl_table(hmax).astype(dtype)
    bases = np.asarray(bases, dtype)
    g = np.asarray(g, dtype)
    gt = np.einsum("tj,mjl->mtl", table, bases)  # (m, T, 3)
    lt = np.linalg.norm(gt, axis=2)
    ut = gt / lt[..., None]
    lg = np.linalg.norm(g, axis=1)
    cos = np.einsum("kl,mtl->mkt", g / lg[:, None], ut)
    ang2 = 2.0 * (1.0 - np.abs(cos))
    dlog = np.where(has_length[None, :, None], np.log(lt[:, None, :] / lg[None, :, None]), 0.0)
    sl = np.broadcast_to(np.asarray(sigma_length, np.float64), (len(g),))[None, :, None]
    cost = ang2 / sigma_angle**2 + (dlog / sl) ** 2 + h_penalty * np.abs(table).max(1)
    j = np.argmin(cost, axis=2)  # (m, k)

    def pick(a):
        return np.take_along_axis(a, j[..., None], 2)[..., 0]

    ok = (pick(ang2) <= max_angle**2) & (np.abs(pick(dlog)) <= max_length)
    return j, np.sign(pick(cos)), pick(cost), ok


def index_bands(basis: np.ndarray, g: np.ndarray, has_length: np.ndarray, hmax: int = 4,
                sigma_angle: float = np.deg2rad(0.5), sigma_length: float = 0.08,
                max_angle: float = np.deg2rad(2.0), max_length: float = 0.25,
                h_penalty: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index bands in a reciprocal basis.

    Each band gets the integer ``h`` (``|h|_inf <= hmax``, either sign) whose
    vector ``h @ basis`` is closest in direction and, where measured, in
    log-length; cost ``(angle/sigma_angle)^2 + (dlog/sigma_length)^2 +
    h_penalty * |h|_inf``.

    Returns
    -------
    hkl
        ``(k, 3)`` integers, signed so that ``h @ basis`` points along the band's
        normal as given.
    cost
        ``(k,)``.
    indexed
        ``(k,)`` True where within ``max_angle`` and ``max_length``.
    """
    j, sign, cost, ok = _index_many(np.asarray(basis)[None], g, has_length, hmax, sigma_angle,
                                    sigma_length, max_angle, max_length, h_penalty)
    hkl = _hkl_table(hmax)[j[0]] * sign[0][:, None].astype(np.int64)
    return hkl.astype(np.int64), cost[0], ok[0]


def refine_basis(basis, hkl, g, has_length, sigma_angle: float = np.deg2rad(0.5),
                 sigma_length: float = 0.08, iterations: int = 3) -> tuple[np.ndarray, float, float]:
    """Weighted least-squares refinement of a reciprocal basis against indexed bands.

    ``h @ B`` is linear in ``B``: each band's residual ``h_i @ B - g_i`` is
    weighted by ``1/sigma_length^2`` along the band's normal and
    ``1/sigma_angle^2`` across it, both relative to ``|g|``; bands without a
    length get no radial weight (only their direction counts). The 9 x 9 normal
    equations are solved a few times, re-weighting with the predicted lengths.
    Without any length the problem is homogeneous: the basis is the normal
    matrix's least eigenvector, kept at the starting basis' overall scale.

    Returns the refined basis, the rms angle residual (rad) and the rms
    log-length residual (NaN without lengths)."""
    b = np.asarray(basis, np.float64).copy()
    h = np.asarray(hkl, np.float64)
    g = np.asarray(g, np.float64)
    lg = np.linalg.norm(g, axis=1)
    u = g / lg[:, None]
    eye = np.eye(3)
    K = np.concatenate([h[:, 0, None, None] * eye, h[:, 1, None, None] * eye, h[:, 2, None, None] * eye], axis=2)
    for _ in range(iterations):
        lp = np.linalg.norm(h @ b, axis=1)
        scale = np.where(has_length, lg, lp) ** 2
        uu = u[:, :, None] * u[:, None, :]
        sl = np.broadcast_to(np.asarray(sigma_length, np.float64), (len(g),))
        M = (np.where(has_length, 1 / sl**2, 0.0)[:, None, None] * uu
             + (eye - uu) / sigma_angle**2) / scale[:, None, None]
        target = np.where(has_length[:, None], g, u * lp[:, None])
        KtM = np.einsum("kji,kjl->kil", K, M)
        lhs = np.einsum("kil,klm->im", KtM, K)
        try:
            if has_length.any():
                b_new = np.linalg.solve(lhs, np.einsum("kil,kl->i", KtM, target)).reshape(3, 3)
            else:  # directions only: homogeneous, the least eigenvector at the old scale
                _, vec = np.linalg.eigh(lhs)
                b_new = vec[:, 0].reshape(3, 3) * np.linalg.norm(b)
                b_new *= np.sign(np.sum(b_new * b)) or 1.0
        except np.linalg.LinAlgError:
            break
        if not np.isfinite(b_new).all() or abs(np.linalg.det(b_new)) < 1e-12:
            break
        b = b_new
    gp = h @ b
    up = gp / np.linalg.norm(gp, axis=1, keepdims=True)
    ang = np.arccos(np.clip(np.abs(np.sum(up * u, axis=1)), -1, 1))
    dl = np.log(np.linalg.norm(gp, axis=1) / lg)[has_length]
    return b, float(np.sqrt(np.mean(ang**2))), float(np.sqrt(np.mean(dl**2))) if dl.size else float("nan")


def _score_bases(bases, g, has_length, hmax, sigma_angle, sigma_length, max_angle, max_length,
                 h_penalty) -> np.ndarray:
    """Total capped indexing cost of each basis ``(m, 3, 3)`` (float32: many bases)."""
    _, _, cost, ok = _index_many(bases, g, has_length, hmax, sigma_angle, sigma_length, max_angle,
                                 max_length, h_penalty, dtype=np.float32)
    cap = 9.0 + h_penalty * hmax
    return np.minimum(np.where(ok, cost, cap), cap).sum(1)


@dataclass
class LatticeFit:
    """Result of :func:`reconstruct_lattice`.

    Attributes
    ----------
    reciprocal
        Refined primitive reciprocal basis (rows, 1/Å).
    direct
        Niggli-reduced direct cell (rows, Å).
    parameters
        ``(a, b, c, alpha, beta, gamma)`` of ``direct``.
    hkl
        Indices of the bands in ``reciprocal`` (zeros where not indexed).
    indexed
        True where the band is indexed.
    rms_angle, rms_log_length
        Fit residuals (rad; log of length ratio).
    symmetry
        :func:`lattice_symmetry` of ``direct``.
    candidates
        :func:`metric_candidates` of ``direct`` against the bands.
    """

    reciprocal: np.ndarray
    direct: np.ndarray
    parameters: np.ndarray
    hkl: np.ndarray
    indexed: np.ndarray
    rms_angle: float
    rms_log_length: float
    symmetry: list = field(default_factory=list)
    candidates: dict = field(default_factory=dict)

    @property
    def n_indexed(self) -> int:
        return int(self.indexed.sum())

    def bravais_lattice(self, tolerance: float = 0.02) -> str:
        """Bravais lattice at the largest ladder tolerance not above ``tolerance``."""
        best = self.symmetry[0][1]
        for tol, b in self.symmetry:
            if tol <= tolerance + 1e-12:
                best = b
        return best


def reconstruct_lattice(normals, widths, strength, wavelength: float, n_top: int = 8,
                        hmax: int = 4, sigma_angle: float = np.deg2rad(0.5),
                        sigma_length: float = 0.08, n_refine: int = 6,
                        min_bands: int = 5, use_widths: bool = True) -> LatticeFit | None:
    """Rebuild the primitive reciprocal lattice of one pattern's bands.

    Parameters
    ----------
    normals, widths, strength
        One pattern's bands (as in :class:`kikuchipy_cnn.bands.BandSet`, valid
        bands only); widths in radians, NaN where unknown.
    wavelength
        Electron wavelength in Å.
    sigma_angle, sigma_length
        Expected errors of band directions (rad) and of log widths; the
        length error may be one per band (narrow bands are measured worse).
    use_widths
        False: directions only. The widths are ignored and the lengths of the
        basis triples searched (:func:`direction_bases`; for patterns too
        small to measure widths, e.g. 60 px); the cell's overall scale is
        then arbitrary, its shape (angles, ratios) is not.

    Returns
    -------
    LatticeFit or None
        None when fewer than ``min_bands`` bands (or, with ``use_widths``,
        fewer than three non-coplanar bands with widths) exist, or no basis
        indexes them: the lattice is not determined.
    """
    if not use_widths:
        widths = np.full(len(np.asarray(normals)), np.nan)
    g, has = reciprocal_vectors(normals, widths, wavelength)
    strength = np.asarray(strength, dtype=np.float64)
    if len(g) < min_bands or (use_widths and has.sum() < 3):
        return None
    sigma_length = np.broadcast_to(np.asarray(sigma_length, np.float64), (len(g),)).copy()
    order = np.argsort(-strength)
    if use_widths:
        bases = candidate_bases(g, has, order, n_top=n_top)
        score_angle, score_sigma = np.deg2rad(2.0), sigma_angle
    else:  # voted lengths within a bin: score a little loosely, the refinement fits
        bases = direction_bases(g, order, n_top=min(n_top, 6))
        score_angle, score_sigma = np.deg2rad(3.0), 2 * sigma_angle
    if len(bases) == 0:
        return None
    kw = dict(hmax=hmax, sigma_angle=sigma_angle, sigma_length=sigma_length)
    cap = 9.0 + 0.3 * hmax  # an unindexed band costs as much as a 3-sigma one
    # score every basis on the strongest bands only (the refinement uses all)
    top = order[:12]
    scored = _score_bases(bases, g[top], has[top], hmax, score_sigma, sigma_length[top], score_angle, 0.25, 0.3)
    best = None
    for i in np.argsort(scored)[:n_refine]:
        b = bases[i]
        for _ in range(3):
            hkl, cost, ok = index_bands(b, g, has, **kw)
            if ok.sum() < 4:
                break
            try:
                sub = generated_sublattice(hkl[ok])
            except ValueError:
                break
            b = sub @ b  # the lattice the indexed bands generate
            if not np.isfinite(b).all() or abs(np.linalg.det(b)) < 1e-12:
                break
            hkl, cost, ok = index_bands(b, g, has, **kw)
            if ok.sum() < 4:
                break
            b, ra, rl = refine_basis(b, hkl[ok], g[ok], has[ok], sigma_angle, sigma_length[ok])
        hkl, cost, ok = index_bands(b, g, has, **kw)
        total = float(np.minimum(np.where(ok, cost, cap), cap).sum())
        if best is None or total < best[0]:
            best = (total, b, hkl, ok)
    _, b, hkl, ok = best
    if ok.sum() < 4 or abs(np.linalg.det(b)) < 1e-12:
        return None
    b, ra, rl = refine_basis(b, hkl[ok], g[ok], has[ok], sigma_angle, sigma_length[ok])
    try:
        direct = niggli_cell(np.linalg.inv(b).T)
    except (ValueError, np.linalg.LinAlgError):  # a degenerate cell: no lattice
        return None
    ladder = _ladder(direct, METRIC_TOLERANCES)
    return LatticeFit(
        reciprocal=b,
        direct=direct,
        parameters=cell_parameters(direct),
        hkl=np.where(ok[:, None], hkl, 0),
        indexed=ok,
        rms_angle=ra,
        rms_log_length=rl,
        symmetry=[(t, b) for t, b, _ in ladder],
        candidates=metric_candidates(direct, g, has, sigma_angle=sigma_angle, sigma_length=sigma_length,
                                     ladder=ladder),
    )
