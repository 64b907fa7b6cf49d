"""Measured band width against 2 theta_B: the factor ``kikuchipy_cnn.bands.WIDTH_TO_BRAGG``
(issue 14: absolute cell lengths).

Band sets detected by ``bands.detect_bands`` on rendered dynamical patterns of
the train-split masters (60-480 px, ``band_sets --source rendered --split train``),
each band matched by the renderer to the reflection it shows (``match_d``): the
median of ``2 arcsin(lambda / 2 d) / width`` over all bands, and (for the record)
by pattern size, by measured width and by true width in pixels. The test split is
printed beside it (not used for the factor).

    python models/experiments/2026-12-01-cell-lengths/width_calibration.py
"""

import numpy as np

from kikuchipy_cnn.bands import WIDTH_TO_BRAGG, pixel_angle

EDGES_PX = (2, 3, 4, 6, 8, 12, 16, 24)


def by(key, ratio, edges):
    b = np.digitize(key, edges)
    return ", ".join(f"{np.exp(np.median(ratio[b == i])):.3f} ({int((b == i).sum())})"
                     for i in range(len(edges) + 1))


for split in ("train", "test"):
    d = np.load(f"cache/bags/rendered/rendered_{split}.npz", allow_pickle=True)
    w = d["width"]
    ok = d["valid"] & np.isfinite(w) & (w > 0) & np.isfinite(d["match_d"]) & (d["match_d"] > 0)
    lam = np.broadcast_to(d["wavelength"][:, None], w.shape)
    two_theta = 2 * np.arcsin(lam / (2 * np.where(ok, d["match_d"], 1.0)))
    pa = np.broadcast_to(pixel_angle(d["shape"], d["pc"])[:, None], w.shape)
    r = np.log(two_theta / np.where(ok, w, 1.0))[ok]
    side = np.broadcast_to(d["shape"][:, :1], w.shape)[ok]
    print(f"{split}: {int(ok.sum())} bands; median 2theta_B / width {np.exp(np.median(r)):.3f}")
    print("  by pattern side:", ", ".join(f"{s} px {np.exp(np.median(r[side == s])):.3f}" for s in np.unique(side)))
    print(f"  by measured width, bins {EDGES_PX} px:", by((w / pa)[ok], r, EDGES_PX))
    print(f"  by true width, bins {EDGES_PX} px:", by((two_theta / pa)[ok], r, EDGES_PX))
print("package factor WIDTH_TO_BRAGG:", WIDTH_TO_BRAGG)
