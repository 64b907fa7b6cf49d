"""Zone-axis self-symmetry of a pattern's intensities (experiment, not shipped).

Per pattern: zone axes where >= 3 detected bands meet (least-squares
intersection of their planes), then at each axis the normalised cross-
correlation (NCC) of the flat-fielded pattern with itself rotated by 360/n
degrees about the axis (n = 2, 3, 4, 6) and the best reflection across a plane
containing the axis (``../shared/notes/zone-symmetry-pilot.md``, method 3-4).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kikuchipy_cnn.bands import DETECT_SIZE, _flat_field, _gnomonic_matrix, pixel_directions

ORDERS = (2, 3, 4, 6)
CAP = np.deg2rad(25.0)
ZONE_TOL = np.deg2rad(1.0)  # a band passes through a zone within this angle
ZONE_SEP = np.deg2rad(3.0)
N_ZONES = 8
N_TOP = 24  # bands whose pairwise intersections are candidate zones
MIRROR_STEPS = 60
PER_ZONE = ("mult", "overlap", "r2", "r3", "r4", "r6", "mirror")


def _nblur(x, m, sigma):
    """Gaussian blur of ``x`` over the pixels where ``m`` (normalised convolution)."""
    num = ndimage.gaussian_filter(x * m, sigma, mode="nearest")
    den = ndimage.gaussian_filter(m.astype(np.float64), sigma, mode="nearest")
    return num / np.maximum(den, 1e-6)


def prepare(pattern: np.ndarray, pc) -> tuple[np.ndarray, np.ndarray]:
    """Bin to about DETECT_SIZE px, divide by a heavy blur, subtract a light one
    (band-pass: the smooth background and its gradient go, the bands stay) and
    smooth the noise; pixels outside a circular screen mask (or dead) are set
    to 0 and marked NaN-free by :data:`mask`. Returns the image (masked
    pixels NaN) and its PC (fractions of the trimmed size)."""
    p = np.asarray(pattern, np.float64)
    nrows, ncols = p.shape
    pc = np.asarray(pc, np.float64)
    f = max(1, min(nrows, ncols) // DETECT_SIZE)
    if f > 1:
        r, c = (nrows // f) * f, (ncols // f) * f
        p = p[:r, :c].reshape(r // f, f, c // f, f).mean(axis=(1, 3))
        pc = pc * np.array([ncols / c, nrows / r, nrows / r])
    n = min(p.shape)
    p = p - p.min()
    level = ndimage.gaussian_filter(p, 2.0)
    m = level > 0.1 * np.percentile(level, 90)
    m = ndimage.binary_erosion(m, iterations=2)
    q = p / np.maximum(_nblur(p, m, n / 8.0), 1e-9)
    q = q - _nblur(q, m, n / 30.0)
    q = _nblur(q, m, max(0.7, n / 120.0))
    v = q[m]
    img = np.where(m, (q - v.mean()) / (v.std() + 1e-12), np.nan)
    return img, pc


def find_zones(normals, valid, strength, n_top: int = N_TOP, n_zones: int = N_ZONES):
    """Zone axes (unit, z > 0) where >= 3 bands meet, most bands first:
    ``(axes (z, 3), multiplicity (z,))``."""
    n = np.asarray(normals, np.float64)[np.asarray(valid, bool)]
    s = np.asarray(strength, np.float64)[np.asarray(valid, bool)]
    if len(n) < 3:
        return np.zeros((0, 3)), np.zeros(0, int)
    n = n[np.argsort(-s)]
    top = n[:n_top]
    i, j = np.triu_indices(len(top), 1)
    c = np.cross(top[i], top[j])
    norm = np.linalg.norm(c, axis=1)
    ok = norm > np.sin(np.deg2rad(5.0))  # nearly parallel bands give no zone
    c = c[ok] / norm[ok, None]
    c *= np.where(c[:, 2] < 0, -1.0, 1.0)[:, None]
    member = np.abs(c @ n.T) < np.sin(ZONE_TOL)  # (cand, bands)
    mult = member.sum(1)
    order = np.lexsort((-(member * np.exp(-np.arange(len(n)) / 8.0)).sum(1), -mult))
    axes, mults = [], []
    for k in order:
        if mult[k] < 3:
            break
        m = n[member[k]]
        w, v = np.linalg.eigh(m.T @ m)
        u = v[:, 0] * (1 if v[2, 0] >= 0 else -1)
        if any(np.arccos(min(1.0, abs(u @ a))) < ZONE_SEP for a in axes):
            continue
        axes.append(u)
        mults.append(int((np.abs(n @ u) < np.sin(ZONE_TOL)).sum()))
        if len(axes) == n_zones:
            break
    return np.array(axes).reshape(-1, 3), np.array(mults, int)


def _rotation(u, angle):
    u = u / np.linalg.norm(u)
    K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _ncc(img, Minv, P, vals, Q):
    """NCC between ``vals`` (at directions P) and the image sampled at Q."""
    h, w = img.shape
    z = Q[:, 2]
    good = z > 1e-6
    hom = (Q[good] / z[good, None]) @ Minv.T
    col = hom[:, 0] * w - 0.5
    row = hom[:, 1] * h - 0.5
    inside = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
    if inside.sum() < 40:
        return np.nan, 0.0
    a = vals[good][inside]
    b = ndimage.map_coordinates(img, [row[inside], col[inside]], order=1, cval=np.nan)
    fin = np.isfinite(a) & np.isfinite(b)
    if fin.sum() < 40:
        return np.nan, 0.0
    a, b = a[fin], b[fin]
    a = a - a.mean()
    b = b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return (float((a * b).sum() / d) if d > 0 else np.nan), fin.sum() / len(P)


def zone_symmetry(img, pc, u) -> dict:
    """r2, r3, r4, r6, mirror and the cap overlap at axis ``u``."""
    dirs = pixel_directions(img.shape, pc).reshape(-1, 3)
    return _zone_symmetry(img, dirs, np.linalg.inv(_gnomonic_matrix(img.shape, pc)), u)


def _zone_symmetry(img, dirs, Minv, u) -> dict:
    cap = (dirs @ u > np.cos(CAP)) & np.isfinite(img.ravel())
    out = {"overlap": 0.0, **{f"r{n}": np.nan for n in ORDERS}, "mirror": np.nan}
    P = dirs[cap]
    if len(P) < 40:
        return out
    vals = img.ravel()[cap]
    overlaps = []
    for n in ORDERS:
        r, ov = _ncc(img, Minv, P, vals, P @ _rotation(u, 2 * np.pi / n).T)
        out[f"r{n}"] = r
        overlaps.append(ov)
    out["overlap"] = float(np.mean(overlaps))
    e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    best = np.nan
    for phi in np.linspace(0, np.pi, MIRROR_STEPS, endpoint=False):
        m = np.cos(phi) * e1 + np.sin(phi) * e2
        r, ov = _ncc(img, Minv, P, vals, P - 2 * np.outer(P @ m, m))
        if ov >= 0.25 and np.isfinite(r) and not (r <= best):
            best = r
    out["mirror"] = best
    return out


def feature_names() -> list[str]:
    names = [f"zone{z}_{k}" for z in range(N_ZONES) for k in PER_ZONE]
    names += ["n_zones", "max_r2", "max_r3", "max_r4", "max_r6", "max_mirror",
              "r6_minus_r3_at_best_r6", "r4_minus_r3_at_best_r4", "n_r4_06", "n_r6_06", "n_r3_06"]
    return names


def pattern_zone_features(pattern, pc, normals, valid, strength) -> np.ndarray:
    img, pcb = prepare(pattern, pc)
    axes, mult = find_zones(normals, valid, strength)
    dirs = pixel_directions(img.shape, pcb).reshape(-1, 3)
    Minv = np.linalg.inv(_gnomonic_matrix(img.shape, pcb))
    per = np.full((N_ZONES, len(PER_ZONE)), np.nan)
    rs = []
    for z, (u, m) in enumerate(zip(axes, mult)):
        d = _zone_symmetry(img, dirs, Minv, u)
        if d["overlap"] < 0.25:
            d = {**d, **{f"r{n}": np.nan for n in ORDERS}, "mirror": np.nan}
        per[z] = [m, d["overlap"], d["r2"], d["r3"], d["r4"], d["r6"], d["mirror"]]
        rs.append([d["r2"], d["r3"], d["r4"], d["r6"], d["mirror"]])
    rs = np.array(rs).reshape(-1, 5)
    ok = np.isfinite(rs[:, 0])
    agg = np.full(11, np.nan)
    agg[0] = ok.sum()
    if ok.any():
        r = rs[ok]
        agg[1:6] = r.max(0)
        agg[6] = r[np.argmax(r[:, 3]), 3] - r[np.argmax(r[:, 3]), 1]
        agg[7] = r[np.argmax(r[:, 2]), 2] - r[np.argmax(r[:, 2]), 1]
        agg[8] = (r[:, 2] > 0.6).sum()
        agg[9] = ((r[:, 3] > 0.6) & (r[:, 1] > 0.6)).sum()
        agg[10] = (r[:, 1] > 0.6).sum()
    return np.concatenate([per.ravel(), agg])
