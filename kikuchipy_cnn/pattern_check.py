r"""Is this a usable Kikuchi pattern? An explicit, model-independent check.

A classifier trained on Kikuchi patterns gives *some* class to any image,
often with a high score: a 3 × 3 noise image was once classified
``cF m-3`` with score 0.6. :func:`check_patterns` therefore decides per
pattern, independently of any model, whether it can be a Kikuchi pattern at
all. A pattern is rejected, with the first code that applies, when it is

1. **too small**: shorter side below :data:`MIN_SIDE` (32 px). Binned
   detectors in use give about 60 px or more on the shorter side (8 × 8
   binning of 480 px NORDIF or EDAX cameras, Bruker's 80 × 60), and even
   a 40 × 30 binning is rare; 32 px keeps a margin below those while the
   bands of anything smaller are too few pixels wide to be told from noise;
2. **blank**: not finite, constant, or with no contrast left after
   flat-fielding (relative RMS below :data:`MIN_CONTRAST`);
3. **saturated**: at least :data:`MAX_SATURATED` of the pixels share the
   pattern's maximum value (clipped at the detector's or the dtype's
   maximum);
4. **without Kikuchi bands** (noise, photographs, shading, other images):
   the flat-fielded pattern is too smooth (neighbour correlation above
   :data:`MAX_SMOOTHNESS`), or its Kikuchi score is below
   :data:`MIN_KIKUCHI_SCORE`.

The Kikuchi score follows the physics. The centred square (what the
classifiers see) is resampled to :data:`GRID` px, divided by a heavy
Gaussian blur (flat-field) and standardised in the inscribed circle. Kikuchi
bands are straight and cross the whole pattern, so its Radon transform
:math:`R(\theta, \rho)` (line sums, scaled by :math:`1/\sqrt{\text{length}}`)
has peaks that are *sharp in angle*: rotating a line by 15° takes it off a
band, while it stays on a blob of correlated noise or a smooth shade. The
angular high-pass

.. math:: E(\theta, \rho) = R(\theta, \rho) - \tfrac12 [R(\theta - 15°, \rho) + R(\theta + 15°, \rho)]

is nearly Gaussian for noise of any power spectrum, and has strong peaks on
bands. The Kikuchi score is the mean of the three strongest local maxima of
:math:`E` in units of the robust spread (1.4826 × median absolute deviation)
of :math:`E`: about 3 for noise, 3.5–4 for noisy 60 px experimental
patterns, 5–9 for good ones. It is not a proof of a Kikuchi pattern (long
straight lines, stripes and some photographs score as high); see the
documentation's *Rejection of non-Kikuchi inputs* for measured rates.

Everything is vectorised over a batch of patterns: the Radon transform is one
sparse matrix product; the check costs a fraction of a classification.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["CHECK_CODES", "MIN_SIDE", "check_patterns"]

#: Shortest accepted pattern side in pixels
MIN_SIDE = 32
#: Side of the square grid the band test works on
GRID = 48
#: Radon angles over 180° (3° steps)
N_ANGLES = 60
#: Angular offset of the high-pass, in Radon angle steps (15°)
ANGLE_SHIFT = 5
#: Relative contrast after flat-fielding below which a pattern is blank
MIN_CONTRAST = 1e-3
#: Fraction of pixels at the pattern's maximum from which it is saturated
MAX_SATURATED = 0.3
#: Neighbour correlation of the flat-fielded pattern above which it is only
#: smooth shading (Kikuchi patterns: 0.1-0.65)
MAX_SMOOTHNESS = 0.75
#: Kikuchi score from which a pattern passes
MIN_KIKUCHI_SCORE = 3.45

#: Check codes (``kikuchi_check`` property of a classified map)
CHECK_CODES = {
    0: "Kikuchi pattern",
    1: "too small",
    2: "blank (not finite, constant or no contrast)",
    3: "saturated",
    4: "no Kikuchi bands (noise or another image)",
}


@lru_cache(maxsize=4)
def _radon_matrix(size: int, n_angles: int):
    """Sparse matrix ``(n_angles * size, size * size)`` of line sums over the
    inscribed circle, each divided by √(pixels on the line); and the boolean
    ``(n_angles, size)`` array of lines at least half a diameter long."""
    from scipy import sparse

    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    x, y = (xx - c).ravel(), (yy - c).ravel()
    inside = np.flatnonzero(np.hypot(x, y) <= size / 2)
    theta = np.arange(n_angles) * np.pi / n_angles
    rho = np.cos(theta)[:, None] * x[inside] + np.sin(theta)[:, None] * y[inside]
    bins = np.clip(np.floor(rho + size / 2).astype(int), 0, size - 1)
    rows = (np.arange(n_angles)[:, None] * size + bins).ravel()
    cols = np.broadcast_to(inside, bins.shape).ravel()
    counts = np.bincount(rows, minlength=n_angles * size).astype(np.float64)
    w = 1 / np.sqrt(np.maximum(counts, 1))
    m = sparse.csr_matrix(
        (w[rows].astype(np.float32), (rows, cols)), shape=(n_angles * size, size * size)
    )
    usable = (counts >= size / 2).reshape(n_angles, size)
    return m, usable


def _flat_field(x: np.ndarray, static_background) -> tuple[np.ndarray, np.ndarray]:
    """Centred square resampled to :data:`GRID`, divided by its heavy blur,
    mean-free in the inscribed circle (zero outside); and the relative
    contrast (RMS in the circle)."""
    from kikuchipy_cnn.preprocessing import _blur, _mask_norm, crop_square, resize, static_background_divisor

    size = GRID
    x = crop_square(x).astype(np.float32)
    if static_background is not None:
        x /= crop_square(static_background_divisor(static_background))
    x = resize(x, size)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    x = (x - lo) / np.where(span > 0, span, 1) + 1
    maskf, _ = _mask_norm(size, True, 0.0)
    sigma = size / 8
    _, norm = _mask_norm(size, True, sigma)
    x = x / (_blur(x * maskf, sigma) / norm)
    n_in = maskf.sum()
    x -= (x * maskf).sum(axis=(1, 2), keepdims=True) / n_in
    x *= maskf
    contrast = np.sqrt((x**2).sum(axis=(1, 2)) / n_in)
    return x, contrast


def _kikuchi_score(r: np.ndarray) -> np.ndarray:
    """Kikuchi score of flat-fielded, mean-free patterns ``(n, GRID, GRID)``."""
    from scipy.ndimage import maximum_filter

    n, size, _ = r.shape
    m, usable = _radon_matrix(size, N_ANGLES)
    z = np.asarray((m @ r.reshape(n, -1).T).T, dtype=np.float32).reshape(n, N_ANGLES, size)
    # θ + 180° is the same line with ρ → -ρ: extend periodically by ``pad``
    # angles on each side (for the high-pass and the peak window)
    k, w = ANGLE_SHIFT, 4
    pad = k + w
    zf, uf = z[:, :, ::-1], usable[:, ::-1]
    zz = np.concatenate([zf[:, -pad:], z, zf[:, :pad]], axis=1)
    uu = np.concatenate([uf[-w:], usable, uf[:w]], axis=0)
    e = zz[:, k:-k] - 0.5 * (zz[:, : -2 * k] + zz[:, 2 * k :])  # angles -w .. N_ANGLES + w
    e[:, ~uu] = -np.inf
    mx = maximum_filter(e, size=(1, 2 * w + 1, 5), mode="nearest")
    e, mx = e[:, w:-w], mx[:, w:-w]
    peaks = e[:, usable]
    # robust spread from every other line (as good, half the cost)
    vals = peaks[:, ::2]
    med = np.median(vals, axis=1)
    mad = 1.4826 * np.median(np.abs(vals - med[:, None]), axis=1)
    peaks[peaks != mx[:, usable]] = -np.inf
    top = -np.partition(-peaks, 2, axis=1)[:, :3]
    top = np.where(np.isfinite(top), top, 0).mean(axis=1)
    return np.where(mad > 0, top / np.where(mad > 0, mad, 1), 0).astype(np.float32)


def check_patterns(
    patterns: np.ndarray, static_background: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decide per pattern whether it is a usable Kikuchi pattern.

    Parameters
    ----------
    patterns
        Array ``(n, rows, cols)`` (or ``(rows, cols)``) of any real dtype,
        raw or processed. Not modified.
    static_background
        Optional static background ``(rows, cols)`` to divide raw patterns by
        first (as the classifiers' preprocessing does).

    Returns
    -------
    code
        ``(n,)`` int8: 0 for a Kikuchi pattern, otherwise the reason it is
        not one (see :data:`CHECK_CODES`): 1 too small, 2 blank, 3
        saturated, 4 no Kikuchi bands.
    score
        ``(n,)`` float32 Kikuchi score (see the module documentation); NaN
        where it was not computed (codes 1 and 2).

    Examples
    --------
    >>> import kikuchipy as kp
    >>> import numpy as np
    >>> from kikuchipy_cnn.pattern_check import check_patterns
    >>> s = kp.data.nickel_ebsd_small()
    >>> code, score = check_patterns(s.data.reshape(9, 60, 60), s.static_background)
    >>> code.tolist()
    [0, 0, 0, 0, 0, 0, 0, 0, 0]
    >>> check_patterns(np.random.default_rng(0).random((60, 60)))[0].tolist()
    [4]
    """
    patterns = np.asarray(patterns)
    if patterns.ndim == 2:
        patterns = patterns[None]
    if patterns.ndim != 3:
        raise ValueError(f"Patterns must have shape (n, rows, cols), not {patterns.shape}")
    n = patterns.shape[0]
    code = np.zeros(n, dtype=np.int8)
    score = np.full(n, np.nan, dtype=np.float32)
    if min(patterns.shape[1:]) < MIN_SIDE:
        code[:] = 1
        return code, score
    flat = patterns.reshape(n, -1)
    with np.errstate(invalid="ignore", over="ignore"):
        if np.issubdtype(patterns.dtype, np.floating):
            finite = np.isfinite(flat).all(axis=1)
        else:
            finite = np.ones(n, dtype=bool)
        x = np.where(finite[:, None, None], patterns, 0)
        hi = x.reshape(n, -1).max(axis=1)
        lo = x.reshape(n, -1).min(axis=1)
        saturated = (x.reshape(n, -1) == hi[:, None]).mean(axis=1) >= MAX_SATURATED
        r, contrast = _flat_field(x, static_background)
    blank = ~finite | (hi <= lo) | ~(contrast >= MIN_CONTRAST)
    code[saturated] = 3
    code[blank] = 2
    rest = np.flatnonzero(code == 0)
    if rest.size:
        rr = r[rest] / contrast[rest, None, None]
        n_in = np.count_nonzero(rr[0]) or 1
        smooth = (rr[:, 1:, :] * rr[:, :-1, :]).sum(axis=(1, 2)) / n_in > MAX_SMOOTHNESS
        score[rest] = _kikuchi_score(rr)
        code[rest[smooth | ~(score[rest] >= MIN_KIKUCHI_SCORE)]] = 4
    return code, score
