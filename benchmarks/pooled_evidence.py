"""Pooling the evidence against pooling the verdicts, per structure (issue 14).

Held-out structures only (test split). For each structure, bags of N band sets
at different random orientations (N = 1, 3, 10, 20; ``--draws`` bags per
structure and N) are classified two ways with one band model card:

- ``probabilities``: the per-pattern model's probabilities pooled with
  ``kikuchipy_cnn.phases.pool_probabilities`` (sum of clipped log p);
- ``evidence``: the card's pooled model on the pooled band features
  (``kikuchipy_cnn.phases.pool_evidence``, the code ``classify_structure(pool="phases")`` runs),
  each band set its own view (grain).

Feature files come from ``python -m kikuchipy_cnn.training.band_model featurize``
of band sets generated with many orientations per structure, e.g.::

    python -m kikuchipy_cnn.training.band_sets --source rendered --split test --n 20 --out cache/bags/rendered
    python -m kikuchipy_cnn.training.band_model featurize cache/bags/rendered/rendered_test.npz --out-dir cache/bags/rendered
    python benchmarks/pooled_evidence.py cache/bags/rendered/rendered_test.features.npz [--model kcnn-bands-mlp]

Prints accuracy per level (crystal system, Bravais lattice, Laue class, joint) and
the mean pooled top probability, for all bags and for bags of detectors >= 120 px
only (every pattern of the bag).
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None):
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.engine import get_session
    from kikuchipy_cnn.phases import pool_evidence, pool_probabilities
    from kikuchipy_cnn.training.band_model import _levels_accuracy, load_features

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features", nargs="+", help="feature files of held-out structures")
    ap.add_argument("--model", default="kcnn-bands-mlp", help="registered name, or a card.yaml path")
    ap.add_argument("--sizes", default="1,3,10,20")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    card = resolve_model(args.model)  # a name or a card.yaml path
    if card.pooled_model is None:
        raise SystemExit(f"model {card.name!r} has no pooled model (pooling: model) in its card")
    d = load_features(args.features)
    f, y, sid = d["features"], d["label"], d["structure_id"]
    big = d["shape"].min(1) >= 120
    probs = get_session(card, ["CPUExecutionProvider"]).run(f, ("probabilities",), 1024)["probabilities"]
    rng = np.random.default_rng(args.seed)
    ids = np.unique(sid)
    print(f"{card.name} {card.version}: {len(ids)} held-out structures, {len(f)} band sets "
          f"({int(big.sum())} at >= 120 px); {args.draws} bags per structure and size")
    header = f"{'N':>3} {'subset':<9} {'bags':>5}  {'pooling':<13} {'system':>7} {'Bravais':>7} {'Laue':>7} {'joint':>7} {'conf':>6}"
    print(header)
    for n in [int(v) for v in args.sizes.split(",")]:
        for subset, allowed in (("all", np.ones(len(f), bool)), (">=120 px", big)):
            bags = []
            for s in ids:
                rows = np.flatnonzero((sid == s) & allowed)
                if len(rows) >= n:
                    bags += [rng.choice(rows, n, replace=False) for _ in range(args.draws)]
            if not bags:
                continue
            rows = np.concatenate(bags)
            group = np.repeat(np.arange(len(bags)), n)
            truth = y[[b[0] for b in bags]]
            _, pp, _ = pool_probabilities(probs[rows], group)
            _, pe, _ = pool_evidence(f[rows], group, np.arange(len(rows)), card.pooled_model, card.pooled_sha256)
            for name, p in (("probabilities", pp), ("evidence", pe)):
                a = _levels_accuracy(p, truth)
                print(f"{n:>3} {subset:<9} {len(bags):>5}  {name:<13} {a['crystal_system']:>7.3f} "
                      f"{a['bravais_lattice']:>7.3f} {a['laue_class']:>7.3f} {a['joint']:>7.3f} "
                      f"{p.max(1).mean():>6.3f}")


if __name__ == "__main__":
    main()
