"""Band front end against truth: normal and width errors of `kikuchipy_cnn.bands`.

Dynamical Ni patterns projected from kikuchipy's EMsoft master pattern at random
orientations and pattern centres (true PC known), at several detector sizes and
noise levels. Every detected band is matched to the nearest Ni plane normal of
the families {111} ... {422} (h^2+k^2+l^2 <= 24) in the crystal frame; the normal
error is that angle, and the width is compared with 2 theta_B of the lowest
allowed order along that normal. Prints one table row per setting and, for
reference, PyEBSDIndex's own band positions (before the profile re-centring).

    python benchmarks/band_front_end.py [--n 40] [--sizes 60 120 240 480]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def ni_families(a: float = 3.524, max_n2: int = 24):
    h = np.array(
        [(i, j, k) for i in range(-6, 7) for j in range(-6, 7) for k in range(-6, 7) if (i, j, k) != (0, 0, 0)]
    )
    allowed = ((h % 2 == 0).all(1) | (h % 2 == 1).all(1)) & ((h**2).sum(1) <= max_n2)
    h = h[allowed]
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    # lowest allowed order along each direction: the shortest allowed h on it
    d = np.empty(len(h))
    for i, v in enumerate(u):
        same = np.abs(u @ v) > 1 - 1e-9
        d[i] = a / np.sqrt((h[same] ** 2).sum(1).min())
    return h, u, d


def simulate(n: int, size: int, counts: float | None, rng):
    import kikuchipy as kp
    from orix.quaternion import Rotation

    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    q = rng.normal(size=(n, 4))
    rot = Rotation(q / np.linalg.norm(q, axis=1, keepdims=True))  # uniform, seeded
    pcs = np.column_stack([rng.uniform(0.4, 0.6, n), rng.uniform(0.2, 0.35, n), rng.uniform(0.5, 0.65, n)])
    pats = np.empty((n, size, size), np.float32)
    for i in range(n):
        det = kp.detectors.EBSDDetector(shape=(size, size), pc=pcs[i], sample_tilt=70, tilt=0)
        p = mp.get_patterns(rot[i], det, energy=20, compute=True, show_progressbar=False).data
        p = np.asarray(p, np.float64).reshape(size, size)
        if counts is not None:
            p = p - p.min()
            p = rng.poisson(p / p.mean() * counts).astype(np.float64)
        pats[i] = p
    det = kp.detectors.EBSDDetector(shape=(size, size), pc=pcs[0], sample_tilt=70, tilt=0)
    return pats, pcs, rot, det


def errors(bands, rot, det, fam_u, fam_d, wavelength):
    from orix.vector import Vector3d

    from kikuchipy_cnn.bands import to_sample_frame

    err, wratio = [], []
    for i in range(rot.size):
        v = bands.valid[i]
        nc = (rot[i] * Vector3d(to_sample_frame(bands.normals[i][v], det))).data
        cos = np.abs(nc @ fam_u.T)
        j = cos.argmax(1)
        err.append(np.degrees(np.arccos(cos.max(1).clip(-1, 1))))
        two_theta = 2 * np.arcsin(wavelength / (2 * fam_d[j]))
        wratio.append(bands.width[i][v] / two_theta)
    return np.concatenate(err), np.concatenate(wratio)


def main(argv=None):
    from kikuchipy_cnn.bands import BandSet, detect_bands, electron_wavelength

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="patterns per setting")
    ap.add_argument("--sizes", type=int, nargs="+", default=[60, 120, 240, 480])
    ap.add_argument("--n-bands", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    _, fam_u, fam_d = ni_families()
    lam = electron_wavelength(20.0)
    print(f"Ni dynamical (kikuchipy master pattern, 20 kV), {args.n} patterns per row, "
          f"{args.n_bands} bands requested, random PC x 0.4-0.6, y 0.2-0.35, z 0.5-0.65")
    print("| px | counts/px | bands found | normal err median (PyEBSDIndex) | within 1 deg | within 2 deg "
          "| widths measured | width/2theta_B median | IQR/median | patterns/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for counts in (None, 100.0, 10.0):
            pats, pcs, rot, det = simulate(args.n, size, counts, rng)
            detect_bands(pats[:1], pcs[:1], n_bands=args.n_bands)  # compile / set up
            t = time.perf_counter()
            b = detect_bands(pats, pcs, n_bands=args.n_bands)
            dt = time.perf_counter() - t
            raw = detect_bands(pats, pcs, n_bands=args.n_bands, widths=False)
            e, w = errors(b, rot, det, fam_u, fam_d, lam)
            e0, _ = errors(BandSet(*raw), rot, det, fam_u, fam_d, lam)
            wm = w[np.isfinite(w)]
            q = np.percentile(wm, [25, 50, 75]) if wm.size else [np.nan] * 3
            print(
                f"| {size} | {'none' if counts is None else int(counts)} | {b.valid.sum(1).mean():.1f} "
                f"| {np.median(e):.2f} ({np.median(e0):.2f}) | {(e < 1).mean():.2f} | {(e < 2).mean():.2f} "
                f"| {np.isfinite(w).mean():.2f} | {q[1]:.2f} | {(q[2] - q[0]) / q[1]:.2f} | {args.n / dt:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
