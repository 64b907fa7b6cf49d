"""Realistic degradation of clean projected patterns (the pilot's variant B,
with noise no harsher than real binned patterns), and :func:`make_batch`,
which turns cached master patterns into model input on the fly.

Every pattern goes through :func:`kikuchipy_cnn.preprocessing.preprocess`;
this module never reimplements any of it.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

import kikuchipy_cnn.preprocessing as _preprocessing
from kikuchipy_cnn.training.projection import (
    detector_directions,
    project,
    project_many,
    random_geometry,
    random_quaternions,
)

__all__ = ["degrade", "make_batch", "random_realism", "random_realism_batch"]


def random_realism(rng: np.random.Generator) -> dict:
    """Draw degradation parameters for one pattern (native pixel units)."""
    return {
        "contrast": float(np.exp(rng.uniform(np.log(0.08), np.log(0.8)))),
        "gamma": float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        "blur": float(rng.uniform(0, 1.3)),
        # mean counts per native pixel; binned real patterns are fairly clean
        "counts": float(np.exp(rng.uniform(np.log(50), np.log(5000)))),
        "read_noise": float(rng.uniform(0, 0.01)),
        "bg_sigma": float(rng.uniform(0.25, 0.7)),
        "bg_center": (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.4, 0.2))),
        "bg_gradient": (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5))),
        "bg_floor": float(rng.uniform(0.05, 0.5)),
        "vignetting": float(rng.uniform(0, 0.5)),
        "circular_mask": bool(rng.random() < 0.3),
        "mask_radius": float(rng.uniform(0.45, 0.6)),
        "hot_pixels": int(rng.poisson(2)) if rng.random() < 0.2 else 0,
        "dead_pixels": int(rng.poisson(2)) if rng.random() < 0.1 else 0,
    }


def random_realism_batch(n: int, rng: np.random.Generator) -> list:
    """Draw degradation parameters for ``n`` patterns: the same
    distributions as :func:`random_realism`, drawn per parameter for the
    whole batch (faster; a different use of the random stream)."""
    u = rng.uniform
    contrast = np.exp(u(np.log(0.08), np.log(0.8), n))
    gamma = np.exp(u(np.log(0.6), np.log(1.6), n))
    blur = u(0, 1.3, n)
    counts = np.exp(u(np.log(50), np.log(5000), n))
    read_noise = u(0, 0.01, n)
    bg_sigma = u(0.25, 0.7, n)
    cx, cy = u(-0.3, 0.3, n), u(-0.4, 0.2, n)
    gx, gy = u(-0.5, 0.5, n), u(-0.5, 0.5, n)
    bg_floor = u(0.05, 0.5, n)
    vignetting = u(0, 0.5, n)
    circular = rng.random(n) < 0.3
    radius = u(0.45, 0.6, n)
    hot = np.where(rng.random(n) < 0.2, rng.poisson(2, n), 0)
    dead = np.where(rng.random(n) < 0.1, rng.poisson(2, n), 0)
    cols = [a.tolist() for a in (contrast, gamma, blur, counts, read_noise, bg_sigma, cx, cy,
                                 gx, gy, bg_floor, vignetting, circular, radius, hot, dead)]
    return [
        {
            "contrast": c, "gamma": g, "blur": b, "counts": k, "read_noise": r,
            "bg_sigma": sg, "bg_center": (x0, y0), "bg_gradient": (x1, y1),
            "bg_floor": f, "vignetting": v, "circular_mask": m, "mask_radius": rad,
            "hot_pixels": h, "dead_pixels": d,
        }
        for c, g, b, k, r, sg, x0, y0, x1, y1, f, v, m, rad, h, d in zip(*cols)
    ]  # fmt: skip


# ----------------------------------------------------------------------------
# Fast exact random numbers inside Numba (xoshiro256** seeded by splitmix64
# from the caller's numpy Generator, so a batch stays deterministic given it)

_U64 = np.uint64


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _rotl(x, k):  # pragma: no cover
    return (x << _U64(k)) | (x >> _U64(64 - k))


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _seed_state(seed):  # pragma: no cover
    s = np.empty(4, dtype=np.uint64)
    z = _U64(seed)
    for i in range(4):
        z = z + _U64(0x9E3779B97F4A7C15)
        x = z
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        s[i] = x ^ (x >> _U64(31))
    return s


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _next(s):  # pragma: no cover
    """Next 64 random bits (xoshiro256**)."""
    result = _rotl(s[1] * _U64(5), 7) * _U64(9)
    t = s[1] << _U64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _uniform(s):  # pragma: no cover
    """Uniform double in [0, 1) (53 random bits)."""
    return np.float64(_next(s) >> _U64(11)) * (1.0 / 9007199254740992.0)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _fill_uniform(u, base):  # pragma: no cover
    """Fill ``u`` with uniform doubles in [0, 1): SplitMix64 (Steele, Lea &
    Flood 2014) from state ``base``; a pure function of the index, so the
    loop is vectorised."""
    for i in range(u.size):
        z = base + _U64(i + 1) * _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        z = z ^ (z >> _U64(31))
        u[i] = np.float64(z >> _U64(11)) * (1.0 / 9007199254740992.0)


def _ziggurat_tables():
    """Marsaglia & Tsang's (2000) 128-layer ziggurat for the standard
    normal distribution: (kn, wn, fn)."""
    m1 = 2147483648.0
    dn = tn = 3.442619855899
    vn = 9.91256303526217e-3
    kn, wn, fn = np.zeros(128), np.zeros(128), np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0] = (dn / q) * m1
    kn[1] = 0
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = (dn / tn) * m1
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _ziggurat_slow(s, hz, iz):  # pragma: no cover
    """The ziggurat's slow path for a candidate rejected by the fast test:
    the tail beyond r (layer 0) or the wedge test. Returns (accepted,
    value)."""
    wn = _ZIG_W
    fn = _ZIG_F
    x = hz * wn[iz]
    if iz == 0:  # tail beyond r
        r = 3.442619855899
        while True:
            xt = -math.log(1.0 - _uniform(s)) / r
            y = -math.log(1.0 - _uniform(s))
            if y + y >= xt * xt:
                break
        return True, (r + xt if hz > 0 else -r - xt)
    if fn[iz] + _uniform(s) * (fn[iz - 1] - fn[iz]) < math.exp(-0.5 * x * x):
        return True, x
    return False, 0.0


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _normal(s):  # pragma: no cover
    """Standard normal variate (Marsaglia & Tsang's ziggurat, exact up to
    its 32-bit resolution)."""
    kn = _ZIG_K
    wn = _ZIG_W
    while True:
        x64 = _next(s)
        hz = np.int64(x64 >> _U64(32)) - 2147483648
        iz = np.int64(x64 & _U64(127))
        if abs(hz) < kn[iz]:
            return hz * wn[iz]
        accepted, x = _ziggurat_slow(s, hz, iz)
        if accepted:
            return x


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _normal_fill(s, z, bits, ok):  # pragma: no cover
    """Standard normal variates into ``z``, the same ziggurat as
    :func:`_normal`, in two passes: the first one (vectorised, on
    SplitMix64 bits) accepts ~99% of the candidates, the second one finishes
    the rest. ``bits`` (uint64) and ``ok`` (bool) are work buffers of z's
    size."""
    n = z.size
    base = _next(s)
    kn = _ZIG_K
    wn = _ZIG_W
    for i in range(n):
        x = base + _U64(i + 1) * _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        bits[i] = x ^ (x >> _U64(31))
    for i in range(n):
        x64 = bits[i]
        hz = np.int64(x64 >> _U64(32)) - 2147483648
        iz = np.int64(x64 & _U64(127))
        z[i] = hz * wn[iz]
        ok[i] = abs(hz) < kn[iz]
    for i in range(n):
        if ok[i]:
            continue
        x64 = bits[i]
        hz = np.int64(x64 >> _U64(32)) - 2147483648
        iz = np.int64(x64 & _U64(127))
        accepted, x = _ziggurat_slow(s, hz, iz)
        z[i] = x if accepted else _normal(s)


_LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(256)])


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _log_factorial(k):  # pragma: no cover
    """log(k!) for k >= 0: a table below 256, else Stirling's series (error
    below 1e-15)."""
    if k < 256:
        return _LOG_FACTORIAL[int(k)]
    r = 1.0 / k
    r2 = r * r
    return (
        (k + 0.5) * math.log(k) - k + 0.91893853320467274178
        + r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680)))
    )


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _poisson(s, lam):  # pragma: no cover
    """Exact Poisson variate: inversion below 10, else numpy's PTRS
    (Hoermann 1993) transformed rejection."""
    if lam <= 0:
        return 0.0
    if lam < 10:
        u = _uniform(s)
        p = math.exp(-lam)
        cdf = p
        k = 0
        while u > cdf and k < 200:
            k += 1
            p *= lam / k
            cdf += p
        return float(k)
    slam = math.sqrt(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        U = _uniform(s) - 0.5
        V = _uniform(s)
        us = 0.5 - abs(U)
        k = math.floor((2 * a / us + b) * U + lam + 0.43)
        if us >= 0.07 and V <= vr:
            return k
        if k < 0 or (us < 0.013 and V > us):
            continue
        invalpha = 1.1239 + 1.1328 / (b - 3.4)
        if math.log(V * invalpha / (a / (us * us) + b)) <= (
            -lam + k * math.log(lam) - _log_factorial(k)
        ):
            return k


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _ptrs_quick(lam, u, out, ok):  # pragma: no cover
    """First PTRS candidate for every mean (uniforms ``u[2i]``, ``u[2i+1]``)
    and whether its quick acceptance holds (branch-free, vectorisable)."""
    n = lam.size
    for i in range(n):
        lm = lam[i]
        U = u[i] - 0.5
        V = u[n + i]
        b = 0.931 + 2.53 * math.sqrt(lm)
        a = -0.059 + 0.02483 * b
        vr = 0.9277 - 3.6224 / (b - 2)
        us = 0.5 - abs(U)
        out[i] = math.floor((2 * a / us + b) * U + lm + 0.43)
        ok[i] = (us >= 0.07) & (V <= vr) & (lm >= 10)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _poisson_fill(s, lam, out, u, ok):  # pragma: no cover
    """Poisson variates of the means ``lam`` into ``out``, exact: the same
    algorithm as :func:`_poisson` (inversion below 10, PTRS above), in two
    passes: the first one tries PTRS's quick acceptance for every mean
    (vectorised, ~75-85% accepted), the second one finishes the rejection
    test of the rest (or inverts, below 10). ``u`` (2 * lam.size, float64)
    and ``ok`` (lam.size, bool) are work buffers."""
    n = lam.size
    _fill_uniform(u, _next(s))
    _ptrs_quick(lam, u, out, ok)
    for i in range(n):
        if ok[i]:
            continue
        lm = lam[i]
        U = u[i] - 0.5
        V = u[n + i]
        if lm < 10:
            if lm <= 0:
                out[i] = 0.0
                continue
            # inversion with the uniform V
            p = math.exp(-lm)
            cdf = p
            k = 0
            while V > cdf and k < 200:
                k += 1
                p *= lm / k
                cdf += p
            out[i] = k
            continue
        k = out[i]
        us = 0.5 - abs(U)
        b = 0.931 + 2.53 * math.sqrt(lm)
        a = -0.059 + 0.02483 * b
        if k < 0 or (us < 0.013 and V > us):
            out[i] = _poisson(s, lm)
            continue
        invalpha = 1.1239 + 1.1328 / (b - 3.4)
        if math.log(V * invalpha / (a / (us * us) + b)) > (
            -lm + k * math.log(lm) - _log_factorial(k)
        ):
            out[i] = _poisson(s, lm)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _normal_array(n, seed):  # pragma: no cover
    s = _seed_state(seed)
    out = np.empty(n)
    _normal_fill(s, out, np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.bool_))
    return out


def _sample_normal(n, seed):
    """Standard normal variates with the Numba sampler (for tests)."""
    return _normal_array(int(n), np.uint64(seed))


def _sample_poisson(lam, seed):
    """Poisson variates of an array of means with the Numba sampler (for
    tests)."""
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    return _poisson_array(lam.reshape(-1), np.uint64(seed)).reshape(lam.shape)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _poisson_array(lam, seed):  # pragma: no cover
    s = _seed_state(seed)
    out = np.empty(lam.size)
    n = lam.size
    _poisson_fill(s, lam, out, np.empty(2 * n), np.empty(n, dtype=np.bool_))
    return out


# ----------------------------------------------------------------------------
# Degradation, fused per pattern

# columns of the parameter table passed to the kernel
_P_GAMMA, _P_BLUR, _P_CONTRAST, _P_COUNTS, _P_READ, _P_SIGMA = range(6)
_P_CX, _P_CY, _P_GX, _P_GY, _P_FLOOR, _P_VIGN, _P_CIRC, _P_RADIUS = range(6, 14)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _blur_nearest(img, tmp, sigma):  # pragma: no cover
    """In place: scipy.ndimage.gaussian_filter(img, sigma, mode="nearest",
    truncate=3.0) of one float32 image (axis 0, then axis 1; float64
    accumulation, float32 intermediate, as scipy)."""
    rows, cols = img.shape
    radius = int(3.0 * sigma + 0.5)
    w = np.empty(2 * radius + 1)
    tot = 0.0
    for t in range(-radius, radius + 1):
        w[t + radius] = math.exp(-0.5 / (sigma * sigma) * t * t)
        tot += w[t + radius]
    for t in range(2 * radius + 1):
        w[t] /= tot
    acc = np.empty(cols)
    pad = np.empty(cols + 2 * radius, dtype=np.float32)
    for i in range(rows):
        acc[:] = 0.0
        for t in range(-radius, radius + 1):
            ii = min(max(i + t, 0), rows - 1)
            wt = w[t + radius]
            for j in range(cols):
                acc[j] += wt * img[ii, j]
        for j in range(cols):
            tmp[i, j] = acc[j]
    for i in range(rows):
        for j in range(radius):
            pad[j] = tmp[i, 0]
            pad[radius + cols + j] = tmp[i, cols - 1]
        for j in range(cols):
            pad[radius + j] = tmp[i, j]
        acc[:] = 0.0
        for t in range(2 * radius + 1):
            wt = w[t]
            for j in range(cols):
                acc[j] += wt * pad[j + t]
        for j in range(cols):
            img[i, j] = acc[j]


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _degrade_kernel(
    clean, prm, seed, defects, defect_ptr, region, noise, out
):  # pragma: no cover
    n, rows, cols = clean.shape
    s = _seed_state(seed)
    mx = max(rows, cols)
    yv = np.empty(rows, dtype=np.float32)
    xv = np.empty(cols, dtype=np.float32)
    for i in range(rows):
        yv[i] = (i - (rows - 1) / 2) / mx
    for j in range(cols):
        xv[j] = (j - (cols - 1) / 2) / mx
    ey = np.empty(rows, dtype=np.float32)
    ex = np.empty(cols, dtype=np.float32)
    tmp = np.empty((rows, cols), dtype=np.float32)
    r0, r1, c0, c1 = region[0], region[1], region[2], region[3]
    n_noise = (r1 - r0) * (c1 - c0)
    lam = np.empty(n_noise)
    kk = np.empty(n_noise)
    ubuf = np.empty(2 * n_noise)
    zbuf = np.empty(n_noise)
    bitbuf = np.empty(n_noise, dtype=np.uint64)
    okbuf = np.empty(n_noise, dtype=np.bool_)
    for k in range(n):
        p = out[k]
        # clip, normalise to mean 1, gamma
        tot = 0.0
        for i in range(rows):
            for j in range(cols):
                v = max(clean[k, i, j], np.float32(0))
                p[i, j] = v
                tot += v
        inv = np.float32(1 / max(tot / (rows * cols), 1e-12))
        g = np.float32(prm[k, _P_GAMMA])
        for i in range(rows):
            for j in range(cols):
                v = p[i, j] * inv
                p[i, j] = v**g if v > 0 else np.float32(0)
        if prm[k, _P_BLUR] > 0.2:
            _blur_nearest(p, tmp, prm[k, _P_BLUR])
        tot = 0.0
        for i in range(rows):
            for j in range(cols):
                tot += p[i, j]
        inv = np.float32(1 / max(tot / (rows * cols), 1e-12))
        # smooth background: wide Gaussian + gradient + vignetting
        sig = np.float32(prm[k, _P_SIGMA])
        cx = np.float32(prm[k, _P_CX])
        cy = np.float32(prm[k, _P_CY])
        gx = np.float32(prm[k, _P_GX])
        gy = np.float32(prm[k, _P_GY])
        floor = np.float32(prm[k, _P_FLOOR])
        vign = np.float32(prm[k, _P_VIGN])
        two_s2 = 2 * sig * sig
        for i in range(rows):
            ey[i] = math.exp(-((yv[i] - cy) ** 2) / two_s2)
        for j in range(cols):
            ex[j] = math.exp(-((xv[j] - cx) ** 2) / two_s2)
        bgmax = np.float32(0)
        for i in range(rows):
            for j in range(cols):
                bg = floor + ey[i] * ex[j]
                bg *= max(1 + gx * xv[j] + gy * yv[i], np.float32(0.1))
                bg *= 1 - vign * (xv[j] * xv[j] + yv[i] * yv[i]) / np.float32(0.5)
                bg = max(bg, np.float32(1e-3))
                tmp[i, j] = bg
                bgmax = max(bgmax, bg)
        # Kikuchi contrast laid multiplicatively on the background
        contrast = np.float32(prm[k, _P_CONTRAST])
        for i in range(rows):
            for j in range(cols):
                v = (tmp[i, j] / bgmax) * (1 + contrast * (p[i, j] * inv - 1))
                p[i, j] = max(v, np.float32(0))
        circ = prm[k, _P_CIRC] > 0
        if circ:
            rmax = prm[k, _P_RADIUS] * min(rows, cols) / mx
            r2max = np.float32(rmax * rmax)
            if noise:  # masked below anyway: no need for their noise
                for i in range(r0, r1):
                    for j in range(c0, c1):
                        if xv[j] * xv[j] + yv[i] * yv[i] > r2max:
                            p[i, j] = 0
        # Poisson noise at the native counts (summed over binned pixels),
        # Gaussian read noise; only where the pattern is used
        if noise:
            counts = np.float32(prm[k, _P_COUNTS])
            inv_counts = np.float32(1) / counts
            read = np.float32(prm[k, _P_READ])
            m = 0
            for i in range(r0, r1):
                for j in range(c0, c1):
                    lam[m] = np.float64(p[i, j] * counts)
                    m += 1
            _poisson_fill(s, lam, kk, ubuf, okbuf)
            _normal_fill(s, zbuf, bitbuf, okbuf)
            m = 0
            for i in range(r0, r1):
                for j in range(c0, c1):
                    p[i, j] = np.float32(kk[m]) * inv_counts + np.float32(zbuf[m]) * read
                    m += 1
        # hot and dead pixels
        for d in range(defect_ptr[k], defect_ptr[k + 1]):
            p[defects[d, 0], defects[d, 1]] = defects[d, 2]
        if circ:
            for i in range(rows):
                for j in range(cols):
                    if xv[j] * xv[j] + yv[i] * yv[i] > r2max:
                        p[i, j] = 0


def degrade(
    patterns: np.ndarray,
    params: list,
    rng: np.random.Generator,
    binning: float = 1.0,
    region: tuple | None = None,
    noise: bool = True,
) -> np.ndarray:
    """Degrade clean patterns (n, rows, cols) of one detector, float, each
    with its own parameters from :func:`random_realism`.

    ``binning`` is the number of native detector pixels per rendered pixel
    along one axis: blur is divided by it and counts are multiplied by its
    square, so a coarse rendering has the noise of the native detector after
    binning.

    ``region`` (row start, row stop, col start, col stop) limits the
    per-pixel random noise (Poisson and read noise) to the part of the
    pattern that is used (e.g. the centred square that preprocessing crops);
    pixels outside it keep their noise-free value. ``noise=False`` skips the
    noise entirely (for tests). Everything else is per pattern and exact.
    """
    patterns = np.asarray(patterns, dtype=np.float32)
    if patterns.ndim == 2:
        patterns = patterns[None]
    if isinstance(params, dict):
        params = [params]
    patterns = np.ascontiguousarray(patterns)
    n, rows, cols = patterns.shape
    prm = np.array(
        [
            [
                q["gamma"], q["blur"] / binning, q["contrast"],
                q["counts"] * binning**2, q["read_noise"], q["bg_sigma"],
                q["bg_center"][0], q["bg_center"][1],
                q["bg_gradient"][0], q["bg_gradient"][1],
                q["bg_floor"], q["vignetting"], float(q["circular_mask"]),
                q["mask_radius"],
            ]
            for q in params
        ],
        dtype=np.float64,
    ).reshape(n, 14)  # fmt: skip
    seed = np.uint64(rng.integers(0, 2**63 - 1, dtype=np.int64))
    defects, ptr = [], [0]
    for q in params:
        for key, value in (("hot_pixels", 1.0), ("dead_pixels", 0.0)):
            k = q[key]
            if k:
                r = rng.integers(0, rows, k)
                c = rng.integers(0, cols, k)
                defects.extend(zip(r.tolist(), c.tolist(), [value] * k))
        ptr.append(len(defects))
    defects = np.array(defects, dtype=np.float64).reshape(-1, 3)
    defects_i = defects.astype(np.int64)
    region = np.array(region if region is not None else (0, rows, 0, cols), dtype=np.int64)
    out = np.empty_like(patterns)
    _degrade_kernel(
        patterns, prm, seed, defects_i, np.array(ptr, dtype=np.int64), region, bool(noise), out
    )
    return out


def make_batch(
    masters,
    n: int,
    rng: np.random.Generator,
    recipe=None,
    per_detector: int = 32,
    return_raw: bool = False,
):
    """Make a batch of degraded, preprocessed patterns from cached masters.

    Parameters
    ----------
    masters
        A :class:`~kikuchipy_cnn.training.projection.MasterSet`.
    n
        Batch size.
    rng
        Random number generator; the batch is deterministic given its state.
    recipe
        :class:`kikuchipy_cnn.preprocessing.Preprocessing`; default recipe if
        not given.
    per_detector
        Patterns sharing one random detector geometry (amortises the
        detector's direction cosines).
    return_raw
        Also return the degraded patterns before preprocessing (in
        ``meta["raw"]``, a list).

    Returns
    -------
    x
        float32 (n, 1, size, size), output of
        :func:`kikuchipy_cnn.preprocessing.preprocess`.
    y
        int64 (n,), joint class index into
        :data:`kikuchipy_cnn.symmetry.JOINT_CLASSES`.
    meta
        Dictionary of per-pattern lists: ``master`` (index), ``id``,
        ``geometry``, ``quaternion``, ``realism``, ``valid``.
    """
    idx = masters.sample_indices(n, rng)
    quats = random_quaternions(n, rng)
    stacks = masters.stacks() if hasattr(masters, "stacks") else None
    xs, geoms, realism, raws = [], [], [], []
    for start in range(0, n, per_detector):
        stop = min(start + per_detector, n)
        geom = random_geometry(rng)
        shape = geom.render_shape
        dc = detector_directions(geom, shape)
        clean = np.empty((stop - start, *shape), dtype=np.float32)
        if stacks is not None:
            flat = clean.reshape(stop - start, -1)
            for mshape, (stack, pos) in stacks.items():
                sel = np.flatnonzero(pos[idx[start:stop]] >= 0)
                if len(sel) == len(flat):
                    project_many(stack, pos[idx[start:stop]], quats[start:stop], dc, shape, out=flat)
                elif len(sel):
                    clean[sel] = project_many(
                        stack, pos[idx[start + sel]], quats[start + sel], dc, shape
                    )
        else:
            for i in range(start, stop):
                clean[i - start] = project(masters.masters[idx[i]], quats[i : i + 1], dc, shape)[0]
        params = random_realism_batch(stop - start, rng)
        rows, cols = shape
        side = min(rows, cols)
        r0, c0 = (rows - side) // 2, (cols - side) // 2
        # noise only where preprocessing looks (its centred square crop),
        # unless the raw patterns are wanted
        region = None if return_raw else (r0, r0 + side, c0, c0 + side)
        raw = degrade(clean, params, rng, binning=geom.binning, region=region)
        realism.extend(params)
        geoms.extend([geom.to_dict()] * (stop - start))
        x, valid = _preprocessing.preprocess(raw, recipe)
        xs.append((x, valid))
        if return_raw:
            raws.extend(list(raw))
    x = np.concatenate([a for a, _ in xs])
    valid = np.concatenate([v for _, v in xs])
    y = masters.labels[idx].astype(np.int64)
    meta = {
        "master": idx,
        "id": [masters.meta[i].get("id") for i in idx],
        "geometry": geoms,
        "quaternion": quats,
        "realism": realism,
        "valid": valid,
    }
    if return_raw:
        meta["raw"] = raws
    return x.astype(np.float32, copy=False), y, meta
