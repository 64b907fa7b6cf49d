"""Phase discovery from band evidence (issue 14), on rendered scans.

Each scan: G grains, one pattern each, one detector and one set of degradation
parameters for the scan (``training.scans.render_scan``, as the pooling fit and
the discovery benchmark render them). Single-phase scans: G grains of one
held-out structure; two-phase scans: G/2 + G/2 of two. Grain signatures:

- ``d-spacings``: histogram of log d of the bands whose width was measured,
  d = lambda / (2 sin(w/2)) with the pattern's own beam energy (in a real scan all
  phases share it; the masters here were simulated at 10-30 kV each);
- ``zones``: the zone-symmetry aggregates (../2026-11-30-zone-symmetry-features).

Per scan the signatures are standardised and split by 2-means; a scan is split when
the R^2 beats the 98th percentile of the single-phase scans' (2 % false splits).

python scans_proxy.py MASTERS_DIR SPLIT N_SCANS GRAINS [PER_GRAIN] [--same-energy]
(with PER_GRAIN: the d-spacings only, averaged over PER_GRAIN patterns per grain;
--same-energy: the two phases of a two-phase scan within 2 kV of each other)
"""
import json, sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "2026-11-30-zone-symmetry-features"))
sys.path.insert(0, str(HERE))
import zones  # noqa: E402
from proxy import d_histogram, r2_2means  # noqa: E402
import onnxruntime as ort  # noqa: E402
from kikuchipy_cnn.bands import BandSet, detect_bands, electron_wavelength, pixel_angle  # noqa: E402
from kikuchipy_cnn.features import band_features  # noqa: E402
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info  # noqa: E402
from kikuchipy_cnn.training.projection import MasterSet  # noqa: E402
from kikuchipy_cnn.training.scans import render_scan  # noqa: E402


SESS = ort.InferenceSession("models/kcnn-bands-mlp/model.onnx", providers=["CPUExecutionProvider"])


SAME_ENERGY = "--same-energy" in sys.argv


def _wavelengths(masters, master_ids):
    """Each pattern's own wavelength (its master's beam energy)."""
    return np.array([electron_wavelength(float(masters.meta[int(m)]["energy_kev"])) for m in master_ids])


def d_only(masters, grain_master, per_grain, rng):
    """``d-spacings`` alone, each grain's histogram averaged over its ``per_grain``
    patterns (one orientation, own noise), as discovery averages a grain."""
    g = len(grain_master)
    grain = np.repeat(np.arange(g), per_grain)
    raw, geom = render_scan(masters, np.asarray(grain_master), grain.reshape(1, -1), rng)
    pats = raw.reshape(len(grain), *raw.shape[2:])
    pc = np.array([geom.pcx, geom.pcy, geom.pcz])
    b = detect_bands(pats, pc, n_bands=24)
    dh = d_histogram(b.width, b.valid, _wavelengths(masters, np.asarray(grain_master)[grain]))
    per = np.stack([dh[grain == k].mean(0) for k in range(g)])
    return {"d-spacings": per, "d-spacings, no share bin": per[:, :-1]}, min(pats.shape[1:])


def signatures(masters, grain_master, rng):
    g = len(grain_master)
    raw, geom = render_scan(masters, np.asarray(grain_master), np.arange(g).reshape(1, g), rng)
    pats = raw.reshape(g, *raw.shape[2:])
    pc = np.array([geom.pcx, geom.pcy, geom.pcz])
    b = detect_bands(pats, pc, n_bands=24)
    wl = _wavelengths(masters, grain_master)
    dh = d_histogram(b.width, b.valid, wl)
    zs = np.zeros((g, 11))
    for i in range(g):
        z = zones.pattern_zone_features(pats[i], pc, b.normals[i], b.valid[i], b.strength[i])[-11:]
        zs[i] = np.where(np.isfinite(z), z, -1.0)
    lp = np.zeros((g, len(JOINT_CLASSES)))
    for i in range(g):
        one = BandSet(*(np.asarray(f)[i : i + 1] for f in b))
        x = band_features(one, wl[i], pixel_angle(pats.shape[1:], pc)).astype(np.float32)
        lp[i] = np.log(np.clip(SESS.run(None, {SESS.get_inputs()[0].name: x})[0][0], 1e-4, 1))
    return {"verdicts (log p)": lp, "d-spacings": dh, "zones": zs, "d-spacings + zones": np.hstack([dh, zs]),
            "log p + d-spacings": np.hstack([lp, dh]), "log p + d-spacings + zones": np.hstack([lp, dh, zs])}, \
        min(pats.shape[1:])


def kind(masters, a, b):
    la, lb = (joint_class_info(masters.meta[m]["joint_class"]) for m in (a, b))
    if la["bravais_lattice"] == lb["bravais_lattice"]:
        return "same Bravais lattice"
    return "same system" if la["crystal_system"] == lb["crystal_system"] else "different system"


KINDS = ("different system", "same system", "same Bravais lattice")


def found_rates(rows, name):
    """The bar (98th percentile of the single-phase scans' R² of signature
    ``name``) and, per kind of pair, ``(n, share found, share of grains right
    when found)``, and the share of all two-phase scans found."""
    single = np.array([r[name][0] for r in rows if not r["two"]])
    bar = float(np.percentile(single, 98))
    per = {}
    for kd in KINDS:
        sel = [r for r in rows if r["kind"] == kd]
        found = [r[name][0] > bar for r in sel]
        right = [r[name][1] for r, f in zip(sel, found) if f]
        per[kd] = (len(sel), round(float(np.mean(found)), 3) if sel else None,
                   round(float(np.mean(right)), 3) if right else None)
    return bar, per, round(float(np.mean([r[name][0] > bar for r in rows if r["two"]])), 3)


def main(masters_dir, split, n_scans, grains, per_grain=None):
    masters = MasterSet(masters_dir, split)
    rng = np.random.default_rng(3)
    rows = []
    for s in range(2 * n_scans):
        two = s % 2 == 1
        a, b = rng.choice(len(masters), 2, replace=False)
        if SAME_ENERGY:  # control: the two phases within 2 kV (a real scan has one energy)
            kv = np.array([float(m["energy_kev"]) for m in masters.meta])
            near = np.flatnonzero((np.abs(kv - kv[a]) <= 2.0) & (np.arange(len(kv)) != a))
            b = rng.choice(near) if len(near) else b
        gm = [a] * grains if not two else [a] * (grains // 2) + [b] * (grains - grains // 2)
        sig, size = signatures(masters, gm, rng) if per_grain is None else d_only(masters, gm, per_grain, rng)
        truth = np.array([m == b for m in gm], float)
        row = {"two": two, "kind": kind(masters, a, b) if two else "single", "size": size,
               "kv": [float(masters.meta[m]["energy_kev"]) for m in ((a, b) if two else (a,))]}
        for name, x in sig.items():
            r2, lab = r2_2means(x, rng)
            row[name] = (float(r2), float(max((lab == truth).mean(), (lab != truth).mean())))
        rows.append(row)
        print(s, row["kind"], size, {k: round(v[0], 2) for k, v in row.items() if isinstance(v, tuple)}, flush=True)
    out = {}
    for name in rows[0]:
        if not isinstance(rows[0][name], tuple):
            continue
        bar, per, allf = found_rates(rows, name)
        res = {"bar (98th percentile, single)": round(bar, 3)}
        for kd, (n, found, right) in per.items():
            res[kd] = {"n": n, "found": found, "grains right when found": right}
        res["all two-phase found"] = allf
        out[name] = res
        print(name, res, flush=True)
    tag = (Path(masters_dir).name + f"-{split}-{grains}" + ("" if per_grain is None else f"x{per_grain}")
           + ("-same-energy" if SAME_ENERGY else ""))
    (HERE / f"scans-{tag}.json").write_text(json.dumps({"summary": out, "scans": rows}, indent=1))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--same-energy"]
    main(args[0], args[1], int(args[2]), int(args[3]), int(args[4]) if len(args) > 4 else None)
