"""Accuracy per structure against the number of pooled patterns (issue 14).

Held-out simulated structures (the 50 test-split master patterns, never seen in
training), ``--per-structure`` patterns each at random orientations, detectors and
realistic degradation (the data engine, as in training), classified pattern by
pattern with a pixel model; then, for N = 1, 3, 10, 30, 100 patterns drawn at random
from one structure (``--draws`` times per structure), the per-pattern probabilities
are pooled with ``kikuchipy_cnn.phases.pool_probabilities`` (sum of clipped
log-probabilities) and the pooled argmax is scored at every level (crystal system,
Bravais lattice, Laue class, joint class; each level its own argmax of the
marginalised pooled probabilities). Also prints the mean pooled top probability
(confidence) beside the accuracy.

    python benchmarks/pooling_curve.py [--model kcnn-resnet-s] [--per-structure 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _probabilities(card, split, per_structure, rng):
    """Per-pattern probabilities and structure index of ``per_structure``
    data-engine patterns per master of one split."""
    from kikuchipy_cnn.engine import get_session
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet
    from kikuchipy_cnn.training.realism import make_batch

    masters = MasterSet(DEFAULT_CACHE, split)
    session = get_session(card)
    n = len(masters) * per_structure
    probs, sid = [], []
    for start in range(0, n, 256):
        x, _, meta = make_batch(masters, min(256, n - start), rng, card.preprocessing)
        ok = np.asarray(meta["valid"])
        probs.append(session.run(x[ok])["probabilities"])
        sid.append(np.asarray(meta["master"])[ok])
    return np.concatenate(probs), np.concatenate(sid), np.asarray(masters.labels)


def _draws(sid, N, draws, rng):
    """Index sets of N patterns of one structure: ``draws`` per structure
    (one when it has only N)."""
    out = []
    for s in np.unique(sid):
        idx = np.flatnonzero(sid == s)
        if len(idx) >= N:
            out += [(s, rng.choice(idx, N, replace=False))
                    for _ in range(draws if N < len(idx) else 1)]
    return out


def _pool(probs, picks, tempering):
    from kikuchipy_cnn.phases import pool_probabilities

    return np.array([pool_probabilities(probs[p], np.zeros(len(p), int),
                                        tempering=tempering)[1][0] for _, p in picks])


def main(argv=None):
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.symmetry import JOINT_CLASSES
    from kikuchipy_cnn.training.calibrate import expected_calibration_error
    from kikuchipy_cnn.training.evaluate import level_index, level_probabilities
    from kikuchipy_cnn.training.pooling_fit import fit_tempering

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="kcnn-resnet-s")
    ap.add_argument("--per-structure", type=int, default=100)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    card = resolve_model(args.model)
    if card.input_kind != "pixels":
        raise SystemExit(f"{args.model} is not a pixel model; this benchmark renders pixels")
    rng = np.random.default_rng(args.seed)
    classes = list(card.classes)
    col = np.array([JOINT_CLASSES.index(c) for c in classes])

    # tempering fitted on the validation structures (pooled joint NLL, N = 3-30;
    # each pattern its own orientation, i.e. its own view)
    vp, vs, vl = _probabilities(card, "val", args.per_structure // 2, rng)
    beta, _ = fit_tempering({"probs": vp, "structure": vs, "grain": np.arange(len(vp)),
                             "label": np.asarray(vl)[vs], "classes": np.asarray(classes)},
                            rng, sizes=(3, 10, 30), draws=5)

    probs, sid, label = _probabilities(card, "test", args.per_structure, rng)
    print(f"{len(probs)} patterns of {len(np.unique(sid))} held-out structures; tempering "
          f"fitted on {len(np.unique(vs))} validation structures: beta = {beta:.2f}; "
          f"{time.perf_counter() - t0:.0f} s")
    levels = ("crystal_system", "bravais_lattice", "laue_class", "joint")
    print("\n| patterns pooled | " + " | ".join(levels)
          + " | joint: mean top probability / ECE, beta = 0 | same, fitted beta |")
    print("|---|" + "---|" * (len(levels) + 2))
    for N in (1, 3, 10, 30, 100):
        picks = _draws(sid, N, args.draws, rng)
        if not picks:
            continue
        truth = [JOINT_CLASSES[label[s]] for s, _ in picks]
        cells = []
        for b in (0.0, beta):
            pooled = _pool(probs, picks, b)
            t = np.array([int(np.flatnonzero(col == label[s])[0]) for s, _ in picks])
            cells.append(f"{pooled.max(axis=1).mean():.3f} / "
                         f"{expected_calibration_error(pooled, t):.3f}")
        accs = []
        for level in levels:
            lp = level_probabilities(pooled, classes, level)
            accs.append(float((lp.argmax(axis=1) == level_index(truth, level)).mean()))
        print(f"| {N} | " + " | ".join(f"{a:.3f}" for a in accs) + " | "
              + " | ".join(cells) + " |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
