"""Band-model accuracy against pattern-centre error.

Dynamical Ni patterns (kikuchipy's EMsoft master pattern, 20 kV) at seeded random
orientations and pattern centres, classified with a band model through
``classify_structure()`` while the signal's detector carries the true PC plus an
error of the given size in a random direction (fraction of the detector; PCz
scaled the same way). Prints the fraction called cubic and ``cF m-3m``. Pixel
models do not read the PC, so only band models are affected.

    python benchmarks/pc_error.py [--model kcnn-bands-mlp] [--n 100] [--size 120]
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
    ap.add_argument("--errors", type=float, nargs="+", default=[0, 0.005, 0.01, 0.02, 0.05])
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
    print("| PC error | cubic | cF m-3m | seconds |")
    print("|---|---|---|---|")
    for err in args.errors:
        d = rng.normal(size=(args.n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        s = kp.signals.EBSD(pats.copy())
        s.detector = kp.detectors.EBSDDetector(shape=(args.size, args.size), pc=pcs + err * d, sample_tilt=70)
        s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
        t = time.perf_counter()
        xmap = s.classify_structure(model=args.model, min_score=0, verbose=0, show_progressbar=False, check=False)
        dt = time.perf_counter() - t
        p, names = kikuchipy_cnn.probabilities(xmap)
        ps, _ = kikuchipy_cnn.probabilities(xmap, "crystal_system")
        print(f"| {err} | {(ps.argmax(1) == cubic).mean():.2f} | {(p.argmax(1) == names.index('cF m-3m')).mean():.2f} "
              f"| {dt:.0f} |", flush=True)


if __name__ == "__main__":
    main()
