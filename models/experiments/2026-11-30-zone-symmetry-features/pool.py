"""Pooled ablation: do zone-symmetry features pooled over a phase's patterns
add to the pooled band features (issue 14)?

Bags of 1-12 rendered patterns of one structure; gradient-boosted trees on the
pooled band features (kikuchipy_cnn.features.pooled_features) with and without
pooled zone statistics; iterations chosen on validation bags; test bags of
held-out structures. Baseline: the shipped per-pattern model's log-probabilities
summed over the bag.
python pool.py
"""
import json, sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss

from kikuchipy_cnn.features import pooled_features
from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training import band_model as BM

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fit import SETS as FIT_SETS, load_pair  # noqa: E402

SETS = {  # fit.py's sets, with the 12- and 20-orientation coarse renders for bags
    **{k: FIT_SETS[k] for k in ("kin_train", "kin_val", "coarse_val", "fine_test")},
    "bags_train": ("cache/bags/rendered/rendered_train.features.npz", "cache/zone/bags_train.npz"),
    "bags_test": ("cache/bags/rendered/rendered_test.features.npz", "cache/zone/bags_test.npz"),
}
AGG = slice(-11, None)  # zone aggregates (zones.feature_names()[-11:])


def load(name):
    d = load_pair(*SETS[name])
    d["zone"] = d["zone"][:, AGG]
    return d


def pooled_zone(z):
    """Zone statistics over a bag: per aggregate mean, 90th percentile and max
    (NaN-free), and the fractions of patterns showing each kind of axis."""
    z = np.where(np.isfinite(z), z, -1.0)
    r2, r3, r4, r6, mir = (z[:, i] for i in range(1, 6))
    frac = [np.mean(r4 > 0.6), np.mean((r6 > 0.6) & (z[:, 6] > 0)), np.mean(r3 > 0.6),
            np.mean(z[:, 8] >= 2), np.mean((r4 > 0.6) & (r3 > 0.6)), np.mean(mir > 0.8), np.mean(r2 > 0.6),
            np.mean(z[:, 0] == 0)]
    return np.concatenate([z.mean(0), np.quantile(z, 0.9, axis=0), z.max(0), frac])


def bags(names, sizes, n_per, rng):
    rows = []
    for nm in names:
        d = D[nm]
        by = {}
        for i, s in enumerate(d["sid"]):
            by.setdefault(s, []).append(i)
        for s, idx in by.items():
            for _ in range(n_per):
                k = int(rng.choice(sizes)) if not np.isscalar(sizes) else sizes
                if k > len(idx):
                    continue
                rows.append((nm, rng.choice(idx, k, replace=False)))
    return rows


def design(rows, with_zone):
    X, y, lp = [], [], []
    for nm, idx in rows:
        d = D[nm]
        x = pooled_features(d["base"][idx])
        if with_zone:
            x = np.concatenate([x, pooled_zone(d["zone"][idx])])
        X.append(x)
        y.append(d["y"][idx[0]])
        lp.append(d["logp"][idx].sum(0))
    return np.array(X), np.array(y), np.array(lp)


def probs(clf, X):
    p = np.zeros((len(X), len(JOINT_CLASSES)))
    p[:, clf.classes_] = clf.predict_proba(X)
    return p


def fit(with_zone, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    Xtr, ytr, _ = design(bags(["kin_train", "bags_train"], np.arange(1, 13), 16, rng), with_zone)
    Xva, yva, _ = design(bags(["kin_val", "coarse_val"], np.arange(1, 13), 8, rng), with_zone)
    kw = dict(learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0, min_samples_leaf=20,
              early_stopping=False, random_state=0)
    clf = HistGradientBoostingClassifier(max_iter=1, warm_start=True, **kw)
    best = (np.inf, 0)
    for it in range(5, 151, 5):
        clf.set_params(max_iter=it)
        clf.fit(Xtr, ytr)
        ll = log_loss(yva, np.clip(probs(clf, Xva), 1e-9, 1), labels=range(len(JOINT_CLASSES)))
        if ll < best[0]:
            best = (ll, it)
    clf = HistGradientBoostingClassifier(max_iter=best[1], **kw).fit(Xtr, ytr)
    return clf, best


def fmt(a):
    return " / ".join(f"{a[k]:.3f}" for k in ["crystal_system", "bravais_lattice", "laue_class", "joint"])


if __name__ == "__main__":
    D = {k: load(k) for k in SETS}
    tests = {("fine_test", 1): None, ("fine_test", 3): None, ("fine_test", 4): None,
             ("bags_test", 1): None, ("bags_test", 3): None, ("bags_test", 10): None, ("bags_test", 20): None}
    trng = np.random.default_rng(7)
    for key in tests:
        tests[key] = bags([key[0]], key[1], 5, trng)
    res = {}
    models = {w: fit(w) for w in (False, True)}
    for (nm, k), rows in tests.items():
        line = {}
        for w in (False, True):
            X, y, lp = design(rows, w)
            line["zone" if w else "band"] = BM._levels_accuracy(probs(models[w][0], X), y)
        line["sum log p (shipped)"] = BM._levels_accuracy(np.exp(lp - lp.max(1, keepdims=True)), y)
        res[f"{nm} x{k}"] = line
        print(f"| {nm} | {k} | {len(rows)} | " + " | ".join(fmt(line[c]) for c in ["sum log p (shipped)", "band", "zone"]) + " |",
              flush=True)
    out = {"iterations": {("zone" if w else "band"): models[w][1][1] for w in models},
           "val_logloss": {("zone" if w else "band"): round(models[w][1][0], 3) for w in models}, "tests": res}
    print(out["iterations"], out["val_logloss"])
    (HERE / "pool-results.json").write_text(json.dumps(out, indent=1))
