"""Ablation: do zone-symmetry features add to the band features?

Gradient-boosted trees on the joint class, trained on the rendered training
band sets (fine kinematical + coarse dynamical), iterations chosen on the
rendered validation sets, scored on the two held-out rendered test sets.
python fit.py  (after run.py has written cache/zone/*.npz)
"""
import json, sys
import numpy as np
import onnxruntime as ort
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss

from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training import band_model as BM

SETS = {
    "kin_train": ("cache/band-features-kin/rendered_train.features.npz", "cache/zone/kin_train.npz"),
    "coarse_train": ("cache/band-features/rendered_train.features.npz", "cache/zone/coarse_train.npz"),
    "kin_val": ("cache/band-features-kin/rendered_val.features.npz", "cache/zone/kin_val.npz"),
    "coarse_val": ("cache/band-features/rendered_val.features.npz", "cache/zone/coarse_val.npz"),
    "fine_test": ("cache/band-features-kinfine/rendered_test.features.npz", "cache/zone/fine_test.npz"),
    "coarse_test": ("cache/band-features/rendered_test.features.npz", "cache/zone/coarse_test.npz"),
}
sess = ort.InferenceSession("models/kcnn-bands-mlp/model.onnx", providers=["CPUExecutionProvider"])


def load_pair(fp, zp):
    """Band features, zone features and the shipped model's probabilities of one set."""
    d = BM.load_features([fp])
    z = np.load(zp)
    assert (z["label"] == d["label"]).all() and (z["structure_id"] == d["structure_id"]).all()
    p = sess.run(None, {sess.get_inputs()[0].name: d["features"].astype(np.float32)})[0]
    return {"base": d["features"], "zone": z["zone"], "logp": np.log(np.clip(p, 1e-6, 1)), "p": p,
            "y": d["label"], "big": d["shape"].min(1) >= 120, "sid": d["structure_id"]}


D = {}  # filled by main
cat = lambda names, key: np.concatenate([D[n][key] for n in names])
VARIANTS = {
    "band features": ["base"], "zone features": ["zone"], "band + zone features": ["base", "zone"],
    "shipped model log-probabilities": ["logp"], "shipped log-probabilities + zone": ["logp", "zone"],
}
LEV = ["crystal_system", "bravais_lattice", "laue_class", "joint"]


def fmt(a):
    return " / ".join(f"{a[k]:.3f}" for k in LEV)


LR, GRID = 0.05, range(25, 401, 25)
if "--fine-grid" in sys.argv:
    LR, GRID = 0.1, range(5, 201, 5)


def fit(keys, seed=0):
    X = lambda names: np.concatenate([cat(names, k) for k in keys], axis=1)
    Xtr, ytr = X(["kin_train", "coarse_train"]), cat(["kin_train", "coarse_train"], "y")
    Xva, yva = X(["kin_val", "coarse_val"]), cat(["kin_val", "coarse_val"], "y")
    clf = HistGradientBoostingClassifier(learning_rate=LR, max_iter=1, max_leaf_nodes=15, l2_regularization=1.0,
                                         min_samples_leaf=20, early_stopping=False, warm_start=True, random_state=seed)
    best = (np.inf, 0)
    for it in GRID:
        clf.set_params(max_iter=it)
        clf.fit(Xtr, ytr)
        p = np.zeros((len(Xva), len(JOINT_CLASSES)))
        p[:, clf.classes_] = clf.predict_proba(Xva)
        ll = log_loss(yva, np.clip(p, 1e-9, 1), labels=range(len(JOINT_CLASSES)))
        if ll < best[0]:
            best = (ll, it)
    clf = HistGradientBoostingClassifier(learning_rate=LR, max_iter=best[1], max_leaf_nodes=15, l2_regularization=1.0,
                                         min_samples_leaf=20, early_stopping=False, random_state=seed).fit(Xtr, ytr)
    out = {"iterations": best[1], "val_logloss": round(best[0], 3)}
    for t in ["fine_test", "coarse_test"]:
        p = np.zeros((len(D[t]["y"]), len(JOINT_CLASSES)))
        p[:, clf.classes_] = clf.predict_proba(X([t]))
        out[t] = BM._levels_accuracy(p, D[t]["y"])
        out[t + " >=120"] = BM._levels_accuracy(p[D[t]["big"]], D[t]["y"][D[t]["big"]])
    return out


if __name__ == "__main__":
    D.update({k: load_pair(*SETS[k]) for k in SETS})
    res = {}
    for t in ["fine_test", "coarse_test"]:
        res[("shipped kcnn-bands-mlp 0.2.1", t)] = BM._levels_accuracy(D[t]["p"], D[t]["y"])
        b = D[t]["big"]
        res[("shipped kcnn-bands-mlp 0.2.1", t + " >=120")] = BM._levels_accuracy(D[t]["p"][b], D[t]["y"][b])
    print("shipped", {k[1]: fmt(v) for k, v in res.items()}, flush=True)
    rows = {}
    for name, keys in VARIANTS.items():
        r = fit(keys)
        rows[name] = r
        print(f"| {name} | {r['iterations']} | {r['val_logloss']} | " + " | ".join(fmt(r[t]) for t in ["fine_test", "fine_test >=120", "coarse_test", "coarse_test >=120"]) + " |", flush=True)
    json.dump({"shipped": {k[1]: v for k, v in res.items()}, "variants": rows},
              open("models/experiments/2026-11-30-zone-symmetry-features/results" + ("-fine-grid" if "--fine-grid" in sys.argv else "") + ".json", "w"), indent=1)
