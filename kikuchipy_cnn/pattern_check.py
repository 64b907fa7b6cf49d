r"""Is this a usable Kikuchi pattern? An explicit, model-independent check.

A classifier trained on Kikuchi patterns gives *some* class to any image,
often with a high score: a 3 × 3 noise image was once classified
``cF m-3`` with score 0.6. :func:`check_patterns` therefore decides per
pattern, independently of any structure model, whether it can be a Kikuchi
pattern at all. A pattern is rejected, with the first code that applies,
when it is

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
4. **not a Kikuchi pattern**, by the learned check: a small CNN (bundled as
   ``models/kikuchi-check``, run with ONNX Runtime on the CPU) gives the
   probability that the image is a Kikuchi pattern, and the pattern is
   rejected below the check's ``min_probability``.

The learned check sees :func:`check_input`: the centred square resampled to
:data:`CHECK_INPUT_SIZE` px, divided by its heavy Gaussian blur
(flat-field) and scaled to unit RMS in the inscribed circle. It was trained
(``kikuchipy_cnn.training.kikuchi_check``) on realistic raw patterns of the
simulated *training* structures (backgrounds, noise, detector defects; half
divided by their static background) against many kinds of other images
(noise of several spectra, gradients, photographs, lines, bands, grids,
stripes, checkerboards, diffraction spot and ring patterns, phase-scrambled
Kikuchi patterns); its threshold was set on validation structures to reject
at most 0.5 % of their patterns. With a static background the check scores
the pattern as recorded and divided by the background, and keeps the higher
probability: real background-corrected patterns at 60 px score low alone (3
of kikuchipy's 9 Ni patterns pass), as recorded they pass. The threshold was
calibrated on single views, so with a static background the false-pass rate on
non-Kikuchi images can be up to about twice the one measured without. The rules
see the background-corrected pattern only. Rates measured on real patterns and on images it never
saw are in the documentation's *Rejection of non-Kikuchi inputs*.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["CHECK_CODES", "MIN_SIDE", "check_input", "check_patterns", "check_rules", "kikuchi_probability"]

#: Shortest accepted pattern side in pixels
MIN_SIDE = 32
#: Side of the square grid the blank test works on
GRID = 48
#: Side of the learned check's input
CHECK_INPUT_SIZE = 64
#: Relative contrast after flat-fielding below which a pattern is blank
MIN_CONTRAST = 1e-3
#: Fraction of pixels at the pattern's maximum from which it is saturated
MAX_SATURATED = 0.3

#: Check codes (``kikuchi_check`` property of a classified map)
CHECK_CODES = {
    0: "Kikuchi pattern",
    1: "too small",
    2: "blank (not finite, constant or no contrast)",
    3: "saturated",
    4: "not a Kikuchi pattern (noise or another image)",
}


def _flat_field(
    x: np.ndarray, static_background, size: int = GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Centred square resampled to ``size``, divided by its heavy blur,
    mean-free in the inscribed circle (zero outside); and the relative
    contrast (RMS in the circle)."""
    from kikuchipy_cnn.preprocessing import _blur, _mask_norm, crop_square, resize, static_background_divisor

    divisor = None
    if static_background is not None:
        divisor = crop_square(static_background_divisor(static_background, x.shape[-2:]))
    x = crop_square(x).astype(np.float32)
    if divisor is not None:
        x /= divisor
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


@lru_cache(maxsize=1)
def _check_model() -> tuple[str, str, float]:
    """Path, sha256 and decision threshold of the bundled learned check
    (``models/kikuchi-check``)."""
    import json

    from kikuchipy_cnn.default_plugins.bundled_models import bundled_models_dir

    folder = bundled_models_dir() / "kikuchi-check"
    meta = json.loads((folder / "check.json").read_text())
    return str(folder / "model.onnx"), meta["sha256"], float(meta["min_probability"])


def kikuchi_probability(patterns: np.ndarray, static_background=None) -> np.ndarray:
    """The learned check's probability ``(n,)`` that each pattern is a
    Kikuchi pattern (see :func:`check_input` for what it looks at)."""
    from kikuchipy_cnn.engine import run_auxiliary

    path, sha, _ = _check_model()
    x = check_input(patterns, static_background)
    return run_auxiliary(path, sha, x).reshape(-1).astype(np.float32)


def check_input(patterns: np.ndarray, static_background=None) -> np.ndarray:
    """Input of the learned check: ``(n, 1, CHECK_INPUT_SIZE,
    CHECK_INPUT_SIZE)`` float32, the centred square resampled, divided by its
    heavy blur (flat-field) and scaled to unit RMS in the inscribed circle
    (zero outside and for patterns without contrast).

    Training (``kikuchipy_cnn.training.kikuchi_check``) calls this function
    too, so the model always sees what it was trained on.
    """
    patterns = np.asarray(patterns)
    if patterns.ndim == 2:
        patterns = patterns[None]
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.nan_to_num(patterns.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        r, contrast = _flat_field(x, static_background, CHECK_INPUT_SIZE)
    scale = np.where(contrast > 0, contrast, 1)
    return (r / scale[:, None, None])[:, None].astype(np.float32)


def check_rules(
    patterns: np.ndarray, static_background: np.ndarray | None = None
) -> np.ndarray:
    """The check's rules, before the learned check: codes 0 (passes), 1
    (too small), 2 (blank) and 3 (saturated) per pattern, ``(n,)`` int8."""
    patterns = np.asarray(patterns)
    if patterns.ndim == 2:
        patterns = patterns[None]
    if patterns.ndim != 3:
        raise ValueError(f"Patterns must have shape (n, rows, cols), not {patterns.shape}")
    n = patterns.shape[0]
    code = np.zeros(n, dtype=np.int8)
    if n == 0:
        return code
    if min(patterns.shape[1:]) < MIN_SIDE:
        code[:] = 1
        return code
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
        _, contrast = _flat_field(x, static_background)
    blank = ~finite | (hi <= lo) | ~(contrast >= MIN_CONTRAST)
    code[saturated] = 3
    code[blank] = 2
    return code


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
        saturated, 4 not a Kikuchi pattern (learned check).
    probability
        ``(n,)`` float32 probability of the learned check that the pattern
        is a Kikuchi pattern (it passes from the bundled check's
        ``min_probability``); NaN where the rules decided (codes 1 to 3).

    Examples
    --------
    >>> import kikuchipy as kp
    >>> import numpy as np
    >>> from kikuchipy_cnn.pattern_check import check_patterns
    >>> s = kp.data.nickel_ebsd_small()
    >>> code, p = check_patterns(s.data.reshape(9, 60, 60), s.static_background)
    >>> code.tolist()
    [0, 0, 0, 0, 0, 0, 0, 0, 0]
    >>> check_patterns(np.random.default_rng(0).random((60, 60)))[0].tolist()
    [4]
    """
    code = check_rules(patterns, static_background)
    prob = np.full(code.shape, np.nan, dtype=np.float32)
    rest = np.flatnonzero(code == 0)
    if rest.size:
        patterns = np.asarray(patterns)
        if patterns.ndim == 2:
            patterns = patterns[None]
        prob[rest] = kikuchi_probability(patterns[rest])
        if static_background is not None:
            # as recorded or background-corrected: the higher of the two
            # (real background-corrected 60 px patterns score low alone)
            with_bg = kikuchi_probability(patterns[rest], static_background)
            prob[rest] = np.maximum(prob[rest], with_bg)
        code[rest[~(prob[rest] >= _check_model()[2])]] = 4
    return code, prob
