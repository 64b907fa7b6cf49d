"""Band-model accuracy against pattern-centre error.

Dynamical Ni patterns (kikuchipy's EMsoft master pattern, 20 kV) at seeded random
orientations and pattern centres, classified with a band model through
``classify_structure()`` while the signal's detector carries the true PC plus an
error of the given size in a random direction (fraction of the detector; PCz
scaled the same way). Prints the fraction called cubic and ``cF m-3m``. Pixel
models do not read the PC, so only band models are affected.

Then the estimated PC (issue 16): the patterns are split into scans of
``--scan`` patterns; every scan's detector carries the true PCs plus one offset
of length ``--offset`` in a random direction (a miscalibrated detector), and the
scan is classified with the true PCs, with that detector, and with
``pc="estimate"`` (:func:`kikuchipy_cnn.estimate_pc` started at it). Accuracies
are over the patterns of the scans whose estimate was not refused.

    python benchmarks/pc_error.py [--model kcnn-bands-mlp] [--n 100] [--size 120]
                                  [--errors 0 0.01 ...] [--scan 10] [--offset 0.03]

``--errors`` with no value skips the first table, ``--scan 0`` the second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    import kikuchipy as kp
    from orix.quaternion import Rotation

    import kikuchipy_cnn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="kcnn-bands-mlp")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--errors", type=float, nargs="*", default=[0, 0.005, 0.01, 0.02, 0.05])
    ap.add_argument("--scan", type=int, default=10, help="patterns per scan for the estimate; 0: skip")
    ap.add_argument("--offset", type=float, default=0.03, help="start error of the estimate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    q = rng.normal(size=(args.n, 4))
    rot = Rotation(q / np.linalg.norm(q, axis=1, keepdims=True))
    pcs = np.column_stack([rng.uniform(0.4, 0.6, args.n), rng.uniform(0.2, 0.35, args.n), rng.uniform(0.5, 0.65, args.n)])
    pats = np.empty((args.n, args.size, args.size), np.float32)
    for i in range(args.n):
        det = kp.detectors.EBSDDetector(shape=(args.size, args.size), pc=pcs[i], sample_tilt=70)
        p = np.asarray(mp.get_patterns(rot[i], det, energy=20, compute=True, show_progressbar=False).data, np.float64)
        p = (p - p.min()) / (p.max() - p.min())
        pats[i] = rng.poisson(p.reshape(args.size, args.size) * 200 + 1)
    cubic = kikuchipy_cnn.symmetry.level_names("crystal_system").index("cubic")
    print(f"{args.model}: {args.n} dynamical Ni patterns, {args.size} px, Poisson noise (200 counts)")
    if args.errors:
        error_table(args, pats, pcs, rng, cubic)
    if args.scan > 0:
        estimate_table(args, pats, pcs, rng, cubic)


def _classify(pats, pcs, model, **kwargs):
    """Map of ``pats`` (one navigation axis) whose detector carries ``pcs``."""
    import kikuchipy as kp

    size = pats.shape[1]
    s = kp.signals.EBSD(pats.copy())
    s.detector = kp.detectors.EBSDDetector(shape=(size, size), pc=pcs, sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    return s.classify_structure(model=model, min_score=0, verbose=0, show_progressbar=False, check=False,
                                pool="none", **kwargs)


def _correct(xmap, cubic):
    """Per pattern: called cubic, called cF m-3m."""
    import kikuchipy_cnn

    p, names = kikuchipy_cnn.probabilities(xmap)
    ps, _ = kikuchipy_cnn.probabilities(xmap, "crystal_system")
    return ps.argmax(1) == cubic, p.argmax(1) == names.index("cF m-3m")


def estimate_table(args, pats, pcs, rng, cubic):
    """True PC, PC ``--offset`` off and the PC estimated from there, per scan."""
    rows = {"true PC": [], f"true PC + {args.offset} (one offset per scan)": [], "pc=\"estimate\"": []}
    errors, seconds, refused, n_scans = [], [], [], 0
    for i0 in range(0, args.n, args.scan):
        sl = slice(i0, min(i0 + args.scan, args.n))
        n_scans += 1
        d = rng.normal(size=3)
        start = pcs[sl] + args.offset * d / np.linalg.norm(d)
        t = time.perf_counter()
        try:
            est = _classify(pats[sl], start, args.model, pc="estimate")
        except ValueError as e:
            refused.append(str(e).split(":")[1][:80])
            continue
        seconds.append(time.perf_counter() - t)
        errors.append(np.linalg.norm(est.pc_estimate.pc_per_pattern - pcs[sl], axis=1).mean())
        for key, xmap in zip(rows, (_classify(pats[sl], pcs[sl], args.model),
                                    _classify(pats[sl], start, args.model), est)):
            rows[key].append(np.column_stack(_correct(xmap, cubic)))
    n_ok = sum(len(r) for r in rows["true PC"])
    print(f"\nScans of {args.scan} patterns, start {args.offset} off: {n_scans - len(refused)} of {n_scans} "
          f"estimated ({n_ok} patterns), {len(refused)} refused")
    print("| PC | cubic | cF m-3m |")
    print("|---|---|---|")
    for key, r in rows.items():
        acc = np.concatenate(r).mean(0) if r else [np.nan, np.nan]
        print(f"| {key} | {acc[0]:.3f} | {acc[1]:.3f} |")
    if errors:
        print(f"estimated PC error (Euclidean, per scan): median {np.median(errors):.4f}, max {np.max(errors):.4f}; "
              f"classify with pc='estimate' {np.median(seconds):.1f} s per scan (median)")
    for r in refused:
        print("refused:", r)


def error_table(args, pats, pcs, rng, cubic):
    """Accuracy with the true PC plus errors of each size in random directions."""
    import kikuchipy as kp
    import kikuchipy_cnn

    print("| PC error | cubic | cF m-3m | seconds |")
    print("|---|---|---|---|")
    for err in args.errors:
        d = rng.normal(size=(args.n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        s = kp.signals.EBSD(pats.copy())
        s.detector = kp.detectors.EBSDDetector(shape=(args.size, args.size), pc=pcs + err * d, sample_tilt=70)
        s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
        t = time.perf_counter()
        xmap = s.classify_structure(model=args.model, min_score=0, verbose=0, show_progressbar=False, check=False,
                                    pool="none")
        dt = time.perf_counter() - t
        p, names = kikuchipy_cnn.probabilities(xmap)
        ps, _ = kikuchipy_cnn.probabilities(xmap, "crystal_system")
        print(f"| {err} | {(ps.argmax(1) == cubic).mean():.2f} | {(p.argmax(1) == names.index('cF m-3m')).mean():.2f} "
              f"| {dt:.0f} |", flush=True)


if __name__ == "__main__":
    main()
