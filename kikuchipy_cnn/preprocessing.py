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
    return np.einsum("ij,njk,lk->nil", m, patterns, m, optimize=True)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(x, sigma=(0, sigma, sigma), mode="nearest", truncate=3.0)


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
    x = patterns.astype(np.float32)  # always a copy
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(x).all(axis=(1, 2))
        x[~finite] = 0
        if static_background is not None:
            bg = np.asarray(static_background, dtype=np.float32)
            if bg.shape != x.shape[1:]:
                raise ValueError(
                    f"Static background shape {bg.shape} does not match the "
                    f"pattern shape {x.shape[1:]}"
                )
            mean = np.nanmean(bg)
            if not np.isfinite(bg).all() or mean <= 0:
                raise ValueError(
                    "Static background must be finite with a positive mean"
                )
            x /= np.maximum(bg / mean, 0.01)
        x = resize(crop_square(x), size)
        # Shift so that the minimum is 1: division by the blur stays stable
        # for processed patterns with negative values
        lo = x.min(axis=(1, 2), keepdims=True)
        span = x.max(axis=(1, 2), keepdims=True) - lo
        valid = finite & (span[:, 0, 0] > 1e-6 * np.maximum(np.abs(lo[:, 0, 0]), 1))
        span[~valid] = 1
        x = 1 + (x - lo) / span
        mask = circular_mask(size) if recipe.circular_mask else np.ones((size, size), bool)
        maskf = mask.astype(np.float32)
        if recipe.flat_field_sigma > 0:
            s = recipe.flat_field_sigma * size
            norm = _blur(maskf[None], s)[0]
            x = x / (_blur(x * maskf, s) / np.maximum(norm, 1e-6))
        if recipe.high_pass_sigma > 0:
            s = recipe.high_pass_sigma * size
            norm = _blur(maskf[None], s)[0]
            x = x - _blur(x * maskf, s) / np.maximum(norm, 1e-6)
        n_in = maskf.sum()
        mean = (x * maskf).sum(axis=(1, 2), keepdims=True) / n_in
        x = (x - mean) * maskf
        std = np.sqrt((x**2).sum(axis=(1, 2), keepdims=True) / n_in)
        flat = std[:, 0, 0] < 1e-6
        valid &= ~flat
        x /= np.where(std > 1e-6, std, 1)
    x[~valid] = 0
    return x[:, None].astype(np.float32, copy=False), valid
