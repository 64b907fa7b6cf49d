"""The one preprocessing pipeline, used by inference and by training alike.

A model card names the recipe (:class:`Preprocessing`); :func:`preprocess`
turns a batch of patterns of any shape and dtype into the model's input:

1. optional division by a static background (flat-field), e.g. the one stored
   with a raw kikuchipy signal;
2. crop the largest centred square (keeps angles between bands; a rectangular
   detector is not stretched);
3. resize to the model's input size (area averaging when shrinking, linear
   interpolation when enlarging);
4. divide by a mask-normalised Gaussian blur (removes the smooth, strong
   background of raw patterns, and leaves processed patterns nearly
   unchanged);
5. subtract a narrower Gaussian blur (high-pass);
6. circular mask and per-pattern standardisation within the mask.

Patterns that are not finite or are constant cannot be classified: they are
returned as zeros and flagged in the returned ``valid`` array.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["Preprocessing", "preprocess"]


@dataclass(frozen=True)
class Preprocessing:
    """A preprocessing recipe, as stored in a model card.

    Parameters
    ----------
    size
        Side length of the square model input in pixels.
    flat_field_sigma
        Gaussian sigma of the flat-field blur, as a fraction of ``size``.
    high_pass_sigma
        Gaussian sigma of the subtracted blur, as a fraction of ``size``. 0
        switches the high-pass off.
    circular_mask
        Whether to keep only the inscribed circle.
    """

    size: int = 64
    flat_field_sigma: float = 1 / 8
    high_pass_sigma: float = 1 / 16
    circular_mask: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known - {"name"}
        if unknown:
            raise ValueError(
                f"Unknown preprocessing settings {sorted(unknown)}; known are "
                f"{sorted(known)}"
            )
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return {"name": "kikuchipy_cnn.preprocessing.v1", **asdict(self)}


@lru_cache(maxsize=32)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix ``(n_out, n_in)`` resampling one axis: area weights when
    shrinking, linear interpolation when enlarging."""
    m = np.zeros((n_out, n_in), dtype=np.float32)
    if n_in >= n_out:
        edges = np.linspace(0, n_in, n_out + 1)
        for i in range(n_out):
            lo, hi = edges[i], edges[i + 1]
            j0, j1 = int(np.floor(lo)), int(np.ceil(hi))
            for j in range(j0, min(j1, n_in)):
                m[i, j] = min(hi, j + 1) - max(lo, j)
    else:
        x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        x = np.clip(x, 0, n_in - 1)
        j0 = np.floor(x).astype(int)
        j1 = np.minimum(j0 + 1, n_in - 1)
        w = (x - j0).astype(np.float32)
        m[np.arange(n_out), j0] += 1 - w
        m[np.arange(n_out), j1] += w
    m /= m.sum(axis=1, keepdims=True)
    return m


@lru_cache(maxsize=8)
def circular_mask(size: int) -> np.ndarray:
    """Boolean mask of the circle inscribed in a ``size`` × ``size`` square."""
    c = (size - 1) / 2
    r = np.hypot(*np.meshgrid(np.arange(size) - c, np.arange(size) - c))
    return r <= size / 2


def crop_square(patterns: np.ndarray) -> np.ndarray:
    """Return a view of the largest centred square of ``(..., rows, cols)``."""
    rows, cols = patterns.shape[-2:]
    n = min(rows, cols)
    r0, c0 = (rows - n) // 2, (cols - n) // 2
    return patterns[..., r0 : r0 + n, c0 : c0 + n]


def resize(patterns: np.ndarray, size: int) -> np.ndarray:
    """Resize square ``(n, s, s)`` patterns to ``(n, size, size)``, float32."""
    m = _resize_matrix(patterns.shape[-1], size)
    if patterns.shape[-1] == size and np.array_equal(m, np.eye(size, dtype=np.float32)):
        return patterns.astype(np.float32, copy=True)
    return _sandwich(m, patterns.astype(np.float32, copy=False))


def _sandwich(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``a @ x[i] @ a.T`` for every image of ``x`` (n, s, s), as two large
    matrix products instead of 2 n small ones."""
    n, s, _ = x.shape
    k = a.shape[0]
    # x @ a.T along the last axis: (n * s, s) @ (s, k)
    y = np.matmul(x.reshape(n * s, s), a.T).reshape(n, s, k)
    # a @ y along the middle axis: (k, s) @ (s, n * k)
    y = np.matmul(a, y.transpose(1, 0, 2).reshape(s, n * k))
    return np.ascontiguousarray(y.reshape(k, n, k).transpose(1, 0, 2))


@lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """Matrix ``(n, n)`` of scipy.ndimage.gaussian_filter1d(mode="nearest",
    truncate=3.0) along one axis of length ``n``."""
    radius = int(3.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 / sigma**2 * t.astype(np.float64) ** 2)
    w /= w.sum()
    g = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)[:, None]
    cols = np.clip(rows + t[None, :], 0, n - 1)
    np.add.at(g, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(w, cols.shape))
    return g.astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the last two axes of square ``(n, s, s)`` images
    (scipy's mode="nearest", truncate=3.0), as two small matrix products."""
    g = _blur_matrix(x.shape[-1], float(sigma))
    if x.shape[-2] == x.shape[-1]:
        return _sandwich(g, np.ascontiguousarray(x, dtype=np.float32))
    return gaussian_filter(x, sigma=(0, sigma, sigma), mode="nearest", truncate=3.0)


@lru_cache(maxsize=16)
def _mask_norm(size: int, circular: bool, sigma: float) -> tuple:
    """(mask as float32, blurred mask clipped at 1e-6) for one recipe."""
    mask = circular_mask(size) if circular else np.ones((size, size), bool)
    maskf = mask.astype(np.float32)
    norm = np.maximum(_blur(maskf[None], sigma)[0], 1e-6) if sigma > 0 else None
    return maskf, norm


def static_background_divisor(static_background, shape=None) -> np.ndarray:
    """The array raw patterns are divided by to remove a static background:
    the background normalised to mean 1, floored at 0.01. Pixel preprocessing,
    the pattern check, the band front end and the PC estimate all use it.

    Raises ValueError when the background does not have the patterns'
    ``shape`` (rows, columns), or is not finite with a positive mean."""
    bg = np.asarray(static_background, dtype=np.float32)
    if shape is not None and bg.shape != tuple(shape):
        raise ValueError(
            f"Static background shape {bg.shape} does not match the pattern shape "
            f"{tuple(shape)}: give the background of these patterns (same detector "
            "and binning), or none"
        )
    with np.errstate(invalid="ignore"):
        mean = float(np.mean(bg)) if bg.size else np.nan
    if not np.isfinite(bg).all() or not mean > 0:
        raise ValueError(
            "Static background must be finite with a positive mean: recompute it "
            "(e.g. kikuchipy's s.static_background from the raw scan), or give none"
        )
    return np.maximum(bg / mean, 0.01)


def preprocess(
    patterns: np.ndarray,
    recipe: Preprocessing | None = None,
    static_background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn patterns into model input.

    Parameters
    ----------
    patterns
        Array of shape ``(n, rows, cols)`` (or ``(rows, cols)``) of any real
        dtype. Never modified.
    recipe
        Preprocessing recipe. If not given, the default recipe is used.
    static_background
        Optional static background of shape ``(rows, cols)``; patterns are
        divided by it (normalised to mean 1) before anything else.

    Returns
    -------
    x
        Model input of shape ``(n, 1, size, size)``, float32.
    valid
        Boolean array of shape ``(n,)``: False for patterns that contain
        non-finite values or are constant; their input is all zeros.
    """
    recipe = recipe or Preprocessing()
    patterns = np.asarray(patterns)
    if patterns.ndim == 2:
        patterns = patterns[None]
    if patterns.ndim != 3:
        raise ValueError(
            f"Patterns must have shape (n, rows, cols), not {patterns.shape}"
        )
    if not (
        np.issubdtype(patterns.dtype, np.integer)
        or np.issubdtype(patterns.dtype, np.floating)
        or patterns.dtype == bool
    ):
        raise TypeError(
            f"Patterns must be of a real numeric dtype, not {patterns.dtype}"
        )
    if min(patterns.shape[1:]) < 2:
        raise ValueError(
            f"Patterns of shape {patterns.shape[1:]} are too small to classify"
        )
    size = recipe.size
    with np.errstate(invalid="ignore", over="ignore"):
        if np.issubdtype(patterns.dtype, np.floating):
            finite = np.isfinite(patterns).all(axis=(1, 2))
        else:
            finite = np.ones(len(patterns), dtype=bool)
        if static_background is not None:
            divisor = static_background_divisor(static_background, patterns.shape[1:])
        # only the centred square is used: crop before anything else
        x = crop_square(patterns).astype(np.float32)  # always a copy
        x[~finite] = 0
        if static_background is not None:
            x /= crop_square(divisor)
        x = resize(x, size)
        # Shift so that the minimum is 1: division by the blur stays stable
        # for processed patterns with negative values
        lo = x.min(axis=(1, 2), keepdims=True)
        span = x.max(axis=(1, 2), keepdims=True) - lo
        valid = finite & (span[:, 0, 0] > 1e-6 * np.maximum(np.abs(lo[:, 0, 0]), 1))
        span[~valid] = 1
        x -= lo
        x /= span
        x += 1
        maskf, _ = _mask_norm(size, recipe.circular_mask, 0.0)
        if recipe.flat_field_sigma > 0:
            s = recipe.flat_field_sigma * size
            _, norm = _mask_norm(size, recipe.circular_mask, s)
            x = x / (_blur(x * maskf, s) / norm)
        if recipe.high_pass_sigma > 0:
            s = recipe.high_pass_sigma * size
            _, norm = _mask_norm(size, recipe.circular_mask, s)
            x = x - _blur(x * maskf, s) / norm
        n_in = maskf.sum()
        mean = (x * maskf).sum(axis=(1, 2), keepdims=True) / n_in
        x -= mean
        x *= maskf
        std = np.sqrt((x**2).sum(axis=(1, 2), keepdims=True) / n_in)
        flat = std[:, 0, 0] < 1e-6
        valid &= ~flat
        x /= np.where(std > 1e-6, std, 1)
    x[~valid] = 0
    return x[:, None].astype(np.float32, copy=False), valid
