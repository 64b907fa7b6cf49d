"""Phases of a scan: pooling the evidence of many patterns of one phase.

A single pattern sees a cap of the Kikuchi sphere; the patterns of one phase
seen in many grains see other zones and other bands. This module holds the
pieces that combine per-pattern answers into one answer per phase (issue 14)
and that discover the phases of a scan without prior knowledge
(:func:`discover_phases`, used by ``classify_structure(pool="phases")``).

:func:`pool_probabilities` is the baseline: the per-pattern class
probabilities of the patterns of one group, combined as independent
evidence (sum of log-probabilities, each clipped), which the pooling pilot
found better than averaging (averaging favours crystal systems with many
classes). It pools verdicts only, so it keeps every error the model makes
systematically; ``benchmarks/pooling_curve.py`` measures how far it goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kikuchipy_cnn.bands import d_spacing
from kikuchipy_cnn.preprocessing import circular_mask

__all__ = [
    "DEFAULT_SIGNATURES",
    "SIGNATURES",
    "POOL_CLIP",
    "POOL_MODES",
    "POOL_TEMPERING",
    "PhaseDiscovery",
    "PooledPhases",
    "d_spacing_histogram",
    "discover_phases",
    "grain_signatures",
    "grains_from_sketches",
    "pattern_sketches",
    "pattern_spectra",
    "cell_columns",
    "format_cell",
    "format_conventional",
    "phase_cells",
    "pool_evidence",
    "pool_probabilities",
    "sketch_length",
]

#: ``pool`` values of :func:`kikuchipy_cnn.classify_structure` (and of the
#: command line's ``--pool``)
POOL_MODES = ("phases", "none")

#: Smallest per-pattern probability used in the pooled log-likelihood: one
#: pattern that rules a class out cannot veto it against all the others
POOL_CLIP = 1e-6

#: Tempering β of :func:`pool_probabilities` used by
#: ``classify_structure(pool="phases")`` when the model card gives none
#: (``pooling: {tempering: ...}``): fitted for ``kcnn-resnet-s`` 0.2.0 on the
#: validation structures (pooled joint log-loss at 3-30 patterns;
#: ``benchmarks/pooling_curve.py``, ``docs/phases.md``)
POOL_TEMPERING = 0.75

#: Side of the block-averaged sketch of a preprocessed pattern that grains
#: are found from (:func:`pattern_sketches`)
SKETCH_SIZE = 16

#: Neighbouring patterns whose sketches (less the scan's mean sketch) have a
#: normalised dot product of at least this belong to one grain
#: (:func:`grains_from_sketches`)
GRAIN_THRESHOLD = 0.6

#: Smallest per-pattern probability in the grain signatures (log-probabilities
#: below log(this) are clipped, so one confident miss does not dominate)
SIGNATURE_CLIP = 1e-4

#: A group of ``n`` grains is split in two phases only if the split explains
#: at least ``a + b / n`` of the weighted variance of their signatures
#: (2-means R², each signature block scaled to unit variance); ``(a, b)``.
#: Fitted to the 98th percentile of the R² of random subsets of 3-20 grains
#: of rendered single-phase scans of the 90 validation structures (one scan
#: each, 20 x 20 patterns, ~20 grains; kcnn-resnet-s 0.2.0): 2-means always
#: finds some split, and the fewer the grains the better it seems
SPLIT_R2 = (0.42, 1.68)

#: Patterns per block in which :func:`grains_from_sketches` centres sketches
#: and compares neighbours (its memory, beyond the scan's sketches: about
#: ``(GRAIN_BLOCK + columns) * m * 4`` bytes per block, plus the joined pairs)
GRAIN_BLOCK = 4096

#: Radial bins of the power spectrum signature (:func:`pattern_spectra`)
SPECTRUM_BINS = 16

#: Log-spaced bins of the d-spacing signature (:func:`d_spacing_histogram`)
#: and their range in Å
DSPACING_BINS = 16
DSPACING_RANGE = (0.6, 6.0)

#: Grain signatures :func:`discover_phases` can tell phases apart by:
#: the model's class log-probabilities, the patterns' radial power spectra
#: (:func:`pattern_spectra`) and, for band models, the histograms of the
#: bands' d-spacings (:func:`d_spacing_histogram`)
SIGNATURES = ("probabilities", "spectra", "d_spacings")

#: Signatures used for a model whose card names none (``pooling:
#: {signatures: ...}``): those :data:`SPLIT_R2` was fitted with
DEFAULT_SIGNATURES = ("probabilities", "spectra")

#: A discovered phase holds at least this many patterns and this many grains
MIN_PHASE_PATTERNS = 5
MIN_PHASE_GRAINS = 2

#: At most this many phases are discovered
MAX_PHASES = 8


def pool_probabilities(probs: np.ndarray, groups: np.ndarray, clip: float = POOL_CLIP,
                       tempering: float = 0.0, views: np.ndarray | None = None):
    """Pool per-pattern class probabilities within groups of patterns.

    Parameters
    ----------
    probs
        ``(n, n_classes)`` probabilities per pattern; rows that are not
        finite (unusable, masked or rejected patterns) are left out.
    groups
        ``(n,)`` group label per pattern (e.g. a phase or structure id);
        negative labels are left out (not classified).
    clip
        Lower clip of each probability before its logarithm.
    tempering
        Exponent β: a group's summed log-probabilities are divided by
        ``n ** β`` for its ``n`` patterns. β = 0 treats the patterns as
        independent evidence (confidence grows with every pattern); β = 1
        is the normalised geometric mean (no more confident than one
        pattern). Errors of one model on patterns of one phase are
        correlated, so the calibrated value lies in between
        (``benchmarks/pooling_curve.py`` fits it on validation structures).
        It never changes the pooled argmax.
    views
        ``(n,)`` view (grain) label per pattern, or None (each pattern its
        own view). The patterns of one view show one orientation, so they
        are one piece of evidence: their log-probabilities are averaged
        first, and ``n`` above counts views, not patterns. Views are told
        apart within a group only.

    Returns
    -------
    labels
        ``(g,)`` the sorted group labels that had at least one usable pattern.
    pooled
        ``(g, n_classes)`` pooled probabilities, proportional to the product
        of the clipped per-pattern probabilities (normalised per group).
    counts
        ``(g,)`` usable patterns per group.

    Examples
    --------
    >>> import numpy as np
    >>> from kikuchipy_cnn.phases import pool_probabilities
    >>> p = np.array([[0.6, 0.4], [0.6, 0.4], [0.2, 0.8]])
    >>> labels, pooled, counts = pool_probabilities(p, np.array([0, 0, 1]))
    >>> labels.tolist(), counts.tolist()
    ([0, 1], [2, 1])
    >>> np.round(pooled, 3).tolist()
    [[0.692, 0.308], [0.2, 0.8]]
    >>> np.round(pool_probabilities(p, np.array([0, 0, 1]), tempering=1)[1], 3).tolist()
    [[0.6, 0.4], [0.2, 0.8]]
    >>> np.round(pool_probabilities(p, np.array([0, 0, 1]), views=np.array([5, 5, 5]))[1], 3).tolist()
    [[0.6, 0.4], [0.2, 0.8]]
    """
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.asarray(groups)
    if probs.ndim != 2 or groups.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (n, n_classes) and groups (n,), not {probs.shape} and {groups.shape}"
        )
    if not 0 < clip < 1:
        raise ValueError(f"clip must lie in (0, 1), not {clip}")
    if not (np.isfinite(tempering) and tempering >= 0):
        raise ValueError(f"tempering must be a finite number >= 0, not {tempering}")
    if views is not None:
        views = np.asarray(views)
        if views.shape != groups.shape:
            raise ValueError(f"views must be (n,) = {groups.shape}, not {views.shape}")
    ok = np.isfinite(probs).all(axis=1) & (groups >= 0)
    labels, inverse = np.unique(groups[ok], return_inverse=True)
    logp = np.log(np.clip(probs[ok], clip, 1.0))
    counts = np.bincount(inverse, minlength=labels.size)
    if views is None:
        total = np.zeros((labels.size, probs.shape[1]))
        np.add.at(total, inverse, logp)
        n_views = counts
    else:  # mean per (group, view), then the sum over a group's views
        pairs, pair_of = np.unique(np.column_stack([inverse, views[ok]]), axis=0, return_inverse=True)
        pair_of = pair_of.ravel()
        per_view = np.zeros((len(pairs), probs.shape[1]))
        np.add.at(per_view, pair_of, logp)
        per_view /= np.bincount(pair_of, minlength=len(pairs))[:, None]
        total = np.zeros((labels.size, probs.shape[1]))
        np.add.at(total, pairs[:, 0], per_view)
        n_views = np.bincount(pairs[:, 0], minlength=labels.size)
    if tempering:
        total /= np.maximum(n_views, 1)[:, None] ** float(tempering)
    total -= total.max(axis=1, keepdims=True)
    pooled = np.exp(total)
    pooled /= pooled.sum(axis=1, keepdims=True)
    return labels, pooled, counts


#: Patterns of one grain (evenly spaced) whose cells give the grain's cell in
#: :func:`phase_cells`
GRAIN_CELLS = 8


def phase_cells(cells: np.ndarray, groups: np.ndarray, views: np.ndarray,
                scales: np.ndarray | None = None):
    """The reduced cell of each group of patterns (e.g. a discovered
    phase): each view (grain) first gets one cell, the
    :func:`~kikuchipy_cnn.lattice.consensus_cell` of up to
    :data:`GRAIN_CELLS` of its patterns' cells; the group's cell is the
    consensus of its grains' cells, each grain weighing one. Its size is the
    ``a`` in Å of the group's patterns whose cells agree with it
    (:data:`~kikuchipy_cnn.lattice.CELL_AGREEMENT`) and have a scale: the
    median of each grain's patterns, then of the grains (each grain counts
    once).

    Parameters
    ----------
    cells
        ``(n, 3, 3)`` each pattern's Niggli cell (rows the basis vectors, a
        the shortest; NaN where none), e.g. the lattices rebuilt from band directions
        (:func:`kikuchipy_cnn.features.band_features` ``cells=``).
    groups
        ``(n,)`` group per pattern; negative: left out.
    views
        ``(n,)`` view (grain) per pattern.
    scales
        ``(n,)`` factor that takes each cell to Å (NaN where unknown;
        ``band_features(cell_scales=)``), or None: no sizes.

    Returns
    -------
    labels
        ``(g,)`` sorted group labels (every non-negative one).
    shape
        ``(g, 6)``: ``(1, b/a, c/a, alpha, beta, gamma)`` of the consensus
        Niggli cell (a <= b <= c; degrees), NaN where no pattern of the group
        has a cell.
    support
        ``(g,)`` fraction of the group's grains with a cell whose cell has
        the consensus shape (:data:`~kikuchipy_cnn.lattice.CELL_AGREEMENT`);
        0 where none.
    size
        ``(g,)`` the consensus cell's ``a`` (its shortest lattice vector) in
        Å, so its lengths are ``size * shape[:, :3]``; NaN where no agreeing
        pattern has a scale, and without ``scales``.
    """
    from kikuchipy_cnn.lattice import (
        CELL_AGREEMENT,
        cell_fingerprints,
        cell_shape,
        consensus_cell,
    )

    cells = np.asarray(cells, dtype=np.float64)
    groups, views = np.asarray(groups), np.asarray(views)
    if cells.shape != (len(groups), 3, 3) or views.shape != groups.shape:
        raise ValueError(f"cells must be (n, 3, 3) and groups, views (n,), not {cells.shape}, "
                         f"{groups.shape}, {views.shape}")
    if scales is not None:
        scales = np.asarray(scales, dtype=np.float64)
        if scales.shape != groups.shape:
            raise ValueError(f"scales must be (n,) = {groups.shape}, not {scales.shape}")
    labels = np.unique(groups[groups >= 0])
    shape = np.full((labels.size, 6), np.nan)
    support = np.zeros(labels.size)
    size = np.full(labels.size, np.nan)
    has = np.isfinite(cells).all(axis=(1, 2)) & (groups >= 0)
    rows = np.flatnonzero(has)
    # one cell per (group, view): the consensus of a few of its patterns
    pairs, pair_of = np.unique(np.column_stack([groups[rows], views[rows]]), axis=0, return_inverse=True)
    pair_of = pair_of.ravel()
    order = np.argsort(pair_of, kind="stable")
    starts = np.searchsorted(pair_of[order], np.arange(len(pairs) + 1))
    grain_cell = np.full((len(pairs), 3, 3), np.nan)
    for p in range(len(pairs)):
        members = rows[order[starts[p] : starts[p + 1]]]
        pick = members[np.linspace(0, len(members) - 1, min(len(members), GRAIN_CELLS)).round().astype(int)]
        best, _ = consensus_cell(cells[pick])
        if best >= 0:
            grain_cell[p] = cells[pick[best]]
    for k, g in enumerate(labels):
        mine = np.flatnonzero((pairs[:, 0] == g) & np.isfinite(grain_cell).all(axis=(1, 2)))
        if mine.size == 0:
            continue
        best, support[k] = consensus_cell(grain_cell[mine])
        if best < 0:
            continue
        shape[k] = cell_shape(grain_cell[mine[best]])
        if scales is None:
            continue
        sized = rows[(groups[rows] == g) & np.isfinite(scales[rows]) & (scales[rows] > 0)]
        if sized.size == 0:
            continue
        want = np.log(cell_fingerprints(grain_cell[mine[best]]))
        agree = np.abs(np.log(cell_fingerprints(cells[sized])) - want).max(axis=1) <= CELL_AGREEMENT
        if agree.any():
            sized = sized[agree]
            length = np.linalg.norm(cells[sized, 0], axis=1) * scales[sized]  # Niggli a, as in the shape
            # each grain once: the median of its patterns, then of the grains
            grain_of, at = np.unique(views[sized], return_inverse=True)
            size[k] = float(np.median([np.median(length[at.ravel() == j]) for j in range(len(grain_of))]))
    return labels, shape, support, size


#: Column heading of :func:`format_cell`
CELL_HEADING = "reduced cell a b c (Å) or a:b:c, alpha beta gamma (share of grains)"

#: Column heading of :func:`format_conventional`
CONVENTIONAL_HEADING = "conventional cell"

#: Heading of the two cell columns of :func:`cell_columns`
CELL_COLUMNS_HEADING = f"  {CONVENTIONAL_HEADING:<24}  {CELL_HEADING}"


def cell_columns(conventional, cell, support, size) -> str:
    """The two cell columns of a phase table (``print(xmap.pooled_phases)``,
    :func:`~kikuchipy_cnn.format_summary`): :func:`format_conventional` and
    :func:`format_cell`, under :data:`CELL_COLUMNS_HEADING`."""
    return f"  {format_conventional(conventional, size):<24}  " + format_cell(cell, support, size)


def format_cell(cell, support, size=float("nan")) -> str:
    """``"a b c Å, alpha beta gamma (support %)"`` of a :func:`phase_cells`
    row with its size, ``"1:b/a:c/a, alpha beta gamma (support %)"`` without
    one, or ``"none"``."""
    c = np.asarray(cell, dtype=np.float64)
    if not np.isfinite(c).all():
        return "none"
    if np.isfinite(size):
        lengths = f"{c[0] * size:.2f} {c[1] * size:.2f} {c[2] * size:.2f} Å"
    else:
        lengths = f"1:{c[1]:.2f}:{c[2]:.2f}"
    return f"{lengths}, {c[3]:.1f} {c[4]:.1f} {c[5]:.1f} ({float(support):.0%})"


def format_conventional(cell, size=float("nan")) -> str:
    """The conventional cell ``(a, b, c, alpha, beta, gamma)`` (lengths in
    units of the reduced cell's ``a``; ``size`` that ``a`` in Å), only its
    free parameters: ``"a 3.52 Å"`` (cubic), ``"a 2.95, c 4.68 Å"``
    (tetragonal, hexagonal, R in hexagonal axes), ``"a b c"``
    (orthorhombic), plus ``beta`` (monoclinic) or all angles (triclinic);
    ratios to ``a`` without a size; ``"none"`` where not found."""
    c = np.asarray(cell, dtype=np.float64)
    if not np.isfinite(c).all():
        return "none"
    sized = np.isfinite(size)
    ln = c[:3] * (size if sized else 1.0 / c[0])
    unit = " Å" if sized else " (a = 1)"
    eq = np.isclose(ln[:, None], ln[None, :], rtol=1e-3)
    right = np.isclose(c[3:], 90.0, atol=0.05)
    if eq.all() and right.all():
        return f"a {ln[0]:.3f}" + unit
    if eq[0, 1] and right[:2].all() and (right[2] or np.isclose(c[5], 120.0, atol=0.05)):
        return f"a {ln[0]:.3f}, c {ln[2]:.3f}" + unit
    text = f"a {ln[0]:.3f}, b {ln[1]:.3f}, c {ln[2]:.3f}" + unit
    if right.all():
        return text
    if right[0] and right[2]:
        return text + f", beta {c[4]:.1f}"
    return text + f", {c[3]:.1f} {c[4]:.1f} {c[5]:.1f}"


def pool_evidence(features: np.ndarray, groups: np.ndarray, views: np.ndarray, model_path,
                  sha256: str):
    """Pool the band evidence of the patterns of each group with a pooled model.

    Where :func:`pool_probabilities` combines verdicts, this combines the
    evidence: the band features of a group's patterns (a discovered phase),
    averaged per view (grain) and summarised over its views by
    :func:`kikuchipy_cnn.features.pooled_features` (e.g. the fraction of
    grains whose reconstructed lattice reaches each Bravais lattice), are read
    by the model card's pooled model (``pooling: {model: ...}``, trained on
    bags of 1-12 orientations of simulated structures by
    :mod:`kikuchipy_cnn.training.pooled_model`).

    Parameters
    ----------
    features
        ``(n, F)`` band features per pattern
        (:func:`kikuchipy_cnn.features.band_features`); rows that are not
        finite are left out.
    groups
        ``(n,)`` group label per pattern; negative labels are left out.
    views
        ``(n,)`` view (grain) label per pattern.
    model_path, sha256
        The pooled ONNX model and its checksum
        (:attr:`kikuchipy_cnn.card.ModelCard.pooled_model`).

    Returns
    -------
    labels, pooled, counts
        As :func:`pool_probabilities` (each probability at least
        :data:`POOL_CLIP` before normalising, so no class is ruled out
        exactly).
    """
    from kikuchipy_cnn.engine import auxiliary_session, run_auxiliary
    from kikuchipy_cnn.features import pooled_features

    features = np.asarray(features, dtype=np.float32)
    groups, views = np.asarray(groups), np.asarray(views)
    if features.ndim != 2 or groups.shape != features.shape[:1] or views.shape != groups.shape:
        raise ValueError(
            f"features must be (n, F) and groups and views (n,), not {features.shape}, "
            f"{groups.shape} and {views.shape}"
        )
    ok = np.isfinite(features).all(axis=1) & (groups >= 0)
    labels = np.unique(groups[ok])
    counts = np.array([int((ok & (groups == g)).sum()) for g in labels], dtype=np.int64)
    if labels.size == 0:
        width = auxiliary_session(model_path, sha256).get_outputs()[0].shape[-1]
        return labels, np.zeros((0, width if isinstance(width, int) else 0)), counts
    x = np.stack([pooled_features(features[ok & (groups == g)], views[ok & (groups == g)])
                  for g in labels])
    pooled = np.clip(np.asarray(run_auxiliary(model_path, sha256, x), dtype=np.float64), POOL_CLIP, None)
    return labels, pooled / pooled.sum(axis=1, keepdims=True), counts


def pattern_sketches(x: np.ndarray, valid: np.ndarray | None = None,
                     size: int = SKETCH_SIZE) -> np.ndarray:
    """Small, normalised sketches of preprocessed patterns for comparing
    neighbours.

    Each preprocessed pattern (flat-fielded, high-passed; the model's input)
    is block-averaged to ``size`` × ``size`` pixels, its inscribed circle is
    kept, and the result is centred and scaled to unit length, so the dot
    product of two sketches is their normalised dot product (1 for identical
    patterns).

    Parameters
    ----------
    x
        ``(n, 1, s, s)`` or ``(n, s, s)`` preprocessed patterns.
    valid
        ``(n,)`` which patterns are usable; the sketches of the others are 0.
    size
        Sketch side; patterns smaller than this are used whole.

    Returns
    -------
    sketches
        ``(n, m)`` float32, ``m`` the number of pixels in the inscribed circle.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    n, s = x.shape[0], x.shape[-1]
    b = max(1, s // size)
    k = s // b
    x = x[:, : k * b, : k * b].reshape(n, k, b, k, b).mean(axis=(2, 4))
    out = x[:, circular_mask(k)]
    out = out - out.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    ok = norm[:, 0] > 0
    if valid is not None:
        ok &= np.asarray(valid, bool)
    out = np.where(ok[:, None], out / np.where(norm > 0, norm, 1), 0)
    return out.astype(np.float32)


def sketch_length(side: int, size: int = SKETCH_SIZE) -> int:
    """Length ``m`` of the sketch (:func:`pattern_sketches`) of a ``side`` ×
    ``side`` preprocessed pattern: the pixels of the circle inscribed in its
    block-averaged square."""
    k = side // max(1, side // size)
    return int(circular_mask(k).sum())


def pattern_spectra(x: np.ndarray, valid: np.ndarray | None = None,
                    bins: int = SPECTRUM_BINS) -> np.ndarray:
    """Log radial power spectra of preprocessed patterns, centred per pattern.

    The radial profile of a pattern's 2-D power spectrum does not change when
    the pattern turns in its plane, and holds the widths and spacings of its
    bands, i.e. the scale of the lattice: with the model's class
    log-probabilities it makes the grain signatures that
    :func:`discover_phases` groups (measured: one block alone separates
    phases worse than both together, ``docs/phases.md``).

    Parameters
    ----------
    x
        ``(n, 1, s, s)`` or ``(n, s, s)`` preprocessed patterns.
    valid
        ``(n,)`` usable patterns; the others get 0.
    bins
        Number of radial bins, logarithmic from 1/s to 1/2 cycles per pixel.

    Returns
    -------
    spectra
        ``(n, bins)`` float32, each row minus its mean.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    n, rows, cols = x.shape
    # the mean power over each ring of the full plane, from the half plane of
    # the real FFT (interior columns stand for two frequencies): one product
    power = np.abs(np.fft.rfft2(x)) ** 2
    radius = np.hypot(np.fft.fftfreq(rows)[:, None], np.fft.rfftfreq(cols)[None, :])
    which = (np.digitize(radius, np.geomspace(1 / max(rows, cols), 0.5, bins + 1)) - 1).ravel()
    mult = np.full(radius.shape, 2.0)
    mult[:, 0] = 1
    if cols % 2 == 0:
        mult[:, -1] = 1
    inside = (which >= 0) & (which < bins)
    ring = np.zeros((radius.size, bins))
    ring[np.flatnonzero(inside), which[inside]] = mult.ravel()[inside]
    filled = ring.sum(axis=0) > 0
    ring[:, filled] /= ring[:, filled].sum(axis=0)
    out = np.zeros((n, bins))
    out[:, filled] = np.log(power.reshape(n, -1).astype(np.float64) @ ring[:, filled] + 1e-12)
    out -= out.mean(axis=1, keepdims=True)
    ok = np.isfinite(out).all(axis=1)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    return np.where(ok[:, None], out, 0).astype(np.float32)


def d_spacing_histogram(widths: np.ndarray, valid: np.ndarray, wavelength: float,
                        bins: int = DSPACING_BINS, d_range: tuple[float, float] = DSPACING_RANGE) -> np.ndarray:
    """Histograms of the d-spacings of each pattern's bands: a "Kikuchi
    powder pattern" that does not change with orientation.

    A band of angular full width ``w`` is the pair of Kikuchi lines of
    Bragg angle about ``w / 2``, so ``d = λ / (2 sin(w / 2))``. The
    d-spacings a pattern shows depend on which planes are in view, but over
    the patterns of a grain, and more so over the grains of a phase, they
    sample the phase's strong reflectors: two phases of different cells
    give different histograms (measured: the second phase of a two-phase
    scan found 32 % of the time from these alone against 15 % from the band
    model's verdicts, and 45 % against 22 % added to the verdicts and
    spectra: validation structures on fine masters, both phases within
    1 kV; ``models/experiments/2026-11-30-discovery-band-signatures``).

    Parameters
    ----------
    widths
        ``(n, k)`` angular band widths in radians, NaN where not measured
        (:class:`kikuchipy_cnn.bands.BandSet` ``width``).
    valid
        ``(n, k)`` True where a band was found.
    wavelength
        Electron wavelength in Å (one beam energy per scan).
    bins, d_range
        Number of logarithmic bins and their range in Å (d outside it falls
        in the first or last bin).

    Returns
    -------
    histograms
        ``(n, bins)`` fractions of each pattern's measured bands per bin
        (rows sum to 1); NaN rows where no band width was measured (small
        patterns: :data:`kikuchipy_cnn.bands.MIN_WIDTH_PX`), which
        :func:`discover_phases` leaves out of the grains' means.
    """
    if not (np.isfinite(wavelength) and wavelength > 0):
        raise ValueError(f"wavelength must be a positive number of Å, not {wavelength!r}")
    widths = np.asarray(widths, dtype=np.float64)
    # a full width is 2 theta_B < pi; wider is no band width
    measured = np.asarray(valid, bool) & np.isfinite(widths) & (widths > 0) & (widths < np.pi)
    edges = np.linspace(np.log(d_range[0]), np.log(d_range[1]), bins + 1)
    out = np.full((len(widths), bins), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        logd = np.log(d_spacing(np.where(measured, widths, 1.0), float(wavelength)))
    which = np.clip(np.digitize(logd, edges) - 1, 0, bins - 1)
    for i in np.flatnonzero(measured.any(axis=1)):
        out[i] = np.bincount(which[i][measured[i]], minlength=bins) / measured[i].sum()
    return out


def grains_from_sketches(sketches: np.ndarray, nav_shape: tuple[int, ...],
                         usable: np.ndarray, threshold: float = GRAIN_THRESHOLD) -> np.ndarray:
    """Grains: connected regions of the scan grid whose neighbouring patterns
    are near-identical.

    Two usable patterns that are neighbours on the grid (left-right or
    up-down; along the line in a 1-D scan) belong to one grain when their
    sketches' normalised dot product is at least ``threshold``, after the mean
    sketch of the usable patterns is subtracted from every sketch: what all
    patterns share (residual background, the detector's own structure) would
    otherwise join different grains of low-contrast scans. Patterns of one
    grain share an orientation and a phase, so their patterns differ by noise
    only.

    Parameters
    ----------
    sketches
        ``(n, m)`` unit sketches (:func:`pattern_sketches`), in the scan's
        row-major order.
    nav_shape
        Navigation shape in numpy order (rows, columns), ``(n,)`` or ``()``.
    usable
        ``(n,)`` patterns that can be grouped; the others get -1 and cut
        grains (masked, rejected, unusable patterns).
    threshold
        Smallest normalised dot product of neighbours in one grain.

    Returns
    -------
    grain
        ``(n,)`` grain index per pattern, 0, 1, ... in order of each grain's
        first pattern, -1 where not usable.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    usable = np.asarray(usable, bool)
    n = usable.size
    sketches = np.asarray(sketches, np.float32)  # no copy of float32 sketches
    # neighbours on the grid: i and i + 1 in a row, i and i + cols in a column
    cols = int(nav_shape[-1]) if len(nav_shape) else 1
    shifts = [(1, True)] + ([(cols, False)] if len(nav_shape) >= 2 and n > cols else [])
    mean = np.zeros(sketches.shape[1], np.float32)
    if usable.any():
        total = np.zeros(sketches.shape[1])
        for lo in range(0, n, GRAIN_BLOCK):
            block = sketches[lo : lo + GRAIN_BLOCK]
            total += block[usable[lo : lo + GRAIN_BLOCK]].sum(axis=0, dtype=np.float64)
        mean = (total / usable.sum()).astype(np.float32)
    # blocks of patterns centred one at a time (plus the next row, for the
    # column neighbours): nothing of the size of the scan is copied, and only
    # the joined pairs are kept
    a_join, b_join = [], []
    for lo in range(0, n, GRAIN_BLOCK):
        hi = min(n, lo + GRAIN_BLOCK)
        c = sketches[lo : min(n, hi + max(k for k, _ in shifts))] - mean
        norm = np.sqrt(np.einsum("ij,ij->i", c, c))
        norm[norm == 0] = 1
        for shift, along_row in shifts:
            m = min(hi, n - shift) - lo  # pairs (i, i + shift) with i in this block
            if m <= 0:
                continue
            sim = np.einsum("ij,ij->i", c[:m], c[shift : shift + m]) / (norm[:m] * norm[shift : shift + m])
            a = np.arange(lo, lo + m)
            ok = (sim >= threshold) & usable[a] & usable[a + shift]
            if along_row:
                ok &= (a + 1) % cols != 0  # not across the end of a row
            a_join.append(a[ok])
            b_join.append(a[ok] + shift)
    a = np.concatenate(a_join) if a_join else np.zeros(0, np.int64)
    b = np.concatenate(b_join) if b_join else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    grain = np.full(n, -1, dtype=np.int64)
    _, first, inverse = np.unique(comp[usable], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # number grains by their first pattern
    grain[usable] = order[inverse]
    return grain


def _check_signatures(per_pattern: dict, signatures) -> None:
    unknown = [x for x in signatures if x not in SIGNATURES]
    if unknown or not signatures:
        raise ValueError(f"signatures must name some of {list(SIGNATURES)}, not {list(signatures)}")
    missing = [x for x in signatures if per_pattern.get(x) is None]
    if missing:
        raise ValueError(f"signatures {missing} were asked for but not given")


def grain_signatures(per_pattern: dict, grain: np.ndarray, n_grains: int,
                     signatures: tuple[str, ...] = DEFAULT_SIGNATURES) -> list[np.ndarray]:
    """Orientation-invariant signature blocks of each grain, in the order of
    ``signatures`` (names of :data:`SIGNATURES`): the mean over its patterns
    of ``per_pattern[name]`` (``"probabilities"``: class probabilities,
    taken as centred, clipped log-probabilities, a grain's pooled verdict as
    a point in log-ratio space; ``"spectra"``: :func:`pattern_spectra`;
    ``"d_spacings"``: :func:`d_spacing_histogram`). Rows with NaN are left
    out of a grain's mean; a grain with none in a block gets NaN there (see
    :func:`_standardised`). Raises ValueError for unknown or missing names."""
    _check_signatures(per_pattern, signatures)
    blocks = []
    for name in signatures:
        x = np.asarray(per_pattern[name], np.float64)
        if name == "probabilities":
            x = np.log(np.clip(x, SIGNATURE_CLIP, 1.0))
            x = x - x.mean(axis=1, keepdims=True)
        ok = np.isfinite(x).all(axis=1)
        sig = np.zeros((n_grains, x.shape[1]))
        np.add.at(sig, grain[ok], x[ok])
        count = np.bincount(grain[ok], minlength=n_grains)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            blocks.append(np.where(count > 0, sig / np.maximum(count, 1), np.nan))
    return blocks


def _standardised(blocks: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    """The blocks side by side, each centred and scaled to unit weighted
    variance (so each block counts the same, whatever its units). Grains
    with NaN in a block sit at its centre (that block says nothing about
    them); a block with fewer than two grains that have it counts zero."""
    out = []
    for b in blocks:
        ok = np.isfinite(b).all(axis=1)
        bc = np.zeros_like(b)
        if ok.sum() >= 2:
            bc[ok] = b[ok] - w[ok] @ b[ok] / w[ok].sum()
        sd = np.sqrt(float(w @ (bc**2).sum(axis=1)) / w.sum())
        out.append(bc / sd if sd > 0 else bc)
    return np.concatenate(out, axis=1)


def _two_means(x: np.ndarray, w: np.ndarray):
    """Weighted 2-means of the rows of ``x`` started from the split along
    the first principal axis (deterministic). Returns the boolean side of
    every row and the explained fraction of the weighted variance (R²)."""
    mu = w @ x / w.sum()
    xc = x - mu
    total = float(w @ (xc**2).sum(axis=1))
    if total <= 0 or len(x) < 2:
        return None, 0.0
    _, vecs = np.linalg.eigh((xc * w[:, None]).T @ xc)
    side = xc @ vecs[:, -1] > 0
    for _ in range(100):
        if side.all() or not side.any():
            return None, 0.0
        c1 = w[side] @ x[side] / w[side].sum()
        c0 = w[~side] @ x[~side] / w[~side].sum()
        new = ((x - c1) ** 2).sum(axis=1) < ((x - c0) ** 2).sum(axis=1)
        if np.array_equal(new, side):
            break
        side = new
    if side.all() or not side.any():
        return None, 0.0
    c1 = w[side] @ x[side] / w[side].sum()
    c0 = w[~side] @ x[~side] / w[~side].sum()
    within = float(w[side] @ ((x[side] - c1) ** 2).sum(axis=1)
                   + w[~side] @ ((x[~side] - c0) ** 2).sum(axis=1))
    return side, 1.0 - within / total


@dataclass
class PhaseDiscovery:
    """Grains and phases found in a scan by :func:`discover_phases`.

    Attributes
    ----------
    grain
        ``(n,)`` grain index per pattern (-1: not usable).
    phase
        ``(n,)`` discovered phase index per pattern, 0 the phase with the
        most patterns (-1: not usable).
    n_grains, n_phases
        Numbers of grains and phases found.
    split_r2
        R² of every accepted split (see :data:`SPLIT_R2`), in order.
    """

    grain: np.ndarray
    phase: np.ndarray
    n_grains: int
    n_phases: int
    split_r2: list


def discover_phases(probs: np.ndarray, sketches: np.ndarray, nav_shape: tuple[int, ...],
                    usable: np.ndarray | None = None, spectra: np.ndarray | None = None,
                    d_spacings: np.ndarray | None = None,
                    signatures: tuple[str, ...] = DEFAULT_SIGNATURES,
                    grain_threshold: float = GRAIN_THRESHOLD,
                    split_r2: tuple[float, float] = SPLIT_R2, min_patterns: int = MIN_PHASE_PATTERNS,
                    min_grains: int = MIN_PHASE_GRAINS,
                    max_phases: int = MAX_PHASES) -> PhaseDiscovery:
    """Discover the phases of a scan without prior knowledge.

    1. Grains: neighbouring patterns with near-identical sketches
       (:func:`grains_from_sketches`).
    2. Signatures (``signatures``, names of :data:`SIGNATURES`): each
       grain's mean centred log-probabilities of the model's classes (the
       model was trained to give the same classes at every orientation),
       its mean radial power spectrum (:func:`pattern_spectra`, unchanged by
       in-plane rotation; the band widths and spacings) and its mean
       histogram of band d-spacings (:func:`d_spacing_histogram`; band
       models), so grains of one phase have similar signatures.
    3. Phases: the grains are split in two by weighted 2-means (weights: the
       grains' pattern counts; each signature block scaled to unit variance)
       as long as a split of ``n`` grains explains at least
       ``split_r2[0] + split_r2[1] / n`` of their weighted variance and
       leaves at least ``min_patterns`` patterns and ``min_grains`` grains on
       either side; each part is split again, up to ``max_phases`` phases.
       The grains of one phase scatter by orientation but do not fall in two
       tight groups; the bar is the 98th percentile of the R² of
       single-phase groups of grains (:data:`SPLIT_R2`).

    Parameters
    ----------
    probs
        ``(n, n_classes)`` per-pattern probabilities, NaN rows where not
        classified.
    sketches
        ``(n, m)`` unit pattern sketches (:func:`pattern_sketches`).
    nav_shape
        Navigation shape (numpy order).
    usable
        ``(n,)`` patterns to use; default: the rows of ``probs`` that are
        finite. Patterns not used get grain and phase -1.
    spectra
        ``(n, bins)`` radial power spectra (:func:`pattern_spectra`); needed
        when ``signatures`` names ``"spectra"``.
    d_spacings
        ``(n, bins)`` d-spacing histograms (:func:`d_spacing_histogram`, NaN
        rows where no width was measured); needed when ``signatures`` names
        ``"d_spacings"``.
    signatures
        The signature blocks grains are compared by (each scaled to unit
        variance; a block no grain has says nothing). Default
        :data:`DEFAULT_SIGNATURES`; a model card can name its own
        (``pooling: {signatures: ...}``).
    grain_threshold, split_r2, min_patterns, min_grains, max_phases
        See above.

    Returns
    -------
    discovery
        :class:`PhaseDiscovery`.
    """
    given = {"probabilities": probs, "spectra": spectra, "d_spacings": d_spacings}
    _check_signatures(given, signatures)  # before the work
    probs = np.asarray(probs, dtype=np.float64)
    finite = np.isfinite(probs).all(axis=1)
    usable = finite if usable is None else np.asarray(usable, bool) & finite
    grain = grains_from_sketches(sketches, nav_shape, usable, grain_threshold)
    n_grains = int(grain.max()) + 1 if usable.any() else 0
    phase = np.full(grain.shape, -1, dtype=np.int64)
    if n_grains == 0:
        return PhaseDiscovery(grain, phase, 0, 0, [])
    given["probabilities"] = probs
    blocks = grain_signatures({k: None if v is None else np.asarray(v)[usable] for k, v in given.items()},
                              grain[usable], n_grains, signatures)
    weight = np.bincount(grain[usable], minlength=n_grains).astype(np.float64)
    groups, done, accepted = [np.arange(n_grains)], [], []
    while groups and len(groups) + len(done) < max_phases:
        g = groups.pop(0)
        side, r2 = _two_means(_standardised([b[g] for b in blocks], weight[g]), weight[g])
        ok = side is not None and r2 >= split_r2[0] + split_r2[1] / len(g)
        if ok:
            parts = (g[side], g[~side])
            ok = all(len(p) >= min_grains and weight[p].sum() >= min_patterns for p in parts)
        if ok:
            groups += list(parts)
            accepted.append(float(r2))
        else:
            done.append(g)
    done += groups
    # phase 0: the most patterns; ties by the first grain
    done.sort(key=lambda g: (-weight[g].sum(), int(g.min())))
    grain_phase = np.empty(n_grains, dtype=np.int64)
    for i, g in enumerate(done):
        grain_phase[g] = i
    phase[usable] = grain_phase[grain[usable]]
    return PhaseDiscovery(grain, phase, n_grains, len(done), accepted)


@dataclass
class PooledPhases:
    """The phases ``classify_structure(pool="phases")`` discovered, with the
    pooled probabilities of each (``xmap.pooled_phases``).

    Attributes
    ----------
    names
        Phase name per discovered phase (the map's phase names: the pooled
        class, numbered when two phases share one, or the candidate phase's
        name with ``phase_list``).
    phase_ids
        The map's phase id of each discovered phase's patterns (-1 where its
        pooled top probability is below ``min_score``; without candidates the
        phase stays in the map's phase list all the same, with id its index).
    classes
        The class names of the columns of ``probabilities``.
    probabilities
        ``(n_phases, n_classes)`` pooled probabilities of each phase.
    scores
        ``(n_phases,)`` pooled top probability of each phase.
    n_patterns, n_grains
        ``(n_phases,)`` patterns and grains pooled in each phase.
    tempering
        The tempering β used (:func:`pool_probabilities`; NaN with
        ``method="evidence"``).
    method
        ``"probabilities"``: the patterns' probabilities were pooled
        (:func:`pool_probabilities`); ``"evidence"``: their band features,
        by the card's pooled model (:func:`pool_evidence`).
    cells, cell_support, cell_size
        Band models only (else None): ``(n_phases, 6)`` reduced-cell shape
        ``(1, b/a, c/a, alpha, beta, gamma)`` of each phase from the lattices
        rebuilt from its patterns' band directions, the share of its
        grains that agree with it, and ``(n_phases,)`` the cell's ``a`` in Å
        from the patterns' calibrated band widths and the beam energy (NaN
        where unknown; :func:`phase_cells`). A metric, not a symmetry: the
        class is the pooled one.
    conventional_cells
        Band models only (else None): ``(n_phases, 6)`` the conventional
        cell ``(a, b, c, alpha, beta, gamma)`` of the Bravais lattice of each
        phase's pooled class, idealised from its reduced cell (lengths in
        units of the reduced cell's ``a``: times ``cell_size`` for Å); NaN
        where the reduced cell's metric does not reach that lattice within
        :data:`~kikuchipy_cnn.lattice.METRIC_TOLERANCES`
        (:func:`~kikuchipy_cnn.lattice.conventional_cell`), i.e. where the
        cell and the class disagree.
    """

    names: list
    phase_ids: np.ndarray
    classes: tuple
    probabilities: np.ndarray
    scores: np.ndarray
    n_patterns: np.ndarray
    n_grains: np.ndarray
    tempering: float
    method: str = "probabilities"
    cells: np.ndarray | None = None
    cell_support: np.ndarray | None = None
    cell_size: np.ndarray | None = None
    conventional_cells: np.ndarray | None = None

    def __repr__(self) -> str:
        has_cells = self.cells is not None
        rows = [f"{'phase':<16} {'id':>3} {'patterns':>8} {'grains':>6} {'pooled score':>12}"
                + (CELL_COLUMNS_HEADING if has_cells else "")]
        for i, name in enumerate(self.names):
            cell = ""
            if has_cells:
                cell = cell_columns(self.conventional_cells[i], self.cells[i], self.cell_support[i],
                                    self.cell_size[i])
            rows.append(f"{name:<16} {int(self.phase_ids[i]):>3} {int(self.n_patterns[i]):>8} "
                        f"{int(self.n_grains[i]):>6} {float(self.scores[i]):>12.3f}{cell}")
        if self.method == "evidence":
            rows.append("(pooled from the band evidence of each phase's grains)")
        return "\n".join(rows)
