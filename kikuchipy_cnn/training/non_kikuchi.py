"""Images that are not Kikuchi patterns, of many kinds, sizes and dtypes:
the negatives of the learned pattern check (``training/kikuchi_check.py``)
and the inputs of ``benchmarks/ood_rejection.py``.

Kinds: white (Gaussian, uniform), Poisson and pink/brown noise; blank and
nearly blank images; smooth gradients; saturated images (clipped Kikuchi
patterns and clipped noise); tiny images 3..31 px; natural images bundled
with scikit-image (cropped, resized, rotated, flipped); random thin lines,
random straight bands, grids, stripes and checkerboards (rotated); and
microscopy images that are not Kikuchi patterns: diffraction spot patterns,
ring (powder) patterns, and phase-scrambled Kikuchi patterns (the power
spectrum of a Kikuchi pattern without its bands).

The natural images are split by name (:data:`TRAIN_PHOTOS`,
:data:`HELD_OUT_PHOTOS`): the check is trained on the first only, so the
benchmark can report photographs it never saw.
"""

from __future__ import annotations

import numpy as np

SIZES = [(32, 32), (40, 40), (48, 64), (60, 60), (64, 64), (80, 60), (96, 96), (100, 120),
         (120, 120), (128, 156), (160, 160), (240, 240), (256, 320), (480, 480)]


def _size(rng):
    return SIZES[rng.integers(len(SIZES))]


def _to_dtype(a, rng, lo=None, hi=None):
    """Scale float image to a random dtype (uint8, uint16 or float32)."""
    a = np.asarray(a, dtype=np.float64)
    lo = a.min() if lo is None else lo
    hi = a.max() if hi is None else hi
    u = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    dt = rng.choice(["uint8", "uint16", "float32"])
    if dt == "uint8":
        return np.round(np.clip(u, 0, 1) * 255).astype(np.uint8)
    if dt == "uint16":
        return np.round(np.clip(u, 0, 1) * 4095).astype(np.uint16)
    return (u * rng.uniform(0.5, 1000)).astype(np.float32)


def _coloured_noise(shape, beta, rng):
    """Noise with power spectrum 1/f^beta."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij"))
    f[0, 0] = 1
    spec = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / f ** (beta / 2)
    return np.fft.ifft2(spec).real


def _lines(shape, rng, n, width, value=1.0):
    """Sum of ``n`` straight lines/bands of random position and direction."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.zeros(shape)
    for _ in range(n):
        t = rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        d = np.abs((xx - x0) * np.cos(t) + (yy - y0) * np.sin(t))
        w = width if np.isscalar(width) else rng.uniform(*width)
        img += value * (d < w / 2)
    return img


#: Natural images of scikit-image the learned check is trained on
TRAIN_PHOTOS = ("astronaut", "brick", "camera", "cell", "clock", "coins", "grass",
                "hubble_deep_field", "logo", "moon", "retina", "shepp_logan_phantom",
                "binary_blobs")
#: Natural images it never sees (reported apart by the benchmark)
HELD_OUT_PHOTOS = ("cat", "chelsea", "coffee", "colorwheel", "gravel", "horse",
                   "immunohistochemistry", "microaneurysms", "page", "rocket", "text",
                   "checkerboard")


def _natural_images(names):
    import skimage.data as d

    out = {}
    for n in names:
        try:
            a = np.asarray(getattr(d, n)(), dtype=np.float64)
        except Exception:  # not bundled and no network
            continue
        if a.ndim == 3:
            a = a[..., :3].mean(-1)
        out[n] = a
    return out


def _photo(img, shape, rng):
    from scipy.ndimage import rotate
    from skimage.transform import resize

    a = img
    if rng.random() < 0.5:
        a = rotate(a, rng.uniform(0, 360), reshape=False, mode="reflect", order=1)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    # random crop of 30-100 % of the shorter side, then resize
    side = int(min(a.shape) * rng.uniform(0.3, 1.0))
    r0 = rng.integers(0, a.shape[0] - side + 1)
    c0 = rng.integers(0, a.shape[1] - side + 1)
    a = a[r0 : r0 + side, c0 : c0 + side]
    return resize(a, shape, anti_aliasing=True, preserve_range=True)


def kikuchi_like(rng, shape):
    """A dynamical Ni pattern (kikuchipy's master pattern, random
    orientation), scaled to [0, 1]."""
    return sim_patterns(1, shape, rng, noise=False)[0]


_MP = None


def sim_patterns(n, shape, rng, noise):
    """``n`` dynamical Ni patterns from kikuchipy's EMsoft master pattern at
    random orientations and one random detector (PC, tilt), 20 kV; with
    Poisson noise at 30, 100 or 300 counts per pixel if ``noise``."""
    import kikuchipy as kp
    from orix.quaternion import Rotation

    from kikuchipy_cnn.training.projection import random_quaternions

    global _MP
    if _MP is None:
        _MP = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    pc = (rng.uniform(0.4, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.7))
    det = kp.detectors.EBSDDetector(shape=shape, pc=pc, sample_tilt=70, tilt=rng.uniform(0, 8))
    s = _MP.get_patterns(Rotation(random_quaternions(n, rng)), det, energy=20, compute=True,
                         show_progressbar=False, dtype_out=np.float32)
    data = s.data.reshape((n,) + tuple(shape)).astype(np.float64)
    data = (data - data.min(axis=(1, 2), keepdims=True)) / np.ptp(data, axis=(1, 2), keepdims=True)
    if noise:
        counts = rng.choice([30, 100, 300], size=(n, 1, 1))
        data = rng.poisson(data * counts + 1.0).astype(np.float64)
    return data


def _spots(shape, rng):
    """A spot (single-crystal electron diffraction) pattern: a 2-D lattice of
    Gaussian spots around a bright central beam, intensities falling off."""
    rows, cols = shape
    a = rng.uniform(0.04, 0.2) * max(shape)
    b = a * rng.uniform(0.6, 1.6)
    ang = rng.uniform(50, 130) * np.pi / 180
    t = rng.uniform(0, np.pi)
    u = np.array([np.cos(t), np.sin(t)]) * a
    v = np.array([np.cos(t + ang), np.sin(t + ang)]) * b
    c = np.array([cols, rows]) * rng.uniform(0.35, 0.65, 2)
    yy, xx = np.mgrid[:rows, :cols].astype(float)
    img = np.zeros(shape)
    k = int(max(shape) / min(a, b)) + 2
    sig = rng.uniform(0.6, 2.5)
    for i in range(-k, k + 1):
        for j in range(-k, k + 1):
            x, y = c + i * u + j * v
            if -3 * sig < x < cols + 3 * sig and -3 * sig < y < rows + 3 * sig:
                amp = np.exp(-np.hypot(i, j) / rng.uniform(1, 4)) * rng.uniform(0.3, 1)
                img += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig**2))
    return img + rng.normal(0, 0.01, shape)


def _rings(shape, rng):
    """A ring (powder) diffraction pattern: concentric rings around a centre,
    on a falling background."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols].astype(float)
    c = np.array([cols, rows]) * rng.uniform(0.3, 0.7, 2)
    r = np.hypot(xx - c[0], yy - c[1])
    img = np.exp(-r / (rng.uniform(0.1, 0.5) * max(shape)))
    d0 = rng.uniform(0.05, 0.2) * max(shape)
    for q in np.sqrt(np.arange(1, 12)) * d0:
        img += rng.uniform(0.05, 0.5) * np.exp(-((r - q) ** 2) / (2 * rng.uniform(0.5, 2.5) ** 2))
    return img + rng.normal(0, 0.01, shape)


def phase_scrambled(pattern, rng):
    """The amplitude spectrum of ``pattern`` with random Fourier phases: the
    same grain of intensity and power spectrum, no bands."""
    f = np.fft.rfft2(pattern - pattern.mean())
    phase = np.exp(2j * np.pi * rng.random(f.shape))
    return np.fft.irfft2(np.abs(f) * phase, s=pattern.shape)


def _grid_stripes_checker(sh, rng):
    yy, xx = np.mgrid[: sh[0], : sh[1]].astype(float)
    t = rng.uniform(0, np.pi)
    u = xx * np.cos(t) + yy * np.sin(t)
    v = -xx * np.sin(t) + yy * np.cos(t)
    period = rng.uniform(4, max(sh) / 3)
    kind = rng.integers(3)
    if kind == 0:
        img = ((u % period) < period * rng.uniform(0.1, 0.4)) | ((v % period) < period * 0.2)
        name = "grid"
    elif kind == 1:
        img = np.sin(2 * np.pi * u / period) > 0
        img = np.sin(2 * np.pi * u / period) if rng.random() < 0.5 else img
        name = "stripes"
    else:
        img = ((u // period) + (v // period)) % 2
        name = "checkerboard"
    return name, img.astype(float) + rng.normal(0, 0.05, sh)


def non_kikuchi(seed: int = 1, per_kind: int = 40, photos: str = "all", kikuchi=None,
                size=None):
    """Yield ``(kind, image)`` for many kinds of inputs that are not Kikuchi
    patterns (``per_kind`` rounds, each one image per kind, three natural
    images).

    Parameters
    ----------
    seed
        Random seed; the images are deterministic given it.
    per_kind
        Rounds.
    photos
        Natural images from ``"all"`` (kind names then say ``seen in
        training`` or ``held out``), ``"train"`` (:data:`TRAIN_PHOTOS`) or
        ``"held-out"``.
    kikuchi
        ``f(rng, shape) → pattern`` giving the Kikuchi patterns that are
        clipped (saturated), cropped (tiny) and phase-scrambled; by default
        :func:`kikuchi_like` (kikuchipy's Ni).
    size
        ``f(rng) → (rows, cols)``; by default one of :data:`SIZES`.
    """
    rng = np.random.default_rng(seed)
    kikuchi = kikuchi or kikuchi_like
    size = size or _size
    names = {"all": TRAIN_PHOTOS + HELD_OUT_PHOTOS, "train": TRAIN_PHOTOS,
             "held-out": HELD_OUT_PHOTOS}[photos]
    images = _natural_images(names)
    names = sorted(images)
    for _ in range(per_kind):
        sh = size(rng)
        yield "white noise (Gaussian)", _to_dtype(rng.normal(size=sh), rng)
        sh = size(rng)
        yield "white noise (uniform)", _to_dtype(rng.random(sh), rng)
        sh = size(rng)
        lam = rng.choice([0.5, 3, 30, 1000])
        yield "Poisson noise", rng.poisson(lam, size=sh).astype(rng.choice(["uint8", "uint16", "float32"]))
        sh = size(rng)
        yield "pink noise 1/f", _to_dtype(_coloured_noise(sh, 1.0, rng), rng)
        sh = size(rng)
        yield "brown noise 1/f^2", _to_dtype(_coloured_noise(sh, 2.0, rng), rng)
        sh = size(rng)
        blank = np.full(sh, rng.uniform(0, 255))
        if rng.random() < 0.5:
            blank = blank + rng.normal(0, 0.5, sh)  # nearly blank
        yield "blank", _to_dtype(blank, rng, 0, 255)
        sh = size(rng)
        yy, xx = np.mgrid[: sh[0], : sh[1]] / max(sh)
        t = rng.uniform(0, 2 * np.pi)
        g = np.cos(t) * xx + np.sin(t) * yy
        if rng.random() < 0.5:
            g = np.hypot(xx - rng.random(), yy - rng.random())  # radial
        yield "smooth gradient", _to_dtype(g + rng.normal(0, 0.002, sh) * rng.integers(2), rng)
        sh = size(rng)
        k = kikuchi(rng, sh) if rng.random() < 0.7 else rng.random(sh)
        frac = rng.uniform(0.3, 0.8)
        clip = np.quantile(k, 1 - frac)
        yield "saturated", _to_dtype(np.minimum(k, clip), rng)
        side = int(rng.integers(3, 32))
        sh = (side, int(rng.integers(3, 32)) if rng.random() < 0.3 else side)
        if rng.random() < 0.5:
            tiny = rng.random(sh)
        else:
            tiny = kikuchi(rng, (60, 60))[:sh[0], :sh[1]]
        yield "tiny (3-31 px)", _to_dtype(tiny, rng)
        for _ in range(3):
            sh = size(rng)
            name = names[rng.integers(len(names))]
            kind = "natural image"
            if photos == "all":
                kind += " (seen in training)" if name in TRAIN_PHOTOS else " (held out)"
            yield kind, _to_dtype(_photo(images[name], sh, rng), rng)
        sh = size(rng)
        yield "random thin lines", _to_dtype(
            _lines(sh, rng, int(rng.integers(3, 30)), 1.0) + rng.normal(0, 0.1, sh), rng)
        sh = size(rng)
        w = max(sh) * rng.uniform(0.02, 0.08)
        yield "random straight bands", _to_dtype(
            _lines(sh, rng, int(rng.integers(4, 20)), (0.5 * w, 2 * w), rng.uniform(0.3, 1))
            + rng.normal(0, 0.1, sh), rng)
        sh = size(rng)
        name, img = _grid_stripes_checker(sh, rng)
        yield name, _to_dtype(img, rng)
        sh = size(rng)
        yield "diffraction spots", _to_dtype(_spots(sh, rng), rng)
        sh = size(rng)
        yield "ring pattern", _to_dtype(_rings(sh, rng), rng)
        sh = size(rng)
        yield "phase-scrambled Kikuchi", _to_dtype(phase_scrambled(kikuchi(rng, sh), rng), rng)
