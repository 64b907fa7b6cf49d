"""Out-of-distribution rejection: false-accept rate of ``classify_structure()``
at its default settings on >= 1,000 inputs that are not Kikuchi patterns, next
to the accept rate on real and simulated Kikuchi patterns.

Non-Kikuchi inputs (many kinds, sizes and dtypes): white (Gaussian, uniform),
Poisson and pink/brown noise; blank and nearly blank images; smooth gradients;
saturated images (clipped Kikuchi patterns and clipped noise); tiny images
3..31 px (noise and crops of Kikuchi patterns); natural images bundled with
scikit-image (cropped, resized, rotated, flipped); random thin lines, random
straight bands, grids, stripes and checkerboards (rotated).

Kikuchi patterns: kikuchipy's 9 experimental Ni patterns (raw, with their
static background), every pattern of ``../shared/data`` (cases.tsv), and
dynamical Ni patterns projected from kikuchipy's EMsoft master pattern at
random orientations at 60/120/240 px, noise-free and with Poisson noise.

An input counts as *accepted* when ``classify_structure()`` gives it a class
(phase_id != -1) at the default ``min_score`` of the default model; the
pattern check's own verdict (``kikuchi_check == 0``) is reported beside it.

    python benchmarks/ood_rejection.py [--seed 1] [--n-sim 300] [--markdown]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict

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


def _natural_images():
    import skimage.data as d

    names = ["astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee",
             "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
             "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
             "rocket", "shepp_logan_phantom", "text", "binary_blobs", "checkerboard"]
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
    """A dynamical Ni pattern (for clipping and cropping)."""
    return _sim_patterns(1, shape, rng, noise=False)[0]


_MP = None


def _sim_patterns(n, shape, rng, noise):
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


def non_kikuchi(seed: int = 1, per_kind: int = 40):
    """Yield ``(kind, image)`` for many kinds of inputs that are not Kikuchi
    patterns."""
    rng = np.random.default_rng(seed)
    photos = _natural_images()
    names = sorted(photos)
    for _ in range(per_kind):
        sh = _size(rng)
        yield "white noise (Gaussian)", _to_dtype(rng.normal(size=sh), rng)
        sh = _size(rng)
        yield "white noise (uniform)", _to_dtype(rng.random(sh), rng)
        sh = _size(rng)
        lam = rng.choice([0.5, 3, 30, 1000])
        yield "Poisson noise", rng.poisson(lam, size=sh).astype(rng.choice(["uint8", "uint16", "float32"]))
        sh = _size(rng)
        yield "pink noise 1/f", _to_dtype(_coloured_noise(sh, 1.0, rng), rng)
        sh = _size(rng)
        yield "brown noise 1/f^2", _to_dtype(_coloured_noise(sh, 2.0, rng), rng)
        sh = _size(rng)
        blank = np.full(sh, rng.uniform(0, 255))
        if rng.random() < 0.5:
            blank = blank + rng.normal(0, 0.5, sh)  # nearly blank
        yield "blank", _to_dtype(blank, rng, 0, 255)
        sh = _size(rng)
        yy, xx = np.mgrid[: sh[0], : sh[1]] / max(sh)
        t = rng.uniform(0, 2 * np.pi)
        g = np.cos(t) * xx + np.sin(t) * yy
        if rng.random() < 0.5:
            g = np.hypot(xx - rng.random(), yy - rng.random())  # radial
        yield "smooth gradient", _to_dtype(g + rng.normal(0, 0.002, sh) * rng.integers(2), rng)
        sh = _size(rng)
        k = kikuchi_like(rng, sh) if rng.random() < 0.7 else rng.random(sh)
        frac = rng.uniform(0.3, 0.8)
        clip = np.quantile(k, 1 - frac)
        yield "saturated", _to_dtype(np.minimum(k, clip), rng)
        side = int(rng.integers(3, 32))
        sh = (side, int(rng.integers(3, 32)) if rng.random() < 0.3 else side)
        if rng.random() < 0.5:
            tiny = rng.random(sh)
        else:
            tiny = kikuchi_like(rng, (60, 60))[:sh[0], :sh[1]]
        yield "tiny (3-31 px)", _to_dtype(tiny, rng)
        for _ in range(3):
            sh = _size(rng)
            img = photos[names[rng.integers(len(names))]]
            yield "natural image", _to_dtype(_photo(img, sh, rng), rng)
        sh = _size(rng)
        yield "random thin lines", _to_dtype(
            _lines(sh, rng, int(rng.integers(3, 30)), 1.0) + rng.normal(0, 0.1, sh), rng)
        sh = _size(rng)
        w = max(sh) * rng.uniform(0.02, 0.08)
        yield "random straight bands", _to_dtype(
            _lines(sh, rng, int(rng.integers(4, 20)), (0.5 * w, 2 * w), rng.uniform(0.3, 1))
            + rng.normal(0, 0.1, sh), rng)
        sh = _size(rng)
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
        yield name, _to_dtype(img.astype(float) + rng.normal(0, 0.05, sh), rng)


def kikuchi_sets(n_sim: int = 300, seed: int = 1):
    """Yield ``(set name, EBSD signal)`` of real and simulated Kikuchi patterns."""
    import kikuchipy as kp

    from kikuchipy_cnn.training.real_data import default_shared_data, load_cases

    yield "kikuchipy Ni, 9 experimental 60x60 (raw)", kp.data.nickel_ebsd_small()
    try:
        cases = load_cases(default_shared_data())
    except FileNotFoundError:
        cases = []
    for c in cases:
        yield f"shared data: {c.kind} {c.phase}", c.signal
    rng = np.random.default_rng(seed)
    per = n_sim // 6
    for size in (60, 120, 240):
        for noise in (False, True):
            data = _sim_patterns(per, (size, size), rng, noise).astype(np.float32)
            yield (f"dynamical Ni {size} px, {'Poisson noise' if noise else 'no noise'}",
                   kp.signals.EBSD(data))


def _classify(s):
    """phase_id != -1 and kikuchi_check == 0 per pattern at default settings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xmap = s.classify_structure(verbose=0, show_progressbar=False)
    accepted = xmap.phase_id != -1
    check = xmap.prop["kikuchi_check"] if "kikuchi_check" in xmap.prop else np.zeros(accepted.shape)
    return accepted, check == 0


def main():
    import kikuchipy as kp

    import kikuchipy_cnn  # noqa: F401 (registers the signal method)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-kind", type=int, default=60)
    p.add_argument("--n-sim", type=int, default=300)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    t0 = time.perf_counter()
    groups = defaultdict(list)
    for kind, img in non_kikuchi(args.seed, args.per_kind):
        groups[(kind, img.shape, img.dtype.str)].append(img)
    rows = defaultdict(lambda: [0, 0, 0])  # n, accepted, check passed
    for (kind, shape, _), imgs in groups.items():
        if min(shape) < 2:  # the classifier refuses these outright
            rows[kind][0] += len(imgs)
            continue
        acc, ok = _classify(kp.signals.EBSD(np.stack(imgs)))
        r = rows[kind]
        r[0] += len(imgs)
        r[1] += int(acc.sum())
        r[2] += int(ok.sum())
    real = defaultdict(lambda: [0, 0, 0])
    for name, s in kikuchi_sets(args.n_sim, args.seed):
        acc, ok = _classify(s)
        r = real[name]
        r[0] += acc.size
        r[1] += int(acc.sum())
        r[2] += int(ok.sum())

    def table(rows, title, what):
        lines = [f"| {title} | n | {what} by classify_structure() | passes the pattern check |",
                 "|---|---:|---:|---:|"]
        tot = [0, 0, 0]
        for k, (n, a, c) in rows.items():
            lines.append(f"| {k} | {n} | {a / n:.1%} ({a}) | {c / n:.1%} ({c}) |")
            tot = [tot[0] + n, tot[1] + a, tot[2] + c]
        n, a, c = tot
        lines.append(f"| **all** | **{n}** | **{a / n:.2%}** ({a}) | **{c / n:.2%}** ({c}) |")
        return "\n".join(lines)

    print(table(rows, "non-Kikuchi input", "falsely accepted"))
    print()
    print(table(real, "Kikuchi patterns", "accepted"))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
