"""The pattern centre of a scan, or of one pattern, without knowing the phase.

A wrong pattern centre (PC) is a *linear* map of the directions from the source
point: with gnomonic coordinates ``(X, Y, Z)``, moving the PC by ``(dx, dy)``
and changing ``PCz`` maps a direction ``d`` to ``A d`` with

    A = M(pc_to) inv(M(pc_from))

(:func:`kikuchipy_cnn.bands.pc_map`). Band-plane normals move by
``inv(A).T``, so a lattice stays a lattice: the bands index as well at a wrong
PC as at the right one, and band directions alone cannot reveal the PC through
the indexing residual. What they do reveal is the *shape* of the lattice
metric: a wrong PC shears a cubic, hexagonal, tetragonal, ... metric into one
of lower symmetry, differently in every grain. The estimate therefore

1. detects and indexes the bands of each pattern at the starting PC
   (:func:`kikuchipy_cnn.bands.detect_bands`,
   :func:`kikuchipy_cnn.lattice.reconstruct_lattice`), with band widths and
   with directions alone (``indexing="auto"``: both are run to the end and
   the estimate with the more symmetric lattice is kept; widths help on
   sharp simulated patterns and mislead on small real ones);
2. finds the metric symmetry of each pattern's lattice (spglib on a one-atom
   cell, up to :data:`SYMMETRY_TOLERANCE`) and keeps the patterns of the most
   common Bravais lattice;
3. moves each pattern's lattice to a trial PC exactly (the direct basis ``D``
   becomes ``D A.T``; the indices stay) and measures how far its metric
   ``G = D D.T`` is from the nearest metric of that symmetry (the average of
   ``W.T G W`` over the lattice's point-group operations ``W``);
4. minimises that asymmetry over one PC shared by the patterns (scipy least
   squares from a few starts; per-pattern PC offsets of the start are kept,
   e.g. a PC that follows the beam; patterns far more asymmetric than the
   median are dropped as misindexed);
5. refines the PC against the band *directions* (:func:`refine_bands`): each
   pattern a lattice with a metric of its symmetry in its own orientation,
   residuals the angles between observed and predicted band normals;
6. re-detects and re-indexes the bands at the new PC and repeats.

The uncertainty is the least-squares covariance of step 5 (band-angle
residual variance times the PC block of ``inv(J.T J)``), or the jackknife
over patterns where larger (at least :data:`MIN_JACKKNIFE` patterns); without
step 5, the jackknife or the covariance of the symmetry fit.
A triclinic lattice gives no constraint, a monoclinic one two (fewer than the
three PC coordinates; the common metric of several grains would add more, but
is not used): such input, too few indexed bands, or an uncertainty above
``max_uncertainty`` raise :class:`ValueError`.

Band widths only help the indexing (they are noisy, and their angular size
itself depends on the PC); lattices of different phases in one scan are not
separated beyond the majority vote of step 2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from kikuchipy_cnn.bands import change_pc, detect_bands, electron_wavelength, pc_map
from kikuchipy_cnn.lattice import _quiet_spglib, reconstruct_lattice
from kikuchipy_cnn._warnings import user_stacklevel

__all__ = ["PCEstimate", "check_detector", "estimate_pc"]

#: Largest relative metric tolerance at which a pattern's lattice symmetry is
#: looked for at the starting PC (a PC error of 0.05 shears a metric by ~5 %;
#: with 60 px real patterns' band directions, kikuchipy's Ni scan 0.03 off
#: reaches cF only at 0.15-0.2; a wrong lattice reached this way is mostly
#: dropped by the fit, see docs/bands.md).
SYMMETRY_TOLERANCE = 0.2

#: Relative metric tolerances tried, tightest first, up to SYMMETRY_TOLERANCE.
SYMMETRY_LADDER = (0.01, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.2)

#: Fewest indexed bands for a pattern to be used.
MIN_INDEXED = 6

#: Fewest patterns for the jackknife uncertainty.
MIN_JACKKNIFE = 5

#: Largest uncertainty (fraction, any PC coordinate) accepted: beyond it the
#: estimate is no use against start errors of a few hundredths, and the
#: wrong-lattice fits of the benchmark (0.03-0.04 reported) are refused.
MAX_UNCERTAINTY = 0.02

#: Independent metric constraints of a lattice's symmetry: 6 metric entries
#: minus the dimension of the symmetric metrics (which includes the scale).
CONSTRAINTS = {"aP": 0, "mP": 2, "mC": 2, "oP": 3, "oC": 3, "oF": 3, "oI": 3, "tP": 4, "tI": 4,
               "hR": 4, "hP": 4, "cP": 5, "cF": 5, "cI": 5}

#: Share of the indexed patterns whose metrics must reach a lattice for it to
#: be imposed (a quarter: at 60 px most patterns index in some lower
#: symmetry at a wrong PC; the fit then drops those that do not fit).
MIN_SHARE = 0.25

#: A pattern whose asymmetry at the fit exceeds this many times the median
#: (and 0.01) is dropped as misindexed and the PC refitted.
OUTLIER_FACTOR = 3.0

#: Extra starts of the PC fit at this distance along each coordinate.
START_SPREAD = 0.03

#: Loss and scale (rad) of the band-direction refinement (scipy least_squares):
#: robust, so that a misindexed band weighs less (on six dynamical Ni scans of
#: 9 patterns the mean error fell from 0.0055 to 0.0045 against "linear").
BAND_LOSS = "soft_l1"
BAND_SCALE = np.deg2rad(0.5)

#: Smallest disagreement (any coordinate) between the detector's PC and the
#: estimate started there that :func:`check_detector` reports, whatever the
#: uncertainty (the estimate's errors on dynamical scans reach ~0.01).
CHECK_TOLERANCE = 0.02

#: The ``use_widths`` values that each ``indexing`` option of
#: :func:`estimate_pc` tries.
INDEXING = {"widths": (True,), "directions": (False,), "auto": (True, False)}

#: Rounds of detect -> index -> optimise.
ROUNDS = 3

_TRIU = np.triu_indices(3)


@dataclass
class _PatternPC:
    """A pattern's PC as a function of the fitted parameters ``x``: its
    start offset from the scan mean plus ``x[:3]`` and, with 9 parameters,
    a linear change with its centred navigation position,
    ``x[3:].reshape(3, 2) @ position`` (PC per step along rows, columns)."""

    offset: np.ndarray
    position: np.ndarray

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        pc = self.offset + x[:3]
        return pc + x[3:9].reshape(3, 2) @ self.position if len(x) > 3 else pc


@dataclass
class PCEstimate:
    """Result of :func:`estimate_pc`.

    Attributes
    ----------
    pc
        Estimated pattern centre ``(PCx, PCy, PCz)`` (Bruker convention) of the
        scan (the mean over patterns when the start differs between patterns).
    uncertainty
        One standard deviation of each coordinate (see ``uncertainty_method``).
    n_patterns_used
        Patterns whose bands were indexed in the common lattice and used.
    pc_per_pattern
        ``(n, 3)`` PC of every input pattern: the start plus the shift that
        was estimated for all of them.
    lattice
        Bravais lattice whose metric symmetry was imposed (e.g. ``"cF"``).
    pc0
        The starting PC (mean over patterns).
    asymmetry0, asymmetry
        RMS relative deviation of the metrics from their symmetric form at
        the start and at the estimate.
    rms_angle
        RMS angle (rad) between observed and predicted band normals in the
        band-direction fit (NaN without it).
    uncertainty_method
        How ``uncertainty`` was obtained (band least squares, jackknife over
        patterns, or least squares of the symmetry fit).
    used
        ``(n,)`` True for the patterns used.
    history
        PC after each round.
    gradient, gradient_uncertainty
        With ``pc_model="affine"``: ``(3, 2)`` change of (PCx, PCy, PCz) per
        navigation step along rows and columns, and its standard deviations
        (None otherwise).
    indexing
        ``"widths"`` or ``"directions"``: how the patterns' lattices were
        rebuilt for this estimate (see :func:`estimate_pc`).
    """

    pc: np.ndarray
    uncertainty: np.ndarray
    n_patterns_used: int
    pc_per_pattern: np.ndarray
    lattice: str
    pc0: np.ndarray
    asymmetry0: float
    asymmetry: float
    rms_angle: float
    uncertainty_method: str
    used: np.ndarray
    history: list = field(default_factory=list)
    gradient: np.ndarray | None = None
    gradient_uncertainty: np.ndarray | None = None
    indexing: str = "widths"

    def __repr__(self) -> str:
        pc = ", ".join(f"{v:.4f}" for v in self.pc)
        un = ", ".join(f"{v:.4f}" for v in self.uncertainty)
        return (f"PCEstimate(pc=({pc}), uncertainty=({un}), lattice={self.lattice!r}, "
                f"n_patterns_used={self.n_patterns_used})")


@dataclass
class _PatternLattice:
    """One pattern's indexed lattice: direct basis (rows) at ``pc_ref`` and
    the point-group operations of each metric symmetry it comes close to
    (:func:`symmetry_candidates`)."""

    direct: np.ndarray
    candidates: dict
    pc_ref: np.ndarray
    n_indexed: int
    #: indices (in the basis of ``direct``'s reciprocal) and normals at
    #: ``pc_ref`` of the indexed bands
    hkl: np.ndarray
    normals: np.ndarray


def metric_symmetry(direct: np.ndarray, tolerance: float) -> tuple[str, np.ndarray]:
    """Bravais lattice and point-group operations of a cell's metric.

    Parameters
    ----------
    direct
        Direct cell, basis vectors as rows.
    tolerance
        spglib ``symprec`` on the cell scaled to unit volume (relative);
        angle tolerance ``100 x tolerance`` degrees, as in
        :func:`kikuchipy_cnn.lattice.lattice_symmetry`.

    Returns
    -------
    bravais
        Bravais lattice symbol (``"aP"`` when spglib finds nothing).
    rotations
        ``(m, 3, 3)`` integer matrices ``W`` in the basis of ``direct``; a
        symmetric metric ``G = D D.T`` satisfies ``W.T G W = G``.
    """
    import spglib

    from kikuchipy_cnn.symmetry import space_group_class

    a = np.asarray(direct, np.float64)
    a = a / abs(np.linalg.det(a)) ** (1 / 3)
    with _quiet_spglib():
        ds = spglib.get_symmetry_dataset((a, [[0.0, 0.0, 0.0]], [1]), symprec=float(tolerance),
                                         angle_tolerance=100.0 * float(tolerance))
    if ds is None:
        return "aP", np.eye(3, dtype=np.int64)[None]
    rot = np.unique(np.asarray(ds.rotations, np.int64), axis=0)
    return space_group_class(int(ds.number)).bravais_lattice, rot


def symmetric_part(metric: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Nearest metric invariant under ``rotations``: the mean of ``W.T G W``
    (a linear projection onto the symmetric metrics)."""
    return np.einsum("mji,jk,mkl->il", rotations, metric, rotations) / len(rotations)


def asymmetry(lat: _PatternLattice, rotations: np.ndarray, shape, pc) -> np.ndarray:
    """Upper-triangle residuals of a pattern's metric at ``pc`` from its
    form symmetric under ``rotations``, relative (metric scaled to unit
    determinant)."""
    d = lat.direct @ pc_map(shape, lat.pc_ref, pc).T
    g = d @ d.T
    g = g / np.linalg.det(g) ** (1 / 3)
    return (g - symmetric_part(g, rotations))[_TRIU]


def symmetry_candidates(direct: np.ndarray, max_tolerance: float = SYMMETRY_TOLERANCE) -> dict:
    """Every metric symmetry along :data:`SYMMETRY_LADDER` up to ``max_tolerance``.

    Returns
    -------
    dict
        Bravais symbol -> point-group operations at the tightest tolerance
        that reaches it."""
    out: dict[str, np.ndarray] = {}
    for tol in SYMMETRY_LADDER:
        if tol > max_tolerance + 1e-12:
            break
        bravais, rot = metric_symmetry(direct, tol)
        out.setdefault(bravais, rot)
    return out


def index_patterns(patterns: np.ndarray, pcs: np.ndarray, wavelength: float, n_bands: int = 16,
                   max_tolerance: float = SYMMETRY_TOLERANCE, use_widths: bool = True
                   ) -> list[_PatternLattice | None]:
    """Detect, index and find the metric symmetries of every pattern at its PC
    (with band widths, or directions alone if not ``use_widths``; see
    :func:`kikuchipy_cnn.lattice.reconstruct_lattice`).

    Returns one :class:`_PatternLattice` per pattern, None where fewer than
    :data:`MIN_INDEXED` bands were indexed."""
    bands = detect_bands(patterns, pcs, n_bands=n_bands)
    out: list[_PatternLattice | None] = []
    for i in range(len(patterns)):
        v = bands.valid[i]
        fit = reconstruct_lattice(bands.normals[i][v], bands.width[i][v], bands.strength[i][v], wavelength,
                                  use_widths=use_widths)
        if fit is None or fit.n_indexed < MIN_INDEXED:
            out.append(None)
            continue
        ok = fit.indexed
        direct = np.linalg.inv(fit.reciprocal).T
        cands = symmetry_candidates(direct, max_tolerance)
        out.append(_PatternLattice(direct, cands, np.asarray(pcs[i], np.float64), fit.n_indexed,
                                   fit.hkl[ok], bands.normals[i][v][ok]))
    return out


def _common_lattice(lattices: list[_PatternLattice | None]) -> tuple[str, list, np.ndarray]:
    """The most symmetric Bravais lattice with at least three constraints
    (:func:`_check_constraints`) that the metrics of at least
    :data:`MIN_SHARE` of the indexed patterns reach, the point-group
    operations of each pattern for it and which patterns reach it."""
    indexed = [lat for lat in lattices if lat is not None]
    if not indexed:
        raise ValueError(
            f"No pattern had {MIN_INDEXED} or more indexed bands: the lattice, and so the pattern "
            "centre, is not determined (check the patterns, the beam energy and that the start PC "
            "is within ~0.05 of the truth)"
        )
    counts: dict[str, int] = {}
    order: dict[str, int] = {}
    for lat in indexed:
        for b, rot in lat.candidates.items():
            counts[b] = counts.get(b, 0) + 1
            order[b] = len(rot)
    need = max(1, int(np.ceil(MIN_SHARE * len(indexed))))
    shared = [b for b in counts if counts[b] >= need]
    usable = [b for b in shared if CONSTRAINTS.get(b, 0) >= 3] or shared
    best = max(usable, key=lambda b: (order[b], counts[b]))
    _check_constraints(best, counts[best])
    has = np.array([lat is not None and best in lat.candidates for lat in lattices])
    rotations = [lat.candidates[best] for lat, h in zip(lattices, has) if h]
    return best, rotations, has


def _residuals(pc, terms, shape) -> np.ndarray:
    """Asymmetries of all patterns at the scan PC ``pc``; ``terms`` are
    ``(lattice, rotations, _PatternPC, pattern index)`` and ``pc`` the
    parameters (scan PC, with a PC gradient if 9)."""
    return np.concatenate([asymmetry(lat, rot, shape, at(pc)) for lat, rot, at, _ in terms])


def _fit_pc(terms, shape, start, spread: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares scan PC; returns it, the residuals and the Jacobian.

    With ``spread > 0`` the fit also starts from ``start +- spread`` along
    each coordinate and keeps the lowest minimum (the asymmetry can have
    local minima far from the truth)."""
    from scipy.optimize import least_squares

    starts = [np.asarray(start, np.float64)]
    if spread > 0:
        starts += [starts[0] + s * spread * e for e in np.eye(len(starts[0]))[:3] for s in (-1, 1)]
    best = None
    for x0 in starts:
        res = least_squares(_residuals, x0, args=(terms, shape), x_scale=0.01, diff_step=1e-4,
                            method="lm", xtol=1e-10, ftol=1e-12)
        if best is None or res.cost < best.cost:
            best = res
    return best.x, best.fun, best.jac


def _drop_outliers(terms, shape, pc) -> list:
    """The terms whose asymmetry at ``pc`` is below :data:`OUTLIER_FACTOR`
    times the median (or 0.01): misindexed patterns go."""
    rms = np.array([_rms(asymmetry(lat, rot, shape, at(pc))) for lat, rot, at, _ in terms])
    limit = max(OUTLIER_FACTOR * float(np.median(rms)), 0.01)
    return [tm for tm, r in zip(terms, rms) if r <= limit]


def _invariant_metrics(rotations: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(d, 3, 3)`` of the symmetric metrics invariant
    under ``rotations`` (the range of :func:`symmetric_part`)."""
    basis = []
    for i, j in zip(*_TRIU):
        e = np.zeros((3, 3))
        e[i, j] = e[j, i] = 1.0
        basis.append(symmetric_part(e, rotations).ravel())
    u, s, _ = np.linalg.svd(np.array(basis).T, full_matrices=False)
    return u[:, s > 1e-8 * s.max()].T.reshape(-1, 3, 3)


def _rotvec_matrix(v: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(v).as_matrix()


class _BandModel:
    """Band directions of one pattern predicted from a symmetric lattice:
    metric ``G(c) = G0 + sum c_k E_k`` (``E_k`` invariant, orthogonal to
    ``G0``: the scale is fixed), orientation ``Q`` (rotation vector) from the
    Cholesky frame of ``G``; reciprocal basis ``inv(L).T Q.T``."""

    def __init__(self, lat: _PatternLattice, rotations: np.ndarray, shape, pc):
        d = lat.direct @ pc_map(shape, lat.pc_ref, pc).T
        d = d * np.sign(np.linalg.det(d))  # right-handed (band normals are sign free)
        g = d @ d.T
        g0 = symmetric_part(g, rotations)
        g0 = g0 / np.linalg.det(g0) ** (1 / 3)
        e = _invariant_metrics(rotations)
        e = e - np.einsum("kij,ij->k", e, g0)[:, None, None] * g0 / (g0 * g0).sum()
        u, s, _ = np.linalg.svd(e.reshape(len(e), 9).T, full_matrices=False)
        self.e = u[:, s > 1e-8].T.reshape(-1, 3, 3)
        self.g0, self.lat, self.shape = g0, lat, shape
        # the orientation that takes the Cholesky frame to the pattern's basis
        sg, vg = np.linalg.eigh(g)
        s0, v0 = np.linalg.eigh(g0)
        m = (v0 * np.sqrt(s0)) @ v0.T @ (vg / np.sqrt(sg)) @ vg.T  # G0^1/2 G^-1/2
        lo = np.linalg.cholesky(g0)
        w, _, vt = np.linalg.svd((np.linalg.inv(lo) @ m @ d).T)
        from scipy.spatial.transform import Rotation

        self.q0 = Rotation.from_matrix(w @ vt).as_rotvec()
        self.n_params = 3 + len(self.e)

    def residuals(self, params: np.ndarray, pc) -> np.ndarray:
        """Per band, the observed unit normal at ``pc`` minus the predicted one
        (sign matched): about the angle between them."""
        g = self.g0 + np.einsum("k,kij->ij", params[3:], self.e)
        try:
            lo = np.linalg.cholesky(g)
        except np.linalg.LinAlgError:
            return np.full(3 * len(self.lat.hkl), 1.0)
        b = np.linalg.inv(lo).T @ _rotvec_matrix(self.q0 + params[:3]).T
        p = self.lat.hkl @ b
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        u = change_pc(self.lat.normals, self.shape, self.lat.pc_ref, pc)
        return (u * np.sign(np.sum(u * p, axis=1))[:, None] - p).ravel()


def _band_sparsity(terms, sizes, npc: int = 3) -> np.ndarray:
    """Jacobian structure of :func:`refine_bands`: every residual depends on
    the ``npc`` PC parameters, each pattern's residuals on its own only."""
    rows = [3 * len(lat.hkl) for lat, *_ in terms]
    m = np.zeros((sum(rows), npc + sum(sizes)), bool)
    m[:, :npc] = True
    r0, c0 = 0, npc
    for r, c in zip(rows, sizes):
        m[r0:r0 + r, c0:c0 + c] = True
        r0, c0 = r0 + r, c0 + c
    return m


def refine_bands(terms, shape, pc) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit the scan PC to the band directions of all patterns, each pattern a
    lattice of its metric symmetry in its own orientation.

    ``pc`` are the PC parameters (see :class:`_PatternPC`). Returns them,
    their covariance (residual variance times the PC block of
    ``inv(J.T J)``, the other parameters marginalised; ``J`` is scipy's
    Jacobian scaled by the robust loss) and the rms angle (rad)."""
    from scipy.optimize import least_squares

    pc = np.asarray(pc, np.float64)
    npc = len(pc)
    models = [_BandModel(lat, rot, shape, at(pc)) for lat, rot, at, _ in terms]
    sizes = [m.n_params for m in models]
    splits = np.cumsum(sizes)[:-1]

    def fun(x):
        parts = np.split(x[npc:], splits)
        return np.concatenate([m.residuals(p, at(x[:npc])) for m, p, (_, _, at, _) in zip(models, parts, terms)])

    x0 = np.concatenate([pc] + [np.zeros(s) for s in sizes])
    res = least_squares(fun, x0, x_scale=0.01, method="trf", jac_sparsity=_band_sparsity(terms, sizes, npc),
                        max_nfev=100, loss=BAND_LOSS, f_scale=BAND_SCALE)
    n_res = sum(2 * len(lat.hkl) for lat, *_ in terms)  # two angles per band
    dof = n_res - len(x0)
    ss = float(res.fun @ res.fun)  # sum of squared angles (the raw residuals, not the robust cost)
    s2 = ss / max(dof, 1)  # variance of each of a band's two angles
    jac = res.jac.toarray() if hasattr(res.jac, "toarray") else np.asarray(res.jac)
    try:
        cov = s2 * np.linalg.inv(jac.T @ jac)[:npc, :npc]
    except np.linalg.LinAlgError:
        cov = np.full((npc, npc), np.inf)
    return res.x[:npc], cov, float(np.sqrt(ss / (n_res / 2)))


def _check_constraints(lattice: str, n_patterns: int) -> None:
    """Refuse a lattice whose metric symmetry gives fewer than three
    constraints per pattern (triclinic, monoclinic): several grains would
    constrain the PC through their common metric, which is not used here,
    and a cubic phase misindexed in most patterns also ends up there."""
    n = CONSTRAINTS.get(lattice, 0)
    if n < 3 or n * n_patterns < 3:
        raise ValueError(
            f"The bands index in a {lattice} lattice ({n_patterns} pattern(s)): its metric symmetry gives "
            f"{n} constraint(s) per pattern on the 3 PC coordinates, so the pattern centre is not "
            "determined here (an orthorhombic or more symmetric lattice is needed; check that most "
            "patterns index, e.g. with larger patterns or a start PC closer to the truth)"
        )


def _check_range(pc: np.ndarray, start: np.ndarray, max_move: float = 0.2) -> None:
    """Refuse a fit that runs away from the start (an objective without a
    minimum near it)."""
    if not np.all(np.isfinite(pc)) or pc[2] <= 0 or np.any(np.abs(pc - start) > max_move):
        raise ValueError(
            f"The PC fit left the plausible range (start {np.round(start, 4).tolist()}, fit "
            f"{np.round(pc, 4).tolist()}): the patterns do not constrain the pattern centre"
        )


def _least_squares_sd(residuals, jac, n_constraints) -> np.ndarray:
    """Standard deviations from ``s^2 inv(J.T J)``, ``s^2`` the residual
    variance over the independent constraints; inf when not determined."""
    dof = n_constraints - jac.shape[1]
    if dof <= 0:
        return np.full(jac.shape[1], np.inf)
    s2 = float(residuals @ residuals) / dof
    try:
        cov = s2 * np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return np.full(jac.shape[1], np.inf)
    d = np.diag(cov)
    return np.where(d >= 0, np.sqrt(np.abs(d)), np.inf)


def _jackknife_sd(terms, shape, pc, fit=None) -> np.ndarray:
    """Jackknife standard deviations of the PC over patterns; ``fit(terms,
    shape, start)`` returns the PC first (default: the symmetry fit)."""
    fit = _fit_pc if fit is None else fit
    n = len(terms)
    est = np.array([fit(terms[:i] + terms[i + 1:], shape, pc)[0] for i in range(n)])
    return np.sqrt((n - 1) / n * ((est - est.mean(0)) ** 2).sum(0))


def _fit_round(terms, shape, pc, lattice: str, refine: bool) -> tuple[np.ndarray, list, dict]:
    """One round's PC fit: the metric-symmetry fit (from a few starts), again
    without outlying patterns, then the band-direction refinement. Returns
    the PC, the terms kept and what the uncertainty needs."""
    new_pc, resid, jac = _fit_pc(terms, shape, pc, START_SPREAD)
    kept = _drop_outliers(terms, shape, new_pc)
    if len(kept) < len(terms):
        terms = kept
        _check_constraints(lattice, len(terms))
        new_pc, resid, jac = _fit_pc(terms, shape, new_pc)
    fit = {"resid": resid, "jac": jac}
    if refine:
        new_pc, fit["cov"], fit["rms_angle"] = refine_bands(terms, shape, new_pc)
    return new_pc, terms, fit


def _uncertainty(terms, shape, pc, lattice: str, fit: dict) -> tuple[np.ndarray, str]:
    """Standard deviations of the PC parameters and how they were obtained: the band-fit
    covariance or, from :data:`MIN_JACKKNIFE` patterns, the jackknife where
    larger; without the band fit, the jackknife or the symmetry fit's
    covariance."""
    jackknife = len(terms) >= MIN_JACKKNIFE
    if "cov" in fit:
        sd = np.sqrt(np.clip(np.diag(fit["cov"]), 0, np.inf))
        if not jackknife:
            return sd, "band least squares"
        sd = np.maximum(sd, _jackknife_sd(terms, shape, pc, refine_bands))
        return sd, "band least squares or jackknife, the larger"
    if jackknife:
        return _jackknife_sd(terms, shape, pc), "jackknife"
    return _least_squares_sd(fit["resid"], fit["jac"], CONSTRAINTS[lattice] * len(terms)), "least squares"


def _rms(r) -> float:
    return float(np.sqrt(np.mean(np.square(r)))) if len(r) else float("nan")


def _subset(n: int, max_patterns: int | None) -> np.ndarray:
    """Indices of at most ``max_patterns`` patterns spread evenly over ``n``."""
    if max_patterns is None or n <= max_patterns:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_patterns).round().astype(int))


def _pcs(pc0, n: int) -> np.ndarray:
    """``(n, 3)`` starting PCs from one or one per pattern."""
    pc = np.asarray(pc0, np.float64).reshape(-1, 3)
    if len(pc) not in (1, n):
        raise ValueError(f"got {len(pc)} starting pattern centres for {n} patterns; give one or one per pattern")
    return np.broadcast_to(pc, (n, 3)).copy()


def _input(patterns, pc0, beam_energy, static_background, max_patterns):
    """Patterns to use ``(m, rows, columns)`` (at most ``max_patterns``, spread
    over the scan), their indices, the PCs of all ``n`` patterns ``(n, 3)``,
    their navigation positions ``(n, 2)`` (row, column; None for an array)
    and the wavelength, from a kikuchipy signal or an array. The signal is
    only read; a lazy signal only for the patterns used."""
    from kikuchipy_cnn.preprocessing import static_background_divisor

    if hasattr(patterns, "axes_manager"):
        from kikuchipy_cnn.classify import detector_geometry, static_background_of

        s = patterns
        sig = tuple(s.axes_manager.signal_shape[::-1])
        nav = tuple(s.axes_manager.navigation_shape[::-1])
        with warnings.catch_warnings():
            if beam_energy is not None:  # given: no warning about the metadata's
                warnings.filterwarnings("ignore", message="The signal's metadata give no beam energy")
            pcs, wavelength = detector_geometry(s, nav)
        idx = np.unravel_index(np.arange(len(pcs)), nav) if nav else (np.zeros(1, int),)
        positions = np.zeros((len(pcs), 2))
        positions[:, 2 - len(idx):] = np.column_stack(idx)  # a line scan: columns only
        if beam_energy is not None:
            wavelength = electron_wavelength(beam_energy)
        flat = s.data.reshape((-1,) + sig)
        keep = _subset(len(flat), max_patterns)
        data = np.asarray(flat[keep], dtype=np.float32)  # a copy: the signal's data stay as they are
        bg = static_background_of(s, static_background)
        if pc0 is not None:
            pcs = _pcs(pc0, len(flat))
    else:
        flat = np.asarray(patterns)
        if flat.ndim == 2:
            flat = flat[None]
        if flat.ndim != 3:
            raise ValueError(f"patterns must be (n, rows, columns) or (rows, columns), got shape {flat.shape}")
        if pc0 is None:
            raise ValueError("give the starting pattern centre pc0 (Bruker convention) with an array of patterns")
        keep = _subset(len(flat), max_patterns)
        data = np.array(flat[keep], dtype=np.float32)
        bg = None if static_background is None or isinstance(static_background, str) else static_background
        pcs = _pcs(pc0, len(flat))
        positions = None
        wavelength = electron_wavelength(20.0 if beam_energy is None else beam_energy)
    if bg is not None:
        data /= static_background_divisor(bg, data.shape[-2:])
    return data, keep, pcs, positions, wavelength


def _pattern_pcs(pcs: np.ndarray, positions: np.ndarray | None) -> list[_PatternPC]:
    """One :class:`_PatternPC` per pattern: start offset from the mean, and
    the navigation position centred on the scan (zero without positions)."""
    off = pcs - pcs.mean(0)
    pos = np.zeros((len(pcs), 2)) if positions is None else positions - positions.mean(0)
    return [_PatternPC(o, p) for o, p in zip(off, pos)]


def estimate_pc(patterns, pc0=None, beam_energy: float | None = None, static_background="auto",
                max_patterns: int | None = 50, n_bands: int = 16, rounds: int = ROUNDS,
                max_uncertainty: float = MAX_UNCERTAINTY, refine: bool = True,
                pc_model: str = "constant", indexing: str = "auto") -> PCEstimate:
    """Estimate the pattern centre of a scan, or of one pattern, with no phase.

    Parameters
    ----------
    patterns
        A kikuchipy ``EBSD`` signal (its detector PC is the start and its
        metadata beam energy is used; the signal is not modified) or an array
        ``(n, rows, columns)`` / ``(rows, columns)`` of patterns of one phase.
    pc0
        Starting PC (Bruker), one ``(3,)`` or one per pattern ``(n, 3)``;
        required with an array, overrides the signal's detector otherwise.
        Per-pattern differences of the start are kept; one shift common to
        all patterns is estimated.
    beam_energy
        Beam energy in kV (default: the signal's metadata, or 20 kV for an
        array). Only used to index the bands (widths give lengths).
    static_background
        ``"auto"`` divides a signal's raw patterns by its static background
        (as :func:`kikuchipy_cnn.classify_structure` does), None does not, an
        array is used as given.
    max_patterns
        Use at most this many patterns, spread evenly over the scan (None: all).
    n_bands
        Bands detected per pattern.
    rounds
        Rounds of detecting and indexing the bands at the current PC and
        optimising it.
    max_uncertainty
        Refuse (ValueError) when the uncertainty of any coordinate exceeds this.
    refine
        Refine the PC against the band directions after the metric-symmetry
        fit (:func:`refine_bands`); False keeps the symmetry fit alone.
    pc_model
        ``"constant"``: one shift of the start PC for all patterns.
        ``"affine"`` (signals only): also a PC that changes linearly with
        the navigation position (as the beam moves over the sample; 6 more
        parameters, see ``PCEstimate.gradient``); ``pc`` is then the PC at
        the centre of the scan's navigation positions.
    indexing
        How each pattern's lattice is rebuilt from its bands
        (:func:`kikuchipy_cnn.lattice.reconstruct_lattice`): ``"widths"``
        uses band directions and widths, ``"directions"`` directions alone
        (widths of small or real patterns can mislead: kikuchipy's 60 px Ni
        scan is only estimated this way), ``"auto"`` (default) runs both and
        keeps the estimate whose lattice is the most symmetric (most metric
        constraints), then uses the most patterns, then has the smallest
        uncertainty; twice the time.

    Returns
    -------
    PCEstimate

    Raises
    ------
    ValueError
        When the data do not constrain the PC: no pattern with enough indexed
        bands, a lattice whose metric symmetry gives fewer than three
        constraints per pattern (triclinic, monoclinic), or an
        uncertainty above ``max_uncertainty``.
    """
    if pc_model not in ("constant", "affine"):
        raise ValueError(f"pc_model must be 'constant' or 'affine', not {pc_model!r}")
    if indexing not in INDEXING:
        raise ValueError(f"indexing must be one of {list(INDEXING)}, not {indexing!r}")
    data_k, keep, pcs, positions, wavelength = _input(patterns, pc0, beam_energy, static_background,
                                                      max_patterns)
    if pc_model == "affine" and positions is None:
        raise ValueError("pc_model='affine' needs the navigation positions: give a kikuchipy signal")
    at = _pattern_pcs(pcs, positions)
    results, errors = [], []
    for use_widths in INDEXING[indexing]:
        try:
            results.append(_estimate(data_k, keep, at, pcs.mean(0), wavelength, pc_model, n_bands, rounds,
                                     refine, use_widths, max_uncertainty))
        except ValueError as e:
            errors.append(e)
    if not results:
        raise errors[-1] if len(errors) == 1 else ValueError(
            "Neither indexing with band widths nor with directions alone constrains the pattern centre: "
            + "; ".join(f"({k}) {e}" for k, e in zip(("widths", "directions"), errors))
        )
    return max(results, key=lambda e: (CONSTRAINTS[e.lattice], e.n_patterns_used, -float(np.linalg.norm(e.uncertainty))))


def _estimate(data_k, keep, at, start, wavelength, pc_model, n_bands, rounds, refine, use_widths,
              max_uncertainty) -> PCEstimate:
    """:func:`estimate_pc` with one way of indexing (``use_widths``)."""
    shape = data_k.shape[1:]
    x = np.concatenate([start, np.zeros(6)]) if pc_model == "affine" else start.copy()
    history, asym0 = [], None
    for _ in range(max(1, int(rounds))):
        lattices = index_patterns(data_k, np.array([at[i](x) for i in keep]), wavelength, n_bands=n_bands,
                                  use_widths=use_widths)
        lattice, rotations, has = _common_lattice(lattices)
        lats = [lat for lat, h in zip(lattices, has) if h]
        terms = [(lat, rot, at[i], i) for lat, rot, i in zip(lats, rotations, keep[has])]
        _check_constraints(lattice, len(terms))
        if asym0 is None:
            asym0 = _rms(_residuals(x, terms, shape))
        new_x, terms, fit = _fit_round(terms, shape, x, lattice, refine)
        _check_range(new_x[:3], start)
        history.append(new_x[:3])
        moved = float(np.abs(new_x - x).max())
        x = new_x
        if moved < 2e-4:
            break
    sd, method = _uncertainty(terms, shape, x, lattice, fit)
    if not np.all(sd[:3] <= max_uncertainty):
        raise ValueError(
            f"The patterns do not constrain the pattern centre: uncertainty "
            f"{np.round(sd[:3], 4).tolist()} (PCx, PCy, PCz) exceeds {max_uncertainty} "
            f"({len(terms)} pattern(s), {lattice} lattice)"
        )
    used = np.zeros(len(at), bool)
    used[[i for *_, i in terms]] = True
    return PCEstimate(pc=x[:3], uncertainty=sd[:3], n_patterns_used=len(terms),
                      pc_per_pattern=np.array([a(x) for a in at]), lattice=lattice, pc0=start,
                      asymmetry0=asym0, asymmetry=_rms(_residuals(x, terms, shape)),
                      rms_angle=fit.get("rms_angle", float("nan")), uncertainty_method=method, used=used,
                      history=history, gradient=x[3:].reshape(3, 2) if len(x) > 3 else None,
                      gradient_uncertainty=sd[3:].reshape(3, 2) if len(x) > 3 else None,
                      indexing="widths" if use_widths else "directions")


def check_detector(signal, static_background="auto", tolerance: float = CHECK_TOLERANCE,
                   n_sigma: float = 3.0, **kwargs) -> PCEstimate | None:
    """Warn when a signal's detector geometry is kikuchipy's default or
    disagrees with the bands.

    Runs :func:`estimate_pc` from the detector's pattern centre (seconds for
    a scan; at most ``max_patterns`` patterns) and warns (RuntimeWarning,
    naming the fix) when

    - the detector has kikuchipy's default PC ``(0.5, 0.5, 0.5)``, or
    - the estimate lands more than ``max(tolerance, n_sigma x uncertainty)``
      from the detector's PC in any coordinate (e.g. a file read with the
      wrong PC convention), or
    - the patterns do not constrain the PC, so that it could not be checked.

    Parameters
    ----------
    signal
        kikuchipy ``EBSD`` signal; not modified.
    static_background
        As in :func:`estimate_pc`.
    tolerance
        Smallest reported disagreement (fraction of the detector).
    n_sigma
        Disagreements within this many standard deviations of the estimate
        are not reported.
    **kwargs
        Passed to :func:`estimate_pc` (e.g. ``max_patterns``); not ``pc0``.

    Returns
    -------
    PCEstimate or None
        The estimate from the detector's PC, None when it was refused.
    """
    import warnings

    from kikuchipy_cnn.classify import KIKUCHIPY_DEFAULT_PC

    if not hasattr(signal, "detector") or not hasattr(signal, "axes_manager"):
        raise TypeError(f"check_detector needs a kikuchipy EBSD signal, not {type(signal).__name__}")
    if "pc0" in kwargs:
        raise ValueError("check_detector starts at the signal's detector PC: do not give pc0")
    if tolerance < 0 or n_sigma < 0:
        raise ValueError(f"tolerance and n_sigma must be >= 0, not {tolerance} and {n_sigma}")
    pc_det = np.asarray(signal.detector.pc, np.float64).reshape(-1, 3)
    default = bool(np.allclose(pc_det, KIKUCHIPY_DEFAULT_PC))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*default pattern centre", category=UserWarning)
        try:
            est, reason = estimate_pc(signal, static_background=static_background, **kwargs), ""
        except ValueError as e:
            est, reason = None, str(e)
    fix = ("set s.detector.pc = (PCx, PCy, PCz) to the true one (Bruker convention; "
           "kikuchipy.detectors.EBSDDetector converts TSL, Oxford and EMsoft values), or classify "
           "with pc='estimate'")
    found = "" if est is None else f"; the bands give {_format_pc(est.pc, est.uncertainty)}"
    if default:
        warnings.warn(f"The signal's detector has kikuchipy's default pattern centre (0.5, 0.5, 0.5), "
                      f"almost never the real one{found}: {fix}", RuntimeWarning, stacklevel=user_stacklevel())
    elif est is None:
        warnings.warn(f"The detector's pattern centre could not be checked against the bands: {reason}",
                      RuntimeWarning, stacklevel=user_stacklevel())
    else:
        diff = np.abs(est.pc - est.pc0)
        limit = np.maximum(tolerance, n_sigma * est.uncertainty)
        if np.any(diff > limit):
            warnings.warn(
                f"The detector's pattern centre {_format_pc(est.pc0)} disagrees with the bands, which "
                f"give {_format_pc(est.pc, est.uncertainty)} from {est.n_patterns_used} pattern(s) "
                f"({est.lattice} lattice; differences {_format_pc(est.pc - est.pc0)} exceed "
                f"max({tolerance}, {n_sigma:g} x uncertainty)). A file read with the wrong PC "
                f"convention or a wrong detector does this: {fix}",
                RuntimeWarning, stacklevel=user_stacklevel())
    return est


def _format_pc(pc, sd=None) -> str:
    text = "(" + ", ".join(f"{v:.4f}" for v in pc) + ")"
    return text if sd is None else text + " +- (" + ", ".join(f"{v:.4f}" for v in sd) + ")"
