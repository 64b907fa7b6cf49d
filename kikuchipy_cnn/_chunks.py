"""Run a per-pattern function over a signal's patterns, chunk by chunk.

Eager and lazy signals go through the same dask graph: memory stays bounded
by the chunk size whatever the scan size, and a ``dask.distributed`` client
runs it unchanged. Shared by classification and saliency.
"""

from __future__ import annotations

from typing import Callable

import dask
import dask.array as da
import numpy as np


#: Largest block of a lazy signal classified as one task (raw bytes); larger
#: blocks are split in halves of this
MAX_BLOCK_BYTES = 256e6


def _chunk_patterns(n_pattern_pixels: int, batch_size: int) -> int:
    # About 32 MB of float32 patterns per chunk; up to 128 MB to hold one
    # full batch (large GPU batches of small patterns), never more
    nbytes = 4 * max(n_pattern_pixels, 1)
    return max(1, int(32e6 // nbytes), min(batch_size, int(128e6 // nbytes)))


def map_patterns(
    data: np.ndarray | da.Array,
    nav_shape: tuple[int, ...],
    func: Callable,
    out_shape: tuple[int, ...],
    navigation_mask: np.ndarray | None,
    chunk_patterns: int,
    per_pattern: np.ndarray | None = None,
    **kwargs,
) -> da.Array:
    """Apply ``func(patterns, excluded, **kwargs)`` to all patterns.

    Parameters
    ----------
    data
        Patterns of shape ``nav_shape + (rows, cols)``.
    nav_shape
        Navigation shape in numpy order (may be empty).
    func
        Called per chunk with patterns ``(n, rows, cols)`` and a boolean
        array ``(n,)`` of excluded patterns; returns ``(n,) + out_shape``
        float32. Must be picklable (a module-level function); ``kwargs``
        must hold no sessions, only what locates them.
    out_shape
        Per-pattern output shape.
    navigation_mask
        Boolean array of ``nav_shape``, True for excluded patterns.
    chunk_patterns
        Wanted number of patterns per step (e.g. the inference batch size):
        steps hold about 32 MB of patterns, more to reach ``chunk_patterns``
        but never more than 128 MB. Eager data are cut into chunks of one
        step; lazy data keep their blocks (those above 256 MB are split) and
        each block is worked through step by step.
    per_pattern
        Optional ``(nav_size, m)`` float array (e.g. each pattern's pattern
        centre), cut like the patterns and passed to ``func`` as
        ``per_pattern=``.

    Returns
    -------
    out
        Lazy array of shape ``(nav_size,) + out_shape``; compute it with
        :func:`compute`.
    """
    sig_shape = data.shape[len(nav_shape) :]
    n = int(np.prod(nav_shape)) if nav_shape else 1
    flat_shape = (n,) + tuple(sig_shape)
    chunk = _chunk_patterns(int(np.prod(sig_shape)), chunk_patterns)
    if isinstance(data, da.Array):
        flat = data.reshape(flat_shape).rechunk({1: -1, 2: -1})
        # Keep the stored blocks (usually the file's chunks) whenever they are
        # not too large: splitting a block into many small tasks lets dask read
        # blocks far ahead of the work, so memory grows with the scan. Work
        # inside a block goes in steps of ``chunk`` patterns instead.
        pattern_bytes = int(np.prod(sig_shape)) * flat.dtype.itemsize
        if max(flat.chunks[0]) * pattern_bytes > MAX_BLOCK_BYTES:
            flat = flat.rechunk({0: max(chunk, int(MAX_BLOCK_BYTES // 2 // pattern_bytes))})
    else:
        flat = da.from_array(np.asarray(data).reshape(flat_shape), chunks=(chunk, -1, -1))
    if navigation_mask is None:
        mask = da.zeros((n,), dtype=bool, chunks=(flat.chunks[0],))
    else:
        mask = da.from_array(np.asarray(navigation_mask).ravel(), chunks=(flat.chunks[0],))
    extra = []
    if per_pattern is not None:
        pp = np.asarray(per_pattern, dtype=np.float64).reshape(n, -1)
        extra = [da.from_array(pp, chunks=(flat.chunks[0], -1))[:, :, None]]
    out = da.map_blocks(
        _apply,
        flat,
        mask[:, None, None],
        *extra,
        block_func=func,
        block_kwargs=kwargs,
        step=chunk,
        chunks=(flat.chunks[0],) + tuple((s,) for s in out_shape),
        drop_axis=[1, 2],
        new_axis=list(range(1, 1 + len(out_shape))) or None,
        dtype=np.float32,
        meta=np.empty((0,) * (1 + len(out_shape)), dtype=np.float32),
    )
    return out


def compute(arr: da.Array, show_progressbar: bool) -> np.ndarray:
    """Compute a lazy array, optionally with dask's progress bar."""
    with dask.config.set({"array.slicing.split_large_chunks": False}):
        if show_progressbar:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return arr.compute()
        return arr.compute()


def _apply(patterns, excluded, *per_pattern, block_func, block_kwargs, step):
    excluded = excluded[:, 0, 0]
    pp = per_pattern[0][:, :, 0] if per_pattern else None

    def run(sl):
        kw = dict(block_kwargs) if pp is None else {**block_kwargs, "per_pattern": pp[sl]}
        return block_func(patterns[sl], excluded[sl], **kw)

    if len(patterns) <= step:
        return run(slice(None))
    return np.concatenate([run(slice(i, i + step)) for i in range(0, len(patterns), step)])
