"""Proxy for phase discovery (issue 14): can grain signatures built from the band
evidence tell two held-out structures apart better than the model's verdicts?

Each rendered pattern of a structure stands for one grain (its own orientation).
A single-phase "scan" is G grains of one structure; a two-phase one G/2 + G/2 of
two structures. Per scan the grain signatures are standardised, split by 2-means
(best of 10 starts), and the split's R^2 (1 - within / total sum of squares) is
compared with the 98th percentile of the single-phase scans' R^2 (a 2 %
false-split rate, as phases.discover_phases sets its bar). Reported: share of
two-phase scans split, and of those, the share of grains on the right side.

python proxy.py
"""
import itertools, json, sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info
from kikuchipy_cnn.training import band_model as BM
from kikuchipy_cnn.training.band_sets import load_band_sets

HERE = Path(__file__).parent
SETS = {  # band sets, their features, zone features (held-out / validation structures)
    "coarse dynamical test (50 structures x 20)": ("cache/bags/rendered/rendered_test.npz",
                                                   "cache/bags/rendered/rendered_test.features.npz",
                                                   "cache/zone/bags_test.npz"),
    "fine kinematical val (23 structures x 20)": ("cache/bags-kin20/rendered_val.npz",
                                                  "cache/band-features-kin/rendered_val.features.npz",
                                                  "cache/zone/kin_val.npz"),
}
LOGD_EDGES = np.linspace(np.log(0.6), np.log(6.0), 17)
sess = ort.InferenceSession("models/kcnn-bands-mlp/model.onnx", providers=["CPUExecutionProvider"])


def d_histogram(width, valid, wavelength):
    """Per pattern: histogram of log d = log(lambda / (2 sin(w / 2))) of the bands
    with a measured width (fractions; 16 bins, 0.6-6 A) and the share measured."""
    out = np.zeros((len(width), len(LOGD_EDGES)))
    for i in range(len(width)):
        w = width[i][valid[i] & np.isfinite(width[i])]
        if len(w):
            d = np.log(wavelength[i] / (2 * np.sin(w / 2)))
            h, _ = np.histogram(np.clip(d, LOGD_EDGES[0], LOGD_EDGES[-1] - 1e-9), LOGD_EDGES)
            out[i, :-1] = h / len(w)
        out[i, -1] = len(w) / max(valid[i].sum(), 1)
    return out


def load(name):
    bp, fp, zp = SETS[name]
    a, _ = load_band_sets(bp)
    f = BM.load_features([fp])
    z = np.load(zp)
    assert (f["structure_id"] == a["structure_id"]).all() and (z["structure_id"] == a["structure_id"]).all()
    p = sess.run(None, {sess.get_inputs()[0].name: f["features"].astype(np.float32)})[0]
    zone = z["zone"][:, -11:]
    zone = np.where(np.isfinite(zone), zone, -1.0)
    return {"logp": np.log(np.clip(p, 1e-4, 1)), "dhist": d_histogram(a["width"], a["valid"], a["wavelength"]),
            "zone": zone, "sid": a["structure_id"], "label": a["label"]}


def r2_2means(x, rng, starts=10):
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    tot = (x ** 2).sum()
    best = (np.inf, None)
    for _ in range(starts):
        c = x[rng.choice(len(x), 2, replace=False)]
        for _ in range(30):
            lab = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
            if lab.min() == lab.max():
                break
            c = np.stack([x[lab == k].mean(0) for k in (0, 1)])
        ss = sum(((x[lab == k] - x[lab == k].mean(0)) ** 2).sum() for k in (0, 1) if (lab == k).any())
        if ss < best[0]:
            best = (ss, lab)
    return 1 - best[0] / tot, best[1]


def run(d, groups, grains, rng, n_pairs=300):
    by = {}
    for i, s in enumerate(d["sid"]):
        by.setdefault(s, []).append(i)
    ids = sorted(by)
    sig = lambda idx: np.concatenate([d[g][idx] for g in groups], axis=1)
    single = []
    for s in ids:
        for _ in range(4):
            idx = rng.choice(by[s], grains, replace=False)
            single.append(r2_2means(sig(idx), rng)[0])
    bar = np.percentile(single, 98)
    found, purity, kinds = [], [], []
    pairs = list(itertools.combinations(ids, 2))
    for k in rng.choice(len(pairs), min(n_pairs, len(pairs)), replace=False):
        a, b = pairs[k]
        ia = rng.choice(by[a], grains // 2, replace=False)
        ib = rng.choice(by[b], grains // 2, replace=False)
        r2, lab = r2_2means(sig(np.concatenate([ia, ib])), rng)
        truth = np.r_[np.zeros(len(ia)), np.ones(len(ib))]
        found.append(r2 > bar)
        purity.append(max((lab == truth).mean(), (lab != truth).mean()))
        la, lb = (joint_class_info(JOINT_CLASSES[d["label"][by[s][0]]]) for s in (a, b))
        kinds.append("same Bravais lattice" if la["bravais_lattice"] == lb["bravais_lattice"]
                     else "same system" if la["crystal_system"] == lb["crystal_system"] else "different system")
    found, purity, kinds = np.array(found), np.array(purity), np.array(kinds)
    out = {"bar": round(float(bar), 3), "found": round(float(found.mean()), 3),
           "purity_found": round(float(purity[found].mean()), 3) if found.any() else None, "n_pairs": len(found)}
    for kd in ("different system", "same system", "same Bravais lattice"):
        m = kinds == kd
        out[kd] = [int(m.sum()), round(float(found[m].mean()), 3) if m.any() else None]
    return out


if __name__ == "__main__":
    res = {}
    SIGS = {"verdicts (log p)": ["logp"], "d-spacing histogram": ["dhist"], "zone symmetry": ["zone"],
            "log p + d-spacings": ["logp", "dhist"], "log p + d-spacings + zones": ["logp", "dhist", "zone"]}
    for name in SETS:
        d = load(name)
        for grains in (10, 20):
            for sname, groups in SIGS.items():
                r = run(d, groups, grains, np.random.default_rng(0))
                res[f"{name} | {grains} grains | {sname}"] = r
                print(f"| {name} | {grains} | {sname} | {r['bar']} | {r['found']} | {r['purity_found']} | "
                      f"{r['different system'][1]} ({r['different system'][0]}) | {r['same system'][1]} ({r['same system'][0]}) | "
                      f"{r['same Bravais lattice'][1]} ({r['same Bravais lattice'][0]}) |", flush=True)
    (HERE / "proxy-results.json").write_text(json.dumps(res, indent=1))
