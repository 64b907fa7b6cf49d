"""Which bands and which width factor size a cell best? (issue 14: absolute lengths)

300 random band sets per split (seed 0) of ``cache/bags/rendered/rendered_{train,test}.npz``
(bands detected on rendered dynamical patterns of train- / test-split masters): each
set's lattice is rebuilt from its band directions (``reconstruct_lattice(use_widths=False)``)
and, where its shape is the truth's (fingerprints within ``CELL_AGREEMENT``), sized by
``length_scale``-style medians of ``|hkl b*| d`` over its indexed bands. Compared:
all bands with the one factor (what the package does, ``WIDTH_TO_BRAGG``); only bands
measured at least 2, 3 or 4 px wide, each with its own factor (the train median over
such bands); all bands with a factor per pattern size (train medians by side).
Prints the found / true shortest-vector ratio percentiles and the share within 10 %.

    python models/experiments/2026-12-01-cell-lengths/band_selection.py
"""

import sys

import numpy as np

sys.path.insert(0, "benchmarks")
from phase_cells import true_primitive  # noqa: E402

from kikuchipy_cnn.bands import WIDTH_TO_BRAGG, d_spacing, pixel_angle  # noqa: E402
from kikuchipy_cnn.lattice import (  # noqa: E402
    CELL_AGREEMENT,
    cell_fingerprint,
    lattice_vector_lengths,
    reconstruct_lattice,
)
from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE  # noqa: E402
from kikuchipy_cnn.training.projection import MasterSet  # noqa: E402


def load(split):
    d = dict(np.load(f"cache/bags/rendered/rendered_{split}.npz", allow_pickle=True))
    d["pa"] = pixel_angle(d["shape"], d["pc"])
    return d


def train_factors(d):
    """Median 2theta_B / width over the train bands: with a px threshold, and by side."""
    w = d["width"]
    ok = d["valid"] & np.isfinite(w) & (w > 0) & np.isfinite(d["match_d"]) & (d["match_d"] > 0)
    lam = np.broadcast_to(d["wavelength"][:, None], w.shape)
    r = 2 * np.arcsin(lam / (2 * np.where(ok, d["match_d"], 1.0))) / np.where(ok, w, 1.0)
    px = w / d["pa"][:, None]
    side = np.broadcast_to(d["shape"][:, :1], w.shape)
    thr = {t: float(np.median(r[ok & (px >= t)])) for t in (0, 2, 3, 4)}
    by_side = {int(s): float(np.median(r[ok & (side == s)])) for s in np.unique(side[ok])}
    return thr, by_side


def rows(split, d, n=300):
    meta = {m["id"]: m for m in MasterSet(DEFAULT_CACHE, split).meta}
    out = []
    for i in np.random.default_rng(0).choice(len(d["normals"]), n, replace=False):
        v = d["valid"][i]
        w = d["width"][i][v]
        fit = reconstruct_lattice(d["normals"][i][v], w, d["strength"][i][v], d["wavelength"][i], use_widths=False)
        if fit is None:
            continue
        m = meta[str(d["structure_id"][i])]
        prim = true_primitive(m["lattice"], m["space_group"])
        if np.abs(np.log(cell_fingerprint(fit.direct)) - np.log(cell_fingerprint(prim))).max() > CELL_AGREEMENT:
            continue
        use = fit.indexed & np.isfinite(w) & (w > 0)
        k = np.linalg.norm(fit.hkl[use] @ fit.reciprocal, axis=1) * d_spacing(w[use], d["wavelength"][i])
        size = lattice_vector_lengths(fit.direct, 1)[0, 0] / lattice_vector_lengths(prim, 1)[0, 0]
        out.append((k, w[use] / d["pa"][i], int(d["shape"][i][0]), size))
    return out


train = load("train")
thr, by_side = train_factors(train)
print(f"train factors: by threshold {thr}; by side {by_side}; package {WIDTH_TO_BRAGG}")
for split in ("train", "test"):
    data = rows(split, train if split == "train" else load(split))
    print(f"\n{split}: {len(data)} band sets with the right cell shape")
    # d = lambda / (2 sin(f w / 2)) ~ d_raw / f: the scale divides by the factor
    rules = {f"all bands, factor {WIDTH_TO_BRAGG}": lambda k, px, s: np.median(k) / WIDTH_TO_BRAGG}
    for t in (2, 3, 4):
        rules[f">= {t} px, factor {thr[t]:.3f}"] = (
            lambda k, px, s, t=t: np.median(k[px >= t]) / thr[t] if (px >= t).sum() >= 3 else np.nan)
    rules["all bands, factor by side"] = lambda k, px, s: np.median(k) / by_side[s]
    for name, rule in rules.items():
        e = np.log([rule(k, px, s) * size for k, px, s, size in data])
        e = e[np.isfinite(e)]
        q = " / ".join(f"{v:.3f}" for v in np.exp(np.percentile(e, [10, 25, 50, 75, 90])))
        print(f"  {name:<28} n {e.size:>3}  found / true 10-25-50-75-90 %: {q}  within 10 %: "
              f"{np.mean(np.abs(e) <= np.log(1.1)):.2f}")
