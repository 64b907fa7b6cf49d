"""Which grain signatures should ``pool="phases"`` split band models' scans by?

Validation structures only (the choice is made here; the test structures are kept
for the benchmark). Scans as ``scans_proxy.py`` with ``PER_GRAIN`` patterns per
grain (one orientation, own noise; one detector and degradation per scan), but
every signature is computed by the package's own functions as ``pool="phases"``
computes it, and split as :func:`kikuchipy_cnn.phases.discover_phases` splits
(grain means, blocks standardised, weighted 2-means from the principal axis):

- ``log p``: the band model's class log-probabilities (``classify.band_sets`` →
  ``features.band_features`` → ONNX), with the scan's one beam energy;
- ``spectra``: ``phases.pattern_spectra`` of ``classify.sketch_preprocessing``;
- ``d``: ``phases.d_spacing_histogram`` of the detected bands, scan energy.

The two phases of a two-phase scan are simulated within ``--kv`` of each other
and the scan carries the first one's energy (``training.scans.scan_signal`` does
the same), as one real scan has one beam energy. The bar per signature is the
98th percentile of the single-phase scans' R² (2 % false splits).

    python choice.py MASTERS SPLIT N_SCANS GRAINS PER_GRAIN [--kv 1.0] [--seed 3]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from kikuchipy_cnn.bands import electron_wavelength
from kikuchipy_cnn.classify import band_sets, resolve_model, sketch_preprocessing
from kikuchipy_cnn.engine import get_session
from kikuchipy_cnn.features import band_features
from kikuchipy_cnn.phases import _standardised, _two_means, d_spacing_histogram, grain_signatures, pattern_spectra
from kikuchipy_cnn.preprocessing import preprocess
from kikuchipy_cnn.training.projection import MasterSet
from kikuchipy_cnn.training.scans import render_scan

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scans_proxy import found_rates, kind  # noqa: E402

NAMES = {"logp": "probabilities", "spectra": "spectra", "d": "d_spacings"}  # phases.SIGNATURES
VARIANTS = {
    "log p + spectra (0.2.1 product)": ("logp", "spectra"),
    "log p": ("logp",),
    "spectra": ("spectra",),
    "d": ("d",),
    "spectra + d": ("spectra", "d"),
    "log p + d": ("logp", "d"),
    "log p + spectra + d": ("logp", "spectra", "d"),
}


def per_pattern(card, session, masters, grain_master, per_grain, kv, rng):
    g = len(grain_master)
    grain = np.repeat(np.arange(g), per_grain)
    raw, geom = render_scan(masters, np.asarray(grain_master), grain.reshape(1, -1), rng)
    pats = raw.reshape(len(grain), *raw.shape[2:])
    pc = np.array([geom.pcx, geom.pcy, geom.pcz])
    wl = electron_wavelength(kv)
    bands, valid, angles = band_sets(pats, np.repeat(pc[None], len(pats), 0), card, None)
    assert valid.all()
    feats = band_features(bands, wl, angles).astype(np.float32)
    probs = session.run(feats, ("probabilities",), 256)["probabilities"]
    x, ok = preprocess(pats, sketch_preprocessing(card))
    return {"logp": probs, "spectra": pattern_spectra(x, ok),
            "d": d_spacing_histogram(bands.width, bands.valid, wl)}, grain, min(pats.shape[1:])


def r2_of(blocks, grain, g, names):
    sig = grain_signatures({NAMES[k]: v for k, v in blocks.items()}, grain, g, tuple(NAMES[k] for k in names))
    w = np.bincount(grain, minlength=g).astype(np.float64)
    side, r2 = _two_means(_standardised(sig, w), w)
    return float(r2), side


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("masters")
    ap.add_argument("split")
    ap.add_argument("n_scans", type=int)
    ap.add_argument("grains", type=int)
    ap.add_argument("per_grain", type=int)
    ap.add_argument("--kv", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    card = resolve_model("kcnn-bands-mlp")
    session = get_session(card, ("CPUExecutionProvider",))
    masters = MasterSet(args.masters, args.split)
    kvs = np.array([float(m["energy_kev"]) for m in masters.meta])
    rng = np.random.default_rng(args.seed)
    rows, t0, skipped = [], time.perf_counter(), 0
    for s in range(2 * args.n_scans):
        two = s % 2 == 1
        a = int(rng.integers(len(masters)))
        near = np.flatnonzero((np.abs(kvs - kvs[a]) <= args.kv) & (np.arange(len(kvs)) != a))
        if two and not len(near):
            skipped += 1  # no partner within --kv: the draw is left out (counted)
            continue
        b = int(rng.choice(near)) if two else a
        h = args.grains // 2
        gm = [a] * args.grains if not two else [a] * h + [b] * (args.grains - h)
        blocks, grain, size = per_pattern(card, session, masters, gm, args.per_grain, kvs[a], rng)
        truth = np.array([m == b for m in gm]) if two else None
        row = {"two": two, "kind": kind(masters, a, b) if two else "single", "size": size,
               "kv": [float(kvs[a]), float(kvs[b])],
               "d measured": float(np.isfinite(blocks["d"]).all(axis=1).mean())}
        for name, use in VARIANTS.items():
            r2, side = r2_of(blocks, grain, args.grains, use)
            right = (float(max((side == truth).mean(), (side != truth).mean()))
                     if two and side is not None else None)
            row[name] = [r2, right]
        rows.append(row)
        if (s + 1) % 20 == 0:
            print(f"{s + 1} scans, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {}
    for name in VARIANTS:
        bar, per, found = found_rates(rows, name)
        res = {"bar": round(bar, 3), **{kd: list(v) for kd, v in per.items()}, "found": found}
        res["n two-phase"] = sum(r["two"] for r in rows)
        out[name] = res
        print(f"{name:34s} bar {bar:.2f} found {res['found']:.2f} {res}", flush=True)
    tag = f"{Path(args.masters).name}-{args.split}-{args.grains}x{args.per_grain}-kv{args.kv:g}"
    (HERE / f"choice-{tag}.json").write_text(json.dumps({"args": vars(args), "summary": out, "scans": rows},
                                                        indent=1))
    print(f"({time.perf_counter() - t0:.0f} s; {skipped} two-phase draw(s) left out: no partner within "
          f"{args.kv:g} kV)")


if __name__ == "__main__":
    main()
